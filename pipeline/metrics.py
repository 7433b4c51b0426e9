"""Verification metrics and threshold choice: pure functions of distances and labels.

Convention everywhere: label 1 = same person, a pair is predicted "same" when distance <= threshold.
"""
from __future__ import annotations

import math

import numpy as np
from sklearn.metrics import confusion_matrix, roc_auc_score, roc_curve


def choose_threshold(distances: np.ndarray, labels: np.ndarray, criterion: str = "accuracy", target_far: float = 0.01) -> float:
    """The distance threshold chosen on (validation) pairs.

    "accuracy": the threshold of maximum accuracy, placed midway between the two neighbouring
    distances that bound it (ties go to the smallest such threshold).
    "far": the largest threshold whose false-accept rate (different pairs accepted) is <= target_far.
    "eer": the equal-error threshold, where the false-accept and false-reject rates are closest
    (ties go to the smallest). It does not depend on how the pairs are split between the classes,
    and it moves less than the maximum-accuracy one when the validation people change
    (docs/DECISIONS.md).
    """
    d = np.asarray(distances, dtype=np.float64)
    y = np.asarray(labels).astype(bool)
    values = np.unique(d)
    # candidate thresholds: below everything, midpoints, above everything
    cands = np.concatenate([[values[0] - 1e-6], (values[:-1] + values[1:]) / 2, [values[-1] + 1e-6]])
    accepted_same = np.searchsorted(np.sort(d[y]), cands, side="right")  # same pairs with d <= t
    accepted_diff = np.searchsorted(np.sort(d[~y]), cands, side="right")
    far = accepted_diff / max(1, (~y).sum())  # false-accept rate at each candidate
    if criterion == "accuracy":
        correct = accepted_same + (len(d[~y]) - accepted_diff)
        return float(cands[int(np.argmax(correct))])
    if criterion == "far":
        ok = np.flatnonzero(far <= target_far)
        return float(cands[ok[-1]])
    if criterion == "eer":
        frr = 1 - accepted_same / max(1, y.sum())
        return float(cands[int(np.argmin(np.abs(far - frr)))])
    raise ValueError(f"unknown criterion {criterion!r} (expected 'accuracy', 'eer' or 'far')")


def wilson_interval(successes: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """95% Wilson score interval of a proportion."""
    if n == 0:
        return (0.0, 1.0)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def roc(distances: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(false-accept rates, true-accept rates, distance thresholds), scoring pairs by -distance."""
    fpr, tpr, thr = roc_curve(np.asarray(labels).astype(int), -np.asarray(distances, dtype=np.float64))
    return fpr, tpr, -thr


def verification_metrics(distances: np.ndarray, labels: np.ndarray, threshold: float) -> dict:
    """Accuracy (with 95% CI), ROC AUC, EER, TAR at FAR 1%, and the confusion counts at `threshold`."""
    d = np.asarray(distances, dtype=np.float64)
    y = np.asarray(labels).astype(int)
    pred = (d <= threshold).astype(int)
    tn, fp, fn, tp = confusion_matrix(y, pred, labels=[0, 1]).ravel()
    n = len(y)
    correct = int(tp + tn)
    lo, hi = wilson_interval(correct, n)
    fpr, tpr, _ = roc(d, y)
    fnr = 1 - tpr
    k = int(np.nanargmin(np.abs(fnr - fpr)))
    return {
        "n_pairs": n,
        "threshold": float(threshold),
        "accuracy": correct / n,
        "accuracy_ci95_low": lo,
        "accuracy_ci95_high": hi,
        "roc_auc": float(roc_auc_score(y, -d)),
        "eer": float((fpr[k] + fnr[k]) / 2),
        "tar_at_far_1pct": float(tpr[fpr <= 0.01].max(initial=0.0)),
        "far": float(fp / max(1, fp + tn)),
        "frr": float(fn / max(1, fn + tp)),
        "tp": int(tp), "fp": int(fp), "tn": int(tn), "fn": int(fn),
    }
