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
