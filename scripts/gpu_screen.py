"""Screen training variants on a CUDA GPU: many short trainings of params overrides, several at once.

    python scripts/gpu_screen.py pack [--prepared data/prepared] [--pairs data/pairs] [--out .gpu]
    python scripts/gpu_screen.py run [--config NAME KEY=VALUE ...] ... [--seeds 0 1 2 3 4 5] [--workers 8]
                                     [--launch-until 400] [--stop-at 470] [--bundle .gpu] [--params params.yaml]
                                     [--results results.json]
    python scripts/gpu_screen.py summary RESULTS.json

`pack` (here, after `dvc repro`) writes the prepared images that the training and validation pairs use,
each row delta-coded and xz-compressed (View 1: 8,387 images of 80x80 in about 35 MiB), and those two tables
into a folder to carry to the device machine: the archive and the prepared images are over the 64 MiB
it takes. `run` (there) unpacks them and calls the train stage (`python -m pipeline.train`, without MLflow
or DVC) once for each configuration and seed: `base` (params.yaml as it is) and every `--config`, whose
KEY=VALUE overrides are read as YAML like `dvc exp run -S`. Runs go seed by seed, so a screen stopped
at `--launch-until` seconds (running ones killed at `--stop-at`) still pairs each configuration with
`base` on the seeds it reached. It prints each run's best validation AUC and then, per configuration,
the mean, the difference with `base` paired by seed (mean and standard error) and the seeds it won;
`--results` (default `$OUT/results.json` where OUT is set) keeps every run with its epoch history;
`summary` prints that table again from such a file (docs/gpu_screen.json holds a screen's runs).

Every seed trains on the packed training pairs: a seed changes the initial weights, the batches and
the augmentation. A GPU trains other weights than a CPU does, so a screen says what to run on the
CPU (`dvc exp run -S ...`), and the pipeline's figures come from there.
"""
from __future__ import annotations

import argparse
import json
import lzma
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline import files  # noqa: E402
from pipeline.params import ParamsError, load_params, set_dotted  # noqa: E402
from pipeline.tables import read_table  # noqa: E402

TABLES = ("train.tsv", "val.tsv")


def pack(prepared: Path, pairs: Path, out: Path) -> int:
    """Write the images the pair tables name (row-wise deltas, xz), their index and the tables; the image count."""
    need = {(n, i) for table in TABLES for n1, i1, n2, i2, _ in read_table(pairs / table) for n, i in ((n1, i1), (n2, i2))}
    index = [line.split("\t") for line in (prepared / "index.tsv").read_text().splitlines()]
    keep = [k for k, (name, number) in enumerate(index) if (name, int(number)) in need]
    images = np.load(prepared / "images.npy", mmap_mode="r")[keep]  # (N, H, W) uint8
    delta = np.diff(images.astype(np.int16), axis=-1, prepend=0).astype(np.uint8)  # neighbours differ little
    out.mkdir(parents=True, exist_ok=True)
    with files.atomic_path(out / "images.xz") as tmp:
        tmp.write_bytes(lzma.compress(delta.tobytes()))
    files.write_text(out / "shape.txt", " ".join(map(str, images.shape)))
    files.write_text(out / "index.tsv", "".join(f"{index[k][0]}\t{index[k][1]}\n" for k in keep))
    for table in TABLES:
        shutil.copyfile(pairs / table, out / table)
    return len(keep)


def unpack(bundle: Path, dest: Path) -> tuple[Path, Path]:
    """The bundle as the train stage reads it: (prepared folder, pairs folder) under `dest`."""
    shape = tuple(int(x) for x in (bundle / "shape.txt").read_text().split())
    delta = np.frombuffer(lzma.decompress((bundle / "images.xz").read_bytes()), np.uint8).reshape(shape)
    prepared, pairs = dest / "prepared", dest / "pairs"
    prepared.mkdir(parents=True, exist_ok=True)
    pairs.mkdir(parents=True, exist_ok=True)
    np.save(prepared / "images.npy", np.cumsum(delta, axis=-1, dtype=np.uint8))  # uint8 sums wrap back
    shutil.copyfile(bundle / "index.tsv", prepared / "index.tsv")
    for table in TABLES:
        shutil.copyfile(bundle / table, pairs / table)
    return prepared, pairs


def parse_configs(specs: list[list[str]] | None) -> dict[str, dict]:
    """{'base': {}, NAME: {dotted key: value}} from `--config NAME KEY=VALUE ...` lists."""
    configs: dict[str, dict] = {"base": {}}
    for name, *pairs in specs or []:
        if name in configs:
            raise SystemExit(f"--config {name}: named twice")
        bad = [p for p in pairs if "=" not in p]
        if bad or not pairs:
            raise SystemExit(f"--config {name}: expected KEY=VALUE overrides, got {bad or 'none'}")
        configs[name] = {k: yaml.safe_load(v) for k, v in (p.split("=", 1) for p in pairs)}
        if "seed" in configs[name]:
            raise SystemExit(f"--config {name}: seed is set by --seeds, so that runs pair by seed")
    return configs


def with_overrides(params: dict, overrides: dict, seed: int) -> dict:
    """A copy of the params mapping with `seed` and the dotted overrides set; an unknown key is an error."""
    p = json.loads(json.dumps(params))
    p["seed"] = seed
    for key, value in overrides.items():
        try:
            set_dotted(p, key, value)
        except ParamsError as e:
            raise SystemExit(str(e)) from None
    return p


def summary(results: list[dict], configs: dict[str, dict]) -> list[str]:
    """A line per configuration: runs, mean AUC, the paired difference with `base` (mean, SE), seeds won."""
    lines = [f"{'config':<16} runs  mean AUC  vs base (paired)   won"]
    base = {r["seed"]: r["val_auc"] for r in results if r["config"] == "base"}
    for name in configs:
        auc = {r["seed"]: r["val_auc"] for r in results if r["config"] == name}
        if not auc:
            continue
        diffs = [auc[s] - base[s] for s in sorted(set(auc) & set(base))]
        se = statistics.stdev(diffs) / len(diffs) ** 0.5 if len(diffs) > 1 else float("nan")
        paired = f"{statistics.mean(diffs):+.5f} ± {se:.5f}" if diffs else "no common seed"
        lines.append(f"{name:<16} {len(auc):>4}  {statistics.mean(auc.values()):.5f}  {paired:<17}  "
                     f"{sum(d > 0 for d in diffs)}/{len(diffs)}")
    return lines


def screen(args: argparse.Namespace) -> list[dict]:
    t0 = time.monotonic()
    work = Path(args.work)
    prepared, pairs = unpack(Path(args.bundle), work)
    configs = parse_configs(args.config)
    params = yaml.safe_load(Path(args.params).read_text())
    runs = work / "runs"
    runs.mkdir(exist_ok=True)
    jobs = [(name, seed) for seed in args.seeds for name in configs]
    for name, seed in jobs:  # every override checked, key and value, before anything trains
        path = runs / f"{name}_s{seed}.yaml"
        files.write_text(path, yaml.safe_dump(with_overrides(params, configs[name], seed)))
        try:
            load_params(path)
        except ParamsError as e:
            raise SystemExit(f"--config {name}: {e}") from None
    env = {**os.environ, "FACEVERIFY_TRACKING": "off", "PYTHONPATH": str(ROOT)}
    results: list[dict] = []
    running: dict[tuple[str, int], tuple[subprocess.Popen, float]] = {}
    print(f"{len(jobs)} runs, {args.workers} at once; data ready in {time.monotonic() - t0:.1f}s", flush=True)
    try:
        _loop(args, t0, jobs, running, results, configs, prepared, pairs, runs, env)
    finally:  # interrupted or failed: no training outlives the screen
        for proc, _ in running.values():
            proc.kill()
    print("\n".join(["", *summary(results, configs)]))
    return results


def _loop(args, t0, jobs, running, results, configs, prepared, pairs, runs, env) -> None:
    """Start runs while there is room and time, collect the finished ones, kill the rest at --stop-at."""
    while jobs or running:
        now = time.monotonic() - t0
        while jobs and len(running) < args.workers and now < args.launch_until:
            name, seed = jobs.pop(0)
            tag = runs / f"{name}_s{seed}"
            cmd = [sys.executable, "-m", "pipeline.train", "--params", f"{tag}.yaml", "--prepared", str(prepared),
                   "--pairs", str(pairs), "--model", f"{tag}.pt", "--metrics", f"{tag}.json", "--plot", f"{tag}.csv",
                   "--resume", f"{tag}.resume.pt"]
            with open(f"{tag}.log", "w") as log:
                running[name, seed] = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT), time.monotonic()
        if now >= args.launch_until and jobs:
            print(f"[{now:.0f}s] --launch-until reached: {len(jobs)} runs not started", flush=True)
            jobs = []
        for (name, seed), (proc, started) in list(running.items()):
            if proc.poll() is None:
                if now > args.stop_at:
                    proc.kill()
                continue
            del running[name, seed]
            tag = runs / f"{name}_s{seed}"
            if now > args.stop_at and proc.returncode < 0:
                print(f"[{now:.0f}s] {name} seed {seed}: stopped at --stop-at", flush=True)
                continue
            if proc.returncode:
                print(f"[{now:.0f}s] {name} seed {seed} failed (exit {proc.returncode}):\n"
                      + Path(f"{tag}.log").read_text()[-2000:], flush=True)
                continue
            m = json.loads(Path(f"{tag}.json").read_text())
            results.append({"config": name, "overrides": configs[name], "seed": seed, "val_auc": m["best_val_auc"],
                            "best_epoch": m["best_epoch"], "device": m["device"], "precision": m["precision"],
                            "seconds": round(time.monotonic() - started, 1), "history": Path(f"{tag}.csv").read_text()})
            print(f"[{now:.0f}s] {name} seed {seed}: val AUC {m['best_val_auc']:.5f}", flush=True)
            if args.results:
                files.write_text(Path(args.results), json.dumps(results, indent=1))
        time.sleep(0.2)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    pk = sub.add_parser("pack", help="here: the images and pair tables to carry")
    pk.add_argument("--prepared", type=Path, default=ROOT / "data" / "prepared")
    pk.add_argument("--pairs", type=Path, default=ROOT / "data" / "pairs")
    pk.add_argument("--out", type=Path, default=ROOT / ".gpu")
    run = sub.add_parser("run", help="on the GPU machine: train each configuration over the seeds")
    run.add_argument("--config", nargs="+", action="append", metavar="NAME KEY=VALUE")
    run.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4, 5])
    run.add_argument("--workers", type=int, default=8, help="trainings at once")
    run.add_argument("--launch-until", type=float, default=400, help="seconds after which no run starts")
    run.add_argument("--stop-at", type=float, default=470, help="seconds after which running ones are killed")
    run.add_argument("--bundle", default=str(ROOT / ".gpu"))
    run.add_argument("--params", default=str(ROOT / "params.yaml"))
    run.add_argument("--work", default="/tmp/gpu_screen", help="where the data unpacks and the runs write")
    run.add_argument("--results", default=os.path.join(os.environ["OUT"], "results.json") if os.environ.get("OUT") else None)
    sm = sub.add_parser("summary", help="the paired table of a results file")
    sm.add_argument("results", type=Path)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command == "pack":
        n = pack(args.prepared, args.pairs, args.out)
        size = sum(f.stat().st_size for f in args.out.iterdir()) / 2 ** 20
        print(f"{n} images and the training and validation pairs in {args.out} ({size:.1f} MiB)")
        return 0
    if args.command == "summary":
        data = json.loads(args.results.read_text())
        runs = data["runs"] if isinstance(data, dict) else data
        configs = dict.fromkeys(["base", *(r["config"] for r in runs)])
        print("\n".join(summary(runs, configs)))
        return 0
    return 0 if screen(args) else 1


if __name__ == "__main__":
    sys.exit(main())
