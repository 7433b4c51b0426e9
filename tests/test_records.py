"""pipeline/lab/records.py: experiments read from `dvc exp show`, records merged, docs/EXPERIMENTS.md, the
comparisons over the records, and the one rule by which params compare."""
import json

import pytest

from pipeline.lab import records


def exp(name, seed, lr, acc, **sections):
    return {"rev": name + "rev", "name": name, "data": {
        "params": {"params.yaml": {"data": {"seed": seed, "train": {"lr": lr, "epochs": 8}, **sections}}},
        "metrics": {"metrics/evaluate.json": {"data": {"accuracy": acc, "roc_auc": 0.9, "eer": 0.1}},
                    "metrics/calibrate.json": {"data": {"val_accuracy": 0.8, "val_roc_auc": 0.85}},
                    "metrics/train.json": {"data": {"best_epoch": 5}}}}}


def test_live_runs_are_the_finished_experiments_of_every_commit_grouped_by_seed():
    shown = [{"rev": "workspace", "data": {"params": {}, "metrics": {}}},
             {**exp("main", 0, 0.002, 0.80), "experiments": [
                 {"revs": [exp("s1", 1, 0.002, 0.90)]}, {"revs": [exp("s2", 2, 0.002, 0.85)]},
                 {"revs": [exp("lr", 0, 0.004, 0.70)], "executor": {"state": "success"}},
                 {"revs": [exp("running", 3, 0.002, 0.80)], "executor": {"state": "running"}}]},
             {**exp("old", 0, 0.001, 0.5), "experiments": [{"revs": [exp("o1", 1, 0.002, 0.87)], "executor": {"state": "success"}}]}]
    runs = records.live_runs(json.loads(json.dumps(shown)))
    assert [r["name"] for r in runs] == ["s1", "s2", "lr", "o1"]  # no commit's own run, nothing unfinished
    recs, added = records.merge([], runs)
    assert added == 4 and [(r["commit"], r["seeds"]) for r in recs] == [("mainrev", [1, 2]), ("mainrev", [0]), ("oldrev", [1])]
    assert records.cell(recs[0]["metrics"]["evaluate.accuracy"]) == "0.8750 ± 0.0354"
    assert recs[1]["overrides"] == {"train.lr": 0.004} and recs[2]["overrides"] == {"train.lr": 0.002}  # against its commit


def test_a_seed_run_twice_in_one_configuration_counts_once():
    shown = {**exp("main", 0, 0.002, 0.1), "experiments": [{"revs": [exp(n, s, 0.002, a)]} for n, s, a in
                                                            (("first", 0, 0.80), ("again", 0, 0.70), ("s1", 1, 0.90))]}
    recs, added = records.merge([], records.live_runs(shown))
    assert added == 2 and recs[0]["seeds"] == [0, 1] and records.cell(recs[0]["metrics"]["evaluate.accuracy"]) == "0.8500 ± 0.0707"


def test_a_run_after_mining_went_is_recorded_with_the_loss_its_sampler_ran():
    shown = {**exp("main", 0, 0.002, 0.1), "experiments": [
        {"revs": [exp("ids", 0, 0.002, 0.80)]},
        {"revs": [exp("pairs", 1, 0.002, 0.90, train={"lr": 0.002, "epochs": 8, "sampler": "pairs"})]}]}
    runs = {r["name"]: r["params"] for r in records.live_runs(shown)}
    assert runs["ids"]["train.mining"] == "auto" and runs["pairs"]["train.mining"] == "pairs"
    # so a pair-batch run of today never stands in for a batch-all run over pair batches of before
    batch_all = {"pairs.mode": "restricted", "train.sampler": "pairs", "train.mining": "batch_all"}
    assert not records.agrees(runs["pairs"], {**runs["pairs"], **batch_all})


def test_a_renamed_param_matches_its_old_name():
    shown = {**exp("main", 0, 0.002, 0.1), "experiments": [
        {"revs": [exp("new", 0, 0.002, 0.80, prepare={"image_size": 64})]},
        {"revs": [exp("old", 1, 0.002, 0.90, prepare={"size": 64})]}]}  # ran while the key was prepare.size
    recs, _ = records.merge([], records.live_runs(shown))
    assert len(recs) == 1 and recs[0]["seeds"] == [0, 1] and recs[0]["params"]["prepare.image_size"] == 64


@pytest.mark.parametrize("key, committed, now, before, quoted", [
    ("train.sampler", "identities", "identities", "pairs", "train.sampler=pairs"),
    ("train.stem", "stride", "stride", "pool", "train.stem=pool"),
    ("train.pool_first", True, "true", "false", "train.pool_first=false"),
    ("train.stage_convs", [1, 2, 2], "[1,2,2]", "[2,2,2]", "'train.stage_convs=[2,2,2]'")])
def test_a_record_from_before_a_param_existed_shows_its_old_behaviour(key, committed, now, before, quoted):
    def rec(commit, params):
        return {"commit": commit, "params": {"train.lr": 0.002, **params}, "overrides": {}, "seeds": [0],
                "metrics": {i: {"mean": 0.9, "sd": None} for i in records.IDS.values()}}
    text = records.experiments_md([rec("older00", {}), rec("newer00", {key: committed})])
    short = key.split(".")[-1]
    assert f"Every row: {short}={before}." in text and f"Every row: {short}={now}." in text
    assert records.override(key, records.BEFORE_ADDED[key]) == quoted  # as `dvc exp run -S` takes it
    assert "True" not in text


@pytest.mark.parametrize("a, b, equal", [
    (60, 60.0, True), (0.003, 3e-3, True), ([1, 2, 1], (1, 2, 1), True), ([1, 2], [1.0, 2.0], True),
    ({"x": 1, "y": [2]}, {"y": (2.0,), "x": 1.0}, True), (float("nan"), float("nan"), True), (None, None, True),
    (True, 1, False), (False, 0.0, False), ("1", 1, False), ([1, 2], [1, 2, 3], False), ({"x": 1}, {"x": 1, "y": 2}, False),
    ("pairs", "pairs", True), (1, None, False)])
def test_params_compare_numbers_as_numbers_and_the_rest_by_value(a, b, equal):
    assert records.same(a, b) is equal and records.same(b, a) is equal


def test_paired_compares_two_configurations_seed_by_seed_on_fixed_validation_pairs():
    def rec(commit, margin, vals, split=True, per_seed=True):
        params = {**records.TAKEN_OUT, "pairs.mode": "unrestricted", "train.margin": margin,  # ran with them
                  **({"pairs.split_seed": 0} if split else {})}
        runs = [{"seed": s, "metrics": {"calibrate.val_roc_auc": v, "evaluate.accuracy": 0.9}} for s, v in vals.items()]
        out = {"commit": commit, "params": params, "overrides": {}, "seeds": list(vals),
               "metrics": {"calibrate.val_roc_auc": {"mean": sum(vals.values()) / len(vals), "sd": None},
                           "evaluate.accuracy": {"mean": 0.9, "sd": None}}}
        return {**out, "runs": runs} if per_seed else out
    current = {"pairs.mode": "unrestricted", "train.margin": 0.8, "pairs.split_seed": 0}
    recs = [rec("a1", 0.8, {0: 0.950, 1: 0.960}),
            rec("a2", 0.8, {0: 0.955}, per_seed=False),  # one seed, no runs: its mean is the seed's value; newest wins
            rec("b1", 1.0, {0: 0.951, 1: 0.958, 2: 0.97}),
            rec("b0", 1.0, {3: 0.99}, split=False)]  # validation pairs drawn by the seed: never paired
    lines = records.paired(recs, current, {"train.margin": 1.0})
    assert lines[0] == "A: params.yaml; B: A with train.margin=1.0"
    assert lines[1] == "seeds recorded: A [0, 1], B [0, 1, 2]; paired: [0, 1]"
    assert "| 0 | a2 | b1 | 0.95500 | 0.95100 | -0.00400 | 0.90000 | 0.90000 | +0.00000 |" in lines
    assert "| 1 | a1 | b1 | 0.96000 | 0.95800 | -0.00200 | 0.90000 | 0.90000 | +0.00000 |" in lines
    assert ("val AUC, B - A over 2 paired seeds: mean -0.00300, SE 0.00100, t -3.00 (1 degrees of freedom); "
            "B higher on 0 of 2") in lines
    assert any(line.startswith("test acc, B - A over 2 paired seeds: mean +0.00000, SE 0.00000, t undefined") for line in lines)


def test_records_of_the_taken_out_mining_count_as_the_loss_their_sampler_now_runs():
    """`train.mining` went: pair batches now score their labelled pairs, identity batches batch-all. A record
    of pair batches with mining=pairs is today's `train.sampler=pairs`; one with mining=batch_all is not."""
    def rec(commit, mining, margin, val):
        params = {**records.TAKEN_OUT, "pairs.mode": "restricted", "pairs.split_seed": 0, "train.sampler": "pairs",
                  "train.mining": mining, "train.margin": margin}
        return {"commit": commit, "params": params, "overrides": {}, "seeds": [0],
                "runs": [{"seed": 0, "metrics": {"calibrate.val_roc_auc": val, "evaluate.accuracy": 0.8}}]}
    recs = [rec("pairs", "pairs", 0.8, 0.92), rec("ball", "batch_all", 0.8, 0.93), rec("m10", "pairs", 1.0, 0.91)]
    current = {"pairs.mode": "restricted", "pairs.split_seed": 0, "train.sampler": "identities", "train.margin": 0.8}
    lines = records.paired(recs, current, {"train.margin": 1.0}, {"train.sampler": "pairs"})
    assert lines[1] == "seeds recorded: A [0], B [0]; paired: [0]"
    assert "| 0 | pairs | m10 | 0.92000 | 0.91000 | -0.01000 | 0.80000 | 0.80000 | +0.00000 |" in lines


def test_a_param_taken_out_of_params_yaml_counts_at_the_value_that_ran_without_it(monkeypatch):
    """Records of a param's other values, from before its code was taken out, are not the committed
    params' runs (they would replace the README's headline row), and `paired` can still compare them."""
    monkeypatch.setitem(records.BEFORE_ADDED, "train.gone", 0.0)
    current = {"pairs.mode": "unrestricted", "train.margin": 0.8, "pairs.split_seed": 0}  # no train.gone

    def rec(commit, gone, val):
        return {"commit": commit, "seeds": [0], "overrides": {},
                "params": {**records.TAKEN_OUT, "pairs.mode": "unrestricted", "train.margin": 0.8, "pairs.split_seed": 0,
                           "train.gone": gone},
                "metrics": {"calibrate.val_roc_auc": {"mean": val, "sd": None}, "evaluate.accuracy": {"mean": 0.9, "sd": None}}}
    plain, other = rec("p", 0.0, 0.95), rec("g", 2.0, 0.96)
    assert records.headline_records([plain, other], current)[0] is plain
    assert records.headline_records([other], current)[0] is None
    assert records.changed(other["params"], current) == {"train.gone": 2.0}
    assert "| 0 | p | g | 0.95000 | 0.96000 | +0.01000 | 0.90000 | 0.90000 | +0.00000 |" in \
        records.paired([plain, other], current, {"train.gone": 2.0})


@pytest.mark.parametrize("other, base, message", [
    ({"train.marign": 1.0}, {}, "no such param in params.yaml: train.marign"),
    ({"train.margin": 0.8}, {}, "sets every key to the value A already has"),
    ({"pairs.split_seed": 1, "train.margin": 1.0}, {}, "paired pairs.split_seed: B would validate on other pairs"),
])
def test_paired_refuses_a_change_that_names_no_param_or_changes_nothing(other, base, message):
    with pytest.raises(SystemExit, match=message):
        records.paired([], {"train.margin": 0.8, "pairs.split_seed": 0}, other, base)


def test_paired_sets_are_read_as_dvc_reads_them():
    assert records.parse_sets(["train.margin=1", "train.stage_convs=[1,2,2]", "train.lr=3e-3"], "paired") == {
        "train.margin": 1, "train.stage_convs": [1, 2, 2], "train.lr": 0.003}
    with pytest.raises(SystemExit, match="paired 'margin': expected key=value"):
        records.parse_sets(["margin"], "paired")


def test_the_run_behind_dvc_lock_is_a_one_seed_record_of_the_committed_params(monkeypatch):
    """`paired` counts the committed run (params.yaml and metrics files at a commit) as the newest run of
    its seed; a commit without metrics files gives none."""
    import subprocess
    committed = {"params.yaml": "seed: 3\ntrain:\n  margin: 0.8\n",
                 "metrics/evaluate.json": json.dumps({"accuracy": 0.91, "id_rank1": 0.4}),
                 "metrics/calibrate.json": json.dumps({"val_roc_auc": 0.97, "val_id_rank1": 0.45}),
                 "metrics/train.json": json.dumps({"best_epoch": 5}),
                 "dvc.lock": "stages:\n  train:\n    params:\n      params.yaml:\n        train.margin: 0.8\n"}

    def git(*args):
        if args[0] == "rev-parse":
            return "abc1234\n"
        rev, _, path = args[1].partition(":")
        if path not in committed:
            raise subprocess.CalledProcessError(128, ["git", *args])
        return committed[path]
    monkeypatch.setattr(records, "git", git)
    rec = records.lock_record()
    assert rec["commit"] == "abc1234" and rec["seeds"] == [3] and "seed" not in rec["params"]
    assert rec["params"]["train.margin"] == 0.8 and rec["params"]["train.dropout"] == records.TAKEN_OUT["train.dropout"]
    assert rec["metrics"][records.IDS["val id rank-1"]] == {"mean": 0.45, "sd": None}
    assert records.IDS["val acc"] not in rec["metrics"]  # a figure the files lack is no figure
    older = {"commit": "old0000", "params": dict(rec["params"], **{"pairs.split_seed": 0}), "overrides": {}, "seeds": [3],
             "metrics": {records.IDS["val AUC"]: {"mean": 0.95, "sd": None}}}
    rec["params"]["pairs.split_seed"] = 0
    assert records.seed_runs([older, rec], {"train.margin": 0.8, "pairs.split_seed": 0})[3][0] == "abc1234"
    committed["dvc.lock"] = committed["dvc.lock"].replace("0.8", "1.2")  # params.yaml edited, not rerun
    assert records.lock_record() is None
    del committed["metrics/train.json"]
    assert records.lock_record() is None
