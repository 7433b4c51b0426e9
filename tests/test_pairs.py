import hashlib

import numpy as np
import pytest

from conftest import small_params
from pipeline import lfw
from pipeline.stages import pairs
from pipeline.tables import as_row, read_table, write_table
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


def test_the_seed_and_the_training_draws_leave_the_validation_side_alone(lfw_dir):
    """Every seed, and every n_train_pairs, validates on the same pairs; pairs.split_seed moves them."""
    base, _ = pairs.make_tables(lfw_dir, params(), seed=0)
    for seed, n_train in ((1, 64), (0, 128), (7, 32)):
        tables, _ = pairs.make_tables(lfw_dir, params(n_train_pairs=n_train), seed=seed)
        assert tables["val"] == base["val"] and tables["test"] == base["test"]
        assert tables["train"] != base["train"]
        assert not pairs.identities(tables["train"]) & pairs.identities(base["val"])  # the same held-out people
    other, _ = pairs.make_tables(lfw_dir, params(split_seed=1), seed=0)
    assert pairs.identities(other["val"]) != pairs.identities(base["val"])
    restricted = [pairs.make_tables(lfw_dir, params(mode="restricted", val_fraction=0.2), seed=s)[0] for s in (0, 1)]
    assert restricted[0] == restricted[1]  # restricted mode draws nothing but its split



def test_test_table_is_exactly_pairs_dev_test(lfw_dir):
    tables, _ = pairs.make_tables(lfw_dir, params(), seed=0)
    assert tables["test"] == [as_row(p) for p in lfw.parse_pairs(lfw_dir / "pairsDevTest.txt")]


def official_pairs() -> list:
    """Same pairs that chain (P0 1-2, P0 2-3) and different pairs that join people into larger components."""
    same = [lfw.Pair(f"P{k}", 1, f"P{k}", 2) for k in range(20)] + [lfw.Pair(f"P{k}", 2, f"P{k}", 3) for k in range(0, 20, 4)]
    return same + [lfw.Pair(f"P{k}", 1 + k % 3, f"P{(k + 7) % 20}", 4) for k in range(20)]


def test_restricted_splits_whole_components_of_the_official_pairs():
    official = official_pairs()
    train, val = pairs.split_restricted(official, 0.2, np.random.default_rng(0))
    assert sorted(train + val) == sorted(as_row(p) for p in official)  # every official pair, none dropped
    assert not pairs.images(train) & pairs.images(val)  # no image, so no label-implied identity, on both sides
    assert 0.2 * len(official) <= len(val) < 0.5 * len(official)
    assert any(r[4] for r in val) and not all(r[4] for r in val)


def test_restricted_split_reads_no_names():
    """Renaming every person (the image files stay the same files) changes nothing but the names."""
    official = official_pairs()
    rename = {f"P{k}": f"Q{(k * 7) % 20:02d}x" for k in range(20)}
    renamed = [lfw.Pair(rename[p.name1], p.i1, rename[p.name2], p.i2) for p in official]
    back = {v: k for k, v in rename.items()}
    for a, b in zip(pairs.split_restricted(official, 0.2, np.random.default_rng(5)),
                    pairs.split_restricted(renamed, 0.2, np.random.default_rng(5))):
        assert a == [(back[r[0]], r[1], back[r[2]], r[3], r[4]) for r in b]


def test_restricted_mode_end_to_end(lfw_dir):
    tables, report = pairs.make_tables(lfw_dir, params(mode="restricted", val_fraction=0.2), seed=0)
    official = sorted(as_row(p) for p in lfw.parse_pairs(lfw_dir / "pairsDevTrain.txt"))
    assert sorted(tables["train"] + tables["val"]) == official
    assert report["train_val_shared_images"] == report["train_test_shared_people"] == report["val_test_shared_people"] == 0


def test_table_round_trip_and_bad_line(tmp_path):
    rows = [("A", 1, "A", 2, 1), ("A", 1, "B", 3, 0)]
    write_table(tmp_path / "t.tsv", rows)
    assert read_table(tmp_path / "t.tsv") == rows
    (tmp_path / "bad.tsv").write_text("name1\ti1\tname2\ti2\tlabel\nA\t1\tB\n")
    with pytest.raises(ValueError, match=r"bad.tsv:2: expected 5 tab-separated fields"):
        read_table(tmp_path / "bad.tsv")


def test_too_few_people_to_draw_pairs():
    with pytest.raises(ValueError, match="need >= 2 identities"):
        pairs.sample_pairs({"A": 1, "B": 1}, 4, np.random.default_rng(0))


def test_equal_seeds_draw_the_two_sides_from_different_streams(monkeypatch, lfw_dir):
    """seed == split_seed (the default, 0 and 0) must not replay the held-out draw in the training draw."""
    streams = []
    real = np.random.default_rng
    monkeypatch.setattr(pairs.np.random, "default_rng", lambda s=None: streams.append(s) or real(s))
    pairs.make_tables(lfw_dir, params(split_seed=0), seed=0)
    assert len(streams) == 2 and real(streams[0]).random(4).tolist() != real(streams[1]).random(4).tolist()
