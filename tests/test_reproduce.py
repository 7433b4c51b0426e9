"""Reproducing a result from a commit: a fresh clone of each commit, `dvc repro`, the same metrics."""
import json

import pytest

from conftest import make_repo, run, small_params

pytestmark = pytest.mark.slow
METRICS = ("metrics/train.json", "metrics/calibrate.json", "metrics/evaluate.json")


def test_each_commit_reproduces_its_committed_metrics_exactly(tmp_path, lfw_archive):
    repo, env = make_repo(tmp_path / "repo", lfw_archive, small_params())
    commits = {}
    for margin in (1.0, 0.6):
        run(["dvc", "exp", "run", "-S", f"train.margin={margin}"], repo, env)  # leaves its results in the workspace
        run(["git", "add", "-A"], repo, env)
        run(["git", "commit", "-qm", f"margin {margin}"], repo, env)
        commits[margin] = run(["git", "rev-parse", "HEAD"], repo, env).stdout.strip()
    committed = {m: {p: run(["git", "show", f"{c}:{p}"], repo, env).stdout for p in METRICS} for m, c in commits.items()}
    assert committed[1.0]["metrics/evaluate.json"] != committed[0.6]["metrics/evaluate.json"]

    for margin, commit in commits.items():
        clone = tmp_path / f"clone-{margin}"
        run(["git", "clone", "-q", str(repo), str(clone)], tmp_path, env)
        run(["git", "checkout", "-q", commit], clone, env)
        run(["dvc", "repro"], clone, env)  # a fresh clone: no cache, every stage really runs
        for path in METRICS:
            assert json.loads((clone / path).read_text()) == json.loads(committed[margin][path]), (margin, path)
        assert "up to date" in run(["dvc", "status"], clone, env).stdout

    # and the two commits' plots compare side by side
    diff = run(["dvc", "plots", "diff", commits[1.0], commits[0.6], "-o", str(tmp_path / "diff")], repo, env)
    html = (tmp_path / "diff" / "index.html").read_text()
    assert commits[1.0][:7] in html and commits[0.6][:7] in html, diff.stdout
