"""Does PCA whitening of the embeddings help? Validation AUC with and without, for one trained model.

    python scripts/whitening.py [--model models/model.pt] [--prepared data/prepared] [--pairs data/pairs]

Fits the whitening (centre, rotate onto the principal axes, scale each to unit variance, keep the
first k, renormalise) on the embeddings of the training table's images (training identities), and
scores the validation pairs (held-out training identities) before and after, for each k. The test
pairs are never read. Whitening is a post-hoc lever: no retraining, the bundle would carry one matrix.
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
from pipeline.metrics import verification_metrics, choose_threshold  # noqa: E402
from pipeline.model import embed_all, load_checkpoint  # noqa: E402
from pipeline.tta import TTA  # noqa: E402


def auc(d: np.ndarray, y: np.ndarray) -> float:
    return verification_metrics(d, y, choose_threshold(d, y, "eer"))["roc_auc"]


def whiten_fit(e: np.ndarray, k: int, shrink: float) -> tuple[np.ndarray, np.ndarray]:
    mean = e.mean(0)
    cov = np.cov(e - mean, rowvar=False)
    vals, vecs = np.linalg.eigh(cov)
    order = np.argsort(vals)[::-1][:k]
    vals, vecs = vals[order], vecs[:, order]
    return mean, vecs / np.sqrt(vals + shrink * vals.mean())


def distances(e: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    e = e / np.linalg.norm(e, axis=1, keepdims=True)
    return np.linalg.norm(e[a] - e[b], axis=1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=ROOT / "models" / "model.pt")
    parser.add_argument("--prepared", type=Path, default=ROOT / "data" / "prepared")
    parser.add_argument("--pairs", type=Path, default=ROOT / "data" / "pairs")
    args = parser.parse_args()
    torch.set_num_threads(1)
    model, ckpt = load_checkpoint(args.model)
    images, rows = load_images(args.prepared)
    train = load_pairs(args.pairs / "train.tsv", rows)
    val = load_pairs(args.pairs / "val.tsv", rows)
    fit_rows = np.unique(np.concatenate([train.idx1, train.idx2]))
    val_rows, inv = np.unique(np.concatenate([val.idx1, val.idx2]), return_inverse=True)
    n = len(val.idx1)
    fit = embed_all(model, images[torch.from_numpy(fit_rows)], TTA.of(ckpt)).numpy().astype(np.float64)
    ev = embed_all(model, images[torch.from_numpy(val_rows)], TTA.of(ckpt)).numpy().astype(np.float64)
    a, b = inv[:n], inv[n:]
    print(f"{args.model}: fit on {len(fit_rows)} training images, {n} validation pairs")
    print(f"raw: val AUC {auc(distances(ev, a, b), val.label):.5f}")
    for shrink in (0.0, 0.1, 1.0):
        for k in (32, 64, 96, 128):
            mean, w = whiten_fit(fit, min(k, fit.shape[1]), shrink)
            print(f"whitened k={k} shrink={shrink}: val AUC {auc(distances((ev - mean) @ w, a, b), val.label):.5f}")
    # fitted on held-out people instead: half the validation identities fit, pairs within the other half score
    ids = np.concatenate([val.id1, val.id2])
    people = np.unique(ids)
    half = set(np.random.default_rng(0).permutation(people)[: len(people) // 2].tolist())
    in_fit = np.array([i in half for i in ids])
    fit_images = np.unique(inv[in_fit])
    keep = ~in_fit[:n] & ~in_fit[n:]
    print(f"held-out fit: {len(fit_images)} images of {len(half)} validation people; {keep.sum()} pairs of the others")
    print(f"raw on those pairs: val AUC {auc(distances(ev, a[keep], b[keep]), val.label[keep]):.5f}")
    for shrink in (0.0, 0.1, 1.0):
        for k in (32, 64, 128):
            mean, w = whiten_fit(ev[fit_images], k, shrink)
            print(f"held-out whitened k={k} shrink={shrink}: val AUC "
                  f"{auc(distances((ev - mean) @ w, a[keep], b[keep]), val.label[keep]):.5f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
