"""The real `dvc repro`, in a temporary git repository, on a small synthetic archive."""
import json

import pytest

from conftest import free_port, make_repo, run, small_params

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def reproduced(tmp_path_factory, lfw_archive):
    """A repository after a real `dvc repro`: (repo, env, the command's output)."""
    repo, env = make_repo(tmp_path_factory.mktemp("e2e") / "repo", lfw_archive, small_params())
    return repo, env, run(["dvc", "repro"], repo, env)


def test_dvc_repro_runs_every_stage_and_writes_every_output(tmp_path, reproduced):
    repo, env, result = reproduced
    for stage in ("check", "download", "pairs", "prepare", "train", "calibrate", "export", "evaluate"):
        assert f"Running stage '{stage}'" in result.stdout
    for out in ("data/lfw-a/pairsDevTest.txt", "data/pairs/train.tsv", "data/prepared/images.npy",
                "models/model.pt", "models/faceverify.npz", "results/predictions.csv", "plots/train.csv", "plots/roc.csv",
                "plots/distances.csv", "plots/roc.png", "plots/distances.png", "reports/model_card.md", "dvc.lock"):
        assert (repo / out).is_file(), out
    data = json.loads((repo / "metrics/data.json").read_text())
    assert data["train_test_shared_people"] == 0 and data["images"] > 0
    train = json.loads((repo / "metrics/train.json").read_text())
    assert 1 <= train["best_epoch"] <= train["stopped_epoch"] <= 3
    calib = json.loads((repo / "metrics/calibrate.json").read_text())
    test = json.loads((repo / "metrics/evaluate.json").read_text())
    assert "threshold" not in test and test["tp"] + test["fn"] == sum(  # the threshold lives in calibrate.json alone
        1 for line in (repo / "results/predictions.csv").read_text().splitlines()[1:] if line.split(",")[4] == "1")
    assert all((float(r.split(",")[5]) <= calib["threshold"]) == (r.split(",")[6] == "1")
               for r in (repo / "results/predictions.csv").read_text().splitlines()[1:])
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


def test_faceverify_on_the_pipeline_model_and_the_served_champion_agree(tmp_path, reproduced):
    import base64
    import os
    import subprocess
    import time
    import urllib.request

    repo, env, _ = reproduced
    first = (repo / "results/predictions.csv").read_text().splitlines()[1].split(",")
    a = repo / "data/lfw-a/lfw2" / first[0] / f"{first[0]}_{int(first[1]):04d}.jpg"
    b = repo / "data/lfw-a/lfw2" / first[2] / f"{first[2]}_{int(first[3]):04d}.jpg"
    verdict = json.loads(run(["faceverify", "verify", str(a), str(b), "--json"], repo, env).stdout)
    assert verdict["model"] == "models/faceverify.npz"  # the torch-free bundle of the export stage
    assert verdict["distance"] == pytest.approx(float(first[5]), abs=1e-5)
    assert verdict["same"] == bool(int(first[6]))
    out = tmp_path / "eval.json"
    run(["faceverify", "eval", "--pairs", "data/lfw-a/pairsDevTest.txt", "--images", "data/lfw-a/lfw2", "--out", str(out)], repo, env)
    assert json.loads(out.read_text())["accuracy"] == json.loads((repo / "metrics/evaluate.json").read_text())["accuracy"]

    port = free_port()
    senv = {**env, "MLFLOW_TRACKING_URI": f"sqlite:///{repo / 'mlflow.db'}"}
    by_alias = json.loads(run(["faceverify", "verify", str(a), str(b), "--json", "--model", "models:/faceverify@champion"],
                              repo, senv).stdout)
    assert by_alias["distance"] == pytest.approx(verdict["distance"], abs=1e-5) and by_alias["same"] == verdict["same"]
    server = subprocess.Popen(["mlflow", "models", "serve", "-m", "models:/faceverify@champion", "--env-manager", "local",
                               "-h", "127.0.0.1", "-p", str(port)], cwd=repo, env=senv, start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        body = json.dumps({"dataframe_split": {"columns": ["image1", "image2"], "data": [[
            base64.b64encode(a.read_bytes()).decode(), base64.b64encode(b.read_bytes()).decode()]]}}).encode()
        deadline, answer = time.time() + 180, None
        while time.time() < deadline and answer is None:
            try:
                req = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", body, {"Content-Type": "application/json"})
                answer = json.loads(urllib.request.urlopen(req, timeout=30).read())
            except OSError:
                assert server.poll() is None, "mlflow models serve exited"
                time.sleep(1)
        assert answer is not None, "no answer from mlflow models serve within 180 s"
        row = answer["predictions"][0]
        assert row["distance"] == pytest.approx(verdict["distance"], abs=1e-5)
        assert row["same"] == verdict["same"] and row["threshold"] == pytest.approx(verdict["threshold"])
    finally:
        os.killpg(server.pid, 9)
        server.wait()


def test_mlflow_ui_as_the_readme_starts_it_serves_the_runs(reproduced):
    import os
    import subprocess
    import time
    import urllib.request

    repo, env, _ = reproduced
    port = free_port()
    ui = subprocess.Popen(["mlflow", "ui", "--backend-store-uri", "sqlite:///mlflow.db", "--host", "127.0.0.1",
                           "--port", str(port)], cwd=repo, env=env, start_new_session=True,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline, found = time.time() + 120, None
        body = json.dumps({"experiment_ids": ["1"], "max_results": 50}).encode()
        while time.time() < deadline and found is None:
            try:
                req = urllib.request.Request(f"http://127.0.0.1:{port}/api/2.0/mlflow/runs/search", body,
                                             {"Content-Type": "application/json"})
                found = json.loads(urllib.request.urlopen(req, timeout=10).read())
            except OSError:
                assert ui.poll() is None, "mlflow ui exited"
                time.sleep(1)
        assert found is not None, "mlflow ui did not answer within 120 s"
        stages = {t["value"] for r in found["runs"] for t in r["data"].get("tags", []) if t["key"] == "stage"}
        assert {"download", "pairs", "prepare", "train", "calibrate", "export", "evaluate"} <= stages
        assert urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10).status == 200
    finally:
        os.killpg(ui.pid, 9)
        ui.wait()
