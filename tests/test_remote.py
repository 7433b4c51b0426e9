"""Sharing data and models through a DVC remote: push from one clone, pull in another, nothing to redo."""
import json
import shutil

import pytest

from conftest import make_repo, run, small_params

pytestmark = pytest.mark.slow


def test_push_then_pull_in_a_fresh_clone_brings_the_commits_data_and_model(tmp_path, lfw_archive):
    repo, env = make_repo(tmp_path / "repo", lfw_archive, small_params())
    remote = tmp_path / "remote"
    run(["dvc", "remote", "add", "-d", "storage", str(remote)], repo, env)  # the README's one command
    run(["dvc", "repro"], repo, env)
    run(["git", "add", "-A"], repo, env)
    run(["git", "commit", "-qm", "a result"], repo, env)
    run(["dvc", "push"], repo, env)
    assert any(p.is_file() for p in remote.rglob("*"))

    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(repo), str(clone)], tmp_path, env)
    assert not (clone / "models" / "model.pt").exists()
    clone_env = {k: v for k, v in env.items() if k != "LFW_A_ARCHIVE"}  # the other machine has no archive
    shutil.rmtree(repo / ".dvc" / "cache")  # and shares no cache with the first: all comes from the remote
    run(["dvc", "pull"], clone, clone_env)
    assert (clone / "models" / "model.pt").read_bytes() == (repo / "models" / "model.pt").read_bytes()
    assert (clone / "data" / "prepared" / "images.npy").read_bytes() == (repo / "data" / "prepared" / "images.npy").read_bytes()
    assert "up to date" in run(["dvc", "status"], clone, clone_env).stdout
    repro = run(["dvc", "repro"], clone, clone_env)
    assert "didn't change, skipping" in repro.stdout and "Running stage" not in repro.stdout, repro.stdout

    pairs = (clone / "results" / "predictions.csv").read_text().splitlines()
    header, first = pairs[0].split(","), pairs[1].split(",")
    row = dict(zip(header, first))
    img = lambda n, i: str(clone / "data/lfw-a/lfw2" / n / f"{n}_{int(i):04d}.jpg")  # noqa: E731
    out = run(["faceverify", "verify", img(row["name1"], row["i1"]), img(row["name2"], row["i2"]), "--json",
               "--model", str(clone / "models" / "model.pt")], clone, clone_env)
    answer = json.loads(out.stdout)
    assert answer["distance"] == pytest.approx(float(row["distance"]), abs=1e-4)
    assert answer["same"] == bool(int(row["prediction"]))
