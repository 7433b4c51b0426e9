import importlib.util

import numpy as np
import pytest

from conftest import ROOT

spec = importlib.util.spec_from_file_location("threshold_split", ROOT / "scripts" / "threshold_split.py")
split = importlib.util.module_from_spec(spec)
spec.loader.exec_module(split)


def test_distinct_drops_repeats_in_either_order_and_keeps_the_first():
    table = [("A", 1, "A", 2, 1), ("A", 2, "A", 1, 1), ("A", 1, "B", 1, 0), ("A", 1, "A", 2, 1), ("B", 1, "A", 1, 0)]
    assert split.distinct(table) == [("A", 1, "A", 2, 1), ("A", 1, "B", 1, 0)]


def test_balanced_accuracy_weighs_the_classes_equally_whatever_their_counts():
    d = np.array([0.1, 0.9, 0.6, 0.3, 0.7, 0.8])
    y = np.array([1, 1, 0, 0, 0, 0])
    # t = 0.5: same 1 of 2 right, different 3 of 4 right -> (0.5 + 0.75) / 2, where plain accuracy is 4/6
    assert split.balanced_accuracy(d, y, 0.5) == pytest.approx(0.625)
