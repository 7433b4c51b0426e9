"""Every stage's success path, in-process, in dvc.yaml's order and with dvc.yaml's arguments, on the synthetic archive.

The default tier's stand-in for the end-to-end `dvc repro` of tests/test_pipeline_e2e.py (slow tier): the
same commands without a process per stage. It also shows that record keeping changes no output: the same
pipeline with MLflow off writes the same bytes, and no record-keeping module writes a file that goes
through pipeline.files' atomic writers (every declared output does).
"""
import contextlib
import importlib
import inspect
import json
import os
import shlex
from pathlib import Path

import pytest
import yaml


from conftest import ROOT, small_params
from pipeline import files

RECORD_KEEPING = ("pipeline.record.", "pipeline.serve.")  # the record-keeping and user-facing modules' packages
DVC = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


def declared_outputs() -> list[str]:
    out = []
    for stage in DVC.values():
        for kind in ("outs", "metrics", "plots"):
            out += [next(iter(o)) if isinstance(o, dict) else o for o in stage.get(kind, [])]
    return out


def run_pipeline(ws: Path, archive: Path, monkeypatch, writers: list) -> None:
    """Each stage's main() with the arguments of its dvc.yaml command, in `ws`."""
    (ws / "params.yaml").write_text(yaml.safe_dump(small_params()))
    monkeypatch.chdir(ws)
    monkeypatch.setenv("LFW_A_ARCHIVE", str(archive))
    for name, stage in DVC.items():
        argv = shlex.split(stage["cmd"])
        assert argv[:3] == ["python", "-m", f"pipeline.stages.{name}"]
        module = importlib.import_module(f"pipeline.stages.{name}")
        assert module.main(argv[3:]) == 0, f"stage {name} failed"


def spy_on_writes(monkeypatch, writers: list) -> None:
    """Record, for every atomic write, the path and the pipeline module that asked for it."""
    for fn in ("atomic_path", "atomic_dir"):
        real = getattr(files, fn)

        def spied(path, _real=real):
            names = [f.frame.f_globals.get("__name__", "") for f in inspect.stack()]
            caller = next(n for n in names if n.startswith("pipeline.") and n != "pipeline.files")
            writers.append((os.path.abspath(path), caller))
            return _real(path)
        monkeypatch.setattr(files, fn, contextlib.contextmanager(lambda path, _s=spied: (yield from _gen(_s(path)))))


def _gen(cm):
    with cm as value:
        yield value


@pytest.fixture(scope="module")
def runs(tmp_path_factory, lfw_archive):
    """The pipeline run twice: with its MLflow record (the tests' store), and with FACEVERIFY_TRACKING=off."""
    out = {}
    for mode in ("recorded", "unrecorded"):
        mp = pytest.MonkeyPatch()
        writers: list = []
        try:
            spy_on_writes(mp, writers)
            if mode == "unrecorded":
                mp.setenv("FACEVERIFY_TRACKING", "off")
            ws = tmp_path_factory.mktemp(mode)
            run_pipeline(ws, lfw_archive, mp, writers)
        finally:
            mp.undo()
        out[mode] = (ws, writers)
    return out


def test_every_stage_writes_its_declared_outputs(runs):
    ws, _ = runs["recorded"]
    for path in declared_outputs():
        assert (ws / path).exists(), path
    train = json.loads((ws / "metrics/train.json").read_text())
    calibrate = json.loads((ws / "metrics/calibrate.json").read_text())
    evaluate = json.loads((ws / "metrics/evaluate.json").read_text())
    # one validation function: train's best epoch and calibrate score the same model on the same pairs alike
    assert train["best_val_auc"] == calibrate["val_roc_auc"]
    assert {"device", "precision", "torch_version"} <= set(train)
    # the threshold lives in calibrate.json, once
    assert "val_threshold" not in calibrate and "threshold" not in evaluate
    assert evaluate["tp"] + evaluate["fp"] + evaluate["tn"] + evaluate["fn"] == evaluate["n_pairs"]
    card = (ws / "reports/model_card.md").read_text()
    assert f"Threshold {calibrate['threshold']:.4f}" in card and train["device"] in card
    assert evaluate["id_people"] == 10 and 0 <= evaluate["id_rank1"] <= evaluate["id_rank5"] <= 1
    assert "id_20way" not in evaluate  # 10 test people: no 20-way trial
    assert 0 <= calibrate["val_id_rank1"] <= 1 and calibrate["val_id_people"] >= 5  # the held-out training people
    assert (ws / "plots/cmc.csv").read_text().startswith("rank,identification_rate\n1,")


def test_record_keeping_changes_no_output_and_writes_none(runs):
    recorded, writers = runs["recorded"]
    unrecorded, _ = runs["unrecorded"]
    for path in declared_outputs():
        a, b = recorded / path, unrecorded / path
        if a.is_dir():
            assert sorted(p.relative_to(a) for p in a.rglob("*")) == sorted(p.relative_to(b) for p in b.rglob("*")), path
            pairs = [(p, b / p.relative_to(a)) for p in a.rglob("*") if p.is_file()]
        else:
            pairs = [(a, b)]
        for x, y in pairs:
            assert x.read_bytes() == y.read_bytes(), f"{x.relative_to(recorded)} differs with MLflow off"
    declared = {str(recorded / p) for p in declared_outputs()}
    written = [(path, caller) for path, caller in writers if any(path.startswith(d) for d in declared)]
    assert written, "the spy saw no write"
    for path, caller in written:
        assert not caller.startswith(RECORD_KEEPING), f"{path} written by {caller}"


def test_the_record_groups_the_stages_under_one_parent_and_registers_a_champion(runs, _mlflow_store):
    from mlflow.tracking import MlflowClient
    client = MlflowClient(_mlflow_store)
    exp = client.get_experiment_by_name("faceverify")
    runs_ = client.search_runs([exp.experiment_id], max_results=500)
    parents = [r for r in runs_ if r.data.tags.get("kind") == "pipeline"]
    recorded_parent = [p for p in parents if "evaluate.accuracy" in p.data.metrics]
    assert recorded_parent, "no pipeline run holds the evaluate metrics"
    parent = recorded_parent[-1]
    children = [r for r in runs_ if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert {c.data.tags["stage"] for c in children} >= {"download", "pairs", "prepare", "train", "calibrate", "export", "evaluate"}
    assert all(c.info.status == "FINISHED" for c in children)
    assert "train.best_val_auc" in parent.data.metrics and "pairs.train_pairs" in parent.data.metrics
    assert "evaluate.id_rank1" in parent.data.metrics and "evaluate.id_5way" in parent.data.metrics
    assert {r.data.tags.get("lfw_category") for r in [parent, *children]} == {"unrestricted, label-free outside data"}
    # the parent spans the execution, from its first stage's start to its last stage's end
    assert parent.info.start_time <= min(c.info.start_time for c in children)
    assert parent.info.end_time >= max(c.info.end_time for c in children) and parent.info.status == "FINISHED"
    assert {p.path for p in client.list_artifacts(parent.info.run_id)} >= {"roc.png", "distances.png", "cmc.png",
                                                                         "model_card.md"}
    assert exp.tags.get("mlflow.experimentKind") == "custom_model_development"
    version = parent.data.tags["registered_model"].split("/")[1]
    registered = client.get_model_version("faceverify", version)
    calibrate = json.loads((runs["recorded"][0] / "metrics/calibrate.json").read_text())
    assert float(registered.tags["val_roc_auc"]) == pytest.approx(calibrate["val_roc_auc"])
    assert client.get_model_version_by_alias("faceverify", "champion").version  # the alias points somewhere
