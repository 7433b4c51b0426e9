"""README.md's results block is generated: it must equal what `python -m pipeline.lab tables` renders from
docs/experiments.json, docs/view2.json and the committed metrics files. Fast, no network, no DVC."""
import json
import re

from conftest import ROOT, committed
from pipeline.lab import records

README = ROOT / "README.md"


def test_readme_results_block_matches_the_files_it_is_generated_from():
    """The committed README against the committed files: a run in the workspace changes neither."""
    held = records.current_block(committed("README.md"))
    assert held == records.readme_block_from_files(committed), (
        "the committed README.md's results block differs from the committed docs/experiments.json, "
        "metrics/*.json and params.yaml: run `python -m pipeline.lab tables` and commit")


def test_the_two_commands_and_the_results_come_before_any_other_section():
    text = committed("README.md")
    sections = re.findall(r"(?m)^## (.+)$", text)
    assert sections[:2] == ["Quick start", "Results"], sections
    quick = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    assert "pip install -e . && dvc repro" in quick and "pip install -e '.[test]' && pytest" in quick


def test_every_figure_in_the_readme_is_in_the_generated_block():
    """No hand-written metric: a number with a decimal point in the prose outside the block (commands and
    code aside) is a figure nobody checks."""
    text = committed("README.md")
    prose = text.replace(records.current_block(text), "")
    prose = re.sub(r"(?s)```.*?```", "", prose)  # code blocks
    prose = re.sub(r"`[^`]*`", "", prose)  # inline code: commands, params, file names
    prose = re.sub(r"Python \d+\.\d+", "", prose)
    assert not re.findall(r"\b\d+\.\d+\b", prose)


def test_performance_stays_short():
    assert len(committed("docs/PERFORMANCE.md").encode()) <= 15_000


def test_readme_links_point_to_files_that_exist():
    for target in re.findall(r"\]\(([^)#]+)\)", README.read_text(encoding="utf-8")):
        if "://" not in target:
            assert (ROOT / target).exists(), target


def test_experiments_json_records_are_complete():
    recs = records.load(ROOT / "docs" / "experiments.json")
    assert recs
    for rec in recs:
        assert {"commit", "params", "overrides", "seeds", "metrics"} <= rec.keys(), rec.get("commit")
        assert "seed" not in rec["params"] and rec["seeds"]
        assert set(rec["metrics"]) == set(records.IDS.values())
        for key, value in rec["overrides"].items():
            assert records.same(rec["params"][key], value), (rec["commit"], key)


def record(commit, seeds, acc, **params):
    base = {**records.TAKEN_OUT, "pairs.mode": "unrestricted", "pairs.val_fraction": 0.15, "train.width": 24, "train.epochs": 3,
            "train.patience": 3, "train.warmup_epochs": 1}
    metric = {"mean": acc, "sd": 0.01 if len(seeds) > 1 else None}
    return {"commit": commit, "params": {**base, **params}, "overrides": dict(params), "seeds": seeds,
            "metrics": {i: metric for i in records.IDS.values()}}


EVALUATE = {"accuracy": 0.9, "accuracy_ci95_low": 0.88, "accuracy_ci95_high": 0.92, "roc_auc": 0.96, "eer": 0.1}
CALIBRATE = {"val_accuracy": 0.91, "val_roc_auc": 0.97}
CURRENT = {"seed": 0, "pairs.mode": "unrestricted", "pairs.val_fraction": 0.15, "train.width": 24,
           "train.epochs": 3, "train.patience": 3, "train.warmup_epochs": 1}
RAN = {**records.TAKEN_OUT, **CURRENT}  # a record's params: it ran with the params since taken out


def test_the_block_takes_the_default_over_most_seeds_and_never_a_superseded_row():
    restricted = dict(records.RESTRICTED)
    recs = [record("aaaaaaa", [0, 1, 2], 0.80),
            {**record("bbbbbbb", [0, 1, 2], 0.70, **restricted), "superseded": "a bug"},
            record("ccccccc", [0], 0.85),                     # a newer single run: fewer seeds
            record("ddddddd", [0, 1, 2], 0.60, **{"train.width": 16})]  # other params
    block = records.readme_block(recs, EVALUATE, CALIBRATE, CURRENT)
    assert "| aaaaaaa | 0, 1, 2 | 0.8000 ± 0.0100 |" in block
    assert "bbbbbbb" not in block and "ccccccc" not in block and "ddddddd" not in block
    assert "| restricted recipe (image-restricted, label-free outside data) | | | no current result |" in block
    assert "| this commit | 0 | 0.9000 [0.8800, 0.9200] | 0.9600 | 0.1000 | 0.9100 | 0.9700 |" in block

    recs.append(record("eeeeeee", [0, 1, 2], 0.75, **restricted))  # rerun with fixed code
    block = records.readme_block(recs, EVALUATE, CALIBRATE, CURRENT)
    assert "| restricted recipe (image-restricted, label-free outside data) | eeeeeee | 0, 1, 2 | 0.7500 ± 0.0100 |" in block
    assert "-S pairs.mode=restricted" in block and "at commit eeeeeee" in block


def test_with_block_replaces_only_the_block():
    text = f"intro\n{records.START}\nold\n{records.END}\noutro\n"
    new = records.with_block(text, f"{records.START}\nnew\n{records.END}")
    assert new == f"intro\n{records.START}\nnew\n{records.END}\noutro\n"


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
    runs = records.live_runs(json.loads(json.dumps(shown)))
    recs, changed = records.merge([], runs)
    assert changed == 3 and len(recs) == 2
    default, w16 = recs
    assert default["commit"] == "c0ffee1" and default["seeds"] == [0, 1] and default["overrides"] == {}
    assert records.cell(default["metrics"]["evaluate.accuracy"]) == "0.8500 ± 0.0707"
    assert w16["overrides"] == {"train.width": 16} and w16["params"]["train.width"] == 16
    assert [r["trained"] for r in default["runs"]] == ["bf16 on AMD EPYC"] * 2
    assert "| 0, 1 | 0.8500 ± 0.0707 |" in records.experiments_md(recs)
    assert records.experiments_md(recs).count("| bf16 on AMD EPYC |") == 2  # each configuration's row says it once
    again, changed = records.merge(records.recorded(recs), runs)
    assert changed == 0 and records.recorded(again) == records.recorded(recs)


def test_experiments_md_names_rows_by_absolute_params():
    recs = [record("aaaaaaa", [0, 1, 2], 0.80), record("aaaaaaa", [0], 0.70, **{"train.width": 16}),
            record("bbbbbbb", [0, 1, 2], 0.75, **{"train.epochs": 4})]
    text = records.experiments_md(recs)
    assert "| width=24 | unrestricted, label-free outside data | 0, 1, 2 | 0.8000 ± 0.0100 |" in text
    assert "| width=16 | unrestricted, label-free outside data | 0 | 0.7000 |" in text
    assert "Every row: epochs=3." in text and "Every row: width=24, epochs=4." in text
    assert "as committed" not in text and text.count("Generated by") == 1


def test_the_restricted_row_is_the_protocols_network_not_the_defaults():
    """The restricted protocol sets its own network (RESTRICTED): a newer restricted record trained with
    the unrestricted default's network is not the protocol's row."""
    restricted = dict(records.RESTRICTED)
    recs = [record("aaaaaaa", [0, 1, 2], 0.87, **restricted),
            record("bbbbbbb", [0, 1, 2], 0.85, **{**restricted, "train.stage_convs": [1, 1, 1]})]
    block = records.readme_block(recs, EVALUATE, CALIBRATE, {**CURRENT, "train.stage_convs": [1, 1, 1]})
    assert "| restricted recipe (image-restricted, label-free outside data) | aaaaaaa | 0, 1, 2 | 0.8700 ± 0.0100 |" \
        in block and "bbbbbbb" not in block


def test_a_row_without_a_current_record_says_so_and_a_view2_row_shows_the_last_one_with_its_overrides():
    """After a default changes, the restricted row says it has no current result (with the command that
    makes one); the View 2 row keeps its last result, labelled with the `-S` overrides that reproduce it."""
    restricted = dict(records.RESTRICTED)
    recs = [record("aaaaaaa", [0, 1, 2], 0.75, **restricted)]
    view2 = [{"commit": "ccccccc", "params": {**RAN, "train.width": 24, "pairs.protocol": "view2"},
              "overrides": {}, "folds": {str(k): {} for k in range(1, 11)},
              "summary": {"test acc": {"mean": 0.9, "se": 0.005}}}]
    current = {**CURRENT, "train.width": 16}
    block = records.readme_block(recs, EVALUATE, CALIBRATE, current, view2)
    assert "| restricted recipe (image-restricted, label-free outside data) | | | no current result |" in block
    assert "-S 'train.stage_convs=[1,2,1]'" in block and "then `python -m pipeline.lab record`" in block
    assert ("| **LFW View 2**, other params (below) (unrestricted, label-free outside data) | ccccccc | folds 1-10 | "
            "0.9000 ± 0.0050 |") in block
    assert "`python -m pipeline.lab view2 run -S train.width=24`" in block
    # once the current params have their own, those show, unlabelled
    block = records.readme_block(recs, EVALUATE, CALIBRATE, {**CURRENT, "train.width": 24}, view2)
    assert "| `params.yaml`, **LFW View 2** (unrestricted, label-free outside data) | ccccccc |" in block
    assert "other params" not in block


def test_the_restricted_protocol_has_its_own_view2_row():
    """The restricted protocol's View 2 (a goal of its own) shows beside the unrestricted one, from its
    record in docs/view2.json, with the protocol's `-S` overrides in its command."""
    restricted = {**RAN, **records.RESTRICTED, "pairs.protocol": "view2", "pairs.n_train_pairs": 1}

    def view2_rec(commit, params, acc, folds=10):
        return {"commit": commit, "params": params, "overrides": {}, "folds": {str(k): {} for k in range(1, folds + 1)},
                "summary": {"test acc": {"mean": acc, "se": 0.004}}}
    block = records.readme_block([], EVALUATE, CALIBRATE, CURRENT, [view2_rec("ccccccc", {**RAN, "pairs.protocol": "view2"}, 0.9)])
    assert "| restricted recipe, **LFW View 2** (image-restricted, label-free outside data) | | | no View 2 result yet |" in block
    view2 = [view2_rec("ccccccc", {**RAN, "pairs.protocol": "view2"}, 0.9),
             view2_rec("ddddddd", {**restricted, "train.width": 16}, 0.88, folds=3),
             view2_rec("eeeeeee", restricted, 0.86)]  # n_train_pairs is not read in restricted mode
    block = records.readme_block([], EVALUATE, CALIBRATE, CURRENT, view2)
    assert ("| `params.yaml`, **LFW View 2** (unrestricted, label-free outside data) | ccccccc | folds 1-10 | "
            "0.9000 ± 0.0040 |") in block
    assert ("| restricted recipe, **LFW View 2** (image-restricted, label-free outside data) | eeeeeee | folds 1-10 | "
            "0.8600 ± 0.0040 |") in block
    assert ("- LFW View 2 (restricted): `python -m pipeline.lab view2 run " + " ".join(
        f"-S {records.override(k, v)}" for k, v in records.RESTRICTED.items()) + "` on the pipeline of commit eeeeeee") in block
    # a record of the current params run with -S at a commit whose params.yaml differed: that -S, at that commit
    view2[0] = {**view2[0], "overrides": {"train.width": 16}}
    block = records.readme_block([], EVALUATE, CALIBRATE, CURRENT, view2)
    assert "- LFW View 2: `python -m pipeline.lab view2 run -S train.width=16` on the pipeline of commit ccccccc" in block
    block = records.readme_block([], EVALUATE, CALIBRATE, CURRENT, view2[:2])  # only other params: labelled so
    assert ("| **LFW View 2**, other params (below) (image-restricted, label-free outside data) | ddddddd | folds 1-3 | "
            "0.8800 ± 0.0040 |") in block
    assert "-S train.width=16` on" in block
    # a param added after a record ran is not in its command: that commit's params.yaml has no such key
    added = next(k for k in records.BEFORE_ADDED if k not in {**records.RESTRICTED, **records.TAKEN_OUT})
    view2[1]["params"] = {k: v for k, v in view2[1]["params"].items() if k != added}
    block = records.readme_block([], EVALUATE, CALIBRATE, {**CURRENT, added: "a later value"}, view2[:2])
    assert "other params (below) (image-restricted, label-free outside data) | ddddddd |" in block
    assert f"-S {added}=" not in block


def test_a_final_view2_record_is_the_readme_row_and_says_so():
    """Over as many folds, the final report (`view2 run --final`) is the row, its command with --final and its
    seed; a row that took part in choosing the recipe says so."""
    folds = {str(k): {} for k in range(1, 11)}
    chosen = {"commit": "ccccccc", "params": {**RAN, "pairs.protocol": "view2"}, "overrides": {}, "folds": folds,
              "summary": {"test acc": {"mean": 0.93, "se": 0.003}}}
    final = {**chosen, "commit": "ddddddd", "params": {**chosen["params"], "seed": 12}, "overrides": {"seed": 12},
             "final": True, "summary": {"test acc": {"mean": 0.92, "se": 0.003}}}
    row, came = records.view2_row([final, chosen], CURRENT)
    assert "| ddddddd | folds 1-10 | 0.9200 ± 0.0030 |" in row
    assert came == ("- LFW View 2: `python -m pipeline.lab view2 run -S seed=12` on the pipeline of commit ddddddd; "
                    "run with `--final`, the final report: scored once, at seed 12, which no run used before")
    row, came = records.view2_row([chosen, {**final, "folds": {"1": {}}}], CURRENT)  # a final run under way
    assert "ccccccc" in row and came.endswith("these folds took part in choosing the recipe: not an untouched final evaluation")
    row, came = records.view2_row([{**final, "folds": {"1": {}, "2": {}}}], CURRENT)  # nothing else to show
    assert "| ddddddd | folds 1-2 |" in row and came.endswith("run with `--final`, the final report under way: 2 of 10 folds")
    row, came = records.view2_row([{**final, "folds": {}}], CURRENT)  # its record before the first fold: no figures
    assert "| ddddddd | | final run under way, no fold yet |" in row and came.endswith("the final report, 0 of 10 folds")


def test_another_seed_of_the_restricted_view2_recipe_does_not_replace_the_committed_seeds_row():
    restricted = {**RAN, **records.RESTRICTED, "pairs.protocol": "view2"}
    folds = {str(k): {} for k in range(1, 11)}
    seed0 = {"commit": "eeeeeee", "params": restricted, "overrides": {}, "folds": folds,
             "summary": {"test acc": {"mean": 0.86, "se": 0.004}}}
    seed1 = {"commit": "fffffff", "params": {**restricted, "seed": 1}, "overrides": {"seed": 1}, "folds": folds,
             "summary": {"test acc": {"mean": 0.87, "se": 0.004}}}
    block = records.readme_block([], EVALUATE, CALIBRATE, CURRENT, [seed0, seed1])
    assert "| eeeeeee | folds 1-10 | 0.8600 ± 0.0040 |" in block and "fffffff" not in block


def test_a_superseded_view2_record_never_shows():
    """A record whose numbers no longer describe the code (restricted runs of the in-batch rule) is kept
    in docs/view2.json, marked, and never shown in the README."""
    restricted = {**RAN, **records.RESTRICTED, "pairs.protocol": "view2"}
    folds = {str(k): {} for k in range(1, 11)}
    old = {"commit": "eeeeeee", "params": restricted, "overrides": {}, "folds": folds,
           "summary": {"test acc": {"mean": 0.9, "se": 0.004}}, "superseded": "not image-restricted"}
    block = records.readme_block([], EVALUATE, CALIBRATE, CURRENT, [old])
    assert "eeeeeee" not in block and "no View 2 result yet" in block



def test_identification_rows_come_from_the_records_that_have_them_and_the_lock_run_from_its_metrics():
    """A row per headline record with the test identification figures (records keep rank-1 and 20-way:
    the other cells stay empty); a record from before they were kept gets no row; the run behind
    dvc.lock shows every figure of its metrics files, the validation people's from calibrate."""
    evaluate = {**EVALUATE, "id_people": 6, "id_probes": 9, "id_rank1": 0.5, "id_rank5": 0.75, "id_5way": 0.9,
                "id_20way": 0.8, "id_dir_at_far_1pct": 0.25}
    calibrate = {**CALIBRATE, "val_id_rank1": 0.55, "val_id_20way": 0.85}
    old = record("aaaaaaa", [0, 1, 2], 0.80)
    old["metrics"] = {k: v for k, v in old["metrics"].items() if "id_" not in k}  # recorded before the columns
    restricted = record("bbbbbbb", [0, 1, 2], 0.70, **records.RESTRICTED)
    for col, mean in (("test id rank-1", 0.11), ("test id 20-way", 0.22), ("val id rank-1", 0.33), ("val id 20-way", 0.44)):
        restricted["metrics"][records.IDS[col]] = {"mean": mean, "sd": 0.01}
    block = records.readme_block([old, restricted], evaluate, calibrate, CURRENT)
    table = block[block.index("One-shot identification"):]
    assert ("| configuration (LFW category) | commit | seeds | all-way rank-1 | all-way rank-5 | 5-way rank-1 | "
            "20-way rank-1 |") in table
    assert ("| restricted recipe (image-restricted, label-free outside data) | bbbbbbb | 0, 1, 2 | 0.1100 ± 0.0100 | | | "
            "0.2200 ± 0.0100 | | 0.3300 ± 0.0100 | 0.4400 ± 0.0100 |") in table
    assert "aaaaaaa" not in table and table.count("| `params.yaml`") == 1
    assert ("| `params.yaml`, the run behind `dvc.lock` (unrestricted, label-free outside data) | this commit | 0 | 0.5000 | "
            "0.7500 | 0.9000 | 0.8000 | 0.2500 | 0.5500 | 0.8500 |") in table
    assert "One-shot identification" not in records.readme_block([restricted], EVALUATE, CALIBRATE, CURRENT)


def test_a_view2_record_of_todays_params_is_the_restricted_row_though_params_were_taken_out():
    """View 2 records carry the taken-out params at the value the code runs (view2.config_of), as
    docs/experiments.json does: a restricted final on today's pipeline is the restricted recipe's row,
    its command with the seed, never an `other params` row; a registered final with no fold gives its own
    command with --final."""
    from pipeline.lab import view2
    current = records.params_file()
    config = view2.config_of({**current, **records.RESTRICTED, "seed": 12})
    assert config["train.stem"] == records.TAKEN_OUT["train.stem"] and config["train.mining"] == "pairs"
    overrides = {**records.RESTRICTED, "seed": 12}
    rec = {"commit": "fffffff", "params": config, "overrides": overrides, "final": True, "folds": {"1": {}},
           "summary": {"test acc": {"mean": 0.87, "se": None}}}
    row, came = records.view2_row([rec], current, records.RESTRICTED)
    assert row.startswith("| restricted recipe, **LFW View 2** (image-restricted, label-free outside data) | fffffff | fold 1 |")
    assert "-S seed=12` on the pipeline of commit fffffff; run with `--final`, the final report under way: 1 of 10" in came
    row, came = records.view2_row([{**rec, "folds": {}}], current, records.RESTRICTED)
    assert "| fffffff | | final run under way, no fold yet |" in row
    assert "`python -m pipeline.lab view2 run --final -S pairs.mode=restricted" in came and "-S seed=12`" in came
