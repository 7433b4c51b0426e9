import numpy as np
import pytest

from conftest import small_params
from pipeline import lfw, pairs
from pipeline.params import PairsParams


def params(**kw):
    return PairsParams(**{**small_params()["pairs"], **kw})


def test_unrestricted_tables_are_balanced_disjoint_and_seeded(lfw_dir):
    tables, report = pairs.make_tables(lfw_dir, params(), seed=3)
    train, val = tables["train"], tables["val"]
    assert sum(r[4] for r in train) == len(train) // 2 == 32
    assert sum(r[4] for r in val) == len(val) // 2 == 16
    ids = {k: pairs.identities(v) for k, v in tables.items()}
    assert not ids["train"] & ids["val"] and not ids["train"] & ids["test"] and not ids["val"] & ids["test"]
    assert report["train_val_shared_people"] == report["train_test_shared_people"] == report["val_test_shared_people"] == 0
    assert all(not (r[0] == r[2] and r[1] == r[3]) for r in train + val)  # never an image with itself
    assert all((r[0] == r[2]) == bool(r[4]) for r in train + val)
    again, _ = pairs.make_tables(lfw_dir, params(), seed=3)
    other, _ = pairs.make_tables(lfw_dir, params(), seed=4)
    assert again == tables and other["train"] != tables["train"]


def test_test_table_is_exactly_pairs_dev_test(lfw_dir):
    tables, _ = pairs.make_tables(lfw_dir, params(), seed=0)
    assert tables["test"] == [pairs.as_row(p) for p in lfw.parse_pairs(lfw_dir / "pairsDevTest.txt")]


def test_restricted_uses_only_official_pairs_and_holds_out_people():
    official = [lfw.Pair(f"P{k}", 1, f"P{k}", 2) for k in range(20)] + \
               [lfw.Pair(f"P{k}", 1, f"P{(k + 7) % 20}", 1) for k in range(20)]
    train, val, dropped = pairs.split_restricted(official, 0.2, np.random.default_rng(0))
    as_rows = {pairs.as_row(p) for p in official}
    assert set(train) <= as_rows and set(val) <= as_rows
    assert len(train) + len(val) + dropped == len(official)
    assert not pairs.identities(train) & pairs.identities(val)
    assert sum(r[4] for r in val) >= 4 and sum(1 - r[4] for r in val) >= 1


def test_restricted_mode_end_to_end(lfw_dir):
    tables, report = pairs.make_tables(lfw_dir, params(mode="restricted", val_fraction=0.2), seed=0)
    official = {pairs.as_row(p) for p in lfw.parse_pairs(lfw_dir / "pairsDevTrain.txt")}
    assert set(tables["train"]) | set(tables["val"]) <= official
    assert report["train_val_shared_people"] == 0


def test_table_round_trip_and_bad_line(tmp_path):
    rows = [("A", 1, "A", 2, 1), ("A", 1, "B", 3, 0)]
    pairs.write_table(tmp_path / "t.tsv", rows)
    assert pairs.read_table(tmp_path / "t.tsv") == rows
    (tmp_path / "bad.tsv").write_text("name1\ti1\tname2\ti2\tlabel\nA\t1\tB\n")
    with pytest.raises(ValueError, match=r"bad.tsv:2: expected 5 tab-separated fields"):
        pairs.read_table(tmp_path / "bad.tsv")


def test_too_few_people_to_draw_pairs():
    with pytest.raises(ValueError, match="need >= 2 identities"):
        pairs.sample_pairs({"A": 1, "B": 1}, 4, np.random.default_rng(0))
