"""LFW View 2: its files, the fold tables, the params, and scripts/view2.py's bookkeeping."""
import json
import os
import shutil
import sys
from pathlib import Path

import pytest

from conftest import ROOT, small_params
from pipeline import download, lfw, pairs, registry, views
from pipeline.params import ParamsError, PairsParams, load_params
from pipeline.tables import as_row

sys.path.insert(0, str(ROOT / "scripts"))
import experiments_table  # noqa: E402
import view2  # noqa: E402


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
    from pipeline import serving
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


# --- scripts/view2.py -----------------------------------------------------------------------------

BASE = {"seed": 0, "pairs.mode": "unrestricted", "pairs.protocol": "view1", "pairs.fold": 1, "train.lr": 0.003}


def shown(*exps):
    """A `dvc exp show --json`-shaped list: one commit with the given (fold, state, accuracy, overrides)."""
    revs = []
    for k, (fold, state, acc, over) in enumerate(exps):
        params = {"seed": 0, "pairs": {"mode": "unrestricted", "protocol": "view2", "fold": fold}, "train": {"lr": 0.003}}
        for key, value in over.items():
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
    data = shown((1, "success", 0.9, {}), (2, "failed", None, {}), (2, "queued", None, {}), (3, "success", 0.8, {"train.lr": 0.01}))
    config = view2.config_of(BASE)
    assert view2.fold_states(data, "pipe1", config) == {1: "success", 2: "queued"}  # any commit of that pipeline
    assert view2.fold_states(data, "pipe2", config) == {}
    running = shown((4, "running", None, {}))
    running[0]["experiments"][0]["executor"]["local"] = {"pid": os.getpid()}
    assert view2.fold_states(running, "pipe1", config) == {4: "running"}
    assert view2.merge([], view2.experiments(running)) == []  # the baseline's metrics are not fold 4's
    running[0]["experiments"][0]["executor"]["local"] = {"pid": 2 ** 22 + 12345}  # collected now, or its worker lost
    assert view2.fold_states(running, "pipe1", config) == {4: "ended"}


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
    dvc_yaml = ("stages:\n  check:\n    cmd: python -m pipeline.check\n    deps:\n      - pipeline/params.py\n"
                "  train:\n    cmd: python -m pipeline.train\n    deps:\n      - pipeline/train.py\n    outs:\n      - model\n")
    a = commit("a", **{"dvc.yaml": dvc_yaml, "params.yaml": "lr: 1\n", "pipeline/train.py": "v1\n",
                       "pipeline/params.py": "v1\n"})
    docs = commit("docs", **{"README.md": "x\n", "pipeline/tracking.py": "record keeping\n"})
    validation = commit("validation", **{"pipeline/params.py": "v2: only the check stage, which writes nothing\n"})
    comments = commit("comments", **{"params.yaml": "lr: 1  # a comment changes no run\n",
                                     "dvc.yaml": "# the stages\n" + dvc_yaml.replace("python -m pipeline.check", "python -m pipeline.check -v")})
    b = commit("b", **{"pipeline/train.py": "v2\n"})
    reverted = commit("revert b", **{"pipeline/train.py": "v1\n"})
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
    assert "`python scripts/view2.py run -S 'train.stage_convs=[1,1,1]' -S train.epochs=6`" in view2.view2_md([rec])


def test_view2_runs_stay_out_of_the_experiments_table():
    data = shown((1, "success", 0.9, {}))
    assert experiments_table.live_runs(data) == []


def test_fold_lists_and_overrides_are_checked():
    assert view2.parse_folds("1,4-6") == [1, 4, 5, 6]
    with pytest.raises(SystemExit, match="outside 1..10"):
        view2.parse_folds("0-3")
    assert view2.parse_sets(["train.lr=1e-3", "train.augment.flip=false"]) == {"train.lr": 0.001, "train.augment.flip": False}
    with pytest.raises(SystemExit, match="set by this script"):
        view2.parse_sets(["pairs.fold=3"])
    with pytest.raises(SystemExit, match="no such key"):
        view2.wanted(BASE, {"train.lrr": 1})


def _run_with_polls(monkeypatch, tmp_path, polls, folds, alive=True, clock=None, calls=None, worker=True,
                    report=lambda args: 0):
    """view2.run over `folds` with `dvc exp show` answering `polls` in turn, every dvc command only
    noted in `calls`, the clock reading `clock` in turn (else the real one), and a queue worker running as
    `worker` says (a bool, or a function called each time)."""
    import argparse
    import subprocess
    polls, calls = iter(polls), [] if calls is None else calls
    monkeypatch.setattr(view2, "show", lambda num, rev="HEAD", tries=1: next(polls))
    monkeypatch.setattr(view2, "code_commit", lambda rev: "pipe1")
    monkeypatch.setattr(view2, "git", lambda *a: "a" * 40 if a[0] == "rev-parse" else "")
    monkeypatch.setattr(view2, "params_file", lambda: dict(BASE))
    monkeypatch.setattr(view2, "dvc", lambda *a, **k: calls.append(a) or subprocess.CompletedProcess(a, 0, "", ""))
    monkeypatch.setattr(view2.subprocess, "run", lambda cmd, **k: calls.append(tuple(cmd)) or subprocess.CompletedProcess(cmd, 0))
    monkeypatch.setattr(view2, "report", report)
    monkeypatch.setattr(view2, "_alive", lambda pid: alive)
    monkeypatch.setattr(view2, "worker_alive", worker if callable(worker) else lambda: worker)
    if clock is not None:
        monkeypatch.setattr(view2, "_clock", lambda: next(clock))
    monkeypatch.setattr(view2, "ROOT", tmp_path)  # a fresh clone: no .dvc/tmp yet
    monkeypatch.setattr(view2, "DATA", tmp_path / "view2.json")
    return view2.run(argparse.Namespace(folds=folds, set=[], jobs=1, poll=0, num=20, no_mlflow=True))


def test_run_queues_only_the_missing_folds_and_waits_for_them(monkeypatch, capsys, tmp_path):
    polls = [shown((1, "success", 0.9, {}), (2, "queued", None, {})),
             shown((1, "success", 0.9, {}), (2, "running", None, {}), (3, "queued", None, {})),
             shown((1, "success", 0.9, {}), (2, "success", 0.8, {}), (3, "success", 0.7, {}))]
    calls = []
    # fold 4 done in another clone, recorded
    (tmp_path / "view2.json").write_text(json.dumps([{"commit": "pipe1", "params": {**BASE, "pairs.fold": 4},
                                                       "folds": {"4": {"metrics": {"test acc": 0.9}}}}]))
    assert _run_with_polls(monkeypatch, tmp_path, polls, [1, 2, 3, 4], calls=calls) == 0
    queued = [c for c in calls if c[:3] == ("exp", "run", "--queue")]
    assert queued == [("exp", "run", "--queue", "-S", "pairs.protocol=view2", "-S", "pairs.fold=3")]
    assert sum(c[:3] == ("dvc", "queue", "start") for c in calls) == 1
    out = capsys.readouterr().out
    assert "folds done [1, 4]; queueing [3]" in out and "done [1, 2, 3, 4]" in out


def test_run_reports_the_configuration_it_ran(monkeypatch, capsys, tmp_path):
    seen = []
    polls = [shown((1, "success", 0.9, {}))] * 2

    def report(args):
        seen.append(args.only)
        return 0
    _run_with_polls(monkeypatch, tmp_path, polls, [1], report=report)
    assert seen == [("pipe1", view2.config_of(BASE))]


def started():
    """worker_alive for a queue with no worker until `dvc queue start` (the first call is before it)."""
    answers = iter([False])
    return lambda: next(answers, True)


def test_an_idle_queue_worker_is_let_stop_before_folds_are_queued(monkeypatch, capsys, tmp_path):
    """An idle worker stops about 10 s after its queue empties; one queued in that moment can be taken by
    it and never run. So with nothing queued or running, run waits for such a worker to stop."""
    calls, answers = [], iter([True, True, True, False])

    def worker():
        calls.append("worker alive?")
        return next(answers, True)
    monkeypatch.setattr(view2.time, "sleep", lambda s: calls.append(f"sleep {s}"))
    polls = [shown(), shown((1, "success", 0.9, {}))]
    assert _run_with_polls(monkeypatch, tmp_path, polls, [1], calls=calls, worker=worker, clock=iter(range(100))) == 0
    assert "waiting for the idle DVC queue worker to stop before queueing" in capsys.readouterr().out
    first_queued = next(i for i, c in enumerate(calls) if c[:3] == ("exp", "run", "--queue"))
    assert [c for c in calls[:first_queued] if isinstance(c, str)] == ["worker alive?", "worker alive?", "sleep 0.5",
                                                                       "worker alive?", "sleep 0.5", "worker alive?"]

    # a worker that does not stop (busy with an experiment of a commit not shown): queued after the wait
    calls.clear()
    polls = [shown(), shown((1, "success", 0.9, {}))]
    assert _run_with_polls(monkeypatch, tmp_path, polls, [1], calls=calls, worker=True,
                           clock=iter(range(0, 1000, 20))) == 0
    assert "still runs after 60 s (an experiment of another commit?); queueing" in capsys.readouterr().out
    assert any(c[:3] == ("exp", "run", "--queue") for c in calls)

    # with a fold queued or running the worker is busy, and stays so while more are queued
    polls = [shown((1, "running", None, {})), shown((1, "success", 0.9, {}), (2, "success", 0.8, {}))]
    assert _run_with_polls(monkeypatch, tmp_path, polls, [1, 2], worker=True) == 0
    assert "waiting" not in capsys.readouterr().out


def test_a_fold_whose_process_exited_is_waited_for_while_dvc_collects_it(monkeypatch, capsys, tmp_path):
    """DVC shows an experiment as running, its process gone, while it copies the results back."""
    ended = shown((1, "running", None, {}))
    polls = [shown(), ended, ended, shown((1, "success", 0.9, {}))]
    assert _run_with_polls(monkeypatch, tmp_path, polls, [1], alive=False, clock=iter([0, 1, 60, 119, 121]),
                           worker=started()) == 0
    out = capsys.readouterr().out
    assert "failed [1]" not in out and "done [1], running/queued [], failed []" in out


def test_a_fold_whose_process_exited_and_stays_so_is_failed_after_the_grace(monkeypatch, capsys, tmp_path):
    ended = shown((1, "running", None, {}))
    clock = iter([0, 1, 60, view2.ENDED_GRACE_S + 2])
    assert _run_with_polls(monkeypatch, tmp_path, [shown(), ended, ended, ended], [1], alive=False, clock=clock,
                           worker=started()) == 1
    out = capsys.readouterr()
    assert "running/queued [1], failed []" in out.out and "running/queued [], failed [1]" in out.out
    assert "folds [1] did not finish" in out.err


def test_a_queue_worker_that_died_with_folds_queued_is_started_again(monkeypatch, capsys, tmp_path):
    """DVC's worker can exit with experiments still queued (a kombu race); the folds then wait on no one."""
    queued = shown((1, "queued", None, {}))
    calls = []
    clock = iter([0, 1, 30, 61, 62])  # no worker from the poll at 1 s: started again at 61 s, not at 30 s
    assert _run_with_polls(monkeypatch, tmp_path, [queued, queued, queued, queued, shown((1, "success", 0.9, {}))],
                           [1], calls=calls, worker=False, clock=clock) == 0
    assert sum(c[:3] == ("dvc", "queue", "start") for c in calls) == 2  # at the start, and once
    out = capsys.readouterr().out
    assert "the DVC queue worker exited with folds [1] still queued; starting it again" in out
    assert "done [1], running/queued [], failed []" in out


def test_a_queue_worker_that_keeps_dying_is_one_clear_error(monkeypatch, tmp_path):
    queued = shown((1, "queued", None, {}))
    calls = []
    with pytest.raises(SystemExit, match=r"folds \[1\] stay queued and the DVC queue worker keeps exiting"):
        _run_with_polls(monkeypatch, tmp_path, [queued] * 40, [1], calls=calls, worker=False,
                        clock=iter(range(0, 40 * view2.WORKER_GRACE_S, view2.WORKER_GRACE_S)))
    assert sum(c[:3] == ("dvc", "queue", "start") for c in calls) == 1 + view2.WORKER_RESTARTS


def test_worker_alive_reads_the_pids_dvc_keeps(monkeypatch, tmp_path):
    monkeypatch.setattr(view2, "ROOT", tmp_path)
    celery = tmp_path / ".dvc" / "tmp" / "exps" / "celery"
    assert not view2.worker_alive()  # a fresh clone: no .dvc/tmp
    celery.mkdir(parents=True)
    (celery / "dvc-exp-worker-1.json").write_text(json.dumps({"pid": 2 ** 22 + 1, "returncode": None}))
    (celery / "dvc-exp-worker-2.json").write_text("{")  # half written
    assert not view2.worker_alive()
    (celery / "dvc-exp-worker-2.json").write_text(json.dumps({"pid": os.getpid(), "returncode": None}))
    assert view2.worker_alive()


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
    assert view2.main(["paired", "aaa", "bbb", *sets, "--b-set", "train.augment.erase=0.5"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == ("A: aaaaaaa -S pairs.mode=restricted -S train.epochs=60; "
                      "B: bbbbbbb -S pairs.mode=restricted -S train.epochs=60 -S train.augment.erase=0.5")
    assert out[1] == "folds: A [1, 2, 3], B [1, 2, 4]; paired: [1, 2]"
    assert "| 2 | aaaaaaa | bbbbbbb | 0.92000 | 0.94000 | +0.02000 |" in "\n".join(out)
    assert ("val AUC, B - A over 2 paired folds: mean +0.01500, SE 0.00500, t +3.00 (1 degrees of freedom); "
            "B higher on 2 of 2") in out
    with pytest.raises(SystemExit, match=r"B: no View 2 configuration of commit bbb with overrides -S pairs.mode=restricted "
                                         r"-S train.epochs=60 in .*that commit has: bbbbbbb -S pairs.mode=restricted"):
        view2.main(["paired", "aaa", "bbb", *sets])
    assert view2.main(["paired", "aaaaaaa" + "0" * 33, "aaa", *sets[:2], "--a-set", "train.epochs=60.0",
                       "--b-set", "train.epochs=60"]) == 0  # a full hash; 60.0 and 60 the same value
    assert capsys.readouterr().out.splitlines()[1] == "folds: A [1, 2, 3], B [1, 2, 3]; paired: [1, 2, 3]"
    with pytest.raises(SystemExit, match="--b-set 'erase': expected key=value"):
        view2.main(["paired", "aaa", "bbb", "--b-set", "erase"])


def test_show_tries_again_and_a_lost_task_put_back_costs_no_try(monkeypatch, capsys):
    import subprocess
    lost = ("ERROR: unexpected error - [Errno 2] No such file or directory: '/r/.dvc/tmp/exps/run/"
            + "ab" * 20 + "/" + "ab" * 20 + ".run'")
    replies = iter([(1, "", lost), (1, "", "ERROR: lock"), (0, "[]", "")])
    monkeypatch.setattr(view2, "dvc", lambda *a, **k: subprocess.CompletedProcess(a, *next(replies)))
    requeued, slept = [], []
    monkeypatch.setattr(view2, "requeue_lost", lambda rev: requeued.append(rev) or True)
    monkeypatch.setattr(view2.time, "sleep", slept.append)
    assert view2.show(5, tries=2) == []
    assert requeued == ["ab" * 20] and slept == [30]
    assert "queued again" in capsys.readouterr().err

    replies = iter([(1, "", "ERROR: lock")])  # one try: no waiting
    with pytest.raises(SystemExit, match="dvc exp show failed: ERROR: lock"):
        view2.show(5)
    assert slept == [30]

    # a repair that fails (DVC's internals changed, say) says so, and the try counts
    monkeypatch.undo()
    monkeypatch.setattr(view2.queue_repair, "requeue_lost", lambda root, rev: {}["gone"])
    assert not view2.requeue_lost("ab" * 20)
    assert "could not check DVC queue task abababa (KeyError" in capsys.readouterr().err
