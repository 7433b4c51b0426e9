"""LFW View 2, as the literature reports it: ten DVC experiments, one per fold, and their aggregate.

    python scripts/view2.py run [--folds 1-10] [-S key=value ...]   # run the missing folds, then report
    python scripts/view2.py report                                  # docs/VIEW2.md (and MLflow) from what finished
    python scripts/view2.py paired COMMIT_A COMMIT_B [-S k=v] [--a-set k=v] [--b-set k=v]  # two configurations, fold by fold

Fold K is `dvc exp run --temp -S pairs.protocol=view2 -S pairs.fold=K` plus the `-S` given: the
pipeline trains without fold K (its people, or in restricted mode its pairs), picks the threshold on
validation carved from the training side, and scores fold K's 600 pairs of pairs.txt. `run` runs the
missing folds one after the other in the foreground, each in a temporary copy of the workspace (which
it leaves as it is), on whatever `train.device: auto` finds (a CUDA GPU too), DVC's output on the
terminal. It skips every fold that has a finished experiment with the same params and the same
pipeline (params.yaml's values, dvc.yaml's stages that write outputs and their pipeline/ deps
unchanged since), so after an interruption the same command goes on with the fold it stopped in. A
fold that fails stops it, naming the fold and its command.

`run` then reports the configuration it ran. `report` adds every finished fold in `dvc exp show`
(the last --num commits, any configuration and pipeline) to docs/view2.json,
writes docs/VIEW2.md from it (per configuration: mean ± standard error over the folds of test
accuracy and AUC, as the literature states them, and each fold's figures) and records one MLflow
run per configuration (tags `kind=view2`, `protocol=view2`; each fold's own pipeline run carries
`protocol=view2` and `fold=K`). The README's results block shows the committed params' View 2 row.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

import experiments_table  # noqa: E402
from experiments_table import _metrics_file, _node_params, committed_params, git, params_file, plain, same  # noqa: E402

from pipeline import files  # noqa: E402
from pipeline.views import FOLDS  # noqa: E402

DATA = ROOT / "docs" / "view2.json"
FUSIONS = ROOT / "docs" / "view2_fusion.json"  # written by scripts/view2_fusion.py
OUT = ROOT / "docs" / "VIEW2.md"
METRICS = {  # column -> (metrics file, key)
    "test acc": ("metrics/evaluate.json", "accuracy"),
    "test AUC": ("metrics/evaluate.json", "roc_auc"),
    "test EER": ("metrics/evaluate.json", "eer"),
    "val AUC": ("metrics/calibrate.json", "val_roc_auc"),
    "best epoch": ("metrics/train.json", "best_epoch"),
}
FUSION_COLUMNS = ("test acc", "test AUC", "test EER", "val AUC", "val AUC A", "val AUC B")
FOLD_KEYS = ("pairs.protocol", "pairs.fold")


def dvc(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(["dvc", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def parse_folds(text: str) -> list[int]:
    """'1-10', '3', '1,4-6' -> sorted fold numbers, each in 1..10."""
    folds: set[int] = set()
    for part in text.split(","):
        lo, _, hi = part.strip().partition("-")
        try:
            a, b = int(lo), int(hi or lo)
        except ValueError:
            raise SystemExit(f"--folds: {text!r} is not a fold list like 1-10 or 1,4-6") from None
        if not 1 <= a <= b <= FOLDS:
            raise SystemExit(f"--folds: {part!r} is outside 1..{FOLDS}")
        folds.update(range(a, b + 1))
    return sorted(folds)


def parse_sets(sets: list[str], option: str = "-S") -> dict:
    """-S key=value pairs as {key: value} (experiments_table.parse_sets), the fold keys refused."""
    out = experiments_table.parse_sets(sets, option)
    fold_keys = sorted(out.keys() & set(FOLD_KEYS))
    if fold_keys:
        raise SystemExit(f"{option} {fold_keys[0]}: set by this script, one fold per experiment")
    return out


# --- `dvc exp show --json` --------------------------------------------------------------------

def _metrics(data: dict) -> dict:
    return {col: _metrics_file(data, f).get(k) for col, (f, k) in METRICS.items()}


def _writer_stages(rev: str) -> dict:
    """dvc.yaml's stages at `rev` that write outputs (all but `check`), parsed."""
    stages = yaml.safe_load(git("show", f"{rev}:dvc.yaml"))["stages"]
    return {n: s for n, s in stages.items() if s.get("outs") or s.get("metrics") or s.get("plots")}


def pipeline_files(rev: str) -> list[str]:
    """What can change a fold's outputs at `rev`: dvc.yaml, params.yaml and every pipeline/ file that
    dvc.yaml lists as a dependency of a stage with outputs (record keeping, which no stage lists, is left
    out, and so is what only the `check` stage, which writes nothing, depends on)."""
    deps = {d for s in _writer_stages(rev).values() for d in s.get("deps", []) if isinstance(d, str) and d.startswith("pipeline/")}
    return ["dvc.yaml", "params.yaml", *sorted(deps)]


def pipeline_state(rev: str, paths: list[str]) -> tuple:
    """`rev`'s pipeline as compared: the code files byte for byte (their git blobs); params.yaml's values
    and dvc.yaml's stages that write outputs as parsed YAML, so that a comment or layout edit of either
    changes no configuration."""
    code = git("ls-tree", "-r", rev, "--", *[p for p in paths if p not in ("dvc.yaml", "params.yaml")])
    return code, _writer_stages(rev), yaml.safe_load(git("show", f"{rev}:params.yaml"))


def code_commit(rev: str, _memo: dict = {}) -> str:  # noqa: B006 - a per-process cache
    """The oldest commit up to `rev` whose pipeline (pipeline_files, as pipeline_state compares them) is
    `rev`'s: folds run at any commit with the same pipeline are one configuration, so neither a commit of
    docs, comments or record keeping nor a change later reverted restarts View 2."""
    if rev not in _memo:
        try:
            paths = pipeline_files(rev)
            want = pipeline_state(rev, paths)
            touched = git("log", "--format=%H", rev, "--", *paths).split()  # newest first
            same = []
            for c in touched:
                try:
                    if pipeline_state(c, paths) == want:
                        same.append(c)
                except (subprocess.CalledProcessError, KeyError, TypeError, AttributeError, yaml.YAMLError):
                    continue  # a commit without a readable dvc.yaml or params.yaml: another pipeline
            _memo[rev] = (same[-1] if same else rev)[:7]
        except (subprocess.CalledProcessError, KeyError, TypeError, AttributeError, yaml.YAMLError):
            _memo[rev] = rev[:7]
    return _memo[rev]


def experiments(shown) -> list[dict]:
    """Every experiment under every commit of `dvc exp show --json` output: {commit, name, state,
    params (flat, seed included), metrics by column}."""
    out = []
    for node in shown if isinstance(shown, list) else [shown]:
        if not isinstance(node, dict) or node.get("rev") == "workspace":
            continue
        # a baseline's "experiments" are groups: {name, executor: {state}, revs: [{rev, name, data}]}; a
        # finished one has no executor. A queued or running one's data holds no metrics of its own.
        for group in node.get("experiments") or []:
            if not isinstance(group, dict):
                continue
            executor = group.get("executor") or {}
            state = executor.get("state") or "success"
            for rev in group.get("revs") or []:
                params = _node_params(rev.get("data")) if isinstance(rev, dict) else None
                if params is not None:
                    out.append({"commit": node.get("rev", "")[:7], "name": rev.get("name") or group.get("name") or rev.get("rev", "")[:7],
                                "state": state, "params": params,
                                "metrics": _metrics(rev["data"]) if state == "success" else {c: None for c in METRICS}})
    return out


def show(num: int, rev: str = "HEAD", tries: int = 1) -> list:
    """`dvc exp show --json` of the last `num` commits from `rev`, tried `tries` times 30 s apart."""
    for attempt in range(1, tries + 1):
        try:
            done = dvc("exp", "show", "--json", "--rev", rev, "--num", str(num), timeout=300)
        except subprocess.TimeoutExpired:
            why = "no answer in 300 s"
        else:
            if done.returncode == 0:
                return json.loads(done.stdout)
            why = done.stderr.strip()[:400]
        if attempt < tries:
            print(f"dvc exp show failed ({why}); trying again in 30 s", file=sys.stderr, flush=True)
            time.sleep(30)
    raise SystemExit(f"dvc exp show failed: {why}")


def config_of(params: dict) -> dict:
    return {k: v for k, v in params.items() if k not in FOLD_KEYS}


def wanted(base: dict, sets: dict) -> dict:
    """The flat params of the configuration asked for (the fold keys left out)."""
    unknown = [k for k in sets if k not in base]
    if unknown:
        raise SystemExit(f"-S {unknown[0]}: no such key in params.yaml")
    return config_of({**base, **plain(sets)})


# --- run ----------------------------------------------------------------------------------------

def fold_states(shown, code: str, config: dict) -> dict[int, str]:
    """{fold: state} of the View 2 experiments of `config` run on pipeline `code` (code_commit), at any
    commit; a fold's finished experiment ("success") wins over any other state."""
    states: dict[int, str] = {}
    for e in experiments(shown):
        p = e["params"]
        if p.get("pairs.protocol") == "view2" and same(config_of(p), config) and code_commit(e["commit"]) == code:
            fold = int(p["pairs.fold"])
            if e["state"] == "success" and e["metrics"]["test acc"] is None:
                continue
            if states.get(fold) != "success":
                states[fold] = e["state"]
    return states


def load_records() -> list[dict]:
    """The configurations docs/view2.json holds, with their folds."""
    return experiments_table.load(DATA)


def load_fusions() -> list[dict]:
    """The fusions of two configurations docs/view2_fusion.json holds (scripts/view2_fusion.py)."""
    return experiments_table.load(FUSIONS)


def known_states(shown, code: str, config: dict, recs: list[dict]) -> dict[int, str]:
    """fold_states, with the folds the records `recs` hold for `config` on pipeline `code` as done
    (run in another clone, whose experiment refs this one lacks)."""
    states = fold_states(shown, code, config)
    for rec in recs:
        if rec["commit"] == code and same(config_of(rec["params"]), config):
            states.update({int(k): "success" for k in rec["folds"]})
    return states


def fold_command(fold: int, sets: dict) -> list[str]:
    """The `dvc exp run` of fold `fold` with the overrides `sets`, in a temporary copy of the workspace."""
    cmd = ["dvc", "exp", "run", "--temp", "-S", "pairs.protocol=view2", "-S", f"pairs.fold={fold}"]
    for key, value in sets.items():
        cmd += ["-S", f"{key}={yaml.safe_dump(value, default_flow_style=True).strip().removesuffix('...').strip()}"]
    return cmd


def run_fold(fold: int, cmd: list[str]) -> None:
    """Fold `fold`'s command `cmd` in the foreground, DVC's output on this terminal; a fold that fails or
    is interrupted stops `run` with an error naming the fold and its command."""
    with subprocess.Popen(cmd, cwd=ROOT) as proc:
        try:
            rc = proc.wait()
        except KeyboardInterrupt:  # Ctrl-C reached dvc too: let it stop the stage and remove its copy
            proc.wait()
            rc = None
    if rc is None:
        raise SystemExit(f"fold {fold} interrupted: {shlex.join(cmd)}; rerun this command to run it again")
    if rc:
        raise SystemExit(f"fold {fold} failed: {shlex.join(cmd)} exited {rc} (its output above says why); "
                         "rerun this command to go on from this fold")


def run(args) -> int:
    head = git("rev-parse", "HEAD").strip()
    if dvc("status", "--quiet").returncode != 0 or git("status", "--porcelain", "--", "pipeline", "dvc.yaml").strip():
        print("note: the workspace differs from HEAD; each fold runs on the workspace as it is when the fold starts",
              file=sys.stderr)
    sets = parse_sets(args.set)
    config = wanted(params_file(), sets)  # what `dvc exp run` runs: the workspace's params.yaml, with the -S
    code = code_commit(head)
    shown = show(args.num, head, tries=3)  # another experiment being set up fails it for a few seconds
    states = known_states(shown, code, config, load_records())
    todo = [k for k in args.folds if states.get(k) != "success"]
    done = [k for k in args.folds if states.get(k) == "success"]
    print(f"View 2 of the pipeline at {code} (HEAD {head[:7]}): folds done {done or 'none'}; running {todo or 'none'}",
          flush=True)
    for n, fold in enumerate(todo, 1):
        if code_commit(git("rev-parse", "HEAD").strip()) != code or not same(wanted(params_file(), sets), config):
            raise SystemExit(f"the pipeline or params.yaml changed while the folds ran: fold {fold} not run; rerun "
                             "this command to run the missing folds of the new configuration")
        cmd = fold_command(fold, sets)
        print(f"View 2 fold {fold} ({n} of {len(todo)}): {shlex.join(cmd)}", flush=True)
        run_fold(fold, cmd)
    report(argparse.Namespace(num=args.num, rev="HEAD", no_mlflow=args.no_mlflow, only=(code, config)))
    return 0


# --- report -------------------------------------------------------------------------------------

def mean_se(values: list[float]) -> dict | None:
    if not values:
        return None
    se = statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else None
    return {"mean": statistics.mean(values), "se": se}


def fold_summary(folds: dict, cols) -> dict:
    """{column: mean ± SE over the folds that have it} of {fold: {"metrics": {column: value}}}."""
    return {c: mean_se([f["metrics"][c] for f in folds.values() if f["metrics"].get(c) is not None]) for c in cols}


def config_key(commit: str, config: dict) -> str:
    return hashlib.sha256(json.dumps([commit, config], sort_keys=True, default=str).encode()).hexdigest()[:12]


def merge(recs: list[dict], exps: list[dict], only: tuple[str, dict] | None = None) -> list[dict]:
    """`recs` with every finished View 2 fold of `exps` added (a fold recorded already is kept); with
    `only` = (pipeline, configuration), the folds of that configuration on that pipeline alone."""
    recs = [dict(r) for r in recs]
    for e in exps:
        p = e["params"]
        if e["state"] != "success" or p.get("pairs.protocol") != "view2" or e["metrics"]["test acc"] is None:
            continue
        config = config_of(p)
        commit = code_commit(e["commit"])
        if only is not None and (commit != only[0] or not same(config, only[1])):
            continue  # another configuration's fold, or one of an older pipeline: `report` adds those
        rec = next((r for r in recs if r["commit"] == commit and same(r["params"], config)), None)
        if rec is None:
            try:
                base = committed_params(commit)
            except subprocess.CalledProcessError:
                base = {}
            rec = {"commit": commit, "params": config,
                   "overrides": {k: v for k, v in config.items() if k not in base or not same(v, base[k])},
                   "folds": {}}
            recs.append(rec)
        rec["folds"] = dict(rec["folds"])
        rec["folds"].setdefault(str(int(p["pairs.fold"])), {"name": e["name"], "metrics": e["metrics"]})
    for rec in recs:
        rec["folds"] = dict(sorted(rec["folds"].items(), key=lambda kv: int(kv[0])))
        rec["summary"] = fold_summary(rec["folds"], METRICS)
    return recs


def _cell(v: dict | None, digits: int = 4) -> str:
    if v is None:
        return ""
    return f"{v['mean']:.{digits}f}" + (f" ± {v['se']:.{digits}f}" if v.get("se") is not None else "")


def view2_md(recs: list[dict], fusions: list[dict] = ()) -> str:
    lines = [
        "# LFW View 2",
        "",
        "Generated by `python scripts/view2.py report` from docs/view2.json; do not edit by hand.",
        "Each configuration is ten DVC experiments (`python scripts/view2.py run`): fold K's 600 pairs of",
        "pairs.txt are scored by a model trained without fold K (its people in unrestricted mode, its pairs",
        "in restricted mode), with the threshold chosen on validation carved from the training side.",
        "Summary cells are the mean ± standard error over the folds listed, as LFW results are stated;",
        "a configuration with fewer than ten folds is not yet a View 2 result. A configuration's commit is",
        "the last one that changed the pipeline (params.yaml's values, dvc.yaml's stages that write outputs",
        "and their pipeline/ deps) before its folds ran: folds run at later commits with the same pipeline",
        "count as the same configuration. Two configurations compare fold by fold (each fold's B - A, their",
        "mean, standard error and wins): `python scripts/view2.py paired COMMIT_A COMMIT_B [-S k=v]",
        "[--a-set k=v] [--b-set k=v]`, -S for what both ran with. Every configuration here took part in",
        "choosing the recipe or was scored on the test folds more than once: none is an untouched final",
        "evaluation (docs/DECISIONS.md).",
        "",
    ]
    for rec in recs:
        folds = list(rec["folds"])
        mode = rec["params"].get("pairs.mode", "?")
        overrides = ", ".join(f"{k}={v}" for k, v in rec["overrides"].items()) or "params.yaml as committed"
        sets = _sets_text(rec["overrides"])
        lines += [f"## {mode}, pipeline of commit {rec['commit']}: {overrides}", "",
                  *([f"**Superseded:** {rec['superseded']}.", ""] if rec.get("superseded") else []),
                  f"Folds {', '.join(folds)} ({len(folds)} of {FOLDS}). Reproduce: at a commit with this pipeline, "
                  f"`python scripts/view2.py run{' ' + sets if sets else ''}`.", "",
                  "| fold | " + " | ".join(METRICS) + " |", "|---" * (len(METRICS) + 1) + "|"]
        for fold, f in rec["folds"].items():
            cells = [("" if f["metrics"].get(c) is None else
                      (f"{f['metrics'][c]:.4f}" if isinstance(f["metrics"][c], float) else str(f["metrics"][c]))) for c in METRICS]
            lines.append(f"| {fold} | " + " | ".join(cells) + " |")
        lines.append("| **mean ± SE** | " + " | ".join(f"**{_cell(rec['summary'][c], 1 if c == 'best epoch' else 4)}**"
                                                    for c in METRICS) + " |")
        lines.append("")
    for rec in fusions:
        lines += fusion_md(rec)
    if not recs:
        lines.append("No View 2 fold has finished yet.")
    return "\n".join(lines).rstrip() + "\n"


def fusion_run(rec: dict) -> dict:
    """A fusion shaped as log_mlflow's configurations: its two configurations as params, its summary."""
    params = {"pairs.mode": rec["mode"], "calibrate.criterion": rec["criterion"]}
    for side in ("a", "b"):
        params[f"fusion.{side}.commit"] = rec[side]["commit"]
        params.update({f"fusion.{side}.{k}": v for k, v in rec[side]["overrides"].items()})
    run = {"commit": f"{rec['a']['commit']}+{rec['b']['commit']}", "params": params, "folds": rec["folds"],
           "summary": rec["summary"]}
    # two commits, not one to check out: git_commit_a and git_commit_b
    run["tags"] = {"kind": "view2", "protocol": "view2", "view2_key": config_key(run["commit"], params), "fusion": "2",
                   "git_commit_a": rec["a"]["commit"], "git_commit_b": rec["b"]["commit"]}
    return run


def fusion_md(rec: dict) -> list[str]:
    """The section of a fusion of two configurations (scripts/view2_fusion.py)."""
    a, b = rec["a"], rec["b"]
    both = {k: v for k, v in a["overrides"].items() if k in b["overrides"] and same(v, b["overrides"][k])}
    only_a = {k: v for k, v in a["overrides"].items() if k not in both}
    only_b = {k: v for k, v in b["overrides"].items() if k not in both}
    cmd = " ".join(x for x in ("python scripts/view2_fusion.py", a["commit"], b["commit"], _sets_text(both),
                               _sets_text(only_a, "--a-set"), _sets_text(only_b, "--b-set"),
                               "--write") if x)
    name = lambda r: f"pipeline of commit {r['commit']}" + (f" ({_sets_text(r['overrides'])})" if r["overrides"] else "")  # noqa: E731
    folds = list(rec["folds"])
    lines = [f"## {rec['mode']}, two networks fused: A, {name(a)}; B, {name(b)}", "",
             *([f"**Superseded:** {rec['superseded']}.", ""] if rec.get("superseded") else []),
             f"Folds {', '.join(folds)} ({len(folds)} of {FOLDS}). Each fold's two networks (each unit embedding with "
             "its own test-time views, concatenated and scaled by 1/sqrt(2)), the threshold chosen on the fold's "
             f"fused validation pairs ({rec['criterion']}); val AUC A and B: each network alone. Reproduce: once both "
             f"configurations have run, `{cmd}`.", "",
             "| fold | " + " | ".join(FUSION_COLUMNS) + " |", "|---" * (len(FUSION_COLUMNS) + 1) + "|"]
    for fold, f in rec["folds"].items():
        lines.append(f"| {fold} | " + " | ".join("" if f["metrics"].get(c) is None else f"{f['metrics'][c]:.4f}"
                                                 for c in FUSION_COLUMNS) + " |")
    lines += ["| **mean ± SE** | " + " | ".join(f"**{_cell(rec['summary'][c])}**" for c in FUSION_COLUMNS) + " |", ""]
    return lines


def log_mlflow(recs: list[dict]) -> None:
    """One run per configuration (or fusion of two, `fusion_run`) in the pipeline's MLflow experiment,
    updated in place on each report."""
    from pipeline import tracking
    import mlflow
    from mlflow.tracking import MlflowClient

    uri = tracking.tracking_uri()
    mlflow.set_tracking_uri(uri)
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(tracking.EXPERIMENT)
    if exp is None:
        print("MLflow: no pipeline experiment yet, nothing to record beside", file=sys.stderr)
        return
    for rec in recs:
        key = config_key(rec["commit"], rec["params"])
        found = client.search_runs([exp.experiment_id], f"tags.view2_key = '{key}'", max_results=1)
        run_id = found[0].info.run_id if found else client.create_run(
            exp.experiment_id, run_name=f"view2-{rec['params'].get('pairs.mode')}-{rec['commit']}",
            tags=rec.get("tags") or {"kind": "view2", "protocol": "view2", "view2_key": key,
                                     "git_commit": rec["commit"]}).info.run_id
        client.set_tag(run_id, "folds", ",".join(rec["folds"]))
        for k, v in rec["params"].items():
            if not found:
                client.log_param(run_id, k, v)
        for col, v in rec["summary"].items():
            if v is not None:
                name = col.replace(" ", "_")
                client.log_metric(run_id, f"view2.{name}_mean", v["mean"])
                if v["se"] is not None:
                    client.log_metric(run_id, f"view2.{name}_se", v["se"])
        client.log_metric(run_id, "view2.folds", len(rec["folds"]))
        client.set_terminated(run_id, "FINISHED")
        print(f"MLflow {uri}: run {run_id} ({len(rec['folds'])} folds)")


def report(args) -> int:
    recs = load_records()
    recs = merge(recs, experiments(show(args.num, args.rev)), getattr(args, "only", None))
    files.write_text(DATA, json.dumps(recs, indent=1, ensure_ascii=False) + "\n")
    files.write_text(OUT, view2_md(recs, load_fusions()))
    for rec in recs:
        s = rec["summary"]
        print(f"{rec['commit']} {rec['params'].get('pairs.mode')} {rec['overrides'] or ''}: {len(rec['folds'])} folds, "
              f"test accuracy {_cell(s['test acc'])}, AUC {_cell(s['test AUC'])}")
    if not args.no_mlflow:
        log_mlflow(recs)
    print(f"wrote {OUT.relative_to(ROOT)} and {DATA.relative_to(ROOT)}")
    refresh_readme()
    return 0


def refresh_readme() -> None:
    """README's results block again, for its View 2 rows."""
    readme = ROOT / "README.md"
    if readme.exists() and (ROOT / "metrics" / "evaluate.json").exists():
        text = readme.read_text(encoding="utf-8")
        block = experiments_table.readme_block_from_files(
            lambda rel: (ROOT / rel).read_text(encoding="utf-8"))
        if experiments_table.current_block(text) != block:
            files.write_text(readme, experiments_table.with_block(text, block))
            print("README results block rewritten")


def _sets_text(overrides: dict, flag: str = "-S") -> str:
    return " ".join(f"{flag} {experiments_table.override(k, v)}" for k, v in overrides.items())


def find_record(recs: list[dict], commit: str, overrides: dict, side: str) -> dict:
    """The docs/view2.json configuration of pipeline `commit` (a prefix) run with exactly `overrides`."""
    def agrees(rec):
        o = rec["overrides"]
        return o.keys() == overrides.keys() and all(experiments_table._same_value(o[k], v) for k, v in overrides.items())
    def named(rec):  # a short or a full hash
        return rec["commit"].startswith(commit) or commit.startswith(rec["commit"])
    found = [r for r in recs if named(r) and agrees(r)]
    if len(found) != 1:
        have = "; ".join(f"{r['commit']} {_sets_text(r['overrides'])}".rstrip() for r in recs
                         if named(r))
        raise SystemExit(f"{side}: {'no' if not found else 'more than one'} View 2 configuration of commit {commit} with "
                         f"overrides {_sets_text(overrides) or '(none)'} in {os.path.relpath(DATA, ROOT)}"
                         f" (that commit has: {have or 'none'})")
    return found[0]


def paired(recs: list[dict], a: tuple[str, dict], b: tuple[str, dict],
           cols: tuple[str, ...] = ("val AUC", "test acc", "test AUC")) -> list[str]:
    """Configuration B against A fold by fold: each fold's B - A, then their mean, standard error, t and
    wins (experiments_table.paired_table). The folds' test pairs and people are the same for both, and
    so, where the protocol and split_seed are, the validation pairs."""
    ra, rb = find_record(recs, *a, "A"), find_record(recs, *b, "B")
    runs = [{int(k): (r["commit"], f["metrics"]) for k, f in r["folds"].items()} for r in (ra, rb)]
    name = [f"{r['commit']} {_sets_text(r['overrides'])}".rstrip() for r in (ra, rb)]
    lines = [f"A: {name[0]}; B: {name[1]}",
             f"folds: A {sorted(runs[0])}, B {sorted(runs[1])}; paired: {sorted(runs[0].keys() & runs[1].keys()) or 'none'}"]
    return lines + (experiments_table.paired_table(*runs, cols, unit="fold") if runs[0].keys() & runs[1].keys() else [])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="run the missing folds one after the other, then report")
    r.add_argument("--folds", type=parse_folds, default=list(range(1, FOLDS + 1)), help="e.g. 1-10 (default), 1,4-6")
    r.add_argument("-S", "--set", action="append", default=[], metavar="KEY=VALUE", help="a params override, as dvc exp run -S")
    r.add_argument("--num", type=int, default=20, help="look for finished folds in the experiments of the last N commits")
    r.add_argument("--no-mlflow", action="store_true", help="do not record the summary in MLflow")
    p = sub.add_parser("report", help="docs/VIEW2.md, docs/view2.json and MLflow from the finished folds")
    p.add_argument("--num", type=int, default=20, help="read the experiments of the last N commits")
    p.add_argument("--rev", default="HEAD", help="... counted back from this commit")
    p.add_argument("--no-mlflow", action="store_true", help="do not record the summary in MLflow")
    c = sub.add_parser("paired", help="compare two configurations of docs/view2.json fold by fold")
    c.add_argument("a", metavar="COMMIT_A", help="configuration A's pipeline commit, as docs/VIEW2.md names it")
    c.add_argument("b", metavar="COMMIT_B", help="configuration B's pipeline commit (may be A's)")
    c.add_argument("-S", "--set", action="append", default=[], metavar="KEY=VALUE", help="an override both ran with")
    c.add_argument("--a-set", action="append", default=[], metavar="KEY=VALUE", help="an override of A's alone")
    c.add_argument("--b-set", action="append", default=[], metavar="KEY=VALUE", help="an override of B's alone")
    args = parser.parse_args(argv)
    if args.command == "paired":
        common = plain(parse_sets(args.set))
        print("\n".join(paired(load_records(), (args.a, {**common, **plain(parse_sets(args.a_set, "--a-set"))}),
                                (args.b, {**common, **plain(parse_sets(args.b_set, "--b-set"))}))))
        return 0
    return run(args) if args.command == "run" else report(args)


if __name__ == "__main__":
    sys.exit(main())
