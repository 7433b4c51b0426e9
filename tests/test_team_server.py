"""A team's tracking server: `mlflow server` over a real PostgreSQL with an artifact root, chosen by
MLFLOW_TRACKING_URI alone; the pipeline records there exactly as it does to the embedded SQLite store.

PostgreSQL is started here from its own binaries (initdb, pg_ctl) on 127.0.0.1 in a throwaway
folder. `.ci/run` installs it; elsewhere the test skips with the reason when it is missing, unless
FACEVERIFY_REQUIRE_POSTGRES=1 (set by `.ci/run`) makes that a failure.
"""
import glob
import importlib.util
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from conftest import free_port, make_repo, run, small_params, start_mlflow_server

pytestmark = pytest.mark.slow


def pg_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    versions = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=lambda p: int(Path(p).parts[-3]))
    return versions[-1] if versions else None


def missing(reason: str):
    if os.environ.get("FACEVERIFY_REQUIRE_POSTGRES") == "1":
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture
def postgres():
    """postgresql://... of a fresh PostgreSQL cluster with one empty database, stopped afterwards."""
    initdb, pg_ctl, createdb = pg_bin("initdb"), pg_bin("pg_ctl"), pg_bin("createdb")
    if not (initdb and pg_ctl and createdb):
        missing("PostgreSQL is not installed (no initdb/pg_ctl on PATH or in /usr/lib/postgresql/*/bin); "
                "`apt-get install postgresql` or see .ci/run")
    if importlib.util.find_spec("psycopg") is None:  # the PostgreSQL driver SQLAlchemy 2.1 (under MLflow) uses
        missing("psycopg is not installed: pip install -e '.[test]'")
    as_user = []
    base = Path(tempfile.mkdtemp(prefix="faceverify-pg-"))  # not under pytest's root-only tmp folders
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        try:
            shutil.chown(base, "postgres", "postgres")
        except (LookupError, PermissionError) as e:
            missing(f"running as root and cannot hand a folder to the 'postgres' user ({e})")
        as_user = ["runuser", "-u", "postgres", "--"]
    port = free_port()
    sh = lambda *cmd: subprocess.run([*as_user, *cmd], check=True, capture_output=True, text=True)  # noqa: E731
    sh(initdb, "-D", str(base / "db"), "-U", "mlflow", "-A", "trust")
    sh(pg_ctl, "-D", str(base / "db"), "-l", str(base / "log"), "-w", "-t", "60", "start",
       "-o", f"-p {port} -k {base} -c listen_addresses=127.0.0.1")
    try:
        sh(createdb, "-h", "127.0.0.1", "-p", str(port), "-U", "mlflow", "faceverify")
        yield f"postgresql://mlflow@127.0.0.1:{port}/faceverify"
    finally:
        subprocess.run([*as_user, pg_ctl, "-D", str(base / "db"), "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


def test_pipeline_records_to_an_mlflow_server_over_postgresql(tmp_path, lfw_archive, postgres):
    from mlflow.tracking import MlflowClient
    import psycopg

    artifacts = tmp_path / "artifacts"
    with start_mlflow_server(postgres, artifacts) as uri:
        repo, env = make_repo(tmp_path / "repo", lfw_archive, small_params())
        run(["dvc", "repro"], repo, {**env, "MLFLOW_TRACKING_URI": uri})  # the only change: this variable
        assert not (repo / "mlflow.db").exists()

        client = MlflowClient(uri)
        exp = client.get_experiment_by_name("faceverify")
        (parent,) = client.search_runs([exp.experiment_id], "tags.kind = 'pipeline'")
        evaluated = json.loads((repo / "metrics" / "evaluate.json").read_text())
        assert parent.data.metrics["evaluate.accuracy"] == pytest.approx(evaluated["accuracy"])
        assert parent.data.params["train.margin"] == str(small_params()["train"]["margin"])
        children = client.search_runs([exp.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
        stages = {c.data.tags["stage"]: c for c in children}
        assert set(stages) == {"download", "pairs", "prepare", "train", "calibrate", "export", "evaluate"}
        assert all(c.info.status == "FINISHED" for c in children)
        epochs = len((repo / "plots" / "train.csv").read_text().splitlines()) - 1  # header + one row per epoch
        assert len(client.get_metric_history(stages["train"].info.run_id, "val_auc")) == epochs
        assert {"predictions.csv", "roc.png", "model_card.md"} <= {a.path for a in client.list_artifacts(stages["evaluate"].info.run_id)}
        champion = client.get_model_version_by_alias("faceverify", "champion")
        assert champion.run_id == stages["evaluate"].info.run_id

    # the records are rows of PostgreSQL, the files are under the server's artifact root
    with psycopg.connect(postgres) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM runs")
        assert cur.fetchone()[0] == 8  # the parent and 7 stages
        cur.execute("SELECT value FROM latest_metrics WHERE key = 'evaluate.accuracy'")
        assert cur.fetchone()[0] == pytest.approx(evaluated["accuracy"])
    assert list(artifacts.rglob("predictions.csv")) and list(artifacts.rglob("MLmodel"))
