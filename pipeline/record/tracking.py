"""The MLflow record of a pipeline execution: one parent run per execution, one nested run per stage.

Record keeping only: nothing here changes a stage's outputs, so no stage lists it as a DVC dependency.

The parent run is the row a user compares in the MLflow UI: it collects every stage's params and
metrics (metrics prefixed with the stage name, e.g. `evaluate.accuracy`). Each stage's own nested
run holds its params, its unprefixed metrics (per-epoch history with `step` for `train`), its
artifacts and tags. Stages find their parent through a tag, `pipeline_key`: a hash of params.yaml,
the git commit and the DVC experiment name, so the separate stage processes of one `dvc repro`
or `dvc exp run` land in one row.

The store defaults to SQLite at the repository root (`mlflow.db`), found from DVC_ROOT and
anchored outside the temporary copies that `dvc exp run --queue` works in; MLFLOW_TRACKING_URI
overrides it (a remote `mlflow server`, say). MLflow records, it never decides a DVC output: if
the store cannot be reached, the stage warns once, goes on without a record and still writes
its outputs. FACEVERIFY_TRACKING=off turns the record off.

Parallel experiments (`dvc queue start --jobs N`) share one SQLite file. SQLite takes one writer
at a time, and MLflow creates its schema on first use with no guard against a second process
doing the same; so the stages of concurrent experiments take a file lock beside the database
(`mlflow.db.lock`) while they open their runs and register models, and a write that finds the
database busy is retried before it counts as a failure. A server store needs neither.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import subprocess
import time
from pathlib import Path
from typing import Any, Iterator

import yaml

from pipeline.store import repo_root, sqlite_path, tracking_uri

log = logging.getLogger("pipeline.record.tracking")

EXPERIMENT = os.environ.get("FACEVERIFY_MLFLOW_EXPERIMENT", "faceverify")
REGISTERED_MODEL = os.environ.get("FACEVERIFY_REGISTERED_MODEL", "faceverify")
# MLflow 3's kind of experiment: "custom_model_development" is a model-training one, not GenAI. The 3.17 UI
# still opens on its GenAI overview unless told `?workflowType=machine_learning` (the README's URL does).
EXPERIMENT_KIND = "mlflow.experimentKind"


@contextlib.contextmanager
def store_lock(uri: str | None = None) -> Iterator[None]:
    """Hold an exclusive lock beside an SQLite store (no-op for any other store or without fcntl)."""
    db = sqlite_path(uri or tracking_uri())
    try:
        import fcntl
    except ImportError:  # Windows: one experiment at a time
        fcntl = None
    if db is None or fcntl is None:
        yield
        return
    db.parent.mkdir(parents=True, exist_ok=True)
    with open(db.with_name(db.name + ".lock"), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


BUSY_RETRIES = 8  # 0.25 s doubling: about a minute in all before a busy database counts as a failure


def _busy(e: Exception) -> bool:
    return "database is locked" in str(e) or "database table is locked" in str(e)


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def git_state() -> tuple[str, bool]:
    """(commit, dirty): dirty means tracked code or params differ from the commit (outputs excluded)."""
    commit = os.environ.get("DVC_EXP_BASELINE_REV") or _git("rev-parse", "HEAD")
    status = _git("status", "--porcelain", "--untracked-files=no", "--", ".", ":!dvc.lock", ":!metrics",
                  ":!plots", ":!results", ":!docs")
    return commit, bool(status)


def lock_hashes(stage: str, lock: Path = Path("dvc.lock"), pipeline: Path = Path("dvc.yaml")) -> dict[str, str]:
    """{'hash.data.lfw-a': md5, ...}: content hashes, from dvc.lock, of the outputs of the stages that
    come before `stage` in dvc.yaml (DVC has already written those; later ones are still the last run's)."""
    if not lock.exists() or not pipeline.exists():
        return {}
    order = list((yaml.safe_load(pipeline.read_text()) or {}).get("stages", {}))
    upstream = order[:order.index(stage)] if stage in order else []
    stages = (yaml.safe_load(lock.read_text()) or {}).get("stages", {})
    out = {}
    for name in upstream:
        for o in stages.get(name, {}).get("outs", []):
            if "md5" in o and not o["path"].startswith(("metrics/", "plots/", "results/")):
                out["hash." + o["path"].replace("/", ".")] = o["md5"]
    return out


def stage_datasets(stage: str, params: Path = Path("params.yaml"), lock: Path = Path("dvc.lock"),
                   pipeline: Path = Path("dvc.yaml")) -> list:
    """An mlflow.entities.Dataset for each upstream output that `stage` depends on in dvc.yaml, with its
    content hash from dvc.lock. The LFW-a folder names its source: LFW_A_ARCHIVE, else download.url."""
    from mlflow.entities import Dataset
    if not lock.exists() or not pipeline.exists():
        return []
    deps = (yaml.safe_load(pipeline.read_text()) or {}).get("stages", {}).get(stage, {}).get("deps", [])
    outs = {o["path"]: o.get("md5", "") for s in ((yaml.safe_load(lock.read_text()) or {}).get("stages", {})).values()
            for o in s.get("outs", [])}
    found = {}
    for dep in deps:
        owner = next((p for p in outs if dep == p or dep.startswith(p + "/")), None)
        if owner is not None and owner.startswith("data/") and outs[owner]:
            found[owner] = outs[owner]
    datasets = []
    for path, md5 in found.items():
        source = path
        if path == "data/lfw-a":
            source = os.environ.get("LFW_A_ARCHIVE") or _download_url(params) or path
        kind = "http" if source.startswith(("http://", "https://")) else "local"
        datasets.append(Dataset(name=path, digest=md5[:36], source_type=kind,
                                source=json.dumps({"url": source} if kind == "http" else {"uri": source})))
    return datasets


def protocol_tags(params: Path) -> dict[str, str]:
    """{"protocol": "view1", "lfw_category": ...} or {"protocol": "view2", "fold": "K", ...}: what the run is
    scored on and the LFW category it reports in, for the UI's search (`tags.protocol = 'view2'`) and
    the lab's View 2 runner; {} where the file does not validate."""
    from pipeline.card import CATEGORIES
    from pipeline.params import ParamsError, load_params
    try:
        pairs = load_params(params).pairs
    except ParamsError:
        return {}
    return {"protocol": pairs.protocol, "lfw_category": CATEGORIES[pairs.mode],
            **({"fold": str(pairs.fold)} if pairs.protocol == "view2" else {})}


def _download_url(params: Path) -> str:
    """params' download.url, or "" where the file does not validate (the stage itself reports that)."""
    from pipeline.params import ParamsError, load_params
    try:
        return load_params(params).download.url
    except ParamsError:
        return ""


class Recorder:
    """What a stage records; every call is a no-op (after one warning) when the store is unusable."""

    def __init__(self, stage: str, mlflow=None, client=None, parent_id: str | None = None, child_id: str | None = None):
        self.stage, self.mlflow, self.client = stage, mlflow, client
        self.parent_id, self.child_id = parent_id, child_id
        self.failed = False

    def fail(self) -> None:
        """Mark this stage's run FAILED when it ends (the stage reported an error)."""
        self.failed = True

    @property
    def active(self) -> bool:
        return self.client is not None

    def call(self, fn, retries: int = BUSY_RETRIES):
        """fn(client) if the store is usable; a busy SQLite store is retried, any other failure (or one
        busy past the retries) warns once and turns the record off."""
        if not self.active:
            return None
        for attempt in range(retries + 1):
            try:
                return fn(self.client)
            except Exception as e:  # noqa: BLE001 - any store failure must not cost the DVC outputs
                if _busy(e) and attempt < retries:
                    time.sleep(0.25 * 2 ** attempt)
                    continue
                log.warning("MLflow record failed (%s: %s); going on without it", type(e).__name__, e)
                self.client = None
                return None

    def params(self, flat: dict[str, Any]) -> None:
        if not self.active:  # no record, and no need of MLflow (FACEVERIFY_TRACKING=off)
            return
        from mlflow.entities import Param
        items = [Param(k, str(v)[:6000]) for k, v in flat.items()]
        for run_id in (self.child_id, self.parent_id):
            self.call(lambda c: c.log_batch(run_id, params=items))

    def metrics(self, values: dict[str, Any], step: int | None = None) -> None:
        if not self.active:
            return
        from mlflow.entities import Metric
        now = int(time.time() * 1000)
        numeric = {k: float(v) for k, v in values.items() if isinstance(v, (int, float))}
        child = [Metric(k, v, now, step or 0) for k, v in numeric.items()]
        parent = [Metric(f"{self.stage}.{k}", v, now, step or 0) for k, v in numeric.items()]
        self.call(lambda c: c.log_batch(self.child_id, metrics=child))
        self.call(lambda c: c.log_batch(self.parent_id, metrics=parent))

    def artifact(self, path: str | Path, subdir: str | None = None, parent_too: bool = False) -> None:
        if Path(path).exists():
            for run_id in (self.child_id, self.parent_id) if parent_too else (self.child_id,):
                self.call(lambda c: c.log_artifact(run_id, str(path), subdir))

    def inputs(self, stage: str, params: Path) -> None:
        """The data this stage reads, as MLflow datasets (name, DVC content hash, source) on its run and the
        parent's: the upstream outputs that dvc.yaml names as its deps, with their hashes from dvc.lock."""
        if not self.active:
            return
        from mlflow.entities import DatasetInput, InputTag
        try:
            found = [DatasetInput(d, tags=[InputTag("mlflow.data.context", stage)]) for d in stage_datasets(stage, params)]
        except Exception as e:  # noqa: BLE001 - an unreadable dvc.yaml or dvc.lock costs the datasets, not the record
            log.warning("MLflow datasets of stage %s not recorded (%s: %s)", stage, type(e).__name__, e)
            return
        if found:
            for run_id in (self.child_id, self.parent_id):
                self.call(lambda c: c.log_inputs(run_id, datasets=found))

    def finish(self, status: str) -> None:
        """End this stage's run; the parent's end moves to now, so it spans every stage that ran, and takes
        this stage's status (stages run one after another and a failure stops the pipeline, so the last
        stage's status is the execution's; a rerun after a failure finishes the same parent)."""
        if not self.active:
            return
        self.call(lambda c: c.set_terminated(self.child_id, status))
        self.call(lambda c: c.set_terminated(self.parent_id, status))

    def tags(self, values: dict[str, Any], parent_too: bool = False) -> None:
        if not self.active:
            return
        from mlflow.entities import RunTag
        items = [RunTag(k, str(v)) for k, v in values.items()]
        for run_id in (self.child_id, self.parent_id) if parent_too else (self.child_id,):
            self.call(lambda c: c.log_batch(run_id, tags=items))


def pipeline_key(params_path: Path, commit: str) -> str:
    h = hashlib.sha256()
    h.update(params_path.read_bytes() if params_path.exists() else b"")
    h.update(commit.encode())
    h.update(os.environ.get("DVC_EXP_NAME", "").encode())
    return h.hexdigest()[:16]


def _open(stage: str, params_path: Path) -> Recorder:
    if os.environ.get("FACEVERIFY_TRACKING", "").lower() in ("off", "0", "false"):
        return Recorder(stage)
    os.environ.setdefault("MLFLOW_SKIP_PIP_REQUIREMENTS_CHECK", "true")
    import mlflow
    from mlflow.tracking import MlflowClient

    uri = tracking_uri()
    default_store = not os.environ.get("MLFLOW_TRACKING_URI")  # read before set_tracking_uri exports it
    try:
        with store_lock(uri):  # schema creation and the parent run: one process at a time
            return _open_runs(stage, params_path, mlflow, MlflowClient, uri, default_store)
    except Exception as e:  # noqa: BLE001
        log.warning("MLflow store %s unusable (%s: %s): this stage runs without a record", uri, type(e).__name__, e)
        return Recorder(stage)


def _open_runs(stage: str, params_path: Path, mlflow, MlflowClient, uri: str, default_store: bool) -> Recorder:
    mlflow.set_tracking_uri(uri)
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(EXPERIMENT)
    if exp:
        exp_id = exp.experiment_id
    else:  # artifacts beside the default store, not in the (possibly temporary) working copy
        where = (repo_root() / "mlartifacts").as_uri() if default_store else None
        exp_id = client.create_experiment(EXPERIMENT, artifact_location=where, tags={EXPERIMENT_KIND: "custom_model_development"})
    commit, dirty = git_state()
    key = pipeline_key(params_path, commit)
    found = client.search_runs([exp_id], f"tags.pipeline_key = '{key}' and tags.kind = 'pipeline'", max_results=1)
    exp_name = os.environ.get("DVC_EXP_NAME", "")
    common = {"git_commit": commit, "git_dirty": str(dirty).lower(), "pipeline_key": key,
              **({"dvc_exp_name": exp_name} if exp_name else {}), **protocol_tags(params_path)}
    if found:
        parent_id = found[0].info.run_id
    else:
        name = exp_name or f"repro-{commit[:7] or 'nogit'}-{key[:6]}"
        parent_id = client.create_run(exp_id, run_name=name, tags={**common, "kind": "pipeline"}).info.run_id
    child = client.create_run(exp_id, run_name=stage, tags={
        **common, "kind": "stage", "stage": stage, "mlflow.parentRunId": parent_id, **lock_hashes(stage)})
    log.info("recording to MLflow %s (run %s, parent %s)", uri, child.info.run_id, parent_id)
    rec = Recorder(stage, mlflow, client, parent_id, child.info.run_id)
    rec.inputs(stage, params_path)
    return rec


@contextlib.contextmanager
def stage_run(stage: str, params_path: str | Path = "params.yaml") -> Iterator[Recorder]:
    """Open this stage's nested run (and its pipeline's parent run); close it FINISHED or FAILED."""
    rec = _open(stage, Path(params_path))
    status = "FAILED"
    try:
        yield rec
        status = "FAILED" if rec.failed else "FINISHED"
    finally:
        rec.finish(status)
