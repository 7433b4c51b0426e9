"""scripts/view2.py end to end: real queued `dvc exp run`s of View 2 folds, resumed, aggregated, recorded."""
import json
import os
import shutil
import sys
from pathlib import Path

import pytest

from conftest import ROOT, make_repo, run, small_params, stop_queue_workers

sys.path.insert(0, str(ROOT / "scripts"))
import queue_repair  # noqa: E402
import view2  # noqa: E402

pytestmark = pytest.mark.slow


def test_view2_runs_the_missing_folds_resumes_and_reports(tmp_path, lfw_archive):
    repo, env = make_repo(tmp_path / "repo", lfw_archive, small_params(**{"train.epochs": 1, "train.patience": 1}))
    (repo / "scripts").mkdir()
    for name in ("view2.py", "experiments_table.py", "queue_repair.py"):
        shutil.copy(ROOT / "scripts" / name, repo / "scripts" / name)
    run(["git", "add", "-A"], repo, env)
    run(["git", "commit", "-qm", "scripts"], repo, env)
    view2 = [sys.executable, "scripts/view2.py", "run", "--poll", "2"]
    try:
        first = run(view2 + ["--folds", "1"], repo, env, timeout=900)
        assert "folds done none; queueing [1]" in first.stdout
        # interrupted after fold 1, say: the same command for 1-2 runs fold 2 alone
        second = run(view2 + ["--folds", "1-2"], repo, env, timeout=900)
        assert "folds done [1]; queueing [2]" in second.stdout
        again = run(view2 + ["--folds", "1-2"], repo, env, timeout=300)
        assert "folds done [1, 2]; queueing none" in again.stdout
    finally:
        stop_queue_workers(repo)

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
    assert summary[0].data.metrics["view2.test_acc_mean"] == pytest.approx(recs[0]["summary"]["test acc"]["mean"])


def test_a_task_that_a_stopping_worker_took_and_never_ran_is_queued_again(tmp_path, monkeypatch, capsys):
    # A worker stopping as a task arrives can take its message (the filesystem broker moves it to the
    # processed folder) and never run it. DVC then counts it active for good, and `dvc exp show` fails
    # on its missing info file until the message is back in the queue.
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "dvc.yaml").write_text("stages:\n  s:\n    cmd: python -c \"print(1)\" > out.txt\n"
                                   "    params: [x]\n    outs: [out.txt]\n")
    (repo / "params.yaml").write_text("x: 0\n")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t", "DVC_NO_ANALYTICS": "1"}
    for cmd in (["git", "init", "-q", "-b", "main"], ["dvc", "init", "-q"], ["git", "add", "-A"],
                ["git", "commit", "-qm", "init"], ["dvc", "exp", "run", "--queue", "-S", "x=1"]):
        run(cmd, repo, env)
    broker = repo / ".dvc" / "tmp" / "exps" / "celery" / "broker"
    [msg] = list((broker / "in").iterdir())
    msg.rename(broker / "processed" / msg.name)
    lost = run(["dvc", "exp", "show", "--json"], repo, env, check=False)
    assert lost.returncode != 0 and view2.LOST_TASK.search(lost.stderr), lost.stderr

    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(view2, "ROOT", repo)
    shown = view2.show(5)
    assert [(e["state"], e["params"]["x"]) for e in view2.experiments(shown)] == [("queued", 1)]
    assert [p.name for p in (broker / "in").iterdir()] == [msg.name]
    assert not list((broker / "processed").iterdir())

    # the same by hand, for experiments queued without view2.py
    msg.rename(broker / "processed" / msg.name)
    assert "Running" in run(["dvc", "queue", "status"], repo, env).stdout  # with no worker, for good
    assert run(["dvc", "exp", "show", "--json"], repo, env, check=False).returncode != 0
    monkeypatch.setattr(queue_repair, "ROOT", repo)
    rev = view2.LOST_TASK.search(lost.stderr).group(1)
    info = repo / ".dvc" / "tmp" / "exps" / "run" / rev / f"{rev}.run"
    info.parent.mkdir(parents=True)
    info.write_text("{}")  # its info file: a worker is setting it up, it is not lost
    assert queue_repair.main([]) == 0 and "0 experiments put back" in capsys.readouterr().out
    info.unlink()
    assert queue_repair.main([]) == 0
    assert "1 experiments put back in the queue; `dvc queue start` runs them" in capsys.readouterr().out
    assert "Queued" in run(["dvc", "queue", "status"], repo, env).stdout

    msg.rename(broker / "processed" / msg.name)
    monkeypatch.setattr(queue_repair, "worker_alive", lambda root: True)
    assert queue_repair.main([]) == 1 and "a DVC queue worker is running" in capsys.readouterr().err
    monkeypatch.setattr(queue_repair, "worker_alive", lambda root: False)
    from dvc.repo import Repo
    with Repo(str(repo)) as dvc_repo:  # a worker's setup drops the stash entry first: then it began, and
        stash = dvc_repo.experiments.celery_queue.stash  # is not put back even with no info file yet
        stash.drop(stash.stash_revs[rev].stash_index)
    assert queue_repair.main([]) == 0 and "0 experiments put back" in capsys.readouterr().out
