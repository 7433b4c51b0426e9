"""The real `dvc repro`, in a temporary git repository, on a small synthetic archive."""
import json

import pytest
import yaml

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
    import urllib.error
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

        # bad requests: one 400 each, whose message names the row and column, with no traceback or server path
        import io

        from PIL import Image
        big = io.BytesIO()
        Image.new("L", (12_000, 12_000)).save(big, format="PNG")
        good = base64.b64encode(b.read_bytes()).decode()

        def split(*row):
            return {"dataframe_split": {"columns": ["image1", "image2"], "data": [list(row)] if row else []}}
        bad = {
            "row 0, column image1: not valid base64": split("not base64!", good),
            "row 0, column image1: not an image file": split(base64.b64encode(b"some text").decode(), good),
            "image1": split(7, good),  # a number: MLflow's schema check answers before the model, naming the column
            "no rows": split(),
            "row 0, column image1: image of 12000x12000 pixels": split(base64.b64encode(big.getvalue()).decode(), good),
            "image2": {"dataframe_split": {"columns": ["image1"], "data": [[good]]}},
        }
        for message, payload in bad.items():
            req = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", json.dumps(payload).encode(),
                                         {"Content-Type": "application/json"})
            with pytest.raises(urllib.error.HTTPError) as err:
                urllib.request.urlopen(req, timeout=60)
            text = err.value.read().decode()
            assert err.value.code == 400, (message, text)
            assert message in json.loads(text)["message"], (message, text)
            assert "stack_trace" not in text and "Traceback" not in text and str(repo) not in text, text[:2000]
        again = json.loads(urllib.request.urlopen(urllib.request.Request(
            f"http://127.0.0.1:{port}/invocations", body, {"Content-Type": "application/json"}), timeout=30).read())
        assert again["predictions"][0]["distance"] == pytest.approx(verdict["distance"], abs=1e-5)
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


def test_the_mlflow_ui_in_a_browser_shows_the_parent_run_its_metrics_and_datasets(tmp_path, reproduced):
    """Headless Chromium on the UI over the reproduced pipeline's store: the README's URL lands on the runs
    table (not the GenAI overview), and the parent run's page shows its evaluate metrics and its datasets."""
    import os
    import shutil
    import subprocess
    import time
    import urllib.request

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        if os.environ.get("FACEVERIFY_REQUIRE_CHROMIUM"):
            pytest.fail("no chromium on PATH, and FACEVERIFY_REQUIRE_CHROMIUM is set (.ci/run installs it)")
        pytest.skip("no chromium on PATH (Debian: apt-get install chromium)")
    repo, env, _ = reproduced
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    ui = subprocess.Popen(["mlflow", "ui", "--backend-store-uri", "sqlite:///mlflow.db", "--host", "127.0.0.1",
                           "--port", str(port)], cwd=repo, env=env, start_new_session=True,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def dom(url: str) -> str:
        flags = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", f"--user-data-dir={tmp_path / 'chromium'}",
                 "--virtual-time-budget=60000", "--dump-dom", url]
        return subprocess.run([chromium, *flags], capture_output=True, text=True, timeout=180).stdout

    try:
        deadline = time.time() + 120
        while True:
            try:
                urllib.request.urlopen(base + "/health", timeout=5)
                break
            except OSError:
                assert ui.poll() is None and time.time() < deadline, "mlflow ui did not start"
                time.sleep(0.5)
        body = json.dumps({"experiment_ids": ["1"], "filter": "tags.kind = 'pipeline'", "max_results": 10}).encode()
        req = urllib.request.Request(base + "/api/2.0/mlflow/runs/search", body, {"Content-Type": "application/json"})
        parent = json.loads(urllib.request.urlopen(req, timeout=30).read())["runs"][0]
        name, run_id = parent["info"]["run_name"], parent["info"]["run_id"]
        assert parent["info"]["end_time"] - parent["info"]["start_time"] > 1000, "the parent run spans the stages"
        runs_table = dom(f"{base}/#/experiments/1/runs?workflowType=machine_learning")
        assert name in runs_table and ">Run Name<" in runs_table, "the README's URL shows no runs table with the parent"
        page = dom(f"{base}/#/experiments/1/runs/{run_id}?workflowType=machine_learning")
        for expected in ("evaluate.accuracy", "train.best_val_auc", "data/lfw-a"):  # the UI lists the first dataset
            assert expected in page, f"{expected!r} not on the parent run's page"
        got = json.loads(urllib.request.urlopen(f"{base}/api/2.0/mlflow/runs/get?run_id={run_id}", timeout=30).read())
        datasets = {d["dataset"]["name"]: d["dataset"]["digest"] for d in got["run"]["inputs"]["dataset_inputs"]}
        lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
        assert datasets == {o["path"]: o["md5"] for s in ("download", "pairs", "prepare") for o in lock[s]["outs"]
                            if o["path"].startswith("data/")}
    finally:
        os.killpg(ui.pid, 9)
        ui.wait()


def test_a_params_typo_stops_dvc_repro_with_one_line_naming_the_key(reproduced):
    """No stage reads a typo'd section, so only the `check` stage, which depends on every param, can catch it."""
    repo, env, _ = reproduced
    params = repo / "params.yaml"
    original = params.read_text()
    try:
        changed = yaml.safe_load(original)
        changed["train"]["lr"] /= 2  # so that without the check, train would rerun
        changed["trian"] = {"lr": 0.01}
        params.write_text(yaml.safe_dump(changed, sort_keys=False))
        result = run(["dvc", "repro"], repo, env, check=False)
        assert result.returncode != 0
        assert "unknown key 'trian'" in result.stdout + result.stderr
        assert "Running stage 'train'" not in result.stdout
    finally:
        params.write_text(original)
