"""Test-time views: an image is embedded as the mean of the embeddings of a few views of it.

One definition for PyTorch (training's validation, evaluation, serving) and NumPy (the bundle), so
both average the same views in the same order.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def shift_index(n: int, s: int) -> list[int]:
    """Source index of each of n positions when the content moves by s (edges repeated)."""
    return [min(max(i - s, 0), n - 1) for i in range(n)]


def shift(x, s: int):
    """Images (..., H, W), NumPy or PyTorch, moved down and right by s pixels (up and left for s < 0),
    the edge rows and columns repeated."""
    return x[..., shift_index(x.shape[-2], s), :][..., shift_index(x.shape[-1], s)]


def mirror(x):
    """Images (..., H, W) mirrored left to right."""
    return np.flip(x, -1) if isinstance(x, np.ndarray) else x.flip(-1)


@dataclass(frozen=True)
class TTA:
    """The views whose embeddings are averaged (and renormalised when the model normalises): the image
    itself, or with `shift` > 0 the image moved by (+shift, +shift) and by (-shift, -shift) pixels;
    with `flip`, each of those and its mirror image."""
    flip: bool = False
    shift: int = 0

    @classmethod
    def of(cls, meta: dict) -> TTA:
        """The views of a checkpoint or bundle metadata (`tta_flip`, `tta_shift`; no shift where absent)."""
        return cls(bool(meta["tta_flip"]), int(meta.get("tta_shift", 0)))

    @property
    def count(self) -> int:
        return (2 if self.flip else 1) * (2 if self.shift else 1)

    def views(self, x) -> list:
        """The views of images (..., H, W), NumPy or PyTorch."""
        moved = [shift(x, self.shift), shift(x, -self.shift)] if self.shift else [x]
        return [v for m in moved for v in ((m, mirror(m)) if self.flip else (m,))]
