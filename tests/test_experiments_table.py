import importlib.util
import json

import pytest

from conftest import ROOT

spec = importlib.util.spec_from_file_location("experiments_table", ROOT / "scripts" / "experiments_table.py")
table_mod = importlib.util.module_from_spec(spec)
spec.loader.exec_module(table_mod)


def exp(name, seed, lr, acc):
    return {"rev": name + "rev", "name": name, "data": {
        "params": {"params.yaml": {"data": {"seed": seed, "train": {"lr": lr, "epochs": 8}}}},
        "metrics": {"metrics/evaluate.json": {"data": {"accuracy": acc, "roc_auc": 0.9, "eer": 0.1}},
                    "metrics/calibrate.json": {"data": {"val_accuracy": 0.8, "val_roc_auc": 0.85}},
                    "metrics/train.json": {"data": {"best_epoch": 5}}}}}


def test_table_groups_seeds_and_gives_mean_and_spread():
    shown = [{"rev": "workspace", "data": {"params": {}, "metrics": {}}},
             {**exp("main", 0, 0.002, 0.80), "experiments": [
                 {"revs": [exp("s1", 1, 0.002, 0.90)]}, {"revs": [exp("s2", 2, 0.002, 0.85)]},
                 {"revs": [exp("lr", 0, 0.004, 0.70)], "executor": {"state": "success"}},
                 {"revs": [exp("running", 3, 0.002, 0.80)], "executor": {"state": "running"}}]}]
    older = {**exp("old", 0, 0.001, 0.5), "experiments": [{"revs": [exp("o1", 1, 0.002, 0.87)], "executor": {"state": "success"}}]}
    shown.append(older)  # an older commit: its experiments count, its own committed run does not
    rows = list(table_mod.records(json.loads(json.dumps(shown))))
    assert [r[0] for r in rows] == ["main", "s1", "s2", "lr", "o1"]
    text = table_mod.table(rows)
    lines = text.splitlines()
    assert len(lines) == 4  # header, rule, two configurations
    assert "0.8500 ± 0.0500" in lines[2] and "| 0, 1, 2 |" in lines[2]  # o1 repeats seed 1: counted once
    assert "train.lr=0.004" in lines[3] and "0.7000" in lines[3] and "`dvc exp run -S train.lr=0.004 -S seed=0`" in lines[3]


def test_a_param_added_later_takes_the_baselines_value_for_older_experiments():
    new = exp("main", 0, 0.002, 0.80)
    new["data"]["params"]["params.yaml"]["data"]["train"]["pos_margin"] = 0.0
    older = exp("o1", 1, 0.002, 0.90)  # ran before train.pos_margin existed
    lines = table_mod.table([("main", *list(table_mod.records(new))[0][1:]), *table_mod.records(older)]).splitlines()
    assert len(lines) == 3 and "| 0, 1 |" in lines[2] and "pos_margin" not in lines[2]



@pytest.mark.parametrize("key, committed, before, quoted", [
    ("sampler", "identities", "pairs", "train.sampler=pairs"), ("stem", "stride", "pool", "train.stem=pool"),
    ("stage_convs", [1, 2, 2], "[2,2,2]", "'train.stage_convs=[2,2,2]'")])
def test_an_experiment_from_before_a_param_existed_ran_with_its_old_behaviour(key, committed, before, quoted):
    new = exp("main", 0, 0.002, 0.80)
    new["data"]["params"]["params.yaml"]["data"]["train"][key] = committed
    older = exp("o1", 0, 0.002, 0.90)  # ran before train.<key> existed: the old behaviour
    lines = table_mod.table([("main", *list(table_mod.records(new))[0][1:]), *table_mod.records(older)]).splitlines()
    assert len(lines) == 4 and "params.yaml as committed" in lines[2]
    assert f"train.{key}={before}" in lines[3] and f"`dvc exp run -S {quoted} -S seed=0`" in lines[3]


def test_a_boolean_param_is_written_as_yaml_writes_it():
    new = exp("main", 0, 0.002, 0.80)
    new["data"]["params"]["params.yaml"]["data"]["train"]["pool_first"] = True
    older = exp("o1", 0, 0.002, 0.90)  # ran before train.pool_first existed: pooled after the BN
    lines = table_mod.table([("main", *list(table_mod.records(new))[0][1:]), *table_mod.records(older)]).splitlines()
    assert "`dvc exp run -S train.pool_first=false -S seed=0`" in lines[3] and "True" not in lines[3]


def test_a_renamed_param_matches_its_old_name_and_lists_are_quoted_for_the_shell():
    new = exp("main", 0, 0.002, 0.80)
    new["data"]["params"]["params.yaml"]["data"]["prepare"] = {"crop": [1, 2, 3, 4], "image_size": 64}
    old = exp("o1", 1, 0.002, 0.90)  # ran while the key was prepare.size
    old["data"]["params"]["params.yaml"]["data"]["prepare"] = {"crop": [1, 2, 3, 4], "size": 64}
    wide = exp("w", 0, 0.002, 0.70)
    wide["data"]["params"]["params.yaml"]["data"]["prepare"] = {"crop": [0, 0, 9, 9], "image_size": 64}
    rows = [("main", *list(table_mod.records(new))[0][1:]), *table_mod.records(old), *table_mod.records(wide)]
    lines = table_mod.table(rows).splitlines()
    assert len(lines) == 4 and "| 0, 1 |" in lines[2] and "size" not in lines[2]
    assert "`dvc exp run -S 'prepare.crop=[0,0,9,9]' -S seed=0`" in lines[3]


def test_a_seed_run_twice_in_one_configuration_counts_once():
    rows = [("main", *list(table_mod.records(exp("main", 0, 0.002, 0.80)))[0][1:]),
            *table_mod.records(exp("again", 0, 0.002, 0.80)), *table_mod.records(exp("s1", 1, 0.002, 0.90))]
    lines = table_mod.table(rows).splitlines()
    assert len(lines) == 3 and "| 0, 1 |" in lines[2] and "0.8500 ± 0.0707" in lines[2]


def test_earlier_table_copies_the_rows_generated_at_a_commit(tmp_path, monkeypatch):
    import subprocess

    import pytest

    def git(*args):
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=tmp_path, check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "EXPERIMENTS.md").write_text("# Experiments\n\nprose\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n"
                                                   "## Earlier\n\n| a | b |\n|---|---|\n| 0 | 9 |\n")
    git("add", "-A")
    git("commit", "-qm", "table")
    monkeypatch.setattr(table_mod, "ROOT", tmp_path)
    sha, rows = table_mod.earlier_table("HEAD")
    assert rows == "| a | b |\n|---|---|\n| 1 | 2 |"
    assert sha == subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=tmp_path, capture_output=True, text=True).stdout.strip()
    with pytest.raises(SystemExit, match="--earlier nosuchrev"):
        table_mod.earlier_table("nosuchrev")


def test_seed_spread_compares_validation_and_test_movement_by_how_the_split_was_drawn():
    def rec(commit, params, test_sd, val_sd, seeds=(0, 1, 2), auc=0.96):
        return {"commit": commit, "params": {"pairs.n_val_pairs": 20000, **params}, "overrides": {}, "seeds": list(seeds),
                "metrics": {"evaluate.roc_auc": {"mean": auc, "sd": test_sd}, "calibrate.val_roc_auc": {"mean": 0.96, "sd": val_sd}}}
    free = {"pairs.mode": "unrestricted"}
    recs = [rec("a", free, 0.001, 0.008), rec("b", free, 0.003, 0.002, auc=0.95), rec("c", free, 0.004, 0.006, auc=0.94),
            rec("c2", free, 0.004, 0.005, auc=0.94),  # c's models again (revalidated): counted once, as c2
            rec("d", {"pairs.mode": "restricted"}, 0.001, 0.02, auc=0.93),  # restricted: left out
            rec("e", free, 0.001, 0.02, seeds=(0, 1)),  # too few seeds: left out
            rec("g", {**free, "pairs.n_val_pairs": 2000}, 0.002, 0.009, auc=0.92),
            rec("f", {**free, "pairs.split_seed": 0}, 0.002, 0.0015, auc=0.91)]
    lines = table_mod.seed_spread(recs)
    assert [line.split(" | ")[0] for line in lines if line.startswith("| ") and "---" not in line][1:] == ["| a", "| b", "| c2", "| g", "| f"]
    assert ("split drawn by the seed, 20000 validation pairs: 3 configurations, median seed sd of test AUC 0.0030, "
            "of validation AUC 0.0050; validation moves more than test in 2") in lines
    assert any(line.startswith("split drawn by the seed, 2000 validation pairs: 1 configurations") for line in lines)
    assert ("split fixed by pairs.split_seed, 20000 validation pairs: 1 configurations, median seed sd of test AUC 0.0020, "
            "of validation AUC 0.0015; validation moves more than test in 0") in lines


def test_paired_compares_two_configurations_seed_by_seed_on_fixed_validation_pairs():
    def rec(commit, margin, vals, split=True, per_seed=True):
        params = {"pairs.mode": "unrestricted", "train.margin": margin, **({"pairs.split_seed": 0} if split else {})}
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
    lines = table_mod.paired(recs, current, {"train.margin": 1.0})
    assert lines[0] == "A: params.yaml; B: A with train.margin=1.0"
    assert lines[1] == "seeds recorded: A [0, 1], B [0, 1, 2]; paired: [0, 1]"
    assert "| 0 | a2 | b1 | 0.95500 | 0.95100 | -0.00400 | 0.90000 | 0.90000 | +0.00000 |" in lines
    assert "| 1 | a1 | b1 | 0.96000 | 0.95800 | -0.00200 | 0.90000 | 0.90000 | +0.00000 |" in lines
    assert ("val AUC, B - A over 2 paired seeds: mean -0.00300, SE 0.00100, t -3.00 (1 degrees of freedom); "
            "B higher on 0 of 2") in lines
    assert any(line.startswith("test acc, B - A over 2 paired seeds: mean +0.00000, SE 0.00000, t undefined") for line in lines)


def test_a_param_taken_out_of_params_yaml_counts_at_the_value_that_ran_without_it(monkeypatch):
    """Records of a param's other values, from before its code was taken out, are not the committed
    params' runs (they would replace the README's headline row), and --paired can still compare them."""
    monkeypatch.setitem(table_mod.BEFORE_ADDED, "train.gone", 0.0)
    current = {"pairs.mode": "unrestricted", "train.margin": 0.8, "pairs.split_seed": 0}  # no train.gone

    def rec(commit, gone, val):
        return {"commit": commit, "seeds": [0], "overrides": {},
                "params": {"pairs.mode": "unrestricted", "train.margin": 0.8, "pairs.split_seed": 0, "train.gone": gone},
                "metrics": {"calibrate.val_roc_auc": {"mean": val, "sd": None}, "evaluate.accuracy": {"mean": 0.9, "sd": None}}}
    plain, other = rec("p", 0.0, 0.95), rec("g", 2.0, 0.96)
    assert table_mod.headline_records([plain, other], current)[0] is plain
    assert table_mod.headline_records([other], current)[0] is None
    assert table_mod.changed(other["params"], current) == {"train.gone": 2.0}
    assert "| 0 | p | g | 0.95000 | 0.96000 | +0.01000 | 0.90000 | 0.90000 | +0.00000 |" in \
        table_mod.paired([plain, other], current, {"train.gone": 2.0})


@pytest.mark.parametrize("other, base, message", [
    ({"train.marign": 1.0}, {}, "no such param in params.yaml: train.marign"),
    ({"train.margin": 0.8}, {}, "sets every key to the value A already has"),
    ({"pairs.split_seed": 1, "train.margin": 1.0}, {}, "--paired pairs.split_seed: B would validate on other pairs"),
])
def test_paired_refuses_a_change_that_names_no_param_or_changes_nothing(other, base, message):
    with pytest.raises(SystemExit, match=message):
        table_mod.paired([], {"train.margin": 0.8, "pairs.split_seed": 0}, other, base)


def test_paired_sets_are_read_as_dvc_reads_them():
    assert table_mod.parse_sets(["train.margin=1", "train.stage_convs=[1,2,2]", "train.lr=3e-3"], "--paired") == {
        "train.margin": 1, "train.stage_convs": [1, 2, 2], "train.lr": 0.003}
    with pytest.raises(SystemExit, match="--paired 'margin': expected key=value"):
        table_mod.parse_sets(["margin"], "--paired")
