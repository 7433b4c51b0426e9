"""Which test-time views? Validation AUC of trained models under each `train.tta_shift`, no retraining.

    python scripts/tta_views.py [MODEL ...] [--shifts 0 1 2 3] [--no-flip] [--prepared data/prepared]
                                [--pairs data/pairs]          (MODEL: default models/model.pt)

For each checkpoint and each shift s (0: the image in place; s > 0: moved by (+s, +s) and (-s, -s)
pixels, pipeline/tta.py), with the mirror views unless --no-flip, prints the validation AUC (held-out
training identities: the selection criterion) and, for the record, the test AUC and the test accuracy
at the threshold the validation pairs give (`calibrate.criterion` eer). The view count sets the cost
of every embedding: validation in each epoch, calibration, evaluation, serving.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.data import load_images, load_pairs  # noqa: E402
from pipeline.embedding import pair_distances  # noqa: E402
from pipeline.metrics import choose_threshold, verification_metrics  # noqa: E402
from pipeline.model import load_checkpoint  # noqa: E402
from pipeline.tta import TTA  # noqa: E402


def scores(model, images, val, test, tta: TTA) -> dict:
    """Validation AUC; test AUC and accuracy at the validation EER threshold."""
    return distance_scores(pair_distances(model, images, val, tta), val, pair_distances(model, images, test, tta), test)


def test_text(r: dict) -> str:
    """The record half of a result line: the test AUC, and the test accuracy at the validation threshold."""
    return f"test AUC {r['test_auc']:.4f}, test accuracy {r['test_accuracy']:.3f}"


def add_data_args(parser: argparse.ArgumentParser) -> None:
    """--prepared and --pairs, the pipeline's outputs these scripts score on."""
    parser.add_argument("--prepared", type=Path, default=ROOT / "data" / "prepared")
    parser.add_argument("--pairs", type=Path, default=ROOT / "data" / "pairs")


def load_sets(args: argparse.Namespace, *names: str) -> tuple:
    """The prepared images and the pair tables `names` (for example "val", "test") resolved against them."""
    images, rows = load_images(args.prepared)
    return images, *(load_pairs(args.pairs / f"{name}.tsv", rows) for name in names)


def distance_scores(d_val: np.ndarray, val, d_test: np.ndarray, test, criterion: str = "eer",
                    target_far: float = 0.01) -> dict:
    """Validation AUC; test AUC, EER and accuracy at the threshold `criterion` chooses on validation
    (`calibrate.criterion`, eer by default), from pair distances."""
    threshold = choose_threshold(d_val, val.label, criterion, target_far)
    v, t = verification_metrics(d_val, val.label, threshold), verification_metrics(d_test, test.label, threshold)
    return {"val_auc": v["roc_auc"], "test_auc": t["roc_auc"], "test_eer": t["eer"], "test_accuracy": t["accuracy"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", type=Path, default=[ROOT / "models" / "model.pt"])
    parser.add_argument("--shifts", nargs="+", type=int, default=[0, 1, 2, 3])
    parser.add_argument("--no-flip", action="store_true", help="without the mirror views")
    add_data_args(parser)
    args = parser.parse_args(argv)
    if min(args.shifts) < 0:
        parser.error("--shifts: pixels, >= 0")
    images, val, test = load_sets(args, "val", "test")
    base = {}
    for path in args.models:
        model, _ = load_checkpoint(path)
        for s in args.shifts:
            tta = TTA(not args.no_flip, s)
            r = scores(model, images, val, test, tta)
            base.setdefault(path, r["val_auc"])
            print(f"{path}  shift {s} ({tta.count} views): validation AUC {r['val_auc']:.4f} "
                  f"({r['val_auc'] - base[path]:+.4f} against shift {args.shifts[0]}); {test_text(r)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
