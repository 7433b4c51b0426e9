"""A loaded checkpoint and its threshold, scoring image pairs with PyTorch; no MLflow import.

For inference the batch norms are folded into the convolutions (the same embeddings to about 1e-7,
fewer passes over memory) and images go through in small batches, which keep a layer's activations
in the CPU's caches (`benchmarks/run.py` measures both; docs/PERFORMANCE.md has the figures).
"""
from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from pipeline.bundle import Scorer
from pipeline.model import Siamese, embed_all, load_checkpoint
from pipeline.tta import TTA

BATCH = 64


def fold_batchnorm(model: Siamese) -> Siamese:
    """A copy of `model` (eval mode) whose every Conv2d -> BatchNorm2d is one Conv2d."""
    folded = copy.deepcopy(model).eval()
    layers, out = list(folded.features), []
    while layers:
        layer = layers.pop(0)
        if isinstance(layer, nn.Conv2d) and layers and isinstance(layers[0], nn.BatchNorm2d):
            layer = fuse_conv_bn_eval(layer, layers.pop(0))
        out.append(layer)
    folded.features = nn.Sequential(*out)
    return folded.to(memory_format=torch.channels_last)


class Verifier(Scorer):
    """A checkpoint (models/model.pt) and a threshold that score image pairs."""

    def __init__(self, checkpoint: str | Path, threshold: float):
        self.model, self.ckpt = load_checkpoint(checkpoint)
        self.fast = fold_batchnorm(self.model)
        self.threshold = float(threshold)
        self.preprocess = self.ckpt["preprocess"]
        self.tta = TTA.of(self.ckpt)

    def embed(self, images: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(images)).unsqueeze(1)  # (N, 1, H, W) uint8
        return embed_all(self.fast, x, self.tta, batch_size=BATCH).numpy()
