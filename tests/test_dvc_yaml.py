"""dvc.yaml and the module layers: a stage reruns only when code that can change its outputs changes.

The tree states the roles (pipeline/__init__.py): pipeline/stages/ (one module per dvc.yaml stage),
pipeline/record/ (MLflow runs, the registry, logging and errors), pipeline/serve/ (the command and the
MLflow model), pipeline/lab/, and the libraries directly in pipeline/. The import rules read the folders:
a library imports only libraries, serve/ only libraries, record/ libraries and serve/ (it logs the served
model), a stage libraries and record/; nothing imports a stage, and nothing outside lab/ imports lab/.
A stage's DVC deps are its module and every library it reaches, followed transitively; record keeping is
left out and not followed: it cannot change an output (tests/test_stages.py shows it writes none). So is
the validation of params.yaml (pipeline/params.py): it hands a stage the file's values as DVC reads them
(numbers as numbers) or refuses the file, so only the `check` stage, which writes nothing, depends on it.
"""
import ast
from pathlib import Path

import yaml

from conftest import ROOT, committed

from pipeline import ROLES, VALIDATION  # the roles, stated once by the tree

PIPELINE = ROOT / "pipeline"
# what each role may import besides libraries; the lab may import anything
MAY_IMPORT = {"library": set(), "serve": {"serve"}, "record": {"record", "serve"}, "stages": {"record"},
              "lab": set(ROLES)}


def modules() -> dict[str, Path]:
    """Every module of pipeline/ by dotted name below it ('files', 'stages.train')."""
    return {".".join(p.relative_to(PIPELINE).with_suffix("").parts): p for p in PIPELINE.rglob("*.py")
            if p.name != "__init__.py"}


def role(name: str) -> str:
    head = name.split(".")[0]
    return head if head in ROLES else "library"


STAGES = sorted(n.split(".")[1] for n in modules() if role(n) == "stages")


def imports(module: Path) -> set[str]:
    """The pipeline modules `module` imports directly (as 'files', 'record.tracking'), or runs as a file ("x.py")."""
    found = set()
    for node in ast.walk(ast.parse(module.read_text())):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("pipeline"):
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names if a.name.startswith("pipeline")]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.endswith(".py"):
            package = module.parent.relative_to(ROOT).as_posix().replace("/", ".")
            names = [f"{package}.{node.value[:-3]}"]  # a sibling file run by path (the MLflow model's code file)
        for name in names:
            if (ROOT / (name.replace(".", "/") + ".py")).exists() and name != "pipeline":
                found.add(name.split(".", 1)[1])
    return found


def output_deps(stage: str) -> set[str]:
    """The modules that can change `stage`'s outputs: its own and the libraries it reaches, not through record keeping."""
    seen, todo = set(), [f"stages.{stage}"]
    while todo:
        name = todo.pop()
        if name in seen or role(name) in ("record", "serve") or (name in VALIDATION and stage != "check"):
            continue
        seen.add(name)
        todo.extend(imports(PIPELINE / (name.replace(".", "/") + ".py")))
    return seen


def test_the_stages_of_dvc_yaml_are_the_stage_modules():
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    assert sorted(stages) == STAGES, f"dvc.yaml has stages {sorted(stages)}, pipeline/stages/ has {STAGES}"
    assert set(VALIDATION) <= set(modules())


def test_each_role_imports_only_what_the_tree_allows():
    for name, path in modules().items():
        mine = role(name)
        for other in imports(path):
            theirs = role(other)
            assert theirs == "library" or theirs in MAY_IMPORT[mine] or other == name, \
                f"pipeline/{path.relative_to(PIPELINE)} ({mine}) imports pipeline.{other} ({theirs})"
            assert theirs != "stages" or mine == "lab", f"pipeline/{path.relative_to(PIPELINE)} imports the stage {other}"


def test_nothing_outside_the_lab_imports_it():
    """pipeline/lab/ (records, View 2, fusion) may import any module of pipeline/; none of them imports it,
    so no stage's output and no stage's deps depend on the lab."""
    for name, module in modules().items():
        if role(name) == "lab":
            continue
        for node in ast.walk(ast.parse(module.read_text())):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            lab = [n for n in names if n == "pipeline.lab" or n.startswith("pipeline.lab.")]
            assert not lab, f"pipeline/{module.relative_to(PIPELINE)} imports {lab[0]}"


def test_stage_deps_are_exactly_the_code_that_can_change_its_outputs():
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    for name, stage in stages.items():
        module = stage["cmd"].split("-m ")[1].split()[0]
        assert module == f"pipeline.stages.{name}", f"stage {name} runs {module}"
        needed = {f"pipeline/{m.replace('.', '/')}.py" for m in output_deps(name)}
        declared = {d for d in stage.get("deps", []) if d.startswith("pipeline/")}
        assert needed == declared, f"stage {name}: missing {needed - declared}, extra {declared - needed}"
        assert not any(d.startswith(("pipeline/record/", "pipeline/serve/", "pipeline/lab/")) for d in declared)


def test_params_hands_stages_the_values_as_written():
    """Why no stage but `check` lists pipeline/params.py: every key is required (no default a stage could
    read in place of params.yaml's) and every value comes back as DVC reads it (a number written as a string
    by `dvc exp run -S`, such as '1e-06', as that number: tests/test_params.py), so the values a stage sees
    are the ones DVC tracks in its params."""
    import dataclasses
    import typing

    from pipeline.params import Params, flatten, load_params

    def fields(cls):
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            assert f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING, \
                f"{cls.__name__}.{f.name} has a default"
            if dataclasses.is_dataclass(hints[f.name]):
                fields(hints[f.name])
    fields(Params)
    assert typing.get_type_hints(Params)["train"].__name__ == "TrainParams"  # the walk reaches the sections

    def dotted(node, prefix=""):
        out = {}
        for key, value in node.items():
            out.update(dotted(value, f"{prefix}{key}.") if isinstance(value, dict) else {f"{prefix}{key}": value})
        return out
    written = dotted(yaml.safe_load((ROOT / "params.yaml").read_text()))
    read = flatten(load_params(ROOT / "params.yaml"))
    assert read == written
    assert all(type(read[k]) is type(v) or isinstance(v, int) and isinstance(read[k], float) for k, v in written.items())
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    assert [n for n, s in stages.items() if "pipeline/params.py" in s.get("deps", [])] == ["check"]


def test_params_computes_nothing_a_stage_could_read():
    """What keeps the test above true: pipeline modules take from params.py only the loader, flatten, the
    error and the section dataclasses, and those have no method but `check` (validation): no derived value
    (an effective learning rate, say) can reach a stage without being a dependency."""
    import dataclasses
    import inspect

    from pipeline import params
    allowed = {"load_params", "flatten", "ParamsError"} | {
        n for n, c in vars(params).items() if inspect.isclass(c) and dataclasses.is_dataclass(c)}
    for module in (ROOT / "pipeline").glob("*.py"):
        for node in ast.walk(ast.parse(module.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module == "pipeline.params":
                assert {a.name for a in node.names} <= allowed, f"{module.name} imports {sorted({a.name for a in node.names} - allowed)}"
            if isinstance(node, ast.ImportFrom) and node.module == "pipeline":
                assert "params" not in {a.name for a in node.names}, f"{module.name} imports the module params whole"
    for name in allowed - {"load_params", "flatten", "ParamsError"}:
        own = {k for k, v in vars(getattr(params, name)).items()
               if (inspect.isfunction(v) or isinstance(v, property)) and not k.startswith("__")}  # not dataclass-made
        assert own <= {"check"}, f"params.{name} defines {sorted(own - {'check'})}"


def test_the_check_stage_depends_on_every_param_and_nothing_depends_on_it():
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    check = stages["check"]
    assert check["params"] == [{"params.yaml": None}], "check must depend on the whole params.yaml"
    assert not check.get("outs") and not check.get("metrics") and not check.get("plots")
    assert imports(PIPELINE / "stages" / "check.py") == {"params"}  # no torch, no MLflow: it runs in well under a second


def test_stage_params_are_real_params_sections():
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    for name, stage in stages.items():
        for key in stage.get("params", []):
            if isinstance(key, dict):
                continue
            node = params
            for part in key.split("."):
                assert part in node, f"stage {name} declares unknown param {key}"
                node = node[part]


def test_the_cli_defaults_are_the_stages_outputs():
    from pipeline.serve import cli
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]

    def outs(stage, kind="outs"):
        return [next(iter(o)) if isinstance(o, dict) else o for o in stages[stage].get(kind, [])]
    assert cli.DEFAULT_MODEL in outs("train")
    assert cli.DEFAULT_BUNDLE in outs("export")
    assert cli.DEFAULT_THRESHOLD in outs("calibrate", "metrics")


def test_every_stage_module_has_one_shape_and_runs_as_a_script():
    """dvc.yaml runs `python -m pipeline.stages.<stage>`: without the guard the command would exit 0 having
    done nothing. Every stage but `check` (no MLflow, no torch, nothing written) has one shape: `parser()` from
    `runner.parser`, `run(args, rec)` doing the work, and `main(argv)` handing both to `runner.main`."""
    for name in STAGES:
        tree = ast.parse((PIPELINE / "stages" / f"{name}.py").read_text())
        guards = [n for n in tree.body if isinstance(n, ast.If) and "__main__" in ast.unparse(n.test)]
        assert guards and "sys.exit(main())" in ast.unparse(guards[-1]), f"pipeline/stages/{name}.py has no __main__ guard"
        if name == "check":
            continue
        defs = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
        assert [a.arg for a in defs["run"].args.args] == ["args", "rec"], f"stages/{name}.py: run(args, rec)"
        assert "runner.parser(__doc__" in ast.unparse(defs["parser"]), f"stages/{name}.py: parser() from runner.parser"
        assert "runner.main(" in ast.unparse(defs["main"]), f"stages/{name}.py: main() through runner.main"


def test_the_committed_lock_has_the_stages_of_dvc_yaml():
    """DVC neither reruns nor rewrites a stage when a dep or param is taken out of dvc.yaml (its status stays
    clean), so a stale dvc.lock would go on listing it: after such an edit, `dvc commit -f` writes the lock anew."""
    stages = yaml.safe_load(committed("dvc.yaml"))["stages"]
    lock = yaml.safe_load(committed("dvc.lock"))["stages"]
    assert set(lock) == set(stages)
    for name, stage in stages.items():
        deps = {d["path"] for d in lock[name].get("deps", [])}
        assert deps == set(stage.get("deps", [])), f"dvc.lock's {name}: deps {sorted(deps ^ set(stage.get('deps', [])))} differ"
        declared = {k for k in stage.get("params", []) if isinstance(k, str)}
        locked = set(lock[name].get("params", {}).get("params.yaml", {}))
        if not any(isinstance(k, dict) for k in stage.get("params", [])):  # a whole-file one (check) locks every key
            assert locked == declared, f"dvc.lock's {name}: params {sorted(locked ^ declared)} differ"
