"""`python -m pipeline.lab view2 run` end to end: real foreground `dvc exp run`s of View 2 folds, resumed,
aggregated, recorded."""
import json
import sys

import pytest

from conftest import make_repo, run, small_params

pytestmark = pytest.mark.slow


def view2_repo(tmp_path, lfw_archive):
    """A fresh repository of the pipeline (pipeline/lab/ included), its params shrunk to one epoch."""
    return make_repo(tmp_path / "repo", lfw_archive, small_params(**{"train.epochs": 1, "train.patience": 1}))


def test_view2_runs_the_missing_folds_resumes_and_reports(tmp_path, lfw_archive):
    repo, env = view2_repo(tmp_path, lfw_archive)
    params = (repo / "params.yaml").read_text()
    view2 = [sys.executable, "-m", "pipeline.lab", "view2", "run"]

    first = run(view2 + ["--folds", "1"], repo, env)
    assert "folds done none; running [1]" in first.stdout
    assert "Running stage 'train'" in first.stdout  # DVC's own output, as it runs
    # interrupted after fold 1, say: the same command for 1-2 runs fold 2 alone
    second = run(view2 + ["--folds", "1-2"], repo, env)
    assert "folds done [1]; running [2]" in second.stdout
    assert "View 2 fold 2 (1 of 1): dvc exp run --temp -S pairs.protocol=view2 -S pairs.fold=2" in second.stdout
    again = run(view2 + ["--folds", "1-2"], repo, env, timeout=300)
    assert "folds done [1, 2]; running none" in again.stdout and "Running stage" not in again.stdout
    assert (repo / "params.yaml").read_text() == params  # each fold ran in a temporary copy

    recs = json.loads((repo / "docs" / "view2.json").read_text())
    assert len(recs) == 1 and list(recs[0]["folds"]) == ["1", "2"]
    for fold in recs[0]["folds"].values():
        assert fold["metrics"]["test acc"] is not None
    assert "Folds 1, 2 (2 of 10)" in (repo / "docs" / "VIEW2.md").read_text()

    from mlflow.tracking import MlflowClient
    client = MlflowClient(f"sqlite:///{repo / 'mlflow.db'}")
    exp = client.get_experiment_by_name("faceverify")
    parents = client.search_runs([exp.experiment_id], "tags.kind = 'pipeline' and tags.protocol = 'view2'")
    assert sorted(r.data.tags["fold"] for r in parents) == ["1", "2"]
    summary = client.search_runs([exp.experiment_id], "tags.kind = 'view2'")
    assert len(summary) == 1 and summary[0].data.metrics["view2.folds"] == 2
    tags = summary[0].data.tags
    assert tags["lfw_category"] == "unrestricted, label-free outside data" and tags["final"] == "false"
    assert summary[0].data.metrics["view2.test_acc_mean"] == pytest.approx(recs[0]["summary"]["test acc"]["mean"])


def test_a_failing_fold_stops_the_run_naming_the_fold(tmp_path, lfw_archive):
    repo, env = view2_repo(tmp_path, lfw_archive)
    env = {**env, "LFW_A_ARCHIVE": str(tmp_path / "missing.tar.gz")}  # the download stage fails
    failed = run([sys.executable, "-m", "pipeline.lab", "view2", "run", "--folds", "3-4"], repo, env, check=False, timeout=300)
    assert failed.returncode != 0
    assert "fold 3 failed: dvc exp run --temp -S pairs.protocol=view2 -S pairs.fold=3 exited" in failed.stderr
    assert "View 2 fold 4" not in failed.stdout
