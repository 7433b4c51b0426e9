"""LFW View 2: its files, the fold tables, the params, and pipeline/lab/view2.py's bookkeeping."""
import json
import shutil

import pytest

from conftest import small_params
from pipeline import lfw, views
from pipeline.record import registry
from pipeline.stages import download, pairs
from pipeline.lab import records, view2
from pipeline.lab.__main__ import main as lab
from pipeline.params import ParamsError, PairsParams, load_params
from pipeline.tables import as_row


def params(**kw):
    return PairsParams(**{**small_params()["pairs"], **kw})


def test_view2_files_parse_into_ten_folds(lfw_dir):
    folds = views.pair_folds(lfw_dir / "pairs.txt")
    people = views.people_folds(lfw_dir / "people.txt")
    assert len(folds) == len(people) == 10
    for fold, names in zip(folds, people):
        assert [p.same for p in fold] == [True, False]
        assert {p.name1 for p in fold} | {p.name2 for p in fold} <= set(names)


def test_a_person_in_two_folds_names_the_line(tmp_path, lfw_dir):
    lines = (lfw_dir / "people.txt").read_text().splitlines()
    lines[-1] = lines[2]  # fold 1's first person again, as fold 10's last
    (tmp_path / "people.txt").write_text("\n".join(lines) + "\n")
    with pytest.raises(lfw.ProtocolError, match=rf"people.txt:{len(lines)}: {lines[2].split()[0]} is already in fold 1"):
        views.people_folds(tmp_path / "people.txt")


def test_a_view1_pairs_file_is_not_view2(lfw_dir):
    with pytest.raises(lfw.ProtocolError, match=r"pairsDevTest.txt:1: a View 2 pairs file starts with '10<TAB>N'"):
        views.pair_folds(lfw_dir / "pairsDevTest.txt")


@pytest.mark.parametrize("fold", [1, 7])
def test_unrestricted_fold_trains_without_the_folds_people(lfw_dir, fold):
    tables, report = pairs.make_tables(lfw_dir, params(protocol="view2", fold=fold), seed=0)
    assert tables["test"] == [as_row(p) for p in views.pair_folds(lfw_dir / "pairs.txt")[fold - 1]]
    fold_people = set(views.people_folds(lfw_dir / "people.txt")[fold - 1])
    seen = pairs.identities(tables["train"]) | pairs.identities(tables["val"])
    assert seen and not seen & fold_people
    assert report["protocol"] == "view2" and report["fold"] == fold and report["test_source"] == f"pairs.txt fold {fold}"
    assert report["train_test_shared_people"] == report["val_test_shared_people"] == 0


def test_restricted_fold_trains_on_the_other_folds_pairs_alone(lfw_dir):
    tables, report = pairs.make_tables(lfw_dir, params(protocol="view2", fold=3, mode="restricted", val_fraction=0.3), seed=0)
    folds = views.pair_folds(lfw_dir / "pairs.txt")
    others = sorted(as_row(p) for k, f in enumerate(folds) if k != 2 for p in f)
    assert sorted(tables["train"] + tables["val"]) == others
    assert tables["val"] and report["test_pairs"] == 2


def test_view1_tables_do_not_read_the_fold(lfw_dir):
    a, ra = pairs.make_tables(lfw_dir, params(fold=1), seed=0)
    b, _ = pairs.make_tables(lfw_dir, params(fold=9), seed=0)
    assert a == b and ra["test_source"] == "pairsDevTest.txt" and "fold" not in ra


def test_fold_out_of_range_is_a_params_error(tmp_path):
    p = small_params(**{"pairs.protocol": "view2", "pairs.fold": 11})
    path = tmp_path / "params.yaml"
    path.write_text(json.dumps(p))
    with pytest.raises(ParamsError, match=r"'pairs.fold' must be in 1..10"):
        load_params(path)
    path.write_text(json.dumps(small_params(**{"pairs.protocol": "view3"})))
    with pytest.raises(ParamsError, match=r"'pairs.protocol' must be one of \['view1', 'view2'\]"):
        load_params(path)


def test_registry_key_of_view1_names_no_fold_and_view2_names_its_fold(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text(json.dumps(small_params()))
    key = registry.val_pairs_key(load_params(path))
    assert key == "pairs.mode=unrestricted pairs.n_val_pairs=32 pairs.split_seed=0 pairs.val_fraction=0.3"
    assert not registry.is_view2_fold(key)
    path.write_text(json.dumps(small_params(**{"pairs.protocol": "view2", "pairs.fold": 4})))
    key = registry.val_pairs_key(load_params(path))
    assert "pairs.fold=4" in key and registry.is_view2_fold(key)


def test_a_view2_fold_model_is_logged_not_registered(monkeypatch, tmp_path):
    import contextlib
    import types
    from pipeline.serve import serving
    logged = []
    monkeypatch.setattr(serving, "log_model", lambda *a: logged.append(a[-1]))
    rec = types.SimpleNamespace(active=True, child_id="run", call=lambda fn, retries=0: fn(None),
                                mlflow=types.SimpleNamespace(start_run=lambda run_id: contextlib.nullcontext()),
                                tags=lambda *a, **k: pytest.fail("a fold model got a registry tag"))
    registry.register(rec, tmp_path / "m.pt", tmp_path / "t.json", (tmp_path, tmp_path), 0.99,
                      "seed=0 pairs.fold=2 pairs.mode=unrestricted pairs.protocol=view2")
    assert logged == [None]  # registered_model_name None: logged in its run only


def test_download_check_refuses_a_fold_pair_outside_the_folds_people(tmp_path, lfw_dir):
    broken = tmp_path / "lfw-a"
    shutil.copytree(lfw_dir, broken)
    lines = (broken / "pairs.txt").read_text().splitlines()
    stranger = views.people_folds(broken / "people.txt")[1]
    name = next(n for n, c in stranger.items() if c >= 2)
    lines[1] = f"{name}\t1\t2"  # fold 1's same pair, of a fold 2 person
    (broken / "pairs.txt").write_text("\n".join(lines) + "\n")
    with pytest.raises(download.DataError, match=rf"pairs.txt:2: {name} is not in fold 1 of people.txt"):
        download.check_dataset(broken, None)


# --- pipeline/lab/view2.py ------------------------------------------------------------------------

BASE = {"seed": 0, "pairs.mode": "unrestricted", "pairs.protocol": "view1", "pairs.fold": 1, "train.lr": 0.003}


def shown(*exps):
    """A `dvc exp show --json`-shaped list: one commit with the given (fold, state, accuracy, overrides)."""
    revs = []
    for k, (fold, state, acc, over) in enumerate(exps):
        params = {"seed": 0, "pairs": {"mode": "unrestricted", "protocol": "view2", "fold": fold}, "train": {"lr": 0.003}}
        for key, value in over.items():
            if key == "seed":
                params["seed"] = value
                continue
            section, name = key.split(".")
            params[section][name] = value
        metrics = {} if acc is None else {"metrics/evaluate.json": {"data": {"accuracy": acc, "roc_auc": acc + 0.05, "eer": 1 - acc}}}
        # as DVC 3.67 writes it: the group carries the executor (none once finished), its rev the data; a
        # queued or running experiment's data shows its baseline's metrics
        if state != "success":
            metrics = {"metrics/evaluate.json": {"data": {"accuracy": 0.5}}}
        revs.append({"name": f"exp-{k}", "executor": None if state == "success" else {"state": state},
                     "revs": [{"rev": f"{k:040x}", "name": f"exp-{k}", "experiments": None,
                               "data": {"params": {"params.yaml": {"data": params}}, "metrics": metrics}}]})
    return [{"rev": "a" * 40, "data": {"params": {"params.yaml": {"data": {"seed": 0}}}}, "experiments": revs}]


def test_fold_states_prefer_success_and_match_the_configuration(monkeypatch):
    monkeypatch.setattr(view2, "code_commit", lambda rev: {"aaaaaaa": "pipe1"}.get(rev, rev))
    data = shown((1, "success", 0.9, {}), (1, "failed", None, {}), (2, "failed", None, {}),
                 (3, "success", 0.8, {"train.lr": 0.01}))
    config = view2.config_of(BASE)
    assert view2.fold_states(data, "pipe1", config) == {1: "success", 2: "failed"}  # any commit of that pipeline
    assert view2.fold_states(data, "pipe2", config) == {}
    running = shown((4, "running", None, {}))  # a fold whose dvc was killed stays "running" in `dvc exp show`
    assert view2.fold_states(running, "pipe1", config) == {4: "running"}
    assert view2.merge([], view2.experiments(running)) == []  # the baseline's metrics are not fold 4's


def test_a_pipeline_is_named_by_its_oldest_commit_with_the_same_files(tmp_path, monkeypatch):
    import subprocess

    def git(*args):
        return subprocess.run(["git", *args], cwd=tmp_path, capture_output=True, text=True, check=True).stdout

    def commit(message, **files):
        for name, text in files.items():
            (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / name).write_text(text)
        git("add", "-A")
        git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", message)
        return git("rev-parse", "HEAD").strip()

    git("init", "-q")
    dvc_yaml = ("stages:\n  check:\n    cmd: python -m pipeline.stages.check\n    deps:\n      - pipeline/params.py\n"
                "  train:\n    cmd: python -m pipeline.stages.train\n    deps:\n      - pipeline/stages/train.py\n    outs:\n      - model\n")
    a = commit("a", **{"dvc.yaml": dvc_yaml, "params.yaml": "lr: 1\n", "pipeline/stages/train.py": "v1\n",
                       "pipeline/params.py": "v1\n"})
    docs = commit("docs", **{"README.md": "x\n", "pipeline/record/tracking.py": "record keeping\n"})
    validation = commit("validation", **{"pipeline/params.py": "v2: only the check stage, which writes nothing\n"})
    comments = commit("comments", **{"params.yaml": "lr: 1  # a comment changes no run\n",
                                     "dvc.yaml": "# the stages\n" + dvc_yaml.replace("python -m pipeline.stages.check", "python -m pipeline.stages.check -v")})
    b = commit("b", **{"pipeline/stages/train.py": "v2\n"})
    reverted = commit("revert b", **{"pipeline/stages/train.py": "v1\n"})
    value = commit("value", **{"params.yaml": "lr: 2\n"})
    monkeypatch.setattr(view2, "git", git)
    assert [view2.code_commit(c, {}) for c in (a, docs, validation, comments, b, reverted, value)] == \
        [a[:7], a[:7], a[:7], a[:7], b[:7], a[:7], value[:7]]


def test_report_is_the_mean_and_standard_error_over_the_folds(monkeypatch):
    monkeypatch.setattr(view2, "committed_params", lambda rev: BASE)
    monkeypatch.setattr(view2, "code_commit", lambda rev: "pipe1")
    data = shown((1, "success", 0.90, {}), (2, "success", 0.92, {}), (3, "success", 0.94, {}), (4, "running", None, {}))
    recs = view2.merge([], view2.experiments(data))
    assert len(recs) == 1 and list(recs[0]["folds"]) == ["1", "2", "3"]
    acc = recs[0]["summary"]["test acc"]
    assert acc["mean"] == pytest.approx(0.92) and acc["se"] == pytest.approx(0.02 / 3 ** 0.5)
    text = view2.view2_md(recs)
    assert "Folds 1, 2, 3 (3 of 10)" in text and "**0.9200 ± 0.0115**" in text
    again = view2.merge(recs, view2.experiments(shown((1, "success", 0.5, {}))))  # a recorded fold is kept
    assert again[0]["folds"]["1"]["metrics"]["test acc"] == 0.90


def test_run_reports_only_its_own_configuration_and_pipeline(monkeypatch):
    """A stray fold of another configuration, or of an older pipeline, stays out of what `run` records."""
    monkeypatch.setattr(view2, "committed_params", lambda rev: BASE)
    monkeypatch.setattr(view2, "code_commit", lambda rev: {"aaaaaaa": "pipe2"}.get(rev, rev))
    data = shown((1, "success", 0.90, {}), (2, "success", 0.80, {"train.lr": 0.01}))
    config = view2.config_of({**BASE, "pairs.protocol": "view2"})
    mine = view2.merge([], view2.experiments(data), only=("pipe2", config))
    assert len(mine) == 1 and list(mine[0]["folds"]) == ["1"] and mine[0]["commit"] == "pipe2"
    assert view2.merge([], view2.experiments(data), only=("pipe1", config)) == []  # an older pipeline's folds
    assert len(view2.merge([], view2.experiments(data))) == 2  # `report` alone takes every configuration


def test_the_best_epoch_is_summarised_in_epochs_not_to_four_places():
    folds = {str(k): {"name": f"e{k}", "metrics": {"test acc": 0.9, "best epoch": e}} for k, e in ((1, 30), (2, 38))}
    rec = {"commit": "pipe1", "params": {"pairs.mode": "restricted"}, "overrides": {}, "folds": folds,
           "summary": {c: view2.mean_se([f["metrics"][c] for f in folds.values()]) if c in ("test acc", "best epoch") else None
                       for c in view2.METRICS}}
    text = view2.view2_md([rec])
    assert "| 1 | 0.9000 |" in text and "**34.0 ± 4.0**" in text and "34.0000" not in text


def test_the_reproduce_command_quotes_a_list_override_for_the_shell():
    folds = {"1": {"name": "e1", "metrics": {"test acc": 0.9}}}
    rec = {"commit": "pipe1", "params": {"pairs.mode": "unrestricted"}, "folds": folds,
           "overrides": {"train.stage_convs": [1, 1, 1], "train.epochs": 6},
           "summary": {c: view2.mean_se([0.9]) if c == "test acc" else None for c in view2.METRICS}}
    assert "`python -m pipeline.lab view2 run -S 'train.stage_convs=[1,1,1]' -S train.epochs=6`" in view2.view2_md([rec])


def test_report_without_dvc_writes_view2_md_from_the_records_as_they_are(tmp_path, monkeypatch):
    rec = {"commit": "pipe1", "params": {"pairs.mode": "unrestricted"}, "overrides": {},
           "folds": {"1": {"name": "e1", "metrics": {"test acc": 0.9}}},
           "summary": {c: view2.mean_se([0.9]) if c == "test acc" else None for c in view2.METRICS}}
    (tmp_path / "view2.json").write_text(json.dumps([rec]))
    for name, file in (("DATA", "view2.json"), ("FUSIONS", "none.json"), ("OUT", "VIEW2.md")):
        monkeypatch.setattr(view2, name, tmp_path / file)
    monkeypatch.setattr(view2, "show", lambda *a, **k: pytest.fail("ran dvc exp show"))
    monkeypatch.setattr(view2, "refresh_readme", lambda: False)
    before = (tmp_path / "view2.json").read_text()
    assert lab(["view2", "report", "--no-live", "--no-mlflow"]) == 0
    assert "Folds 1 (1 of 10)" in (tmp_path / "VIEW2.md").read_text() and (tmp_path / "view2.json").read_text() == before


def test_view2_runs_stay_out_of_the_experiments_table():
    data = shown((1, "success", 0.9, {}))
    assert records.live_runs(data) == []


def test_fold_lists_and_overrides_are_checked():
    assert view2.parse_folds("1,4-6") == [1, 4, 5, 6]
    with pytest.raises(SystemExit, match="outside 1..10"):
        view2.parse_folds("0-3")
    assert view2.parse_sets(["train.lr=1e-3", "train.augment.flip=false"]) == {"train.lr": 0.001, "train.augment.flip": False}
    with pytest.raises(SystemExit, match="set by `view2 run`"):
        view2.parse_sets(["pairs.fold=3"])
    with pytest.raises(SystemExit, match="no such key"):
        view2.wanted(BASE, {"train.lrr": 1})


class FakeDvc:
    """subprocess.Popen for `dvc exp run`: notes each command and its keyword arguments, and exits with
    the next of `codes` (0 once they run out), or raises KeyboardInterrupt where that is the code."""

    def __init__(self, codes=()):
        self.calls, self.codes = [], list(codes)

    def __call__(self, cmd, **kwargs):
        self.calls.append((cmd, kwargs))
        self.code, self.interrupted = (self.codes.pop(0) if self.codes else 0), False
        return self

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def wait(self):
        if self.code is KeyboardInterrupt and not self.interrupted:
            self.interrupted = True
            raise KeyboardInterrupt
        return 130 if self.interrupted else self.code


def _run(monkeypatch, tmp_path, shown_data, folds, sets=(), popen=None, report=lambda args: 0, heads=None, final=False):
    """view2.run over `folds` with `dvc exp show` answering `shown_data`, `dvc exp run` by `popen` (a
    FakeDvc), HEAD's pipeline each time it is asked the next of `heads` (else always "pipe1")."""
    import argparse
    import subprocess
    heads = iter(heads or [])
    monkeypatch.setattr(view2, "show", lambda num, rev="HEAD", tries=1: shown_data)
    monkeypatch.setattr(view2, "code_commit", lambda rev: next(heads, "pipe1"))
    monkeypatch.setattr(view2, "git", lambda *a: "a" * 40 if a[0] == "rev-parse" else "")
    monkeypatch.setattr(view2, "params_file", lambda: dict(BASE))
    monkeypatch.setattr(view2, "dvc", lambda *a, **k: subprocess.CompletedProcess(a, 0, "", ""))
    monkeypatch.setattr(view2.subprocess, "Popen", popen or FakeDvc())
    monkeypatch.setattr(view2, "report", report)
    monkeypatch.setattr(view2, "DATA", tmp_path / "view2.json")
    return view2.run(argparse.Namespace(folds=folds, set=list(sets), num=20, no_mlflow=True, final=final))


def test_run_runs_only_the_missing_folds_one_after_the_other_in_the_foreground(monkeypatch, capsys, tmp_path):
    # fold 1 finished here, fold 2 failed before, fold 4 done in another clone (recorded)
    (tmp_path / "view2.json").write_text(json.dumps([{"commit": "pipe1", "params": {**BASE, "pairs.fold": 4},
                                                       "folds": {"4": {"metrics": {"test acc": 0.9}}}}]))
    dvc = FakeDvc()
    data = shown((1, "success", 0.9, {}), (2, "failed", None, {}))
    assert _run(monkeypatch, tmp_path, data, [1, 2, 3, 4], popen=dvc) == 0
    fold = ["dvc", "exp", "run", "--temp", "-S", "pairs.protocol=view2", "-S"]
    assert dvc.calls == [(fold + ["pairs.fold=2"], {"cwd": view2.ROOT}), (fold + ["pairs.fold=3"], {"cwd": view2.ROOT})]
    out = capsys.readouterr().out  # no output captured: DVC's goes to the terminal
    assert "folds done [1, 4]; running [2, 3]" in out
    assert "View 2 fold 3 (2 of 2): dvc exp run --temp -S pairs.protocol=view2 -S pairs.fold=3" in out


def test_run_passes_the_overrides_to_each_fold(monkeypatch, tmp_path):
    dvc = FakeDvc()
    _run(monkeypatch, tmp_path, shown(), [5], sets=["train.lr=0.01"], popen=dvc)
    assert dvc.calls[0][0][-4:] == ["-S", "pairs.fold=5", "-S", "train.lr=0.01"]
    assert view2.fold_command(5, {"train.stage_convs": [1, 2, 1]})[-2:] == ["-S", "train.stage_convs=[1, 2, 1]"]


def test_run_reports_the_configuration_it_ran(monkeypatch, tmp_path):
    seen = []

    def report(args):
        seen.append(args.only)
        return 0
    dvc = FakeDvc()
    _run(monkeypatch, tmp_path, shown((1, "success", 0.9, {})), [1], popen=dvc, report=report)
    assert seen == [("pipe1", view2.config_of(BASE))] and dvc.calls == []


def test_a_failing_fold_stops_run_naming_the_fold_and_its_command(monkeypatch, tmp_path):
    dvc = FakeDvc([0, 2])
    reported = []
    with pytest.raises(SystemExit, match=r"fold 2 failed: dvc exp run --temp -S pairs.protocol=view2 -S pairs.fold=2 "
                                         r"-S train.lr=0.01 exited 2 .*rerun this command"):
        _run(monkeypatch, tmp_path, shown(), [1, 2, 3], sets=["train.lr=0.01"], popen=dvc, report=reported.append)
    assert [c[0][7] for c in dvc.calls] == ["pairs.fold=1", "pairs.fold=2"] and reported == []  # fold 3 not begun


def test_an_interrupted_fold_waits_for_dvc_to_stop_and_names_the_fold(monkeypatch, tmp_path):
    dvc = FakeDvc([KeyboardInterrupt])
    with pytest.raises(SystemExit, match=r"fold 1 interrupted: dvc exp run --temp .* rerun this command"):
        _run(monkeypatch, tmp_path, shown(), [1, 2], popen=dvc)
    assert len(dvc.calls) == 1 and dvc.interrupted  # dvc was waited for once Ctrl-C reached it too


def test_run_stops_before_a_fold_once_the_pipeline_changed(monkeypatch, tmp_path):
    dvc = FakeDvc()
    # HEAD's pipeline: pipe1 at the start and before fold 1, another commit's before fold 2
    with pytest.raises(SystemExit, match=r"the pipeline or params.yaml changed while the folds ran: fold 2 not run"):
        _run(monkeypatch, tmp_path, shown(), [1, 2], popen=dvc, heads=["pipe1", "pipe1", "pipe2"])
    assert [c[0][7] for c in dvc.calls] == ["pairs.fold=1"]


def test_final_is_refused_at_a_seed_any_run_used_and_once_its_ten_folds_are_scored(monkeypatch):
    monkeypatch.setattr(view2, "code_commit", lambda rev: "pipe1")
    config = view2.config_of({**BASE, "seed": 12})
    experiments = [{"commit": "exp0001", "seeds": [0, 1]}, {"commit": "exp0002", "seeds": [12]}]
    with pytest.raises(SystemExit, match=r"--final: seed 12 took part in docs/experiments.json, commit exp0002; choose"):
        view2.check_final(12, "pipe1", config, [], experiments, shown())
    with pytest.raises(SystemExit, match=r"seed 12 took part in the run behind dvc.lock, commit lock000"):
        view2.check_final(12, "pipe1", config, [], experiments[:1], shown(), {"commit": "lock000", "seeds": [12]})
    chosen = {"commit": "pipe0", "params": {**BASE, "seed": 12}, "folds": {"1": {}}}  # a View 2 that decided something
    with pytest.raises(SystemExit, match=r"seed 12 took part in docs/view2.json, pipeline of commit pipe0, not final"):
        view2.check_final(12, "pipe1", config, [chosen], experiments[:1], shown())
    # a fold of this configuration run without --final, not recorded yet; another seed's experiment is no matter
    stray = shown((1, "success", 0.9, {"seed": 12}), (2, "success", 0.9, {}))
    with pytest.raises(SystemExit, match=r"seed 12 took part in experiment exp-0, commit aaaaaaa; choose"):
        view2.check_final(12, "pipe1", config, [], experiments[:1], stray)
    view2.check_final(12, "pipe1", config, [], experiments[:1], shown((2, "success", 0.9, {})))

    # the final run's own record: its folds, listed by dvc exp show, let it go on until ten are scored
    half = {"commit": "pipe1", "params": {**config, "pairs.protocol": "view2"}, "folds": {"1": {}}, "final": True}
    view2.check_final(12, "pipe1", config, [half], experiments[:1], stray)
    restricted = view2.config_of({**config, "pairs.mode": "restricted"})  # another recipe's final shares the seed
    view2.check_final(12, "pipe1", restricted, [half], experiments[:1], stray)
    done = {**half, "folds": {str(k): {} for k in range(1, 11)}}
    with pytest.raises(SystemExit, match=r"final View 2 is scored already \(pipeline of commit pipe1, seed 12\)"):
        view2.check_final(12, "pipe1", config, [done], experiments[:1], stray)
    with pytest.raises(SystemExit, match=r"this recipe's final View 2 ran at seed 12 \(pipeline of commit pipe1\); a final"):
        view2.check_final(13, "pipe1", {**config, "seed": 13}, [half], experiments[:1], shown())  # another seed, same recipe
    view2.check_final(13, "pipe2", {**config, "seed": 13}, [done], experiments[:1], shown())  # a changed pipeline


def test_a_final_run_writes_its_record_before_the_first_fold_and_report_keeps_the_mark(monkeypatch, tmp_path):
    monkeypatch.setattr(records, "load", lambda path=None: [{"commit": "exp0001", "seeds": [3]}])
    monkeypatch.setattr(records, "lock_record", lambda rev="HEAD": None)
    monkeypatch.setattr(view2, "committed_params", lambda rev: BASE)
    dvc = FakeDvc()
    with pytest.raises(SystemExit, match="seed 3 took part"):
        _run(monkeypatch, tmp_path, shown(), [1], sets=["seed=3"], popen=dvc, final=True)
    assert dvc.calls == [] and not (tmp_path / "view2.json").exists()

    class Noting(FakeDvc):  # notes whether the final record was there when each fold began
        def __call__(self, cmd, **kwargs):
            self.seen = [*getattr(self, "seen", []), (tmp_path / "view2.json").exists()]
            return super().__call__(cmd, **kwargs)
    dvc = Noting([0, KeyboardInterrupt])
    with pytest.raises(SystemExit, match="fold 2 interrupted"):
        _run(monkeypatch, tmp_path, shown(), [1, 2], sets=["seed=12"], popen=dvc, final=True)
    assert dvc.seen == [True, True]
    [rec] = json.loads((tmp_path / "view2.json").read_text())
    assert rec["final"] is True and rec["folds"] == {} and rec["overrides"] == {"seed": 12}
    assert "**Final, under way:** 0 of 10 folds of the final run at seed 12" in view2.view2_md([rec])
    assert "| fold |" not in view2.view2_md([rec])  # no table before its first fold

    # fold 1 finished (listed by dvc exp show, not yet recorded): the final run goes on, and report marks it
    done = shown((1, "success", 0.9, {"seed": 12}))
    monkeypatch.setattr(view2, "DATA", tmp_path / "view2.json")
    assert view2.check_final(12, "pipe1", view2.config_of({**BASE, "seed": 12}), [rec], [], done) is None
    recs = view2.merge([rec], view2.experiments(done), only=("pipe1", view2.config_of({**BASE, "seed": 12})))
    assert len(recs) == 1 and recs[0]["final"] is True and list(recs[0]["folds"]) == ["1"]
    text = view2.view2_md(recs)
    assert "**Final, under way:** 1 of 10 folds" in text and "view2 run -S seed=12" in text and "--final -S" not in text
    ten = {**recs[0], "folds": {str(k): recs[0]["folds"]["1"] for k in range(1, 11)}}
    assert "**Final:** run with `--final`, scored once, at seed 12, which no run used before." in view2.view2_md([ten])


def test_paired_compares_two_configurations_fold_by_fold(tmp_path, monkeypatch, capsys):
    def rec(commit, overrides, val_aucs):
        return {"commit": commit, "overrides": overrides, "params": {}, "summary": {},
                "folds": {str(k): {"name": f"e{k}", "metrics": {"val AUC": v, "test acc": 0.9, "test AUC": 0.95}}
                          for k, v in val_aucs.items()}}
    restricted = {"pairs.mode": "restricted", "train.epochs": 60}
    recs = [rec("aaaaaaa", {}, {1: 0.5, 2: 0.5}),
            rec("aaaaaaa", restricted, {1: 0.90, 2: 0.92, 3: 0.95}),
            rec("bbbbbbb", {**restricted, "train.augment.erase": 0.5}, {1: 0.91, 2: 0.94, 4: 0.99})]
    path = tmp_path / "view2.json"
    path.write_text(json.dumps(recs))
    monkeypatch.setattr(view2, "DATA", path)
    sets = ["-S", "pairs.mode=restricted", "-S", "train.epochs=60"]
    assert lab(["view2", "paired", "aaa", "bbb", *sets, "--b-set", "train.augment.erase=0.5"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == ("A: aaaaaaa -S pairs.mode=restricted -S train.epochs=60; "
                      "B: bbbbbbb -S pairs.mode=restricted -S train.epochs=60 -S train.augment.erase=0.5")
    assert out[1] == "folds: A [1, 2, 3], B [1, 2, 4]; paired: [1, 2]"
    assert "| 2 | aaaaaaa | bbbbbbb | 0.92000 | 0.94000 | +0.02000 |" in "\n".join(out)
    assert ("val AUC, B - A over 2 paired folds: mean +0.01500, SE 0.00500, t +3.00 (1 degrees of freedom); "
            "B higher on 2 of 2") in out
    with pytest.raises(SystemExit, match=r"B: no View 2 configuration of commit bbb with overrides -S pairs.mode=restricted "
                                         r"-S train.epochs=60 in .*that commit has: bbbbbbb -S pairs.mode=restricted"):
        lab(["view2", "paired", "aaa", "bbb", *sets])
    assert lab(["view2", "paired", "aaaaaaa" + "0" * 33, "aaa", *sets[:2], "--a-set", "train.epochs=60.0",
                       "--b-set", "train.epochs=60"]) == 0  # a full hash; 60.0 and 60 the same value
    assert capsys.readouterr().out.splitlines()[1] == "folds: A [1, 2, 3], B [1, 2, 3]; paired: [1, 2, 3]"
    with pytest.raises(SystemExit, match="--b-set 'erase': expected key=value"):
        lab(["view2", "paired", "aaa", "bbb", "--b-set", "erase"])


def test_show_tries_again_30_s_later_and_then_fails_with_dvcs_error(monkeypatch):
    import subprocess
    replies = iter([(1, "", "ERROR: lock"), (0, "[]", "")])
    monkeypatch.setattr(records, "dvc", lambda *a, **k: subprocess.CompletedProcess(a, *next(replies)))
    slept = []
    monkeypatch.setattr(records.time, "sleep", slept.append)
    assert records.show(5, tries=2) == [] and slept == [30]

    replies = iter([(1, "", "ERROR: lock")])  # one try: no waiting
    with pytest.raises(SystemExit, match="dvc exp show failed: ERROR: lock"):
        records.show(5)
    assert slept == [30]
