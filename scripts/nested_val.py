"""Does training on more people help? Two experiments' models scored on the smaller one's validation pairs.

    python scripts/nested_val.py A:B [A:B ...] [--prepared data/prepared] [--data data/lfw-a]

A and B are names of DVC experiments (`dvc exp show`), B run with `pairs.val_keep` < 1: it holds out
the same people as A, keeps that share of them for validation and trains on the rest. Its validation
people are then people neither model saw, so both are scored on B's validation pairs (rebuilt from
B's params by pipeline.pairs, the same tables its `pairs` stage wrote) and compared pair by pair of
experiments: the AUC of each, B's gain, and over all given pairs the mean gain ± standard error and t.
Each model is read from the DVC cache by the md5 its experiment's dvc.lock records; the prepared
images are the workspace's, made with params.yaml's `prepare` params, which must be the experiments' too.
"""
from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from experiments_table import BEFORE_ADDED, flatten, git, params_file, plain, same  # noqa: E402
from pipeline import pairs as pairs_stage  # noqa: E402
from pipeline.data import load_images, load_pairs  # noqa: E402
from pipeline.embedding import pair_distances  # noqa: E402
from pipeline.metrics import choose_threshold, verification_metrics  # noqa: E402
from pipeline.model import load_checkpoint  # noqa: E402
from pipeline.params import Params, load_params, set_dotted  # noqa: E402
from pipeline.tables import write_table  # noqa: E402
from pipeline.tta import TTA  # noqa: E402


def todays_params(raw: dict, name: str) -> dict:
    """An experiment's params.yaml in today's keys: a param added since at the value that reproduces the
    code before it (experiments_table.BEFORE_ADDED), one taken out since dropped where it was off."""
    flat = plain({**BEFORE_ADDED, **flatten(raw)})
    today = params_file()
    left = {k: v for k, v in flat.items() if k not in today and not same(v, BEFORE_ADDED.get(k))}
    if left:
        raise SystemExit(f"experiment {name!r}: params of a code taken out since: {left}")
    out = yaml.safe_load((ROOT / "params.yaml").read_text())
    for key in today:
        set_dotted(out, key, flat.get(key, today[key]))
    return out


class Experiment:
    """A DVC experiment's params and the cache path of its model, from its git ref."""

    def __init__(self, name: str, tmp: Path):
        refs = [r for r in git("for-each-ref", "--format=%(refname)", "refs/exps/").split() if r.rsplit("/", 1)[-1] == name]
        if len(refs) != 1:
            raise SystemExit(f"experiment {name!r}: {'no' if not refs else len(refs)} refs named so under refs/exps")
        self.name, ref = name, refs[0]
        path = tmp / f"{name}.yaml"
        path.write_text(yaml.safe_dump(todays_params(yaml.safe_load(git("show", f"{ref}:params.yaml")), name)))
        self.params: Params = load_params(path)
        lock = yaml.safe_load(git("show", f"{ref}:dvc.lock"))
        md5 = next(o["md5"] for o in lock["stages"]["train"]["outs"] if o["path"] == "models/model.pt")
        self.model = ROOT / ".dvc" / "cache" / "files" / "md5" / md5[:2] / md5[2:]
        if not self.model.is_file():
            raise SystemExit(f"experiment {name!r}: its model ({md5}) is not in the DVC cache at {self.model}")

    def tables(self, data: Path) -> dict:
        return pairs_stage.make_tables(data, self.params.pairs, self.params.seed)[0]


def auc(model_path: Path, images, val) -> float:
    model, ckpt = load_checkpoint(model_path)
    d = pair_distances(model, images, val, TTA.of(ckpt))
    return verification_metrics(d, val.label, choose_threshold(d, val.label, "eer"))["roc_auc"]


def compare(a: Experiment, b: Experiment, data: Path, images, rows, tmp: Path, prepare) -> tuple[float, float]:
    """(A's, B's) AUC on B's validation pairs, after checking that neither trained on their people and
    that both took the images as `prepare` (the params the prepared images were made with) makes them."""
    if b.params.pairs.val_keep >= 1 or a.params.pairs.mode != "unrestricted" or b.params.pairs.mode != "unrestricted":
        raise SystemExit(f"{a.name}:{b.name}: B needs pairs.val_keep < 1, both unrestricted")
    for e in (a, b):
        if e.params.prepare != prepare:
            raise SystemExit(f"{e.name}: trained on images prepared with {e.params.prepare}, but the prepared images "
                             f"given are {prepare} (params.yaml's): score it where they agree")
    b_tables, a_tables = b.tables(data), a.tables(data)
    seen = pairs_stage.identities(a_tables["train"]) | pairs_stage.identities(b_tables["train"])
    shared = seen & pairs_stage.identities(b_tables["val"])
    if shared:
        raise SystemExit(f"{a.name}:{b.name}: {len(shared)} of B's validation people are trained on "
                         f"(for example {sorted(shared)[0]}); B must keep a share of A's held-out people")
    write_table(tmp / f"{b.name}-val.tsv", b_tables["val"])
    val = load_pairs(tmp / f"{b.name}-val.tsv", rows)
    return auc(a.model, images, val), auc(b.model, images, val)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pairs", nargs="+", metavar="A:B", help="experiment names: A, and B run with pairs.val_keep < 1")
    parser.add_argument("--prepared", type=Path, default=ROOT / "data" / "prepared")
    parser.add_argument("--data", type=Path, default=ROOT / "data" / "lfw-a")
    args = parser.parse_args(argv)
    if any(p.count(":") != 1 for p in args.pairs):
        parser.error("each argument is A:B, two experiment names")
    images, rows = load_images(args.prepared)
    prepare = load_params(ROOT / "params.yaml").prepare
    gains = []
    with tempfile.TemporaryDirectory() as tmp:
        for item in args.pairs:
            a, b = (Experiment(n, Path(tmp)) for n in item.split(":"))
            a_auc, b_auc = compare(a, b, args.data, images, rows, Path(tmp), prepare)
            gains.append(b_auc - a_auc)
            print(f"{a.name} (seed {a.params.seed}) against {b.name} (seed {b.params.seed}, pairs.val_keep="
                  f"{b.params.pairs.val_keep}) on {b.name}'s validation pairs: AUC {a_auc:.5f} against {b_auc:.5f} "
                  f"({gains[-1]:+.5f})", flush=True)
    if len(gains) > 1:
        se = statistics.stdev(gains) / math.sqrt(len(gains))
        t = f", t {statistics.mean(gains) / se:.2f}" if se else ""
        print(f"B's gain over {len(gains)}: {statistics.mean(gains):+.5f} ± {se:.5f}{t}, "
              f"higher on {sum(g > 0 for g in gains)} of {len(gains)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
