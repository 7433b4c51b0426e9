"""Benchmark: training minutes on this CPU against recorded accuracy, per recipe. Not a test.

    python -m benchmarks.recipes [--rounds 3] [--steps 12] [--data data/lfw-a] RECIPE [RECIPE ...]

A RECIPE is params.yaml with overrides, each written as `dvc exp run -S` takes it, separated by spaces
("train.width=16 prepare.image_size=64"; "default" for params.yaml as it is). Prints a markdown table,
one row per recipe: forward MFLOPs per image; the images one training run steps through (epochs x
the batches of the training table, early stopping aside: unrestricted, pairs.n_train_pairs; restricted,
the official pairs left after validation, counted from --data, else not given); this CPU's training images/s in the precision
the train stage uses here (the median of `--rounds` rounds of benchmarks/run.py's training step); the
training minutes they make; and the accuracy docs/experiments.json records for that configuration
(the record over the most seeds: validation AUC and test accuracy, mean ± sd over its seeds, or one
seed's value). Measure with nothing else running: two processes on two cores do not share them evenly.
"""
from __future__ import annotations

import argparse
import shlex
import statistics
import sys
import tempfile
from pathlib import Path

import torch
import yaml
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.run import train_throughput
from pipeline.embedding import autocast_dtype
from pipeline.lab import records
from pipeline.model import Siamese
from pipeline.stages.pairs import make_tables
from pipeline.params import Params, ParamsError, flatten, load_params, set_dotted

ROOT = Path(__file__).resolve().parents[1]


def overrides(recipe: str) -> dict:
    """{'train.width': 16, ...} of "train.width=16 prepare.image_size=64"; {} of "default". Values are
    read as DVC reads `-S` values (records.parse_sets: `3e-3` a number, `no` a string)."""
    items = [] if recipe.strip() in ("", "default") else shlex.split(recipe)
    return records.parse_sets(items, option=f"recipe {recipe!r}:")


def recipe_params(sets: dict, base: Path = ROOT / "params.yaml") -> Params:
    """params.yaml with `sets` applied, validated as the pipeline validates it."""
    raw = yaml.safe_load(base.read_text(encoding="utf-8"))
    for key, value in sets.items():
        try:
            set_dotted(raw, key, value, str(base))
        except ParamsError as e:
            raise SystemExit(str(e)) from None
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "params.yaml"
        path.write_text(yaml.safe_dump(raw))
        try:
            return load_params(path)
        except ParamsError as e:
            raise SystemExit(f"recipe {sets}: {str(e).split(': ', 1)[1]}") from None


def images_per_run(params: Params, data: Path | None = None) -> int | None:
    """Images a full run steps through: epochs x (training pairs // batch size) x 2 x batch size, as
    pipeline/stages/train.py counts them; restricted mode's pairs are counted from `data`, or None without it."""
    n_pairs = params.pairs.n_train_pairs
    if params.pairs.mode == "restricted":
        if data is None or not data.exists():
            return None
        n_pairs = len(make_tables(data, params.pairs, params.seed)[0]["train"])
    p = params.train
    return p.epochs * 2 * p.batch_size * max(1, n_pairs // p.batch_size)


def recorded(params: Params, recs: list[dict]) -> str:
    """'val AUC | test acc | seeds (commit)' cells of the record of `params` (seed aside), or 'not run'."""
    want = records.plain(flatten(params))  # typed as the pipeline reads them: 1 -> 1.0 for a float key
    free = records.RESTRICTED_UNREAD if params.pairs.mode == "restricted" else frozenset()
    live = [(i, r) for i, r in enumerate(recs) if not r.get("superseded") and records.agrees(r["params"], want, free)]
    rec = records.best(live)
    if rec is None:
        return " | | | not run"
    m = rec["metrics"]
    return f" | {records.cell(m.get('calibrate.val_roc_auc'))} | {records.cell(m.get('evaluate.accuracy'))} | " \
           f"{', '.join(str(s) for s in rec['seeds'])} ({rec['commit']})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipes", nargs="+")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=12, help="timed training steps per round")
    parser.add_argument("--data", type=Path, default=ROOT / "data" / "lfw-a", help="the extracted archive (restricted recipes)")
    args = parser.parse_args(argv)
    recs = records.load()
    dtype = None
    print("| recipe | MFLOPs fwd | images per run | images/s | training min | val AUC | test acc | seeds (commit) |")
    print("|---|---|---|---|---|---|---|---|")
    for recipe in args.recipes:
        params = recipe_params(overrides(recipe))
        dtype = autocast_dtype(torch.device("cpu"), params.train.precision)
        model = Siamese.from_params(params).eval()
        side = params.prepare.image_size
        with FlopCounterMode(display=False) as fc:
            model.embed(torch.zeros(1, 1, side, side))
        ips = statistics.median(train_throughput(params, dtype, args.steps)[0] for _ in range(args.rounds))
        n = images_per_run(params, args.data)
        run = f"{n:,} | {ips:.0f} | {n / ips / 60:.1f}" if n else f"n/a (no {args.data}) | {ips:.0f} | n/a"
        print(f"| {recipe or 'default'} ({'bf16' if dtype else 'fp32'}) | {fc.get_total_flops() / 1e6:.0f} | {run}"
              + recorded(params, recs) + " |", flush=True)
    print(f"\n{torch.get_num_threads()} threads; each recipe trains in the precision its train.precision gives on this CPU")
    return 0


if __name__ == "__main__":
    sys.exit(main())
