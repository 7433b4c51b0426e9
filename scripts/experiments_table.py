"""Write docs/EXPERIMENTS.md from `dvc exp show --json`: one row per configuration, mean and spread over seeds.

    python scripts/experiments_table.py [--out docs/EXPERIMENTS.md] [--earlier REV ...]

Every number in the table comes from a DVC experiment's metrics files; the command that
reproduces each configuration is printed beside it.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from itertools import dropwhile, takewhile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline import files  # noqa: E402
from pipeline.params import RENAMED  # noqa: E402  old key -> new key, for experiments run before a rename

METRICS = {  # column -> (metrics file, key)
    "test acc": ("metrics/evaluate.json", "accuracy"),
    "test AUC": ("metrics/evaluate.json", "roc_auc"),
    "test EER": ("metrics/evaluate.json", "eer"),
    "val acc": ("metrics/calibrate.json", "val_accuracy"),
    "val AUC": ("metrics/calibrate.json", "val_roc_auc"),
    "best epoch": ("metrics/train.json", "best_epoch"),
}
# params added after experiments ran, whose committed value is not the behaviour from before they
# existed: an experiment without the key ran with this value (any other missing key: the baseline's)
BEFORE_ADDED = {"train.sampler": "pairs", "train.pool_first": False, "train.stem": "pool"}


def override(key: str, value, quote: bool = True) -> str:
    """`key=value` as `dvc exp run -S` takes it: a list without spaces, quoted for the shell; YAML's true/false."""
    if isinstance(value, bool):
        return f"{key}={str(value).lower()}"
    if isinstance(value, tuple):
        return ("'{}'" if quote else "{}").format(f"{key}=[{','.join(str(v) for v in value)}]")
    return f"{key}={value}"


def flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = tuple(v) if isinstance(v, list) else v  # hashable, to group rows by
    return out


def records(node, baseline=None):
    """(name, flat params, metrics) of every finished experiment in `dvc exp show --json`, and of the
    newest commit's own run; older commits appear only through their experiments."""
    if isinstance(node, list):
        commits = [n for n in node if isinstance(n, dict) and n.get("rev") != "workspace"]
        for k, item in enumerate(commits):
            yield from records(item, baseline="self" if k == 0 else "skip")
        return
    if not isinstance(node, dict):
        return
    data = node.get("data")
    if baseline == "skip":
        pass
    elif isinstance(data, dict) and "params" in data and not data.get("error"):
        params = flatten((data["params"].get("params.yaml") or {}).get("data") or {})
        params = {RENAMED.get(k, k): v for k, v in params.items()}
        metrics = {col: ((data.get("metrics") or {}).get(f) or {}).get("data", {}).get(k) for col, (f, k) in METRICS.items()}
        if metrics["test acc"] is not None:
            yield node.get("name") or node.get("rev", "")[:7], params, metrics
    for key in ("experiments", "revs"):
        for child in node.get(key) or []:
            state = (child.get("executor") or {}).get("state") if isinstance(child, dict) else None
            if state in (None, "success"):  # a running or queued experiment still shows its baseline's metrics
                yield from records(child)


def table(rows: list[tuple[str, dict, dict]]) -> str:
    base = {**BEFORE_ADDED, **rows[0][1]} if rows else {}
    # a param added after an experiment ran takes its BEFORE_ADDED value, else the baseline's: a new
    # param is added with a value that reproduces the behaviour from before it existed
    rows = [(name, {**base, **BEFORE_ADDED, **params}, metrics) for name, params, metrics in rows]
    varying = sorted({k for _, p, _ in rows for k in p if k != "seed" and any(q.get(k) != base.get(k) for _, q, _ in rows)})
    groups: dict[tuple, list] = {}
    for name, params, metrics in rows:
        members = groups.setdefault(tuple((k, params.get(k)) for k in varying), [])
        # a seed run again (a committed default that ran first as an experiment) counts once: the
        # first in `dvc exp show` order, the newest commit's own run before any experiment
        if all(seed != params.get("seed") for _, seed, _ in members):
            members.append((name, params.get("seed"), metrics))
    lines = ["| configuration | seeds | " + " | ".join(METRICS) + " | reproduce |", "|---" * (len(METRICS) + 3) + "|"]
    for config, members in groups.items():
        members.sort(key=lambda m: (m[1] is None, m[1] if m[1] is not None else 0))
        cells = []
        for col in METRICS:
            values = [m[col] for _, _, m in members if m[col] is not None]
            if not values:
                cells.append("")
            elif len(values) == 1:
                cells.append(f"{values[0]:.4f}" if isinstance(values[0], float) else str(values[0]))
            else:
                cells.append(f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}")
        label = ", ".join(override(k, v, quote=False) for k, v in config if v != base.get(k)) or "params.yaml as committed"
        seeds = ", ".join(str(s) for _, s, _ in members)
        sets = " ".join(f"-S {override(k, v)}" for k, v in config if v != base.get(k))
        cmd = " ; ".join(f"`dvc exp run {sets} -S seed={s}`".replace("  ", " ") for _, s, _ in members)
        lines.append(f"| {label} | {seeds} | " + " | ".join(cells) + f" | {cmd} |")
    return "\n".join(lines)


def earlier_table(rev: str) -> tuple[str, str]:
    """(short commit, table) this script wrote at commit `rev`, for experiments whose refs no longer
    exist (DVC keeps experiments as local git refs: a fresh clone or a lost machine has none of them)."""
    sha = subprocess.run(["git", "rev-parse", "--short", "--verify", f"{rev}^{{commit}}"], cwd=ROOT, capture_output=True, text=True)
    if sha.returncode != 0:
        raise SystemExit(f"--earlier {rev}: no such commit ({sha.stderr.strip()})")
    sha = sha.stdout.strip()
    shown = subprocess.run(["git", "show", f"{sha}:docs/EXPERIMENTS.md"], cwd=ROOT, capture_output=True, text=True)
    if shown.returncode != 0:
        raise SystemExit(f"--earlier {rev}: no docs/EXPERIMENTS.md at that commit ({shown.stderr.strip()})")
    # the commit's own table only: the first run of table lines (any "Earlier" tables after it were
    # copied from older commits and are copied again from those, under their own headings)
    rows = list(takewhile(lambda line: line.startswith("|"),
                          dropwhile(lambda line: not line.startswith("|"), shown.stdout.splitlines())))
    if not rows:
        raise SystemExit(f"--earlier {rev}: docs/EXPERIMENTS.md at that commit holds no table")
    return sha, "\n".join(rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "EXPERIMENTS.md")
    parser.add_argument("--num", type=int, default=5, help="also take the experiments of the last N commits")
    parser.add_argument("--json", type=Path, help="read this saved `dvc exp show --json` output instead of running it")
    parser.add_argument("--earlier", nargs="*", default=[], metavar="REV",
                        help="also copy the table generated at these commits (experiments run then, refs since lost)")
    args = parser.parse_args()
    raw = args.json.read_text() if args.json else subprocess.run(
        ["dvc", "exp", "show", "--json", "--num", str(args.num)], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    rows = list(records(json.loads(raw)))
    if not rows:
        print("no experiments with test metrics in `dvc exp show`", file=sys.stderr)
        return 1
    text = "\n".join([
        "# Experiments", "",
        "Generated by `python scripts/experiments_table.py` from `dvc exp show --json`; do not edit by hand.",
        "Mean ± standard deviation over the seeds listed. Every choice of configuration is made on the",
        "validation columns (held-out training identities); the test columns are the official 1,000",
        "pairsDevTest pairs, reported, never selected on. A param that did not exist yet when an",
        "experiment ran is shown at its default, which reproduces the code from before it existed.",
        "Rows that set `train.epochs` lower than committed are screening runs on a shorter budget: compare",
        "them with each other (the row that changes nothing else is their baseline), not with the full runs.", "",
        table(rows), ""])
    for rev in args.earlier:
        sha, earlier = earlier_table(rev)
        text += "\n".join([
            "", f"## Earlier: the table as generated at commit {sha}", "",
            f"These experiments ran on the code and `params.yaml` of commit {sha}. Their DVC experiment refs",
            "are local to the machine that ran them, and a commit's own run is read only while it is the",
            f"newest, so the rows are copied from the table this script wrote then (`git show {sha}:docs/EXPERIMENTS.md`).",
            f"\"params.yaml as committed\" means that commit's params; reproduce a row with `git checkout {sha}`",
            "and its command.", "",
            earlier, ""])
    files.write_text(args.out, text)
    print(f"{len(rows)} runs written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
