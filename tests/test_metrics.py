import numpy as np
import pytest

from pipeline.metrics import choose_threshold, verification_metrics, wilson_interval

D = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
Y = np.array([1, 1, 0, 1, 0, 0])


def test_max_accuracy_threshold_lies_between_neighbours():
    # t = 0.25 and t = 0.45 both get 5 of 6 right; the smaller one is kept
    assert choose_threshold(D, Y) == pytest.approx(0.25)
    assert choose_threshold(np.array([0.1, 0.2, 0.8, 0.9]), np.array([1, 1, 0, 0])) == pytest.approx(0.5)


def test_far_threshold_is_the_largest_meeting_the_target():
    assert choose_threshold(D, Y, "far", target_far=0.0) == pytest.approx(0.25)
    assert choose_threshold(D, Y, "far", target_far=0.34) == pytest.approx(0.45)  # 1 of 3 different accepted


def test_eer_threshold_equalises_the_two_error_rates():
    # t = 0.35: different 0.3 accepted (FAR 1/3), same 0.4 rejected (FRR 1/3); no other candidate is closer
    assert choose_threshold(D, Y, "eer") == pytest.approx(0.35)
    # four times as many different pairs, the same rates: the same threshold (maximum accuracy moves)
    many = np.concatenate([D, np.repeat(D[Y == 0], 3)]), np.concatenate([Y, np.zeros(9, int)])
    assert choose_threshold(*many, "eer") == pytest.approx(0.35)
    assert choose_threshold(*many) == pytest.approx(0.25)


def test_unknown_criterion():
    with pytest.raises(ValueError, match="unknown criterion"):
        choose_threshold(D, Y, "f1")


def test_metrics_on_a_fixed_confusion():
    m = verification_metrics(D, Y, 0.45)  # accepts 0.1 0.2 0.3 0.4: tp 3, fp 1, tn 2, fn 0
    assert (m["tp"], m["fp"], m["tn"], m["fn"]) == (3, 1, 2, 0)
    assert m["accuracy"] == pytest.approx(5 / 6)
    assert m["far"] == pytest.approx(1 / 3) and m["frr"] == 0
    # 8 of the 9 (same, different) orderings are right: AUC 8/9
    assert m["roc_auc"] == pytest.approx(8 / 9)
    assert m["tar_at_far_1pct"] == pytest.approx(2 / 3)
    assert m["eer"] == pytest.approx(1 / 3)
    assert m["accuracy_ci95_low"] < 5 / 6 < m["accuracy_ci95_high"]


def test_wilson_interval_known_values():
    lo, hi = wilson_interval(750, 1000)
    assert lo == pytest.approx(0.7222, abs=1e-4) and hi == pytest.approx(0.7758, abs=1e-4)
    assert wilson_interval(0, 0) == (0.0, 1.0)
