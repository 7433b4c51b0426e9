"""Experiment results as data (docs/experiments.json), and the tables generated from them.

    python scripts/experiments_table.py            # write docs/EXPERIMENTS.md and the README's results block
    python scripts/experiments_table.py --record   # first add the finished DVC experiments to docs/experiments.json
    python scripts/experiments_table.py --seed-spread  # how much validation and test AUC move from seed to seed
    python scripts/experiments_table.py --paired train.margin=1.0  # params.yaml against that change, seed by seed

docs/experiments.json holds one record per configuration: the commit whose code and params.yaml
it ran on, its absolute params (`params`, the seed left out) and the `-S` overrides that set them
on that commit (`overrides`), the seeds, and the mean and standard deviation of each metric over
them; records added by `--record` also keep each seed's values (`runs`). docs/EXPERIMENTS.md shows
every record, plus any finished experiment in `dvc exp show` not recorded yet (without DVC, or
with no experiments, it is written from the JSON alone). The README's block between
`<!-- results:start -->` and `<!-- results:end -->` is written from docs/experiments.json and the
committed metrics files only, so tests/test_readme.py can regenerate it and compare.

`--record` records experiments (`dvc exp run`), not a commit's own run: that is the `dvc repro`
behind its dvc.lock (possibly written at an older commit), which the README shows from metrics/*.json.
`--import-markdown 5a11521` built docs/experiments.json once from the tables docs/EXPERIMENTS.md held
at that commit (their DVC experiment refs were local to the machines that ran them).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import re
import statistics
import subprocess
import sys
from itertools import dropwhile, takewhile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline import files  # noqa: E402
from pipeline.card import CATEGORIES  # noqa: E402
from pipeline.params import PairsParams  # noqa: E402
from pipeline.registry import NOT_VALIDATION  # noqa: E402

try:  # old key -> new key, for experiments run before a rename
    from pipeline.params import RENAMED  # noqa: E402
except ImportError:  # pragma: no cover - the params module moved
    RENAMED = {"prepare.size": "prepare.image_size"}

DATA = ROOT / "docs" / "experiments.json"
OUT = ROOT / "docs" / "EXPERIMENTS.md"
README = ROOT / "README.md"
START, END = "<!-- results:start -->", "<!-- results:end -->"

METRICS = {  # column -> (metrics file, key)
    "test acc": ("metrics/evaluate.json", "accuracy"),
    "test AUC": ("metrics/evaluate.json", "roc_auc"),
    "test EER": ("metrics/evaluate.json", "eer"),
    "val acc": ("metrics/calibrate.json", "val_accuracy"),
    "val AUC": ("metrics/calibrate.json", "val_roc_auc"),
    "best epoch": ("metrics/train.json", "best_epoch"),
}
IDS = {col: f"{Path(f).stem}.{k}" for col, (f, k) in METRICS.items()}  # column -> key in docs/experiments.json
# params added after experiments ran: an experiment without the key ran with this value (any other
# missing key: the baseline's). Needed wherever the committed value is not the behaviour from before the
# key existed, or may stop being it (train.stage_convs: a default other than [2, 2, 2] must not match
# the records from before it)
BEFORE_ADDED = {"train.sampler": "pairs", "train.pool_first": False, "train.stem": "pool", "train.pos_margin": 0.0,
                "pairs.protocol": "view1", "pairs.fold": 1, "train.ema": 0.0, "train.stage_convs": (2, 2, 2),
                "train.tta_shift": 0, "train.identity_weight": "equal", "train.memory": 0, "train.neg_weight": 1.0,
                "train.neg_hardness": 0.0, "train.se_reduction": 0, "train.id_weight": 0.0,
                "train.id_scale": 16.0, "train.identity_images": "table",
                "train.neighbours": 0, "prepare.equalize": False, "pairs.val_keep": 1.0,
                "train.negatives": "classes"}
# params taken out of params.yaml, at the value the code runs without them (ea681be has their code)
TAKEN_OUT = {"train.arch": "compact", "train.pool_first": False, "train.stem": "stride", "train.normalize": True,
             "train.dropout": 0.0, "train.memory": 0, "train.identity_fraction": 1.0, "train.identity_images": "all",
             "train.identity_weight": "linear", "train.schedule": "cosine", "train.min_delta": 0.001, "train.threads": 0,
             "train.augment.max_contrast": 0.0, "train.augment.max_brightness": 0.0, "train.augment.erase": 0.0,
             "pairs.val_keep": 1.0, "download.verify_protocol_md5": True, "download.timeout_s": 60, "download.retries": 3}
# the restricted-mode protocol runs: its 2,200 official pairs make an epoch short, so it runs more of them;
# [1, 2, 1] is its network (lower on validation with the unrestricted default's [1, 1, 1]: docs/DECISIONS.md)
RESTRICTED = {"pairs.mode": "restricted", "pairs.val_fraction": 0.1, "train.epochs": 60, "train.patience": 15,
              "train.warmup_epochs": 3, "train.stage_convs": [1, 2, 1]}
RESTRICTED_UNREAD = {"pairs.n_train_pairs", "pairs.n_val_pairs", "pairs.val_keep", "train.identity_images"}  # unrestricted only
RESTRICTED_FREE = set(RESTRICTED) | RESTRICTED_UNREAD  # not read, or set, in restricted mode
README_SEEDS = (0, 1, 2)
# params that move the validation pairs, as pipeline.registry.val_pairs_key keys them: a paired comparison holds them
VALIDATION_KEYS = {f"pairs.{f.name}" for f in dataclasses.fields(PairsParams) if f.name not in NOT_VALIDATION}
# used by --import-markdown only: rows whose numbers no longer describe the code
SUPERSEDED = {("pairs.mode", "restricted"): "restricted mode learned from person names (bug fixed in issue #28)"}


# --- params ----------------------------------------------------------------------------------

def override(key: str, value, quote: bool = True) -> str:
    """`key=value` as `dvc exp run -S` takes it: a list without spaces, quoted for the shell; YAML's true/false."""
    if isinstance(value, bool):
        return f"{key}={str(value).lower()}"
    if isinstance(value, (tuple, list)):
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


def plain(params: dict) -> dict:
    """Flat params as JSON holds them: today's key names, lists (not tuples)."""
    return {RENAMED.get(k, k): list(v) if isinstance(v, tuple) else v for k, v in params.items()}


def same(a, b) -> bool:
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def params_file(path: Path = ROOT / "params.yaml") -> dict:
    return plain(flatten(yaml.safe_load(Path(path).read_text())))


def git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout


def committed_params(rev: str) -> dict:
    return plain(flatten(yaml.safe_load(git("show", f"{rev}:params.yaml"))))


def filled(params: dict, current: bool = False) -> dict:
    """A record's params with the params added since at the value that reproduces the code before them;
    params.yaml's (`current`) also with the params taken out since at the value the code now runs."""
    return {**BEFORE_ADDED, **(TAKEN_OUT if current else {}), **params}


# --- `dvc exp show --json` -------------------------------------------------------------------

def _node_params(data) -> dict | None:
    if isinstance(data, dict) and "params" in data and not data.get("error"):
        return plain(flatten((data["params"].get("params.yaml") or {}).get("data") or {}))
    return None


def _metrics_file(data, f: str) -> dict:
    """One metrics file's values in a `dvc exp show --json` node's data ({} where it has none)."""
    return ((data.get("metrics") or {}).get(f) or {}).get("data") or {}


def _node_metrics(data) -> dict:
    return {IDS[col]: _metrics_file(data, f).get(k) for col, (f, k) in METRICS.items()}


def _node_trained(data) -> str | None:
    """'bf16 on AMD EPYC': the precision and device of a run's training (metrics/train.json), where it says."""
    train = _metrics_file(data, "metrics/train.json")
    return f"{train['precision']} on {train['device']}" if train.get("precision") and train.get("device") else None


def _walk(node, baseline, commit, commit_params):
    if not isinstance(node, dict):
        return
    data = node.get("data")
    params = _node_params(data)
    if baseline != "skip" and params is not None:
        metrics = _node_metrics(data)
        if metrics[IDS["test acc"]] is not None and params.get("pairs.protocol") != "view2":  # scripts/view2.py's
            seed = params.pop("seed", None)
            base = {k: v for k, v in (commit_params or {}).items() if k != "seed"}
            overrides = {k: v for k, v in params.items() if k not in base or not same(v, base[k])}
            run = {"commit": commit, "name": node.get("name") or node.get("rev", "")[:7], "seed": seed,
                   "params": params, "overrides": overrides, "metrics": metrics}
            trained = _node_trained(data)
            yield {**run, "trained": trained} if trained else run
    for key in ("experiments", "revs"):
        for child in node.get(key) or []:
            state = (child.get("executor") or {}).get("state") if isinstance(child, dict) else None
            if state in (None, "success"):  # a running or queued experiment still shows its baseline's metrics
                yield from _walk(child, None, commit, commit_params)


def live_runs(shown, own_run: bool = False) -> list[dict]:
    """Every finished experiment in `dvc exp show --json` output, of every commit listed, as {commit,
    name, seed, params, overrides, metrics, and trained where metrics/train.json says}. A commit's
    own run (the metrics committed with its dvc.lock, which an older commit may have written) is not
    an experiment of that commit: the README shows it from metrics/*.json. `own_run` also yields the
    newest commit's, for `records`."""
    nodes = shown if isinstance(shown, list) else [shown]
    commits = [n for n in nodes if isinstance(n, dict) and n.get("rev") != "workspace"]
    out = []
    for k, node in enumerate(commits):
        rev = node.get("rev", "")
        commit = rev[:7]
        params = _node_params(node.get("data"))
        if params is None and isinstance(shown, list):
            try:
                params = committed_params(rev)
            except subprocess.CalledProcessError:
                params = None
        out += _walk(node, "self" if k == 0 and own_run else "skip", commit, params)
    return out


def records(node, baseline=None):
    """(name, flat params with the seed, metrics by column) of every finished run in `dvc exp show
    --json`: the shape `table` reads."""
    shown = node if isinstance(node, list) else [node]
    del baseline
    for run in live_runs(shown, own_run=True):
        params = {**run["params"], "seed": run["seed"]}
        params = {k: tuple(v) if isinstance(v, list) else v for k, v in params.items()}
        yield run["name"], params, {col: run["metrics"][IDS[col]] for col in METRICS}


def table(rows: list[tuple[str, dict, dict]]) -> str:
    """The former table, rows labelled by their difference from the first row (kept for callers of
    the old layout; docs/EXPERIMENTS.md is now written by `experiments_md`)."""
    base = {**BEFORE_ADDED, **rows[0][1]} if rows else {}
    rows = [(name, {**base, **BEFORE_ADDED, **params}, metrics) for name, params, metrics in rows]
    varying = sorted({k for _, p, _ in rows for k in p if k != "seed" and any(q.get(k) != base.get(k) for _, q, _ in rows)})
    groups: dict[tuple, list] = {}
    for name, params, metrics in rows:
        members = groups.setdefault(tuple((k, params.get(k)) for k in varying), [])
        if all(seed != params.get("seed") for _, seed, _ in members):
            members.append((name, params.get("seed"), metrics))
    lines = ["| configuration | seeds | " + " | ".join(METRICS) + " | reproduce |", "|---" * (len(METRICS) + 3) + "|"]
    for config, members in groups.items():
        members.sort(key=lambda m: (m[1] is None, m[1] if m[1] is not None else 0))
        cells = [cell(_aggregate([m[col] for _, _, m in members if m[col] is not None])) for col in METRICS]
        label = ", ".join(override(k, v, quote=False) for k, v in config if v != base.get(k)) or "params.yaml as committed"
        seeds = ", ".join(str(s) for _, s, _ in members)
        sets = " ".join(f"-S {override(k, v)}" for k, v in config if v != base.get(k))
        cmd = " ; ".join(f"`dvc exp run {sets} -S seed={s}`".replace("  ", " ") for _, s, _ in members)
        lines.append(f"| {label} | {seeds} | " + " | ".join(cells) + f" | {cmd} |")
    return "\n".join(lines)


# --- records ---------------------------------------------------------------------------------

def _aggregate(values: list) -> dict | None:
    if not values:
        return None
    if len(values) == 1:
        return {"mean": values[0], "sd": None}
    return {"mean": statistics.mean(values), "sd": statistics.stdev(values)}


def cell(value: dict | None) -> str:
    """A metric as the tables print it: mean ± sd to four decimals; one seed's value alone."""
    if value is None:
        return ""
    mean, sd = value["mean"], value.get("sd")
    if sd is None:
        return f"{mean:.4f}" if isinstance(mean, float) else str(mean)
    return f"{mean:.4f} ± {sd:.4f}"


def _recompute(rec: dict) -> None:
    rec["runs"].sort(key=lambda r: (r["seed"] is None, r["seed"] if r["seed"] is not None else 0))
    rec["seeds"] = [r["seed"] for r in rec["runs"]]
    rec["metrics"] = {i: _aggregate([r["metrics"][i] for r in rec["runs"] if r["metrics"].get(i) is not None])
                      for i in IDS.values()}


def merge(recs: list[dict], runs: list[dict]) -> tuple[list[dict], int]:
    """`recs` with the per-seed `runs` added: a run joins the record of the same commit and params
    (a seed already there counts once: the one recorded first, unless it is the same experiment
    again), else starts a new record. Returns (records, runs added or updated)."""
    recs = [dict(r) for r in recs]
    changed = 0
    for run in runs:
        entry = {"seed": run["seed"], "name": run["name"], "metrics": run["metrics"]}
        if run.get("trained"):
            entry["trained"] = run["trained"]
        rec = next((r for r in recs if r["commit"] == run["commit"] and same(r["params"], run["params"])
                    and (r.get("runs") is not None or run["seed"] in r["seeds"])), None)
        if rec is not None and rec.get("runs") is None:
            continue  # imported mean over seeds that include this one
        if rec is None:
            rec = {"commit": run["commit"], "params": run["params"], "overrides": run["overrides"], "seeds": [],
                   "metrics": {}, "runs": [], "source": "dvc exp show --json (per seed)"}
            recs.append(rec)
        rec["runs"] = list(rec["runs"])
        old = next((r for r in rec["runs"] if r["seed"] == run["seed"]), None)
        if old is not None and old["name"] != run["name"]:
            continue
        if old is not None and same(old, entry):
            continue
        rec["runs"] = [r for r in rec["runs"] if r is not old] + [entry]
        _recompute(rec)
        rec["_unrecorded"] = True  # shown as such until saved
        changed += 1
    return recs, changed


def recorded(recs: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if not k.startswith("_")} for r in recs]


def load(path: Path = DATA) -> list[dict]:
    return json.loads(Path(path).read_text(encoding="utf-8")) if Path(path).exists() else []


def save(recs: list[dict], path: Path = DATA) -> None:
    files.write_text(path, json.dumps(recs, indent=1, ensure_ascii=False) + "\n")


# --- docs/EXPERIMENTS.md ---------------------------------------------------------------------

_MISSING = object()


def value_text(value) -> str:
    """A param's value as `-S` and YAML write it; `–` for a param that did not exist."""
    if value is _MISSING:
        return "–"
    return override("k", value, quote=False)[2:]


def short_names(keys: list[str]) -> dict[str, str]:
    """Each dotted key by its shortest unambiguous tail: train.width -> width, train.augment.flip -> flip."""
    names = {}
    for key in keys:
        parts = key.split(".")
        for n in range(1, len(parts) + 1):
            tail = ".".join(parts[-n:])
            if all(other == key or not (other == tail or other.endswith("." + tail)) for other in keys):
                names[key] = tail
                break
    return names


def _key_order(recs: list[dict]) -> list[str]:
    """Every key, in params.yaml's order (the newest record's first, then older keys, then BEFORE_ADDED)."""
    keys = [k for rec in reversed(recs) for k in rec["params"]] + list(BEFORE_ADDED)
    return list(dict.fromkeys(keys))


def _varying(recs: list[dict], keys: list[str]) -> list[str]:
    return [k for k in keys if len({json.dumps(filled(r["params"]).get(k, "\0missing")) for r in recs}) > 1]


def _config(rec: dict, keys: list[str], names: dict[str, str]) -> str:
    p = filled(rec["params"])
    return ", ".join(f"{names[k]}={value_text(p.get(k, _MISSING))}" for k in keys)


def _rows(recs: list[dict], keys: list[str], names: dict[str, str], commit_column: bool = False) -> list[str]:
    head = (["commit"] if commit_column else []) + ["configuration", "LFW category", "seeds", *METRICS, "trained in"]
    lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for rec in recs:
        trained = ", ".join(dict.fromkeys(r["trained"] for r in rec.get("runs") or [] if r.get("trained")))
        config = _config(rec, keys, names) or "(the params above)"
        if rec.get("_unrecorded"):
            config += " (not in docs/experiments.json yet: `--record`)"
        seeds = ", ".join(str(s) for s in rec["seeds"])
        cells = [cell(rec["metrics"].get(IDS[col])) for col in METRICS]
        category = ("none (an unlabelled in-batch assumption)" if rec.get("superseded") and "restricted" in rec["superseded"]
                    else CATEGORIES[rec["params"].get("pairs.mode", "unrestricted")])
        lines.append("| " + " | ".join(([rec["commit"]] if commit_column else []) + [config, category, seeds, *cells, trained])
                     + " |")
    return lines


def experiments_md(recs: list[dict]) -> str:
    keys = _key_order(recs)
    varying = _varying(recs, keys)
    names = short_names(varying)
    lines = [
        "# Experiments", "",
        "Generated by `python scripts/experiments_table.py` from docs/experiments.json; do not edit by hand.",
        "Each row is one configuration over the seeds listed: the mean ± standard deviation of each metric",
        "(one seed: its value). Configurations are chosen on the validation columns (held-out training",
        "identities, `metrics/calibrate.json`); the test columns are the official 1,000 pairsDevTest pairs",
        "(`metrics/evaluate.json`), reported (docs/DECISIONS.md names the few decisions a test figure took",
        "part in). Each row names its LFW category. Rows are grouped by the commit whose code",
        "and `params.yaml` they ran on and named by the absolute values of the params that differ between",
        "rows: those that differ within a commit in the configuration column, the rest on the line above",
        "its table. A param is named by the end of its key (`width` is `train.width`); `–` means it did not",
        "exist at that commit. Every param not shown has one value in every row, and docs/experiments.json",
        "holds each row's full params. To rerun a row: `git checkout <commit>`, `dvc exp run` with `-S` for",
        "each of the row's `overrides` (docs/experiments.json) and `-S seed=N` for each seed, then",
        "`python scripts/experiments_table.py --record`. The rows without per-seed values were imported from",
        "the tables this file held before (mean and standard deviation as printed then); a set of runs",
        "that those tables listed under several commits is listed once, under the oldest. The last column",
        "says what the runs trained in and on (`metrics/train.json`), where recorded: a commit's run gives",
        "the same numbers bit for bit on the same CPU class and within seed noise on another.",
    ]
    current = [r for r in recs if not r.get("superseded")]
    commits = list(dict.fromkeys(r["commit"] for r in current))
    for commit in reversed(commits):
        rows = [r for r in current if r["commit"] == commit]
        within = _varying(rows, varying) if len(rows) > 1 else []
        common = [k for k in varying if k not in within]
        lines += ["", f"## Commit {commit}", ""]
        if common:
            lines += ["Every row: " + _config(rows[0], common, names) + ".", ""]
        lines += _rows(rows, within, names)
    old = [r for r in recs if r.get("superseded")]
    if old:
        within = _varying(old, varying) if len(old) > 1 else []
        common = [k for k in varying if k not in within]
        reasons = list(dict.fromkeys(r["superseded"] for r in old))
        lines += ["", "## Superseded", "",
                  "These rows no longer describe the code: " + "; ".join(reasons) + ". They are kept as data, not compared.", ""]
        if common:
            lines += ["Every row: " + _config(old[0], common, names) + ".", ""]
        lines += _rows(old, within, names, commit_column=True)
    return "\n".join(lines) + "\n"


# --- the README's results block --------------------------------------------------------------

def _same_value(a, b) -> bool:
    """Equal params: numbers as numbers (a record keeps params.yaml's spelling, 60 for the float 60.0)."""
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (a, b)):
        return float(a) == float(b)
    return same(a, b)


def _agrees(params: dict, current: dict, free=frozenset()) -> bool:
    p, current = filled(params), filled(current, current=True)
    return all(_same_value(p[k], current[k]) for k in p.keys() & current.keys() if k not in free and k != "seed")


def _best(candidates: list[tuple[int, dict]]) -> dict | None:
    """The record over the most seeds, the newest of those."""
    return max(candidates, key=lambda c: (len(c[1]["seeds"]), c[0]))[1] if candidates else None


def headline_records(recs: list[dict], current: dict) -> tuple[dict | None, dict | None]:
    """(the committed params' record, the restricted protocol's record of the same network and
    training), each the one over the most seeds, the newest of those; superseded records never."""
    live = [(i, r) for i, r in enumerate(recs) if not r.get("superseded")]
    default = _best([(i, r) for i, r in live if _agrees(r["params"], current)])
    if current.get("pairs.mode") == "restricted":
        return default, None
    restricted = _best([(i, r) for i, r in live if _agrees(r["params"], {**current, **RESTRICTED}, RESTRICTED_UNREAD)])
    return default, restricted


def changed(params: dict, current: dict, free=frozenset()) -> dict:
    """The params of a record that differ from `current` (sorted by key), `free` keys and the seed aside."""
    p, current = filled(params), filled(current, current=True)
    return {k: p[k] for k in sorted(p.keys() & current.keys())
            if k not in free and k != "seed" and not _same_value(p[k], current[k])}


def settable(changes: dict, params: dict) -> dict:
    """The `changes` a `-S` can set at the record's own commit: keys its params hold (a key added to
    params.yaml after it ran is in `changes` through `filled` but unknown to that commit)."""
    return {k: v for k, v in changes.items() if k in params}


def earlier_record(recs: list[dict], current: dict, protocol: dict) -> tuple[dict | None, dict]:
    """(the record over the most seeds, the newest of those, of the protocol `protocol` with other
    params than `current`; the params it changes beyond the protocol's), for a row with no current record."""
    live = [(i, r) for i, r in enumerate(recs) if not r.get("superseded")
            and all(_same_value(r["params"].get(k), v) for k, v in protocol.items())]
    rec = _best(live)
    return (rec, changed(rec["params"], current, RESTRICTED_FREE)) if rec else (None, {})


def _command(overrides: dict, seeds) -> str:
    sets = " ".join(f"-S {override(k, v)}" for k, v in overrides.items() if k != "seed")
    cmd = f"`dvc exp run {sets} -S seed=N`".replace("run  -S", "run -S")
    return f"{cmd} for N = {', '.join(str(s) for s in seeds)}"


def view2_row(view2: list[dict], current: dict, protocol: dict | None = None) -> tuple[str, str]:
    """(a README LFW View 2 row, how it came) from docs/view2.json: the record of the committed params
    (with `protocol`'s overrides, for the restricted protocol's row) over the most folds, of the committed
    seed before another, the newest of those; else that of other params in the same mode, labelled with
    the overrides that give them; an empty row where neither exists."""
    protocol = protocol or {}
    want = {**current, **protocol}
    mode = want.get("pairs.mode", "unrestricted")
    label = (f"restricted recipe, **LFW View 2** ({CATEGORIES[mode]})" if protocol else
             f"`params.yaml`, **LFW View 2** ({CATEGORIES[mode]})")
    free = {"pairs.protocol", "pairs.fold"} | (RESTRICTED_UNREAD if mode == "restricted" else set())
    view2 = [r for r in view2 if not r.get("superseded")]
    live = [(i, r) for i, r in enumerate(view2) if _agrees(r["params"], want, free)]
    other = not live
    if other:  # the last View 2 of this mode, run with other params
        live = [(i, r) for i, r in enumerate(view2) if filled(r["params"]).get("pairs.mode", "unrestricted") == mode]
    # over the most folds; then of the committed seed (another seed of the same params is a second sample,
    # not a newer result); then the newest
    rec = max(live, key=lambda c: (len(c[1]["folds"]), _same_value(c[1]["params"].get("seed", 0), want.get("seed", 0)),
                                   c[0]))[1] if live else None
    changes = changed(rec["params"], want, free) if rec is not None and other else {}
    if changes:
        label = f"**LFW View 2**, other params (below) ({CATEGORIES[mode]})"
    # the command at the record's commit: a record of the current params, its own overrides there (it may have
    # run with -S at a commit whose params.yaml differed); another's, the changes that commit knows
    given = dict(protocol)
    if rec is not None:
        given.update(settable(changes, rec["params"]) if other else rec.get("overrides") or {})
    sets = "".join(f" -S {override(k, v)}" for k, v in given.items())
    cmd = f"`python scripts/view2.py run{sets}`"
    name = f"LFW View 2 ({mode})" if protocol else "LFW View 2"
    if rec is None:
        return f"| {label} | | | no View 2 result yet | | | | |", f"- {name}: {cmd}"
    return (f"| {label} | {rec['commit']} | {_view2_cells(rec)} |", f"- {name}: {cmd} on the pipeline of commit {rec['commit']}")


def _view2_cells(rec: dict) -> str:
    """The folds and summary cells of a README View 2 row: test accuracy, AUC, EER, (none), validation AUC."""
    def se(col):
        v = rec["summary"].get(col)
        return "" if v is None else f"{v['mean']:.4f}" + (f" ± {v['se']:.4f}" if v.get("se") is not None else "")
    folds = list(rec["folds"])
    span = f"folds {folds[0]}-{folds[-1]}" if folds == [str(k) for k in range(int(folds[0]), int(folds[-1]) + 1)] else "folds " + ", ".join(folds)
    return f"{span} | {se('test acc')} | {se('test AUC')} | {se('test EER')} | | {se('val AUC')}"


def identification_table(evaluate: dict) -> list[str]:
    """The README's one-shot identification lines from the committed metrics/evaluate.json; none where it has no `id_*`."""
    if "id_rank1" not in evaluate:
        return []
    ways = sorted((int(k[3:-3]), v) for k, v in evaluate.items() if k.startswith("id_") and k.endswith("way"))
    return ["", f"One-shot identification of the run behind `dvc.lock` on the {evaluate['id_people']:,} test people "
            f"(one gallery photo each, their other {evaluate['id_probes']:,} photos as probes; `evaluate` stage):", "",
            "| all-way rank-1 | all-way rank-5 | " + " | ".join(f"{n}-way rank-1" for n, _ in ways)
            + " | open set: DIR at FAR 1% |",
            "|---|---|" + "---|" * len(ways) + "---|",
            f"| {evaluate['id_rank1']:.4f} | {evaluate['id_rank5']:.4f} | " + " | ".join(f"{v:.4f}" for _, v in ways)
            + f" | {evaluate['id_dir_at_far_1pct']:.4f} |"]


def readme_block(recs: list[dict], evaluate: dict, calibrate: dict, current: dict, view2: list[dict] = ()) -> str:
    """The README's results block (markers included) from the records and the committed metrics."""
    default, restricted = headline_records(recs, current)
    mode = current.get("pairs.mode", "unrestricted")
    cols = ["test acc", "test AUC", "test EER", "val acc", "val AUC"]
    lines = [START,
             "<!-- generated by `python scripts/experiments_table.py` (tests/test_readme.py checks it): do not edit -->", "",
             "| configuration (LFW category) | commit | seeds | test accuracy | test AUC | test EER | validation accuracy | "
             "validation AUC |",
             "|---|---|---|---|---|---|---|---|"]
    rows = [(f"`params.yaml` ({CATEGORIES[mode]})", default, {})]
    if mode != "restricted":
        rows.append((f"restricted recipe ({CATEGORIES['restricted']})", restricted, RESTRICTED))
    how = []
    for label, rec, overrides in rows:
        if rec is None:
            lines.append(f"| {label} | | | no current result | | | | |")
            how.append(f"- {label.split(' (')[0]}: {_command(overrides, README_SEEDS)}, then "
                       "`python scripts/experiments_table.py --record`")
            continue
        seeds = ", ".join(str(s) for s in rec["seeds"])
        lines.append(f"| {label} | {rec['commit']} | {seeds} | " + " | ".join(cell(rec["metrics"].get(IDS[c])) for c in cols) + " |")
        how.append(f"- {label.split(' (')[0]}: {_command(rec.get('overrides') or {}, rec['seeds'])} at commit {rec['commit']}")
    acc = f"{evaluate['accuracy']:.4f} [{evaluate['accuracy_ci95_low']:.4f}, {evaluate['accuracy_ci95_high']:.4f}]"
    lines.append(f"| `params.yaml`, the run behind `dvc.lock` ({CATEGORIES[mode]}) | this commit | {current.get('seed')} | {acc} | "
                 f"{evaluate['roc_auc']:.4f} | {evaluate['eer']:.4f} | {calibrate['val_accuracy']:.4f} | {calibrate['val_roc_auc']:.4f} |")
    how.append("- the run behind `dvc.lock`: `dvc repro` (`dvc metrics show` prints it; [95% interval] of its test accuracy)")
    if mode != "restricted":
        for protocol in ({}, RESTRICTED):
            row, came = view2_row(list(view2), current, protocol)
            lines.append(row)
            how.append(came)
    lines += ["", "Mean ± standard deviation over the seeds (View 2: ± standard error over the folds). Each row came from:",
              *how, *identification_table(evaluate), END]
    return "\n".join(lines)


def readme_block_from_files(read=None, recs: list[dict] | None = None) -> str:
    """The README results block from the files it is generated from, each read as text by `read`
    (a path relative to the repository root; default: the workspace's file). A test of the committed
    README passes a reader of the committed files: a `dvc repro` or `dvc exp apply` rewrites the
    workspace's metrics and params, never the committed README."""
    read = read or (lambda rel: (ROOT / rel).read_text(encoding="utf-8"))

    def records(rel: str) -> list[dict]:
        try:
            return json.loads(read(rel))
        except FileNotFoundError:
            return []

    return readme_block(records("docs/experiments.json") if recs is None else recs,
                        json.loads(read("metrics/evaluate.json")), json.loads(read("metrics/calibrate.json")),
                        plain(flatten(yaml.safe_load(read("params.yaml")))), records("docs/view2.json"))


def current_block(text: str) -> str:
    """The results block README.md holds, markers included."""
    start, end = text.find(START), text.find(END)
    if start < 0 or end < start:
        raise ValueError(f"README.md: no {START} ... {END} block")
    return text[start:end + len(END)]


def with_block(text: str, block: str) -> str:
    old = current_block(text)
    return text.replace(old, block, 1)


# --- --import-markdown -----------------------------------------------------------------------

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
    rows = list(takewhile(lambda line: line.startswith("|"),
                          dropwhile(lambda line: not line.startswith("|"), shown.stdout.splitlines())))
    if not rows:
        raise SystemExit(f"--earlier {rev}: docs/EXPERIMENTS.md at that commit holds no table")
    return sha, "\n".join(rows)


def _parse_label(label: str) -> dict:
    if label == "params.yaml as committed":
        return {}
    out = {}
    for part in label.split(", "):
        key, _, value = part.partition("=")
        out[key] = yaml.safe_load(value)
    return out


def _parse_cell(text: str) -> dict | None:
    text = text.strip()
    if not text:
        return None
    num = lambda s: int(s) if re.fullmatch(r"-?\d+", s) else float(s)  # noqa: E731
    mean, _, sd = text.partition(" ± ")
    return {"mean": num(mean), "sd": num(sd) if sd else None}


def import_markdown(rev: str) -> list[dict]:
    """Records from the tables of the former docs/EXPERIMENTS.md at commit `rev`: its first table ran
    on the commit that wrote it, each "Earlier" table on the commit its heading names. Rows are
    labelled by their difference from that commit's params.yaml; the absolute params are that file
    with the label applied. A set of runs listed under several commits (the same seeds and every
    printed figure the same) is kept once, under the oldest."""
    text = git("show", f"{rev}:docs/EXPERIMENTS.md")
    commit = git("log", "-1", "--format=%h", rev, "--", "docs/EXPERIMENTS.md").strip()
    sections: list[tuple[str, list[dict]]] = [(commit, [])]
    header = None
    for line in text.splitlines():
        m = re.match(r"## Earlier: the table as generated at commit (\w+)", line)
        if m:
            sections.append((git("rev-parse", "--short=7", m.group(1)).strip(), []))
            continue
        if not line.startswith("|") or line.startswith("|---"):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
        if cells[0] == "configuration":
            header = cells
            assert header[2:2 + len(METRICS)] == list(METRICS), header
            continue
        row = dict(zip(header, cells))
        sha = sections[-1][0]
        overrides = _parse_label(row["configuration"])
        params = {k: v for k, v in {**committed_params(sha), **overrides}.items() if k != "seed"}
        rec = {"commit": sha, "params": params, "overrides": overrides,
               "seeds": sorted(int(s) for s in row["seeds"].split(", ")),
               "metrics": {IDS[col]: _parse_cell(row[col]) for col in METRICS},
               "source": f"the table of docs/EXPERIMENTS.md for commit {sha}: mean and standard deviation as printed "
                         "(four decimals); per-seed values not available"}
        for (key, value), why in SUPERSEDED.items():
            if params.get(key) == value:
                rec["superseded"] = why
        assert [cell(rec["metrics"][IDS[c]]) for c in METRICS] == [row[c] for c in METRICS], row  # copied exactly
        sections[-1][1].append(rec)
    out: list[dict] = []
    seen: dict[str, dict] = {}
    for sha, rows in reversed(sections):  # oldest first
        for rec in rows:
            key = json.dumps([rec["seeds"], rec["metrics"]], sort_keys=True)
            if key in seen:
                first = seen[key]
                first.setdefault("also_listed_at", []).append(sha)
                a, b = filled(first["params"]), filled(rec["params"])
                diff = {k: (a.get(k), b.get(k)) for k in a.keys() | b.keys() if not same(a.get(k), b.get(k))}
                if diff:
                    print(f"note: {first['commit']} and {sha} list the same runs with params differing in {diff}", file=sys.stderr)
                continue
            seen[key] = rec
            out.append(rec)
    return out


# --- main ------------------------------------------------------------------------------------

def _shown(args) -> list | None:
    if args.json:
        return json.loads(args.json.read_text())
    if args.no_live:
        return None
    try:
        done = subprocess.run(["dvc", "exp", "show", "--json", "--num", str(args.num)], cwd=ROOT,
                              capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.TimeoutExpired) as e:
        print(f"dvc exp show: {e}; writing from {DATA.relative_to(ROOT)} alone", file=sys.stderr)
        return None
    if done.returncode != 0:
        print(f"dvc exp show failed ({done.stderr.strip()[:200]}); writing from {DATA.relative_to(ROOT)} alone", file=sys.stderr)
        return None
    try:
        return json.loads(done.stdout)
    except json.JSONDecodeError:
        return None


def seed_spread(recs: list[dict]) -> list[str]:
    """Lines comparing how much validation AUC and test AUC move from seed to seed, per unrestricted
    configuration of three seeds or more: the test pairs are the same for every seed, and so are the
    validation pairs where `pairs.split_seed` fixes them; before it existed the seed drew them. The same
    models listed twice (the same test AUC, EER and best epochs: revalidated, with another threshold, or
    listed under two commits) count once, at their last listing, grouped by their number of validation pairs."""
    tests = [json.dumps([r["seeds"], [r["metrics"].get(IDS[c]) for c in ("test AUC", "test EER", "best epoch")]]) for r in recs]
    groups: dict[tuple, list[tuple[float, float]]] = {}
    lines = ["| commit | configuration | seeds | validation pairs | test AUC sd | val AUC sd | validation split |",
             "|---|---|---|---|---|---|---|"]
    for i, rec in enumerate(recs):
        test, val = (rec["metrics"].get(IDS[c]) or {} for c in ("test AUC", "val AUC"))
        if (len(rec["seeds"]) < 3 or rec["params"].get("pairs.mode") == "restricted" or rec.get("superseded")
                or test.get("sd") is None or val.get("sd") is None or tests[i] in tests[i + 1:]):
            continue
        split = "fixed by pairs.split_seed" if "pairs.split_seed" in rec["params"] else "drawn by the seed"
        n_val = rec["params"].get("pairs.n_val_pairs")
        groups.setdefault((split, n_val), []).append((test["sd"], val["sd"]))
        config = " ".join(override(k, v) for k, v in (rec.get("overrides") or {}).items() if k != "seed") or "params.yaml"
        lines.append(f"| {rec['commit']} | {config} | {len(rec['seeds'])} | {n_val} | {test['sd']:.4f} | {val['sd']:.4f} | {split} |")
    lines.append("")
    for (split, n_val), sds in groups.items():
        lines.append(f"split {split}, {n_val} validation pairs: {len(sds)} configurations, median seed sd of test AUC "
                     f"{statistics.median(t for t, _ in sds):.4f}, of validation AUC {statistics.median(v for _, v in sds):.4f}; "
                     f"validation moves more than test in {sum(v > t for t, v in sds)}")
    return lines


def parse_sets(items: list[str], option: str = "-S") -> dict:
    """{key: value} of `-S`-style key=value strings, the values read as YAML 1.2, as DVC reads them
    (`1e-3` a number)."""
    from ruamel.yaml import YAML
    yaml12 = YAML(typ="safe", pure=True)
    out = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise SystemExit(f"{option} {item!r}: expected key=value")
        out[key] = yaml12.load(value)
    return out


def seed_runs(recs: list[dict], want: dict, free=frozenset()) -> dict[int, tuple[str, dict]]:
    """{seed: (commit, {metric: value})} of the recorded runs whose params agree with `want`, the newest
    record of a seed winning; only records validated on fixed pairs (`pairs.split_seed`), so that one
    seed's validation pairs are the same whatever the configuration."""
    out: dict[int, tuple[str, dict]] = {}
    for rec in recs:
        if rec.get("superseded") or "pairs.split_seed" not in rec["params"] or not _agrees(rec["params"], want, free):
            continue
        if rec.get("runs"):
            out.update({run["seed"]: (rec["commit"], run["metrics"]) for run in rec["runs"]})
        elif len(rec["seeds"]) == 1:
            out[rec["seeds"][0]] = (rec["commit"], {k: v["mean"] for k, v in rec["metrics"].items() if v})
    return out


def paired(recs: list[dict], current: dict, other: dict, base: dict | None = None,
           cols: tuple[str, ...] = ("val AUC", "test acc")) -> list[str]:
    """Lines comparing configuration B (A with `other`) to A (`current` with `base`) seed by seed, over
    every recorded run of either: per seed and metric A, B and B - A, then per metric the mean paired
    difference, its standard error, t (mean / SE) and on how many seeds B is higher."""
    base = base or {}
    current = filled(current, current=True)  # a param taken out of params.yaml can still be compared at another value
    unknown = sorted((base.keys() | other.keys()) - current.keys())
    if unknown:
        raise SystemExit(f"--paired/--base: no such param in params.yaml: {', '.join(unknown)}")
    a_want = {**current, **base}
    b_want = {**a_want, **other}
    if all(_same_value(a_want[k], v) for k, v in other.items()):
        raise SystemExit("--paired: the change sets every key to the value A already has")
    moving = sorted(k for k, v in other.items() if k in VALIDATION_KEYS and not _same_value(a_want[k], v))
    if moving:
        raise SystemExit(f"--paired {', '.join(moving)}: B would validate on other pairs than A, so their validation "
                         "AUCs do not compare")
    free = RESTRICTED_UNREAD if a_want.get("pairs.mode") == "restricted" else set()
    a, b = seed_runs(recs, a_want, free), seed_runs(recs, b_want, free)
    seeds = sorted(a.keys() & b.keys())
    name_a = "params.yaml" + "".join(f" {override(k, v)}" for k, v in base.items())
    lines = [f"A: {name_a}; B: A with {' '.join(override(k, v) for k, v in other.items())}",
             f"seeds recorded: A {sorted(a) or 'none'}, B {sorted(b) or 'none'}; paired: {seeds or 'none'}"]
    if not seeds:
        return lines
    def by_column(runs):
        return {s: (c, {col: m.get(IDS[col]) for col in cols}) for s, (c, m) in runs.items()}
    return lines + paired_table(by_column(a), by_column(b), cols)


def paired_table(a: dict, b: dict, cols: tuple[str, ...], unit: str = "seed") -> list[str]:
    """Lines of the paired comparison of runs {key: (commit, {column: value})} keyed by seed (or View 2
    fold): per key and column A, B and B - A, then per column the mean paired difference, its standard
    error, t (mean / SE) and on how many keys B is higher. Keys only one side has are left out."""
    keys = sorted(a.keys() & b.keys())
    lines = ["", f"| {unit} | commit A | commit B | " + " | ".join(f"{c} A | {c} B | B - A" for c in cols) + " |",
             "|---" * (3 + 3 * len(cols)) + "|"]
    both = {(k, c): (a[k][1].get(c), b[k][1].get(c)) for k in keys for c in cols}
    both = {k: v for k, v in both.items() if None not in v}  # a metric one of the two runs lacks: no pair
    for k in keys:
        cells = []
        for c in cols:
            va, vb = both.get((k, c), (None, None))
            cells += ["", "", ""] if va is None else [f"{va:.5f}", f"{vb:.5f}", f"{vb - va:+.5f}"]
        lines.append(f"| {k} | {a[k][0]} | {b[k][0]} | " + " | ".join(cells) + " |")
    lines.append("")
    for c in cols:
        d = [both[k, c][1] - both[k, c][0] for k in keys if (k, c) in both]
        if len(d) < 2:
            lines.append(f"{c}, B - A: {len(d)} paired {unit}(s), too few for a standard error")
            continue
        mean, se = statistics.mean(d), statistics.stdev(d) / len(d) ** 0.5
        t = f"{mean / se:+.2f}" if se > 0 else "undefined (no spread)"
        lines.append(f"{c}, B - A over {len(d)} paired {unit}s: mean {mean:+.5f}, SE {se:.5f}, t {t} "
                     f"({len(d) - 1} degrees of freedom); B higher on {sum(x > 0 for x in d)} of {len(d)}")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--record", action="store_true", help="add the finished DVC experiments to docs/experiments.json")
    parser.add_argument("--num", type=int, default=20, help="read the experiments of the last N commits")
    parser.add_argument("--json", type=Path, help="read this saved `dvc exp show --json` output instead of running it")
    parser.add_argument("--no-live", action="store_true", help="do not run `dvc exp show`: docs/experiments.json alone")
    parser.add_argument("--import-markdown", metavar="REV",
                        help="build docs/experiments.json from the tables docs/EXPERIMENTS.md held at commit REV")
    parser.add_argument("--force", action="store_true", help="with --import-markdown: replace an existing docs/experiments.json")
    parser.add_argument("--seed-spread", action="store_true",
                        help="print how much validation and test AUC move from seed to seed (docs/experiments.json), and stop")
    parser.add_argument("--paired", nargs="+", metavar="KEY=VALUE",
                        help="compare params.yaml (A) with these changes (B) seed by seed over the recorded runs, and stop")
    parser.add_argument("--base", nargs="+", default=[], metavar="KEY=VALUE",
                        help="with --paired: A is params.yaml with these (e.g. the restricted protocol's overrides)")
    args = parser.parse_args()
    if args.paired:
        print("\n".join(paired(load(), params_file(), plain(parse_sets(args.paired, "--paired")),
                                plain(parse_sets(args.base, "--base")))))
        return 0
    if args.seed_spread:
        print("\n".join(seed_spread(load())))
        return 0

    if args.import_markdown:
        if DATA.exists() and not args.force:
            raise SystemExit(f"{DATA.relative_to(ROOT)} exists (--force replaces it)")
        save(import_markdown(args.import_markdown))
    recs = load()
    shown = _shown(args)
    merged, changed = merge(recs, live_runs(shown) if shown is not None else [])
    if args.record:
        recs = merged = recorded(merged)
        if changed:
            save(recs)
        print(f"{changed} runs recorded in {DATA.relative_to(ROOT)}")
    files.write_text(OUT, experiments_md(merged))
    readme = README.read_text(encoding="utf-8")
    block = readme_block_from_files(recs=recs)
    if current_block(readme) != block:
        files.write_text(README, with_block(readme, block))
    print(f"{len(merged)} configurations written to {OUT.relative_to(ROOT)}; README results block "
          f"{'rewritten' if current_block(readme) != block else 'unchanged'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
