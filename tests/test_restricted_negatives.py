"""scripts/restricted_negatives.py: how often two label classes of the training pairs are one person."""
import sys

import pytest

from conftest import ROOT
from pipeline.lfw import Pair

sys.path.insert(0, str(ROOT / "scripts"))
import restricted_negatives  # noqa: E402

# classes {A1, A2}, {A3, A4}, {B1, B2}, {A5}, {C1}: person A in three classes no label links
PAIRS = [Pair("A", 1, "A", 2), Pair("A", 3, "A", 4), Pair("B", 1, "B", 2), Pair("A", 5, "C", 1)]


def test_classes_come_from_the_labels_and_keep_their_person():
    assert sorted(restricted_negatives.class_persons(PAIRS)) == [("A", 1), ("A", 2), ("A", 2), ("B", 2), ("C", 1)]


def test_the_chance_that_two_classes_are_one_person_by_hand():
    classes = restricted_negatives.class_persons(PAIRS)
    # in proportion to images: A 2+2+1, B 2, C 1; (5^2 + 2^2 + 1^2 - 14) / (8^2 - 14) = 16 / 50
    assert restricted_negatives.one_person_chance(classes, True) == pytest.approx(0.32)
    # equally: (3^2 + 1 + 1 - 5) / (5^2 - 5) = 6 / 20
    assert restricted_negatives.one_person_chance(classes, False) == pytest.approx(0.3)


def test_prints_view1_and_each_view2_fold(lfw_dir, capsys):
    assert restricted_negatives.main(["--lfw", str(lfw_dir)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("View 1 pairsDevTrain: ") and "two classes one person" in out[0]
    assert [line.split(":")[0] for line in out[1:]] == [f"View 2 fold {k}'s training side" for k in range(1, 11)]


def test_without_the_download_it_says_what_to_run(tmp_path):
    with pytest.raises(SystemExit, match="no pairsDevTrain.txt; run `dvc repro download` first"):
        restricted_negatives.main(["--lfw", str(tmp_path)])
