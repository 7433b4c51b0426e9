"""dvc.yaml lists, for every stage, its module and every pipeline module that module imports."""
import ast
from pathlib import Path

import yaml

from conftest import ROOT


def pipeline_imports(module: Path, seen: set[Path] | None = None) -> set[Path]:
    """The pipeline/*.py files `module` needs, itself included, followed transitively: imported, or
    named as a file ("x.py") that it runs by path."""
    seen = seen if seen is not None else set()
    if module in seen:
        return seen
    seen.add(module)
    for node in ast.walk(ast.parse(module.read_text())):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("pipeline"):
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names if a.name.startswith("pipeline")]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.endswith(".py"):
            names = [f"pipeline.{node.value[:-3]}"]  # a sibling file run by path (the MLflow model's code file)
        for name in names:
            path = ROOT / (name.replace(".", "/") + ".py")
            if path.exists():
                pipeline_imports(path, seen)
    return seen


def test_stage_deps_cover_the_code_they_run():
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    for name, stage in stages.items():
        module = stage["cmd"].split("-m ")[1].split()[0]
        assert module == f"pipeline.{name}", f"stage {name} runs {module}"
        needed = {str(p.relative_to(ROOT)) for p in pipeline_imports(ROOT / "pipeline" / f"{name}.py")}
        needed.discard("pipeline/__init__.py")
        declared = {d for d in stage["deps"] if d.startswith("pipeline/")}
        assert needed == declared, f"stage {name}: missing {needed - declared}, extra {declared - needed}"


def test_stage_params_are_real_params_sections():
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    for name, stage in stages.items():
        for key in stage.get("params", []):
            node = params
            for part in key.split("."):
                assert part in node, f"stage {name} declares unknown param {key}"
                node = node[part]
