"""Experiment results as data (docs/experiments.json), the tables generated from them, the comparisons
over them, and the lab's shared reading of params, git and `dvc exp show`.

docs/experiments.json holds one record per configuration: the commit whose code and params.yaml it ran
on, its absolute params (`params`, the seed left out), the `-S` overrides that set them on that commit
(`overrides`), the seeds, the mean and standard deviation of each metric over them, and each seed's
values (`runs`) where `record` added it. It records experiments (`dvc exp run`), not a commit's own run
(the `dvc repro` behind its dvc.lock, which the README shows from metrics/*.json). docs/EXPERIMENTS.md
shows every record and any finished experiment not recorded yet; the README's results block is written
from docs/experiments.json, docs/view2.json and the committed metrics files alone, so that
tests/test_readme.py can regenerate it and compare.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml

from pipeline import files
from pipeline.card import CATEGORIES
from pipeline.identification import n_way_figures
from pipeline.params import RENAMED, PairsParams
from pipeline.record.registry import NOT_VALIDATION
from pipeline.views import FOLDS

ROOT = Path(__file__).resolve().parents[2]
LAB = "python -m pipeline.lab"  # the command the generated files name
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
    "val id rank-1": ("metrics/calibrate.json", "val_id_rank1"),  # one-shot identification of the validation people
    "val id 20-way": ("metrics/calibrate.json", "val_id_20way"),
    "test id rank-1": ("metrics/evaluate.json", "id_rank1"),  # of the test people: reported, never a criterion
    "test id 20-way": ("metrics/evaluate.json", "id_20way"),
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
                "train.negatives": "classes", "train.pretrain_epochs": 0}
# params taken out of params.yaml, at the value the code runs without them (pipeline/params.py's REMOVED names
# the commit that has each one's code)
TAKEN_OUT = {"train.arch": "compact", "train.pool_first": False, "train.stem": "stride", "train.normalize": True,
             "train.dropout": 0.0, "train.memory": 0, "train.identity_fraction": 1.0, "train.identity_images": "all",
             "train.identity_weight": "linear", "train.schedule": "cosine", "train.min_delta": 0.001, "train.threads": 0,
             "train.augment.max_contrast": 0.0, "train.augment.max_brightness": 0.0, "train.augment.erase": 0.0,
             "pairs.val_keep": 1.0, "download.verify_protocol_md5": True, "download.timeout_s": 60, "download.retries": 3,
             "train.pretrain_epochs": 0}
# the restricted-mode protocol runs: its 2,200 official pairs make an epoch short, so it runs more of them;
# [1, 2, 1] is its network (lower on validation with the unrestricted default's [1, 1, 1]: docs/DECISIONS.md)
RESTRICTED = {"pairs.mode": "restricted", "pairs.val_fraction": 0.1, "train.epochs": 60, "train.patience": 15,
              "train.warmup_epochs": 3, "train.stage_convs": [1, 2, 1], "train.sampler": "pairs"}
RESTRICTED_UNREAD = {"pairs.n_train_pairs", "pairs.n_val_pairs", "pairs.val_keep", "train.identity_images"}  # unrestricted only
README_SEEDS = (0, 1, 2)
# params that move the validation pairs, as pipeline.record.registry.val_pairs_key keys them: a paired comparison holds them
VALIDATION_KEYS = {f"pairs.{f.name}" for f in dataclasses.fields(PairsParams) if f.name not in NOT_VALIDATION}


# --- params ----------------------------------------------------------------------------------

def override(key: str, value, quote: bool = True) -> str:
    """`key=value` as `dvc exp run -S` takes it: a list without spaces, quoted for the shell; YAML's true/false."""
    if isinstance(value, bool):
        return f"{key}={str(value).lower()}"
    if isinstance(value, (tuple, list)):
        return ("'{}'" if quote else "{}").format(f"{key}=[{','.join(str(v) for v in value)}]")
    return f"{key}={value}"


def flatten(d: dict, prefix: str = "") -> dict:
    """params.yaml's nested sections as {dotted key: value}."""
    out = {}
    for k, v in d.items():
        out.update(flatten(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def plain(params: dict) -> dict:
    """Flat params as JSON holds them: today's key names, lists (not tuples)."""
    return {RENAMED.get(k, k): list(v) if isinstance(v, tuple) else v for k, v in params.items()}


def same(a, b) -> bool:
    """Equal as params and records compare: numbers as numbers (a record keeps params.yaml's spelling, 60
    for the float 60.0; a bool is not a number), lists, tuples and dicts item by item, the rest by value."""
    numbers = [isinstance(v, (int, float)) and not isinstance(v, bool) for v in (a, b)]
    if all(numbers):
        return float(a) == float(b) or math.isnan(a) and math.isnan(b)
    if any(numbers) or isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return a == b


def params_file(path: Path = ROOT / "params.yaml") -> dict:
    return plain(flatten(yaml.safe_load(Path(path).read_text())))


def git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout


def committed_params(rev: str) -> dict:
    return plain(flatten(yaml.safe_load(git("show", f"{rev}:params.yaml"))))


def filled(params: dict, current: bool = False) -> dict:
    """A record's params with the params added since at the value that reproduces the code before them;
    params.yaml's (`current`) also with the params taken out since at the value the code now runs."""
    return {**BEFORE_ADDED, **(with_taken_out(params) if current else params)}


def with_taken_out(params: dict) -> dict:
    """`params` with each param taken out of params.yaml since, where it lacks it, at the value the code now
    runs: TAKEN_OUT's, and `train.mining` (0463ca7 has it) as the sampler decides the loss."""
    out = {**TAKEN_OUT, **params}
    if "train.mining" not in out:
        out["train.mining"] = "pairs" if out.get("train.sampler") == "pairs" else "auto"
    return out


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


# --- `dvc exp show --json` -------------------------------------------------------------------

def dvc(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(["dvc", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def show(num: int, rev: str = "HEAD", tries: int = 1) -> list:
    """`dvc exp show --json` of the last `num` commits from `rev`, tried `tries` times 30 s apart; a
    SystemExit with DVC's error where none answered."""
    for attempt in range(1, tries + 1):
        try:
            done = dvc("exp", "show", "--json", "--rev", rev, "--num", str(num), timeout=300)
        except subprocess.TimeoutExpired:
            why = "no answer in 300 s"
        except OSError as e:
            why = str(e)
        else:
            if done.returncode == 0:
                return json.loads(done.stdout)
            why = done.stderr.strip()[:400]
        if attempt < tries:
            print(f"dvc exp show failed ({why}); trying again in 30 s", file=sys.stderr, flush=True)
            time.sleep(30)
    raise SystemExit(f"dvc exp show failed: {why}")


def node_params(data) -> dict | None:
    """The flat params of a `dvc exp show --json` node's data; None where it has none or an error."""
    if isinstance(data, dict) and "params" in data and not data.get("error"):
        return plain(flatten((data["params"].get("params.yaml") or {}).get("data") or {}))
    return None


def metrics_file(data, f: str) -> dict:
    """One metrics file's values in a `dvc exp show --json` node's data ({} where it has none)."""
    return ((data.get("metrics") or {}).get(f) or {}).get("data") or {}


def experiments(shown) -> list[dict]:
    """Every experiment under every commit of `dvc exp show --json` output: {commit, name, state, params
    (flat, seed included), data, baseline (the commit node)}. A baseline's "experiments" are groups
    {name, executor: {state}, revs: [{rev, name, data}]}; a finished one has no executor. A queued or
    running one's data holds no metrics of its own."""
    out = []
    for node in shown if isinstance(shown, list) else [shown]:
        if not isinstance(node, dict) or node.get("rev") == "workspace":
            continue
        for group in node.get("experiments") or []:
            if not isinstance(group, dict):
                continue
            state = (group.get("executor") or {}).get("state") or "success"
            for rev in group.get("revs") or []:
                params = node_params(rev.get("data")) if isinstance(rev, dict) else None
                if params is not None:
                    out.append({"commit": node.get("rev", "")[:7], "state": state, "params": params,
                                "name": rev.get("name") or group.get("name") or rev.get("rev", "")[:7],
                                "data": rev["data"], "baseline": node})
    return out


def live_runs(shown) -> list[dict]:
    """Every finished View 1 experiment in `dvc exp show --json` output, of every commit listed, as
    {commit, name, seed, params, overrides, metrics, and trained where metrics/train.json says}. A
    commit's own run (the metrics committed with its dvc.lock, which an older commit may have written)
    is not an experiment of that commit: the README shows it from metrics/*.json."""
    out, bases = [], {}
    for e in experiments(shown):
        data, params = e["data"], e["params"]
        metrics = {IDS[col]: metrics_file(data, f).get(k) for col, (f, k) in METRICS.items()}
        if e["state"] != "success" or metrics[IDS["test acc"]] is None or params.get("pairs.protocol") == "view2":
            continue  # unfinished, or a fold of `view2 run`
        rev = e["baseline"].get("rev", "")  # the commit's own params, from DVC or else from git
        if rev not in bases:
            bases[rev] = node_params(e["baseline"].get("data"))
            if bases[rev] is None and isinstance(shown, list):
                with contextlib.suppress(subprocess.CalledProcessError):
                    bases[rev] = committed_params(rev)
        seed = params.pop("seed", None)
        base = {k: v for k, v in (bases[rev] or {}).items() if k != "seed"}
        overrides = {k: v for k, v in params.items() if k not in base or not same(v, base[k])}
        # a param taken out of params.yaml before the run: it ran at the value the code has without it
        params = with_taken_out(params)
        run = {"commit": e["commit"], "name": e["name"], "seed": seed, "params": params, "overrides": overrides,
               "metrics": metrics}
        train = metrics_file(data, "metrics/train.json")  # what the run trained in and on
        if train.get("precision") and train.get("device"):
            run["trained"] = f"{train['precision']} on {train['device']}"
        out.append(run)
    return out


# --- records ---------------------------------------------------------------------------------

def aggregate(values: list) -> dict | None:
    if not values:
        return None
    if len(values) == 1:
        return {"mean": values[0], "sd": None}
    return {"mean": statistics.mean(values), "sd": statistics.stdev(values)}


def cell(value: dict | None, digits: int = 4) -> str:
    """A metric as the tables print it: mean ± its spread (`sd` over seeds, `se` over View 2 folds) to
    `digits` places; a value without spread alone."""
    if value is None:
        return ""
    mean, spread = value["mean"], value.get("sd", value.get("se"))
    if spread is None:
        return f"{mean:.{digits}f}" if isinstance(mean, float) else str(mean)
    return f"{mean:.{digits}f} ± {spread:.{digits}f}"


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
        if old is not None and (old["name"] != run["name"] or same(old, entry)):
            continue
        rec["runs"] = sorted([r for r in rec["runs"] if r is not old] + [entry],
                             key=lambda r: (r["seed"] is None, r["seed"] if r["seed"] is not None else 0))
        rec["seeds"] = [r["seed"] for r in rec["runs"]]
        rec["metrics"] = {i: aggregate([r["metrics"][i] for r in rec["runs"] if r["metrics"].get(i) is not None])
                          for i in IDS.values()}
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
    """`name=value` of each of `keys` in a record's params, as `-S` and YAML write it; `–` where it did not exist."""
    p = filled(rec["params"])
    return ", ".join(f"{names[k]}=" + (override(k, p[k], quote=False).split("=", 1)[1] if k in p else "–") for k in keys)


def _table(recs: list[dict], varying: list[str], names: dict[str, str], commit_column: bool = False) -> list[str]:
    """The table of `recs`: the `varying` params that differ between them in the configuration column, the
    rest on the line above it."""
    keys = _varying(recs, varying) if len(recs) > 1 else []
    common = [k for k in varying if k not in keys]
    head = (["commit"] if commit_column else []) + ["configuration", "LFW category", "seeds", *METRICS, "trained in"]
    lines = (["Every row: " + _config(recs[0], common, names) + ".", ""] if common else []) + [
        "| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for rec in recs:
        trained = ", ".join(dict.fromkeys(r["trained"] for r in rec.get("runs") or [] if r.get("trained")))
        config = _config(rec, keys, names) or "(the params above)"
        if rec.get("_unrecorded"):
            config += f" (not in docs/experiments.json yet: `{LAB} record`)"
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
        f"Generated by `{LAB} tables` from docs/experiments.json; do not edit by hand.",
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
        f"`{LAB} record`. The rows without per-seed values were imported from",
        "the tables this file held before (mean and standard deviation as printed then); a set of runs",
        "that those tables listed under several commits is listed once, under the oldest. The last column",
        "says what the runs trained in and on (`metrics/train.json`), where recorded: a commit's run gives",
        "the same numbers bit for bit on the same CPU class and within seed noise on another.",
    ]
    current = [r for r in recs if not r.get("superseded")]
    commits = list(dict.fromkeys(r["commit"] for r in current))
    for commit in reversed(commits):
        lines += ["", f"## Commit {commit}", "", *_table([r for r in current if r["commit"] == commit], varying, names)]
    old = [r for r in recs if r.get("superseded")]
    if old:
        reasons = "; ".join(dict.fromkeys(r["superseded"] for r in old))
        lines += ["", "## Superseded", "", f"These rows no longer describe the code: {reasons}. They are kept as data, "
                  "not compared.", "", *_table(old, varying, names, commit_column=True)]
    return "\n".join(lines) + "\n"


# --- the README's results block --------------------------------------------------------------

def agrees(params: dict, current: dict, free=frozenset()) -> bool:
    """Whether a record's `params` are `current` (params.yaml's), the `free` keys and the seed aside."""
    p, current = filled(params), filled(current, current=True)
    return all(same(p[k], current[k]) for k in p.keys() & current.keys() if k not in free and k != "seed")


def best(candidates: list[tuple[int, dict]]) -> dict | None:
    """The record of (position, record) `candidates` over the most seeds, the newest of those."""
    return max(candidates, key=lambda c: (len(c[1]["seeds"]), c[0]))[1] if candidates else None


def headline_records(recs: list[dict], current: dict) -> tuple[dict | None, dict | None]:
    """(the committed params' record, the restricted protocol's record of the same network and
    training), each the one over the most seeds, the newest of those; superseded records never."""
    live = [(i, r) for i, r in enumerate(recs) if not r.get("superseded")]
    default = best([(i, r) for i, r in live if agrees(r["params"], current)])
    if current.get("pairs.mode") == "restricted":
        return default, None
    restricted = best([(i, r) for i, r in live if agrees(r["params"], {**current, **RESTRICTED}, RESTRICTED_UNREAD)])
    return default, restricted


def changed(params: dict, current: dict, free=frozenset()) -> dict:
    """The params of a record that differ from `current` (sorted by key), `free` keys and the seed aside."""
    p, current = filled(params), filled(current, current=True)
    return {k: p[k] for k in sorted(p.keys() & current.keys())
            if k not in free and k != "seed" and not same(p[k], current[k])}


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
    registered = [r for r in view2 if r.get("final") and not r["folds"] and agrees(r["params"], want, free)]
    view2 = [r for r in view2 if not r.get("superseded") and r["folds"]]  # a final run's record before its first fold
    live = [(i, r) for i, r in enumerate(view2) if agrees(r["params"], want, free)]
    other = not live
    if other:  # the last View 2 of this mode, run with other params
        live = [(i, r) for i, r in enumerate(view2) if filled(r["params"]).get("pairs.mode", "unrestricted") == mode]
    # over the most folds; then the final report (`view2 run --final`); then of the committed seed (another
    # seed of the same params is a second sample, not a newer result); then the newest
    rec = max(live, key=lambda c: (len(c[1]["folds"]), bool(c[1].get("final")),
                                   same(c[1]["params"].get("seed", 0), want.get("seed", 0)), c[0]))[1] if live else None
    changes = changed(rec["params"], want, free) if rec is not None and other else {}
    if changes:
        label = f"**LFW View 2**, other params (below) ({CATEGORIES[mode]})"
    # the command at the record's commit: a record of the current params, its own overrides there (it may have
    # run with -S at a commit whose params.yaml differed); another's, the changes that commit knows (a key
    # added to params.yaml after it ran is in `changes` through `filled` but unknown to that commit)
    given = dict(protocol)
    if rec is not None:
        given.update({k: v for k, v in changes.items() if k in rec["params"]} if other else rec.get("overrides") or {})
    cmd = f"`{LAB} view2 run" + "".join(f" -S {override(k, v)}" for k, v in given.items()) + "`"
    name = f"LFW View 2 ({mode})" if protocol else "LFW View 2"
    if rec is None and registered:  # a final run registered, no fold finished yet: its own command
        reg = registered[-1]
        cmd = (f"`{LAB} view2 run --final" + "".join(f" -S {override(k, v)}" for k, v in {**protocol, **reg["overrides"]}.items())
               + "`")
        return (f"| {label} | {reg['commit']} | | final run under way, no fold yet | | | | |",
                f"- {name}: {cmd} on the pipeline of commit {reg['commit']}; the final report, 0 of {FOLDS} folds")
    if rec is None:
        return f"| {label} | | | no View 2 result yet | | | | |", f"- {name}: {cmd}"
    folds = list(rec["folds"])
    span = (f"fold {folds[0]}" if len(folds) == 1 else f"folds {folds[0]}-{folds[-1]}"
            if folds == [str(k) for k in range(int(folds[0]), int(folds[-1]) + 1)] else "folds " + ", ".join(folds))
    cells = " | ".join(cell(rec["summary"].get(c)) for c in ("test acc", "test AUC", "test EER"))
    seed, final = rec["params"].get("seed", 0), rec.get("final")
    status = ("these folds took part in choosing the recipe: not an untouched final evaluation" if not final else
              f"run with `--final`, the final report: scored once, at seed {seed}, which no run used before"
              if len(folds) == FOLDS else f"run with `--final`, the final report under way: {len(folds)} of {FOLDS} folds")
    return (f"| {label} | {rec['commit']} | {span} | {cells} | | {cell(rec['summary'].get('val AUC'))} |",
            f"- {name}: {cmd} on the pipeline of commit {rec['commit']}; {status}")


def _row(cells: list[str]) -> str:
    """A markdown table row, an empty cell as `| |`."""
    return "|" + "|".join(f" {c} " if c else " " for c in cells) + "|"


def identification_table(evaluate: dict, calibrate: dict, rows: list[tuple[str, dict | None]], mode: str,
                         seed) -> list[str]:
    """The README's one-shot identification lines: a row per record of `rows` ((label, record)) that has the
    test figures, then the run behind `dvc.lock` from the committed metrics files; none where
    metrics/evaluate.json has no `id_*`. Records keep rank-1 and 20-way alone: the other cells stay empty."""
    if "id_rank1" not in evaluate:
        return []
    ways = n_way_figures(evaluate)
    cols = ["all-way rank-1", "all-way rank-5", *(f"{n}-way rank-1" for n, _ in ways), "open set: DIR at FAR 1%",
            "validation all-way rank-1", "validation 20-way rank-1"]
    lines = ["", f"One-shot identification of the {evaluate['id_people']:,} test people (one gallery photo each, their "
             f"other {evaluate['id_probes']:,} photos as probes; `evaluate` stage) and of the validation people "
             "(`calibrate` stage), on which recipes are chosen:", "",
             "| configuration (LFW category) | commit | seeds | " + " | ".join(cols) + " |", "|---|---|---|" + "---|" * len(cols)]
    for label, rec in rows:
        m = (rec or {}).get("metrics", {})
        if m.get(IDS["test id rank-1"]) is None:
            continue
        cells = {"all-way rank-1": IDS["test id rank-1"], "20-way rank-1": IDS["test id 20-way"],
                 "validation all-way rank-1": IDS["val id rank-1"], "validation 20-way rank-1": IDS["val id 20-way"]}
        lines.append(_row([label, rec["commit"], ", ".join(str(s) for s in rec["seeds"]),
                           *(cell(m.get(cells.get(c))) for c in cols)]))
    lock = [evaluate["id_rank1"], evaluate["id_rank5"], *(v for _, v in ways), evaluate["id_dir_at_far_1pct"],
            calibrate.get("val_id_rank1"), calibrate.get("val_id_20way")]
    lines.append(_row([f"`params.yaml`, the run behind `dvc.lock` ({CATEGORIES[mode]})", "this commit", str(seed),
                       *("" if v is None else f"{v:.4f}" for v in lock)]))
    return lines + ["", "A recorded configuration keeps rank-1 and 20-way alone. Image-restricted validation is pairs "
                    "without names, so it has no identification of its own; the test people's names serve scoring only."]


def readme_block(recs: list[dict], evaluate: dict, calibrate: dict, current: dict, view2: list[dict] = ()) -> str:
    """The README's results block (markers included) from the records and the committed metrics."""
    default, restricted = headline_records(recs, current)
    mode = current.get("pairs.mode", "unrestricted")
    cols = ["test acc", "test AUC", "test EER", "val acc", "val AUC"]
    lines = [START,
             f"<!-- generated by `{LAB} tables` (tests/test_readme.py checks it): do not edit -->", "",
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
            how.append(f"- {label.split(' (')[0]}: {_command(overrides, README_SEEDS)}, then `{LAB} record`")
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
    ids = identification_table(evaluate, calibrate, [(label, rec) for label, rec, _ in rows], mode, current.get("seed"))
    lines += ["", "Mean ± standard deviation over the seeds (View 2: ± standard error over the folds). Each row came from:",
              *how, *ids, END]
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
    return text.replace(current_block(text), block, 1)


def refresh_readme(recs: list[dict] | None = None) -> bool:
    """Write README.md's results block anew where it differs from its files (records `recs`, default
    docs/experiments.json's); whether it did. Without README.md or metrics/evaluate.json (a fresh
    repository) there is no block to write."""
    if not README.exists() or not (ROOT / "metrics" / "evaluate.json").exists():
        return False
    text = README.read_text(encoding="utf-8")
    block = readme_block_from_files(recs=recs)
    if current_block(text) == block:
        return False
    files.write_text(README, with_block(text, block))
    return True


def tables(shown: list | None, record: bool = False) -> None:
    """docs/EXPERIMENTS.md (docs/experiments.json with the finished experiments of `shown`, `dvc exp show
    --json` output or None) and the README's results block; with `record`, docs/experiments.json first."""
    recs = load()
    merged, added = merge(recs, live_runs(shown) if shown is not None else [])
    if record:
        recs = merged = recorded(merged)
        if added:
            save(recs)
        print(f"{added} runs recorded in {DATA.relative_to(ROOT)}")
    files.write_text(OUT, experiments_md(merged))
    rewritten = refresh_readme(recs)
    print(f"{len(merged)} configurations written to {OUT.relative_to(ROOT)}; README results block "
          f"{'rewritten' if rewritten else 'unchanged'}")


# --- comparisons -----------------------------------------------------------------------------

def seed_runs(recs: list[dict], want: dict, free=frozenset()) -> dict[int, tuple[str, dict]]:
    """{seed: (commit, {metric: value})} of the recorded runs whose params agree with `want`, the newest
    record of a seed winning; only records validated on fixed pairs (`pairs.split_seed`), so that one
    seed's validation pairs are the same whatever the configuration."""
    out: dict[int, tuple[str, dict]] = {}
    for rec in recs:
        if rec.get("superseded") or "pairs.split_seed" not in rec["params"] or not agrees(rec["params"], want, free):
            continue
        if rec.get("runs"):
            out.update({run["seed"]: (rec["commit"], run["metrics"]) for run in rec["runs"]})
        elif len(rec["seeds"]) == 1:
            out[rec["seeds"][0]] = (rec["commit"], {k: v["mean"] for k, v in rec["metrics"].items() if v})
    return out


def lock_record(rev: str = "HEAD") -> dict | None:
    """The run behind `rev`'s dvc.lock as a one-seed record (its committed params.yaml and metrics files, the
    README's `dvc.lock` row), so that a comparison pairs its seed like any recorded run: it is the newest run
    of the committed params. None where `rev` has no committed metrics, or where dvc.lock ran other values
    than params.yaml holds (params.yaml edited, the pipeline not rerun)."""
    try:
        params = committed_params(rev)
        read = {f: json.loads(git("show", f"{rev}:{f}")) for f in {f for f, _ in METRICS.values()}}
        locked = yaml.safe_load(git("show", f"{rev}:dvc.lock"))["stages"]
        commit = git("rev-parse", "--short=7", rev).strip()
    except (subprocess.CalledProcessError, json.JSONDecodeError, yaml.YAMLError, KeyError, TypeError):
        return None
    ran = {k: v for st in locked.values() for k, v in plain(flatten(st.get("params", {}).get("params.yaml", {}))).items()}
    if any(k in params and not same(v, params[k]) for k, v in ran.items()):
        return None
    seed = params.pop("seed", 0)
    return {"commit": commit, "params": with_taken_out(params), "overrides": {}, "seeds": [seed],
            "metrics": {IDS[c]: {"mean": read[f][k], "sd": None} for c, (f, k) in METRICS.items() if k in read[f]}}


def paired(recs: list[dict], current: dict, other: dict, base: dict | None = None,
           cols: tuple[str, ...] = ("val AUC", "test acc")) -> list[str]:
    """Lines comparing configuration B (A with `other`) to A (`current` with `base`) seed by seed, over
    every recorded run of either: per seed and metric A, B and B - A, then per metric the mean paired
    difference, its standard error, t (mean / SE) and on how many seeds B is higher."""
    base = base or {}
    # a param taken out of params.yaml can still be compared at another value
    unknown = sorted((base.keys() | other.keys()) - filled(current, current=True).keys())
    if unknown:
        raise SystemExit(f"paired: no such param in params.yaml: {', '.join(unknown)}")
    a_want = filled({**current, **base}, current=True)
    b_want = filled({**current, **base, **other}, current=True)
    if all(same(a_want[k], v) for k, v in other.items()):
        raise SystemExit("paired: the change sets every key to the value A already has")
    moving = sorted(k for k, v in other.items() if k in VALIDATION_KEYS and not same(a_want[k], v))
    if moving:
        raise SystemExit(f"paired {', '.join(moving)}: B would validate on other pairs than A, so their validation "
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
