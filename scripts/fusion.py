"""Does fusing several trained models help? Validation AUC of each model and of every fusion, no retraining.

    python scripts/fusion.py MODEL MODEL [MODEL ...] [--prepared data/prepared] [--pairs data/pairs]

Fusion of M models: each model's unit embedding (with its own test-time views) concatenated to the
others and scaled by 1/sqrt(M), so that a pair's squared distance is the mean of the models' squared
distances and stays in [0, 4]. For each model alone and each subset of two or more, prints the
validation AUC (held-out training identities: the selection criterion) and, for the record, the test
AUC and the test accuracy at the threshold the validation pairs give (`calibrate.criterion` eer).
M models cost M times the training and M times every embedding.
"""
from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from pipeline.embedding import pair_distances  # noqa: E402
from pipeline.model import load_checkpoint  # noqa: E402
from pipeline.tta import TTA  # noqa: E402
from tta_views import add_data_args, distance_scores, load_sets, test_text  # noqa: E402


def fused(squared: list[np.ndarray]) -> np.ndarray:
    """Distances of the fused embedding from each model's squared distances of the same pairs."""
    return np.sqrt(np.mean(squared, axis=0))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", type=Path)
    add_data_args(parser)
    args = parser.parse_args(argv)
    if len(args.models) < 2:
        parser.error("fusion needs at least two models")
    images, val, test = load_sets(args, "val", "test")
    squared = {}
    for path in args.models:
        model, ckpt = load_checkpoint(path)
        tta = TTA.of(ckpt)
        squared[path] = (pair_distances(model, images, val, tta) ** 2, pair_distances(model, images, test, tta) ** 2)
    alone = {}
    for r in range(1, len(args.models) + 1):
        for subset in itertools.combinations(args.models, r):
            s = distance_scores(fused([squared[m][0] for m in subset]), val,
                                fused([squared[m][1] for m in subset]), test)
            if r == 1:
                alone[subset[0]] = s["val_auc"]
            label = " + ".join(str(m) for m in subset)
            mean = np.mean([alone[m] for m in subset])
            gain = f" ({s['val_auc'] - mean:+.4f} against its models' mean)" if r > 1 else ""
            print(f"{label}: validation AUC {s['val_auc']:.5f}{gain}; {test_text(s)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
