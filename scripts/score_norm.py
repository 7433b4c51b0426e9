"""Does score normalisation against a cohort help? Validation AUC of raw and S-normalised distances, no retraining.

    python scripts/score_norm.py [MODEL ...] [--top 0 50 200 1000] [--prepared data/prepared] [--pairs data/pairs]
                                 (MODEL: default models/model.pt)

S-norm (symmetric score normalisation, as in speaker and face verification): a pair (a, b) at distance
d scores 0.5 * ((d - mu_a) / sd_a + (d - mu_b) / sd_b), with mu_x and sd_x the mean and standard
deviation of x's distances to a cohort: the training table's images (training identities, never
validation or test people). `--top k` keeps only x's k nearest cohort images (adaptive S-norm; 0: all).
Prints the validation AUC (the selection criterion) and, for the record, the test AUC and accuracy at
the validation EER threshold. The serving bundle would carry the cohort's embeddings.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from pipeline.model import embed_all, load_checkpoint  # noqa: E402
from pipeline.tta import TTA  # noqa: E402
from tta_views import add_data_args, distance_scores, load_sets, test_text  # noqa: E402


def s_norm(a: np.ndarray, b: np.ndarray, cohort: np.ndarray, top: int = 0) -> np.ndarray:
    """S-normalised scores (P,) of unit embeddings a, b (P, D) against unit cohort embeddings (C, D);
    lower means more alike, as a distance."""
    d = np.linalg.norm(a - b, axis=1)
    terms = []
    for x in (a, b):
        to_cohort = np.sqrt(np.maximum(2 - 2 * x @ cohort.T, 0))  # (P, C)
        if 0 < top < cohort.shape[0]:
            to_cohort = np.partition(to_cohort, top - 1, axis=1)[:, :top]
        terms.append((d - to_cohort.mean(1)) / np.maximum(to_cohort.std(1), 1e-12))
    return 0.5 * (terms[0] + terms[1])


def pair_embeddings(model, images: torch.Tensor, pairs, tta: TTA) -> tuple[np.ndarray, np.ndarray]:
    rows, inverse = np.unique(np.concatenate([pairs.idx1, pairs.idx2]), return_inverse=True)
    e = embed_all(model, images[torch.from_numpy(rows)], tta).numpy().astype(np.float64)
    n = len(pairs.idx1)
    return e[inverse[:n]], e[inverse[n:]]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", type=Path, default=[ROOT / "models" / "model.pt"])
    parser.add_argument("--top", nargs="+", type=int, default=[0, 50, 200, 1000])
    add_data_args(parser)
    args = parser.parse_args(argv)
    if min(args.top) < 0:
        parser.error("--top: a number of cohort images, >= 0")
    images, train, val, test = load_sets(args, "train", "val", "test")
    cohort_rows = torch.from_numpy(np.unique(np.concatenate([train.idx1, train.idx2])))
    for path in args.models:
        model, ckpt = load_checkpoint(path)
        tta = TTA.of(ckpt)
        cohort = embed_all(model, images[cohort_rows], tta).numpy().astype(np.float64)
        (va, vb), (ta, tb) = pair_embeddings(model, images, val, tta), pair_embeddings(model, images, test, tta)
        raw = distance_scores(np.linalg.norm(va - vb, axis=1), val, np.linalg.norm(ta - tb, axis=1), test)
        print(f"{path}  raw distances: validation AUC {raw['val_auc']:.5f}; {test_text(raw)}", flush=True)
        for top in args.top:
            s = distance_scores(s_norm(va, vb, cohort, top), val, s_norm(ta, tb, cohort, top), test)
            which = f"{top} nearest of {len(cohort)}" if 0 < top < len(cohort) else f"all {len(cohort)}"
            print(f"{path}  S-norm, cohort {which}: validation AUC {s['val_auc']:.5f} "
                  f"({s['val_auc'] - raw['val_auc']:+.4f}); {test_text(s)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
