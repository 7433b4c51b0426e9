"""The README's two commands in order, in one fresh clone: `dvc repro` (here on the synthetic archive,
with another seed, so every metrics file differs from the committed one), then the default `pytest`
tier in the same checkout. A test that compared the committed docs with what the run wrote fails here."""
import json
import os
import subprocess
import sys

import pytest
import yaml

from conftest import ROOT, run, small_params

pytestmark = pytest.mark.slow


def test_pytest_passes_after_dvc_repro_rewrote_the_metrics(tmp_path, lfw_archive):
    if subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True).returncode:
        pytest.skip("not a git checkout: nothing to clone")
    clone = tmp_path / "clone"
    env = {**os.environ, "PATH": f"{os.path.dirname(sys.executable)}{os.pathsep}{os.environ['PATH']}",
           "LFW_A_ARCHIVE": str(lfw_archive), "DVC_NO_ANALYTICS": "1"}
    env.pop("PYTEST_ADDOPTS", None)
    env.pop("MLFLOW_TRACKING_URI", None)  # the run records to the clone's own mlflow.db, as the README's does
    run(["git", "clone", "-q", str(ROOT), str(clone)], tmp_path, env)
    committed_metrics = (clone / "metrics" / "evaluate.json").read_text()
    (clone / "params.yaml").write_text(yaml.safe_dump(small_params(seed=1), sort_keys=False))
    run(["dvc", "repro"], clone, env, timeout=900)
    assert json.loads((clone / "metrics" / "evaluate.json").read_text()) != json.loads(committed_metrics)
    assert run(["git", "status", "--porcelain", "metrics", "dvc.lock"], clone, env).stdout.strip()  # the run rewrote them
    # `python -m pytest` puts the clone first on sys.path: its own pipeline/ and tests/
    result = run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider"], clone, env, check=False,
                 timeout=1200)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
