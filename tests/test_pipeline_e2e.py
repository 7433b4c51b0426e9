"""The real `dvc repro`, in a temporary git repository, on a small synthetic archive."""
import json

import pytest

from conftest import make_repo, run, small_params

pytestmark = pytest.mark.slow


def test_dvc_repro_runs_every_stage_and_writes_every_output(tmp_path, lfw_archive):
    repo, env = make_repo(tmp_path / "repo", lfw_archive, small_params())
    result = run(["dvc", "repro"], repo, env)
    for stage in ("download", "pairs", "prepare", "train", "calibrate", "evaluate"):
        assert f"Running stage '{stage}'" in result.stdout
    for out in ("data/lfw-a/pairsDevTest.txt", "data/pairs/train.tsv", "data/prepared/images.npy",
                "models/model.pt", "results/predictions.csv", "plots/train.csv", "plots/roc.csv",
                "plots/distances.csv", "plots/roc.png", "plots/distances.png", "reports/model_card.md", "dvc.lock"):
        assert (repo / out).is_file(), out
    data = json.loads((repo / "metrics/data.json").read_text())
    assert data["train_test_shared_people"] == 0 and data["images"] > 0
    train = json.loads((repo / "metrics/train.json").read_text())
    assert 1 <= train["best_epoch"] <= train["stopped_epoch"] <= 3
    calib = json.loads((repo / "metrics/calibrate.json").read_text())
    test = json.loads((repo / "metrics/evaluate.json").read_text())
    assert test["threshold"] == calib["threshold"]
    assert test["n_pairs"] == sum(1 for _ in (repo / "data/lfw-a/pairsDevTest.txt").open()) - 1
    assert test["tp"] + test["fp"] + test["tn"] + test["fn"] == test["n_pairs"]
    assert test["accuracy_ci95_low"] <= test["accuracy"] <= test["accuracy_ci95_high"]
    assert 0 <= test["roc_auc"] <= 1 and 0 <= test["eer"] <= 1
    predictions = (repo / "results/predictions.csv").read_text().splitlines()
    assert predictions[0] == "name1,i1,name2,i2,label,distance,prediction" and len(predictions) == test["n_pairs"] + 1

    shown = run(["dvc", "metrics", "show", "--json"], repo, env).stdout
    assert '"accuracy"' in shown and '"eer"' in shown
    # nothing changed: nothing reruns, and the workspace is clean
    again = run(["dvc", "repro"], repo, env)
    assert "Running stage" not in again.stdout
    assert "up to date" in run(["dvc", "status"], repo, env).stdout
    html = run(["dvc", "plots", "show", "-o", str(tmp_path / "plots")], repo, env)
    assert (tmp_path / "plots" / "index.html").is_file(), html.stdout
