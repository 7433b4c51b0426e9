"""A loaded checkpoint and its threshold, scoring image pairs; no MLflow import, so the CLI starts fast."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from pipeline.model import embed_all, euclidean, load_checkpoint
from pipeline.prepare import preprocess


class Verifier:
    """A loaded checkpoint and threshold that scores image pairs."""

    def __init__(self, checkpoint: str | Path, threshold: float):
        self.model, self.ckpt = load_checkpoint(checkpoint)
        self.threshold = float(threshold)

    def arrays(self, images: list[Image.Image]) -> torch.Tensor:
        pre = self.ckpt["preprocess"]
        return torch.from_numpy(np.stack([preprocess(im, pre["crop"], pre["size"]) for im in images])).unsqueeze(1)

    def distances(self, first: list[Image.Image], second: list[Image.Image]) -> np.ndarray:
        emb = embed_all(self.model, self.arrays(first + second), self.ckpt["tta_flip"])
        a, b = emb.chunk(2)
        return euclidean(a, b).numpy()
