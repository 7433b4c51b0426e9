"""LFW View 2, as the literature reports it: ten DVC experiments, one per fold, and their aggregate.

Fold K is `dvc exp run --temp -S pairs.protocol=view2 -S pairs.fold=K` plus the `-S` given: the pipeline
trains without fold K (its people, or in restricted mode its pairs), picks the threshold on validation
carved from the training side, and scores fold K's 600 pairs of pairs.txt. `run` runs the missing folds
one after the other in the foreground, each in a temporary copy of the workspace, DVC's output on the
terminal; it skips every fold with a finished experiment of the same params and pipeline (params.yaml's
values, dvc.yaml's stages that write outputs and their pipeline/ deps), so after an interruption the
same command goes on with the fold it stopped in, and stops at a failing fold, naming it. `run --final`
is a fixed recipe's final report: checked first (check_final: a recipe scored once, at a seed that no run
which can decide anything used), registered in docs/view2.json before its first fold, then run like any
other. `report` adds every finished fold to docs/view2.json, writes docs/VIEW2.md (per configuration the
mean ± standard error over the folds, and each fold's figures; then the fusions of docs/view2_fusion.json)
and records one MLflow run per configuration (tags `kind=view2`, `protocol=view2`, `lfw_category`,
`final`). `paired` compares two configurations fold by fold.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import shlex
import subprocess
import sys

import yaml

from pipeline import files, store
from pipeline.card import CATEGORIES
from pipeline.lab import records
from pipeline.lab.records import (LAB, ROOT, aggregate, cell, committed_params, dvc, git, load, override,
                                  paired_table, params_file, plain, refresh_readme, same, save, show)
from pipeline.views import FOLDS

DATA = ROOT / "docs" / "view2.json"
FUSIONS = ROOT / "docs" / "view2_fusion.json"  # written by `fuse --write` (pipeline/lab/fusion.py)
OUT = ROOT / "docs" / "VIEW2.md"
METRICS = {c: records.METRICS[c] for c in ("test acc", "test AUC", "test EER", "val AUC", "best epoch")}
FUSION_COLUMNS = ("test acc", "test AUC", "test EER", "val AUC", "val AUC A", "val AUC B")
FOLD_KEYS = ("pairs.protocol", "pairs.fold")


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
    """-S key=value pairs as {key: value} (records.parse_sets), the fold keys refused."""
    out = records.parse_sets(sets, option)
    fold_keys = sorted(out.keys() & set(FOLD_KEYS))
    if fold_keys:
        raise SystemExit(f"{option} {fold_keys[0]}: set by `view2 run`, one fold per experiment")
    return out


# --- `dvc exp show --json` --------------------------------------------------------------------

def _writer_stages(rev: str) -> dict:
    """dvc.yaml's stages at `rev` that write outputs (all but `check`), parsed."""
    stages = yaml.safe_load(git("show", f"{rev}:dvc.yaml"))["stages"]
    return {n: s for n, s in stages.items() if s.get("outs") or s.get("metrics") or s.get("plots")}


def pipeline_files(rev: str) -> list[str]:
    """What can change a fold's outputs at `rev`: dvc.yaml, params.yaml and every pipeline/ file that
    dvc.yaml lists as a dependency of a stage with outputs (record keeping and the lab, which no stage
    lists, are left out, and so is what only the `check` stage, which writes nothing, depends on)."""
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
    unreadable = (subprocess.CalledProcessError, KeyError, TypeError, AttributeError, yaml.YAMLError)
    if rev not in _memo:
        try:
            paths = pipeline_files(rev)
            want = pipeline_state(rev, paths)
            touched = git("log", "--format=%H", rev, "--", *paths).split()  # newest first
            alike = []
            for c in touched:
                try:
                    if pipeline_state(c, paths) == want:
                        alike.append(c)
                except unreadable:
                    continue  # a commit without a readable dvc.yaml or params.yaml: another pipeline
            _memo[rev] = (alike[-1] if alike else rev)[:7]
        except unreadable:
            _memo[rev] = rev[:7]
    return _memo[rev]


def experiments(shown) -> list[dict]:
    """Every experiment of `dvc exp show --json` output (records.experiments) with its metrics by column,
    all None unless it finished."""
    return [{**e, "metrics": {col: records.metrics_file(e["data"], f).get(k) if e["state"] == "success" else None
                              for col, (f, k) in METRICS.items()}} for e in records.experiments(shown)]


def config_of(params: dict) -> dict:
    """A fold's configuration: its params but the fold keys, each param taken out of params.yaml since at the
    value the code runs without it (records.with_taken_out), as docs/experiments.json records hold them."""
    return {k: v for k, v in records.with_taken_out(params).items() if k not in FOLD_KEYS}


def wanted(base: dict, sets: dict) -> dict:
    """The flat params of the configuration asked for (the fold keys left out)."""
    unknown = [k for k in sets if k not in base]
    if unknown:
        raise SystemExit(f"-S {unknown[0]}: no such key in params.yaml")
    return config_of({**base, **plain(sets)})


# --- run ----------------------------------------------------------------------------------------

def fold_states(shown, code: str, config: dict, recs: list[dict] = ()) -> dict[int, str]:
    """{fold: state} of the View 2 experiments of `config` run on pipeline `code` (code_commit), at any
    commit, a fold's finished experiment ("success") winning over any other state; the folds the records
    `recs` hold for them count as finished (run in another clone, whose experiment refs this one lacks)."""
    states: dict[int, str] = {}
    for e in experiments(shown):
        p = e["params"]
        if p.get("pairs.protocol") == "view2" and same(config_of(p), config) and code_commit(e["commit"]) == code:
            fold = int(p["pairs.fold"])
            if e["state"] == "success" and e["metrics"]["test acc"] is None:
                continue
            if states.get(fold) != "success":
                states[fold] = e["state"]
    for rec in recs:
        if rec["commit"] == code and same(config_of(rec["params"]), config):
            states.update({int(k): "success" for k in rec["folds"]})
    return states


def load_records() -> list[dict]:
    """The configurations docs/view2.json holds, with their folds."""
    return load(DATA)


def load_fusions() -> list[dict]:
    """The fusions of two configurations docs/view2_fusion.json holds (`fuse --write`)."""
    return load(FUSIONS)


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


def final_record(recs: list[dict], code: str, config: dict, ignore: tuple[str, ...] = ()) -> dict | None:
    """The final View 2 record (`run --final`) of `config` on pipeline `code`, the `ignore` keys aside, if any."""
    def key(params: dict) -> dict:
        return {k: v for k, v in params.items() if k not in ignore}
    return next((r for r in recs if r.get("final") and r["commit"] == code and same(key(config_of(r["params"])), key(config))),
                None)


def check_final(seed: int, code: str, config: dict, recs: list[dict], experiment_recs: list[dict], shown,
                lock: dict | None = None) -> None:
    """`view2 run --final`: a final recipe is scored once, at a seed that took part in no decision. Its own
    final record (written before its first fold) lets an interrupted final run go on until ten folds are
    scored; a new one is refused for a recipe (the params but the seed) whose final ran on this pipeline at
    any seed, and at a seed that a run which can decide something used: a record of docs/experiments.json,
    the run behind dvc.lock (`lock`), a View 2 configuration not final, or any finished experiment `dvc exp
    show` lists (`shown`) that belongs to no final configuration, this one's earlier folds run without
    --final included. Another recipe's final may share the seed: a final decides nothing."""
    mine = final_record(recs, code, config)
    if mine is not None:
        if len(mine["folds"]) == FOLDS:
            raise SystemExit(f"--final: this configuration's final View 2 is scored already (pipeline of commit "
                             f"{code}, seed {seed}); a final recipe is scored once")
        return
    earlier = final_record(recs, code, config, ignore=("seed",))  # the same recipe at another seed
    if earlier is not None:
        raise SystemExit(f"--final: this recipe's final View 2 ran at seed {earlier['params'].get('seed', 0)} (pipeline "
                         f"of commit {code}); a final recipe is scored once, at one seed")
    used = [f"docs/experiments.json, commit {r['commit']}" for r in experiment_recs if seed in r.get("seeds", ())]
    used += [f"the run behind dvc.lock, commit {lock['commit']}"] if lock and seed in lock["seeds"] else []
    used += [f"docs/view2.json, pipeline of commit {r['commit']}, not final" for r in recs
             if r["params"].get("seed", 0) == seed and not r.get("final")]
    used += [f"experiment {e['name']}, commit {e['commit']}" for e in experiments(shown)
             if e["state"] == "success" and e["params"].get("seed", 0) == seed
             and final_record(recs, code_commit(e["commit"]), config_of(e["params"])) is None]
    if used:
        raise SystemExit(f"--final: seed {seed} took part in {used[0]}" + (f" (and {len(used) - 1} more)" if len(used) > 1
                         else "") + "; choose a seed that no run used")


def start_final(recs: list[dict], code: str, config: dict) -> list[dict]:
    """`recs` with `config`'s final record on pipeline `code` (no folds yet where it is new), so that its folds
    count as final runs from the first one on."""
    if final_record(recs, code, config) is not None:
        return recs
    return [*recs, {**new_record(code, config), "final": True, "summary": fold_summary({}, METRICS)}]


def run(args) -> int:
    """`view2 run`: args.folds, args.set (the -S), args.num, args.no_mlflow, args.final."""
    head = git("rev-parse", "HEAD").strip()
    if dvc("status", "--quiet").returncode != 0 or git("status", "--porcelain", "--", "pipeline", "dvc.yaml").strip():
        print("note: the workspace differs from HEAD; each fold runs on the workspace as it is when the fold starts",
              file=sys.stderr)
    sets = parse_sets(args.set)
    config = wanted(params_file(), sets)  # what `dvc exp run` runs: the workspace's params.yaml, with the -S
    code = code_commit(head)
    shown = show(args.num, head, tries=3)  # another experiment being set up fails it for a few seconds
    recs = load_records()
    if getattr(args, "final", False):
        check_final(config.get("seed", 0), code, config, recs, records.load(), shown, records.lock_record())
        recs = start_final(recs, code, config)
        save(recs, DATA)
    states = fold_states(shown, code, config, recs)
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
    report(argparse.Namespace(num=args.num, rev="HEAD", no_mlflow=args.no_mlflow, no_live=False, only=(code, config)))
    return 0


# --- report -------------------------------------------------------------------------------------

def mean_se(values: list[float]) -> dict | None:
    a = aggregate(values)
    return a and {"mean": a["mean"], "se": None if a["sd"] is None else a["sd"] / math.sqrt(len(values))}


def fold_summary(folds: dict, cols) -> dict:
    """{column: mean ± SE over the folds that have it} of {fold: {"metrics": {column: value}}}."""
    return {c: mean_se([f["metrics"][c] for f in folds.values() if f["metrics"].get(c) is not None]) for c in cols}


def config_key(commit: str, config: dict) -> str:
    return hashlib.sha256(json.dumps([commit, config], sort_keys=True, default=str).encode()).hexdigest()[:12]


def new_record(commit: str, config: dict) -> dict:
    """A configuration's record without folds: its params, and the overrides that give them at `commit`."""
    try:
        base = committed_params(commit)
    except subprocess.CalledProcessError:
        base = {}
    taken_out = records.with_taken_out({}).keys() - base.keys()  # no -S can set them at `commit`
    return {"commit": commit, "params": config, "folds": {},
            "overrides": {k: v for k, v in config.items() if k not in taken_out and (k not in base or not same(v, base[k]))}}


def merge(recs: list[dict], exps: list[dict], only: tuple[str, dict] | None = None) -> list[dict]:
    """`recs` with every finished View 2 fold of `exps` added (a fold recorded already is kept); with
    `only` = (pipeline, configuration), the folds of that configuration on that pipeline alone. A registered
    final record takes its configuration's folds on its pipeline, however they were started: the same
    params, seed and pipeline train the same model."""
    recs = [dict(r) for r in recs]
    for e in exps:
        p = e["params"]
        if e["state"] != "success" or p.get("pairs.protocol") != "view2" or e["metrics"]["test acc"] is None:
            continue
        config = config_of(p)
        commit = code_commit(e["commit"])
        if only is not None and (commit != only[0] or not same(config, only[1])):
            continue  # another configuration's fold, or one of an older pipeline: `report` adds those
        rec = next((r for r in recs if r["commit"] == commit and same(config_of(r["params"]), config)), None)
        if rec is None:
            rec = new_record(commit, config)
            recs.append(rec)
        rec["folds"] = dict(rec["folds"])
        rec["folds"].setdefault(str(int(p["pairs.fold"])), {"name": e["name"], "metrics": e["metrics"]})
    for rec in recs:
        rec["folds"] = dict(sorted(rec["folds"].items(), key=lambda kv: int(kv[0])))
        rec["summary"] = fold_summary(rec["folds"], METRICS)
    return recs


def sets_text(overrides: dict, flag: str = "-S") -> str:
    return " ".join(f"{flag} {override(k, v)}" for k, v in overrides.items())


def fold_table(rec: dict, cols) -> list[str]:
    """A configuration's (or a fusion's) table: each fold's figures, then their mean ± SE."""
    lines = ["| fold | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for fold, f in rec["folds"].items():
        lines.append(f"| {fold} | " + " | ".join(cell(None if f["metrics"].get(c) is None else {"mean": f["metrics"][c]})
                                                 for c in cols) + " |")
    summary = (f"**{cell(rec['summary'][c], 1 if c == 'best epoch' else 4)}**" for c in cols)
    return lines + ["| **mean ± SE** | " + " | ".join(summary) + " |", ""]


def final_text(rec: dict) -> str:
    """What a final record (`run --final`) is: scored once, or a final run under way."""
    seed, n = rec["params"].get("seed", 0), len(rec["folds"])
    if n == FOLDS:
        return f"**Final:** run with `--final`, scored once, at seed {seed}, which no run used before"
    return f"**Final, under way:** {n} of {FOLDS} folds of the final run at seed {seed} (`view2 run --final` goes on)"


def view2_md(recs: list[dict], fusions: list[dict] = ()) -> str:
    lines = [
        "# LFW View 2",
        "",
        f"Generated by `{LAB} view2 report` from docs/view2.json; do not edit by hand.",
        f"Each configuration is ten DVC experiments (`{LAB} view2 run`): fold K's 600 pairs of",
        "pairs.txt are scored by a model trained without fold K (its people in unrestricted mode, its pairs",
        "in restricted mode), with the threshold chosen on validation carved from the training side.",
        "Summary cells are the mean ± standard error over the folds listed, as LFW results are stated;",
        "a configuration with fewer than ten folds is not yet a View 2 result. A configuration's commit is",
        "the last one that changed the pipeline (params.yaml's values, dvc.yaml's stages that write outputs",
        "and their pipeline/ deps) before its folds ran: folds run at later commits with the same pipeline",
        "count as the same configuration. Two configurations compare fold by fold (each fold's B - A, their",
        f"mean, standard error and wins): `{LAB} view2 paired COMMIT_A COMMIT_B [-S k=v]",
        "[--a-set k=v] [--b-set k=v]`, -S for what both ran with. A configuration marked **final** ran",
        f"with `{LAB} view2 run --final`: once, after its recipe was fixed, at a seed that no recorded run",
        "used; every other one took part in choosing the recipe or was scored on the test folds more than",
        "once, so it is not an untouched final evaluation (docs/DECISIONS.md).",
        "",
    ]
    for rec in recs:
        folds = list(rec["folds"])
        mode = rec["params"].get("pairs.mode", "?")
        overrides = ", ".join(f"{k}={v}" for k, v in rec["overrides"].items()) or "params.yaml as committed"
        sets = sets_text(rec["overrides"])
        lines += [f"## {mode}, pipeline of commit {rec['commit']}: {overrides}", "",
                  *([f"**Superseded:** {rec['superseded']}.", ""] if rec.get("superseded") else []),
                  *([final_text(rec) + ".", ""] if rec.get("final") else []),
                  f"Folds {', '.join(folds) or 'none yet'} ({len(folds)} of {FOLDS}). Reproduce: at a commit with this "
                  f"pipeline, `{LAB} view2 run{' ' + sets if sets else ''}`.", "", *(fold_table(rec, METRICS) if folds else [])]
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
    """The section of a fusion of two configurations (pipeline/lab/fusion.py)."""
    a, b = rec["a"], rec["b"]
    both = {k: v for k, v in a["overrides"].items() if k in b["overrides"] and same(v, b["overrides"][k])}
    only_a = {k: v for k, v in a["overrides"].items() if k not in both}
    only_b = {k: v for k, v in b["overrides"].items() if k not in both}
    cmd = " ".join(x for x in (f"{LAB} fuse", a["commit"], b["commit"], sets_text(both),
                               sets_text(only_a, "--a-set"), sets_text(only_b, "--b-set"), "--write") if x)
    name = lambda r: f"pipeline of commit {r['commit']}" + (f" ({sets_text(r['overrides'])})" if r["overrides"] else "")  # noqa: E731
    folds = list(rec["folds"])
    lines = [f"## {rec['mode']}, two networks fused: A, {name(a)}; B, {name(b)}", "",
             *([f"**Superseded:** {rec['superseded']}.", ""] if rec.get("superseded") else []),
             f"Folds {', '.join(folds)} ({len(folds)} of {FOLDS}). Each fold's two networks (each unit embedding with "
             "its own test-time views, concatenated and scaled by 1/sqrt(2)), the threshold chosen on the fold's "
             f"fused validation pairs ({rec['criterion']}); val AUC A and B: each network alone. Reproduce: once both "
             f"configurations have run, `{cmd}`.", "", *fold_table(rec, FUSION_COLUMNS)]
    return lines


def log_mlflow(recs: list[dict]) -> None:
    """One run per configuration (or fusion of two, `fusion_run`) in the pipeline's MLflow experiment,
    updated in place on each report."""
    from pipeline.record import tracking
    import mlflow
    from mlflow.tracking import MlflowClient

    uri = store.tracking_uri()
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
        mode = rec["params"].get("pairs.mode")
        if mode in CATEGORIES:
            client.set_tag(run_id, "lfw_category", CATEGORIES[mode])
        client.set_tag(run_id, "final", str(bool(rec.get("final"))).lower())
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
    """`view2 report`: args.num and args.rev (the commits read), args.no_live (docs/view2.json as it is,
    no `dvc exp show`), args.no_mlflow, and args.only (the configuration `run` ran, or None)."""
    recs = load_records()
    if not args.no_live:
        recs = merge(recs, experiments(show(args.num, args.rev)), getattr(args, "only", None))
        save(recs, DATA)
    files.write_text(OUT, view2_md(recs, load_fusions()))
    for rec in recs:
        s = rec["summary"]
        print(f"{rec['commit']} {rec['params'].get('pairs.mode')} {rec['overrides'] or ''}: {len(rec['folds'])} folds, "
              f"test accuracy {cell(s['test acc'])}, AUC {cell(s['test AUC'])}")
    if not args.no_mlflow:
        log_mlflow(recs)
    print(f"wrote {os.path.relpath(OUT, ROOT)}" + ("" if args.no_live else f" and {os.path.relpath(DATA, ROOT)}"))
    if refresh_readme():
        print("README results block rewritten")
    return 0


# --- paired ---------------------------------------------------------------------------------------

def find_record(recs: list[dict], commit: str, overrides: dict, side: str) -> dict:
    """The docs/view2.json configuration of pipeline `commit` (a prefix) run with exactly `overrides`."""
    def named(rec):  # a short or a full hash
        return rec["commit"].startswith(commit) or commit.startswith(rec["commit"])
    found = [r for r in recs if named(r) and same(r["overrides"], overrides)]
    if len(found) != 1:
        have = "; ".join(f"{r['commit']} {sets_text(r['overrides'])}".rstrip() for r in recs if named(r))
        raise SystemExit(f"{side}: {'no' if not found else 'more than one'} View 2 configuration of commit {commit} with "
                         f"overrides {sets_text(overrides) or '(none)'} in {os.path.relpath(DATA, ROOT)}"
                         f" (that commit has: {have or 'none'})")
    return found[0]


def pick(recs: list[dict], a: str, b: str, sets: list[str], a_sets: list[str], b_sets: list[str]) -> tuple[dict, dict]:
    """Configurations A and B of `recs`, each named by its pipeline commit (a prefix) and its overrides:
    `sets` (-S) both ran with, `a_sets` (--a-set) and `b_sets` (--b-set) one alone."""
    common = plain(parse_sets(sets))
    return (find_record(recs, a, {**common, **plain(parse_sets(a_sets, "--a-set"))}, "A"),
            find_record(recs, b, {**common, **plain(parse_sets(b_sets, "--b-set"))}, "B"))


def paired(ra: dict, rb: dict, cols: tuple[str, ...] = ("val AUC", "test acc", "test AUC")) -> list[str]:
    """Configuration B against A fold by fold: each fold's B - A, then their mean, standard error, t and
    wins (records.paired_table). The folds' test pairs and people are the same for both, and so, where
    the protocol and split_seed are, the validation pairs."""
    runs = [{int(k): (r["commit"], f["metrics"]) for k, f in r["folds"].items()} for r in (ra, rb)]
    name = [f"{r['commit']} {sets_text(r['overrides'])}".rstrip() for r in (ra, rb)]
    common = sorted(runs[0].keys() & runs[1].keys())
    lines = [f"A: {name[0]}; B: {name[1]}", f"folds: A {sorted(runs[0])}, B {sorted(runs[1])}; paired: {common or 'none'}"]
    return lines + (paired_table(*runs, cols, unit="fold") if common else [])
