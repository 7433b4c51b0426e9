"""pipeline/lab's one entry point: `python -m pipeline.lab COMMAND`, installed as `faceverify-lab`."""
import re
import tomllib

import pytest

from conftest import ROOT
from pipeline.lab.__main__ import main as lab

COMMANDS = ("record", "tables", "paired", "view2", "fuse", "screenshot")


@pytest.mark.parametrize("argv, names", [([], COMMANDS), (["view2"], ("run", "report", "paired"))])
def test_help_lists_every_command(argv, names, capsys):
    with pytest.raises(SystemExit) as done:
        lab([*argv, "--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    for name in names:
        assert re.search(rf"^ +{name}\b", out, re.M), f"{name} not in:\n{out}"


def test_the_console_script_is_the_entry_point():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["project"]["scripts"]["faceverify-lab"] == "pipeline.lab.__main__:main"
    assert "pipeline.lab" in project["tool"]["setuptools"]["packages"]


def test_paired_counts_the_lock_run_only_when_asked(monkeypatch, capsys):
    """The run behind dvc.lock changes with each rerun of the lock, so the figures DECISIONS quotes come from
    the records alone; --lock adds it as its seed's newest run."""
    from pipeline.lab import records
    seen = []
    monkeypatch.setattr(records, "load", lambda path=None: [])
    monkeypatch.setattr(records, "params_file", lambda path=None: {"train.margin": 0.8})
    monkeypatch.setattr(records, "lock_record", lambda rev="HEAD": {"commit": "lock000"})
    monkeypatch.setattr(records, "paired", lambda recs, *a, **k: seen.append([r["commit"] for r in recs]) or ["ok"])
    assert lab(["paired", "train.margin=1.0"]) == 0 and lab(["paired", "train.margin=1.0", "--lock"]) == 0
    assert seen == [[], ["lock000"]]
