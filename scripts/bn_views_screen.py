"""Screen two levers on trained models, no retraining: recomputed batch-norm statistics and 8 views.

    python scripts/bn_views_screen.py MODEL ... [--prepared data/prepared] [--pairs data/pairs]

For each checkpoint prints the validation AUC (the selection criterion) and, for the record, the test
AUC and accuracy at the validation EER threshold of: the model as trained (4 views, train.tta_shift 2);
8 views (adding the moves (+s, -s) and (-s, +s), s = 1, 2, 3); the model with every batch norm's
running statistics recomputed as the plain average over one pass of the unaugmented training images
(each batch with and without its mirror images). Left off: see docs/DECISIONS.md.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

import pipeline.tta as T  # noqa: E402
from pipeline.data import load_images, load_pairs  # noqa: E402
from pipeline.model import load_checkpoint  # noqa: E402
from tta_views import scores  # noqa: E402


class Eight(T.TTA):
    """(+s, +s), (-s, -s), (+s, -s), (-s, +s), each with its mirror."""
    @property
    def count(self) -> int:
        return 8

    def views(self, x) -> list:
        def moved(x, a, b):
            return x[..., T.shift_index(x.shape[-2], a), :][..., T.shift_index(x.shape[-1], b)]
        s = self.shift
        return [v for m in (moved(x, s, s), moved(x, -s, -s), moved(x, s, -s), moved(x, -s, s)) for v in (m, T.mirror(m))]


def recompute_bn(model, images: torch.Tensor, rows: np.ndarray, mirror: bool) -> None:
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average
    model.train()
    with torch.no_grad():
        for i in range(0, len(rows), 256):
            x = images[torch.from_numpy(rows[i:i + 256])]
            model.embed(torch.cat([x, x.flip(-1)]) if mirror else x)
    model.eval()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", type=Path)
    parser.add_argument("--prepared", type=Path, default=ROOT / "data" / "prepared")
    parser.add_argument("--pairs", type=Path, default=ROOT / "data" / "pairs")
    args = parser.parse_args(argv)
    images, rows = load_images(args.prepared)
    val, test = load_pairs(args.pairs / "val.tsv", rows), load_pairs(args.pairs / "test.tsv", rows)
    train = load_pairs(args.pairs / "train.tsv", rows)
    train_rows = np.random.default_rng(0).permutation(np.unique(np.concatenate([train.idx1, train.idx2])))
    for path in args.models:
        model, _ = load_checkpoint(path)
        variants = [("as trained, 4 views", model, T.TTA(True, 2))]
        variants += [(f"8 views, shift {s}", model, Eight(True, s)) for s in (1, 2, 3)]
        for mirror in (False, True):
            m, _ = load_checkpoint(path)
            recompute_bn(m, images, train_rows, mirror)
            variants.append((f"batch norm recomputed on {len(train_rows)} training images{' and mirrors' if mirror else ''}",
                             m, T.TTA(True, 2)))
        for name, m, tta in variants:
            r = scores(m, images, val, test, tta)
            print(f"{path}  {name}: validation AUC {r['val_auc']:.5f}; test AUC {r['test_auc']:.4f}, "
                  f"test accuracy {r['test_accuracy']:.3f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
