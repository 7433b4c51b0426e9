"""scripts/restricted_negatives.py: how often two label classes of the training pairs are one person."""
import sys

import pytest

from conftest import ROOT

sys.path.insert(0, str(ROOT / "scripts"))
import restricted_negatives  # noqa: E402

# classes {A1, A2}, {A3, A4}, {B1, B2}, {A6, A7, A8} and the single images A5, C1: person A in four
# classes no label links
ROWS = [("A", 1, "A", 2, 1), ("A", 3, "A", 4, 1), ("B", 1, "B", 2, 1), ("A", 5, "C", 1, 0),
        ("A", 6, "A", 7, 1), ("A", 7, "A", 8, 1)]


def test_classes_come_from_the_labels_and_keep_their_person():
    assert sorted(restricted_negatives.class_persons(ROWS)) == [("A", 1), ("A", 2), ("A", 2), ("A", 3), ("B", 2), ("C", 1)]


def test_the_chance_that_two_sampled_classes_are_one_person_by_hand():
    classes = restricted_negatives.class_persons(ROWS)
    # the sampler's classes (two images or more), in proportion to images: A 2+2+3, B 2
    # ((7^2 + 2^2) - (4 + 4 + 9 + 4)) / (9^2 - 21) = 32 / 60
    assert restricted_negatives.one_person_chance(classes, "linear") == pytest.approx(32 / 60)
    # equally: (3^2 + 1 - 4) / (4^2 - 4) = 6 / 12; single images are never drawn as a class
    assert restricted_negatives.one_person_chance(classes, "equal") == pytest.approx(0.5)
    assert restricted_negatives.one_person_chance([("A", 2), ("C", 1)], "linear") == 0.0


def test_prints_view1_and_each_view2_fold_from_the_restricted_training_table(lfw_dir, capsys):
    assert restricted_negatives.main(["--lfw", str(lfw_dir)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in out] == ["View 1"] + [f"View 2 fold {k}" for k in range(1, 11)]
    assert all("training pairs" in line and "drawn linear" in line and "a batch of 64 classes" in line for line in out)


def test_without_the_download_it_says_what_to_run(tmp_path):
    with pytest.raises(SystemExit, match="no pairsDevTrain.txt; run `dvc repro download` first"):
        restricted_negatives.main(["--lfw", str(tmp_path)])
