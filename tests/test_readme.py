"""README.md's results block is generated: it must equal what scripts/experiments_table.py renders from
docs/experiments.json and the committed metrics files. Fast, no network, no DVC."""
import importlib.util
import json
import re

from conftest import ROOT, committed

spec = importlib.util.spec_from_file_location("experiments_table", ROOT / "scripts" / "experiments_table.py")
table_mod = importlib.util.module_from_spec(spec)
spec.loader.exec_module(table_mod)

README = ROOT / "README.md"


def test_readme_results_block_matches_the_files_it_is_generated_from():
    """The committed README against the committed files: a run in the workspace changes neither."""
    held = table_mod.current_block(committed("README.md"))
    assert held == table_mod.readme_block_from_files(committed), (
        "the committed README.md's results block differs from the committed docs/experiments.json, "
        "metrics/*.json and params.yaml: run `python scripts/experiments_table.py` and commit")


def test_readme_and_performance_stay_short():
    assert README.stat().st_size <= 12_000
    assert (ROOT / "docs" / "PERFORMANCE.md").stat().st_size <= 15_000


def test_readme_links_point_to_files_that_exist():
    for target in re.findall(r"\]\(([^)#]+)\)", README.read_text(encoding="utf-8")):
        if "://" not in target:
            assert (ROOT / target).exists(), target


def test_experiments_json_records_are_complete():
    recs = table_mod.load(ROOT / "docs" / "experiments.json")
    assert recs
    for rec in recs:
        assert {"commit", "params", "overrides", "seeds", "metrics"} <= rec.keys(), rec.get("commit")
        assert "seed" not in rec["params"] and rec["seeds"]
        assert set(rec["metrics"]) == set(table_mod.IDS.values())
        for key, value in rec["overrides"].items():
            assert table_mod.same(rec["params"][key], value), (rec["commit"], key)


def record(commit, seeds, acc, **params):
    base = {"pairs.mode": "unrestricted", "pairs.val_fraction": 0.15, "train.width": 24, "train.epochs": 3,
            "train.patience": 3, "train.warmup_epochs": 1}
    metric = {"mean": acc, "sd": 0.01 if len(seeds) > 1 else None}
    return {"commit": commit, "params": {**base, **params}, "overrides": dict(params), "seeds": seeds,
            "metrics": {i: metric for i in table_mod.IDS.values()}}


EVALUATE = {"accuracy": 0.9, "accuracy_ci95_low": 0.88, "accuracy_ci95_high": 0.92, "roc_auc": 0.96, "eer": 0.1}
CALIBRATE = {"val_accuracy": 0.91, "val_roc_auc": 0.97}
CURRENT = {"seed": 0, "pairs.mode": "unrestricted", "pairs.val_fraction": 0.15, "train.width": 24,
           "train.epochs": 3, "train.patience": 3, "train.warmup_epochs": 1}


def test_the_block_takes_the_default_over_most_seeds_and_never_a_superseded_row():
    restricted = dict(table_mod.RESTRICTED)
    recs = [record("aaaaaaa", [0, 1, 2], 0.80),
            {**record("bbbbbbb", [0, 1, 2], 0.70, **restricted), "superseded": "a bug"},
            record("ccccccc", [0], 0.85),                     # a newer single run: fewer seeds
            record("ddddddd", [0, 1, 2], 0.60, **{"train.width": 16})]  # other params
    block = table_mod.readme_block(recs, EVALUATE, CALIBRATE, CURRENT)
    assert "| aaaaaaa | 0, 1, 2 | 0.8000 ± 0.0100 |" in block
    assert "bbbbbbb" not in block and "ccccccc" not in block and "ddddddd" not in block
    assert "| restricted protocol | | | no current result |" in block
    assert "| this commit | 0 | 0.9000 [0.8800, 0.9200] | 0.9600 | 0.1000 | 0.9100 | 0.9700 |" in block

    recs.append(record("eeeeeee", [0, 1, 2], 0.75, **restricted))  # rerun with fixed code
    block = table_mod.readme_block(recs, EVALUATE, CALIBRATE, CURRENT)
    assert "| restricted protocol | eeeeeee | 0, 1, 2 | 0.7500 ± 0.0100 |" in block
    assert "-S pairs.mode=restricted" in block and "at commit eeeeeee" in block


def test_with_block_replaces_only_the_block():
    text = f"intro\n{table_mod.START}\nold\n{table_mod.END}\noutro\n"
    new = table_mod.with_block(text, f"{table_mod.START}\nnew\n{table_mod.END}")
    assert new == f"intro\n{table_mod.START}\nnew\n{table_mod.END}\noutro\n"


def exp(name, seed, width, acc):
    return {"rev": name + "0" * 40, "name": name, "data": {
        "params": {"params.yaml": {"data": {"seed": seed, "train": {"width": width, "epochs": 3}}}},
        "metrics": {"metrics/evaluate.json": {"data": {"accuracy": acc, "roc_auc": 0.9, "eer": 0.1}},
                    "metrics/calibrate.json": {"data": {"val_accuracy": 0.8, "val_roc_auc": 0.85}},
                    "metrics/train.json": {"data": {"best_epoch": 3, "precision": "bf16", "device": "AMD EPYC"}}}}}


def test_record_groups_live_runs_per_seed_and_is_idempotent():
    shown = [{"rev": "workspace", "data": {}},
             {**exp("main", 0, 24, 0.10), "rev": "c0ffee1" + "0" * 33, "experiments": [  # its own run: not recorded
                 {"revs": [exp("s0", 0, 24, 0.80)], "executor": {"state": "success"}},
                 {"revs": [exp("s1", 1, 24, 0.90)], "executor": {"state": "success"}},
                 {"revs": [exp("w16", 0, 16, 0.70)], "executor": {"state": "success"}},
                 {"revs": [exp("queued", 2, 24, 0.10)], "executor": {"state": "queued"}}]}]
    runs = table_mod.live_runs(json.loads(json.dumps(shown)))
    recs, changed = table_mod.merge([], runs)
    assert changed == 3 and len(recs) == 2
    default, w16 = recs
    assert default["commit"] == "c0ffee1" and default["seeds"] == [0, 1] and default["overrides"] == {}
    assert table_mod.cell(default["metrics"]["evaluate.accuracy"]) == "0.8500 ± 0.0707"
    assert w16["overrides"] == {"train.width": 16} and w16["params"]["train.width"] == 16
    assert [r["trained"] for r in default["runs"]] == ["bf16 on AMD EPYC"] * 2
    assert "| 0, 1 | 0.8500 ± 0.0707 |" in table_mod.experiments_md(recs)
    assert table_mod.experiments_md(recs).count("| bf16 on AMD EPYC |") == 2  # each configuration's row says it once
    again, changed = table_mod.merge(table_mod.recorded(recs), runs)
    assert changed == 0 and table_mod.recorded(again) == table_mod.recorded(recs)


def test_experiments_md_names_rows_by_absolute_params():
    recs = [record("aaaaaaa", [0, 1, 2], 0.80), record("aaaaaaa", [0], 0.70, **{"train.width": 16}),
            record("bbbbbbb", [0, 1, 2], 0.75, **{"train.epochs": 4})]
    text = table_mod.experiments_md(recs)
    assert "| width=24 | 0, 1, 2 | 0.8000 ± 0.0100 |" in text and "| width=16 | 0 | 0.7000 |" in text
    assert "Every row: epochs=3." in text and "Every row: width=24, epochs=4." in text
    assert "as committed" not in text and text.count("Generated by") == 1


def test_the_restricted_row_is_the_protocols_network_not_the_defaults():
    """The restricted protocol sets its own network (RESTRICTED): a newer restricted record trained with
    the unrestricted default's network is not the protocol's row."""
    restricted = dict(table_mod.RESTRICTED)
    recs = [record("aaaaaaa", [0, 1, 2], 0.87, **restricted),
            record("bbbbbbb", [0, 1, 2], 0.85, **{**restricted, "train.stage_convs": [1, 1, 1]})]
    block = table_mod.readme_block(recs, EVALUATE, CALIBRATE, {**CURRENT, "train.stage_convs": [1, 1, 1]})
    assert "| restricted protocol | aaaaaaa | 0, 1, 2 | 0.8700 ± 0.0100 |" in block and "bbbbbbb" not in block


def test_rows_without_a_current_record_show_the_last_one_with_the_overrides_that_give_it():
    """After a default changes, the restricted and View 2 rows keep their last results, labelled with
    the `-S` overrides that reproduce them, until the new params have their own."""
    restricted = dict(table_mod.RESTRICTED)
    recs = [record("aaaaaaa", [0, 1, 2], 0.75, **restricted), record("bbbbbbb", [0], 0.74, **restricted)]
    view2 = [{"commit": "ccccccc", "params": {**CURRENT, "train.width": 24, "pairs.protocol": "view2"},
              "overrides": {}, "folds": {str(k): {} for k in range(1, 11)},
              "summary": {"test acc": {"mean": 0.9, "se": 0.005}}}]
    current = {**CURRENT, "train.width": 16}
    block = table_mod.readme_block(recs, EVALUATE, CALIBRATE, current, view2)
    assert "| restricted protocol, other params (below) | aaaaaaa | 0, 1, 2 | 0.7500 ± 0.0100 |" in block
    assert "-S train.warmup_epochs=3 -S 'train.stage_convs=[1,2,1]' -S train.width=24 -S seed=N` for N = 0, 1, 2 at commit aaaaaaa" in block
    assert "| **LFW View 2** (unrestricted), other params (below) | ccccccc | folds 1-10 | 0.9000 ± 0.0050 |" in block
    assert "`python scripts/view2.py run -S train.width=24`" in block
    # once the current params have their own, those show, unlabelled
    block = table_mod.readme_block(recs, EVALUATE, CALIBRATE, {**CURRENT, "train.width": 24}, view2)
    assert "| `params.yaml` (unrestricted), **LFW View 2** | ccccccc |" in block and "other params" not in block


def test_the_restricted_protocol_has_its_own_view2_row():
    """The restricted protocol's View 2 (a goal of its own) shows beside the unrestricted one, from its
    record in docs/view2.json, with the protocol's `-S` overrides in its command."""
    restricted = {**CURRENT, **table_mod.RESTRICTED, "pairs.protocol": "view2", "pairs.n_train_pairs": 1}

    def view2_rec(commit, params, acc, folds=10):
        return {"commit": commit, "params": params, "overrides": {}, "folds": {str(k): {} for k in range(1, folds + 1)},
                "summary": {"test acc": {"mean": acc, "se": 0.004}}}
    block = table_mod.readme_block([], EVALUATE, CALIBRATE, CURRENT, [view2_rec("ccccccc", {**CURRENT, "pairs.protocol": "view2"}, 0.9)])
    assert "| restricted protocol, **LFW View 2** | | | no View 2 result yet |" in block
    view2 = [view2_rec("ccccccc", {**CURRENT, "pairs.protocol": "view2"}, 0.9),
             view2_rec("ddddddd", {**restricted, "train.width": 16}, 0.88, folds=3),
             view2_rec("eeeeeee", restricted, 0.86)]  # n_train_pairs is not read in restricted mode
    block = table_mod.readme_block([], EVALUATE, CALIBRATE, CURRENT, view2)
    assert "| `params.yaml` (unrestricted), **LFW View 2** | ccccccc | folds 1-10 | 0.9000 ± 0.0040 |" in block
    assert "| restricted protocol, **LFW View 2** | eeeeeee | folds 1-10 | 0.8600 ± 0.0040 |" in block
    assert ("- LFW View 2 (restricted): `python scripts/view2.py run -S pairs.mode=restricted -S pairs.val_fraction=0.1 "
            "-S train.epochs=60 -S train.patience=15 -S train.warmup_epochs=3 -S 'train.stage_convs=[1,2,1]'` on the pipeline "
            "of commit eeeeeee") in block
    # a record of the current params run with -S at a commit whose params.yaml differed: that -S, at that commit
    view2[0] = {**view2[0], "overrides": {"train.width": 16}}
    block = table_mod.readme_block([], EVALUATE, CALIBRATE, CURRENT, view2)
    assert "- LFW View 2: `python scripts/view2.py run -S train.width=16` on the pipeline of commit ccccccc" in block
    block = table_mod.readme_block([], EVALUATE, CALIBRATE, CURRENT, view2[:2])  # only other params: labelled so
    assert "| **LFW View 2** (restricted), other params (below) | ddddddd | folds 1-3 | 0.8800 ± 0.0040 |" in block
    assert "-S train.warmup_epochs=3 -S 'train.stage_convs=[1,2,1]' -S train.width=16` on" in block
    # a param added after a record ran is not in its command: that commit's params.yaml has no such key
    added = next(iter(table_mod.BEFORE_ADDED))
    view2[1]["params"] = {k: v for k, v in view2[1]["params"].items() if k != added}
    block = table_mod.readme_block([], EVALUATE, CALIBRATE, {**CURRENT, added: "a later value"}, view2[:2])
    assert "other params (below) | ddddddd |" in block and f"-S {added}=" not in block


def test_another_seed_of_the_restricted_view2_recipe_does_not_replace_the_committed_seeds_row():
    restricted = {**CURRENT, **table_mod.RESTRICTED, "pairs.protocol": "view2"}
    folds = {str(k): {} for k in range(1, 11)}
    seed0 = {"commit": "eeeeeee", "params": restricted, "overrides": {}, "folds": folds,
             "summary": {"test acc": {"mean": 0.86, "se": 0.004}}}
    seed1 = {"commit": "fffffff", "params": {**restricted, "seed": 1}, "overrides": {"seed": 1}, "folds": folds,
             "summary": {"test acc": {"mean": 0.87, "se": 0.004}}}
    block = table_mod.readme_block([], EVALUATE, CALIBRATE, CURRENT, [seed0, seed1])
    assert "| restricted protocol, **LFW View 2** | eeeeeee | folds 1-10 | 0.8600 ± 0.0040 |" in block
    assert "two networks fused" not in block  # no fusion recorded
    summary = {"test acc": {"mean": 0.88, "se": 0.003}, "val AUC": {"mean": 0.97, "se": 0.001},
               "val AUC A": {"mean": 0.965, "se": 0.001}, "val AUC B": {"mean": 0.966, "se": 0.001}}
    fusion = {"a": {"commit": "eeeeeee", "overrides": {}}, "b": {"commit": "fffffff", "overrides": {"seed": 1}},
              "folds": folds, "summary": summary}
    block = table_mod.readme_block([], EVALUATE, CALIBRATE, CURRENT, [seed0, seed1], [fusion])
    assert "| restricted protocol, **LFW View 2**, two networks fused | eeeeeee+fffffff | folds 1-10 | 0.8800 ± 0.0030 |" in block
    assert "- two networks fused: seeds 0 and 1's fold models, `scripts/view2_fusion.py` (docs/VIEW2.md)" in block
    # no row: a fusion of another recipe's networks, of one seed twice, or one validation does not favour
    other = [seed0, {**seed1, "params": {**seed1["params"], "train.width": 32}}]
    assert "two networks fused" not in table_mod.readme_block([], EVALUATE, CALIBRATE, CURRENT, other, [fusion])
    twice = [seed0, {**seed1, "params": {**seed1["params"], "seed": 0}}]
    assert "two networks fused" not in table_mod.readme_block([], EVALUATE, CALIBRATE, CURRENT, twice, [fusion])
    worse = {**fusion, "summary": {**summary, "val AUC B": {"mean": 0.975, "se": 0.001}}}
    assert "two networks fused" not in table_mod.readme_block([], EVALUATE, CALIBRATE, CURRENT, [seed0, seed1], [worse])
