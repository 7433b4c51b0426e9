"""The trained verifier as one NumPy file, scored without PyTorch: a `faceverify verify` that starts fast.

Importing PyTorch takes seconds on a small CPU, NumPy and Pillow a fraction of that. The export stage
writes models/faceverify.npz: the network with batch norm folded into the convolutions, as a list
of ops (conv, affine, relu, maxpool, flatten, linear) over named float32 arrays, plus the
preprocessing, the test-time views (mirror, shift), the threshold and the SHA-256 of the checkpoint it came from.
Loaded with `allow_pickle=False`, so a bundle from an untrusted source cannot run code.

`Scorer` is the pair-scoring protocol shared with the PyTorch `pipeline.verifier.Verifier`:
`embed(images)` is all a subclass provides.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from PIL import Image

from pipeline.images import preprocess
from pipeline.tta import TTA

FORMAT = 2  # 2 adds `tta_shift`; a format-1 bundle reads as shift 0
READS = (1, 2)


def euclidean(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise Euclidean distance (P,) between embeddings a, b (P, D), as pipeline.model.euclidean."""
    return np.sqrt(np.maximum(((a - b) ** 2).sum(1), 1e-12))


class Scorer:
    """Distances of image pairs from `embed`; attributes `threshold`, `preprocess` {crop, size}, `tta`
    (`pipeline.tta.TTA`)."""

    threshold: float
    preprocess: dict
    tta: TTA

    def embed(self, images: np.ndarray) -> np.ndarray:
        """Embeddings (N, D) float32 of uint8 images (N, H, W) already cropped and resized."""
        raise NotImplementedError

    def arrays(self, images: list[Image.Image]) -> np.ndarray:
        """uint8 (N, size, size): each image cropped and resized as the training data was."""
        return np.stack([preprocess(im, self.preprocess["crop"], self.preprocess["size"]) for im in images])

    def distances(self, first: list[Image.Image], second: list[Image.Image]) -> np.ndarray:
        """Euclidean distances (P,) between the embeddings of first[k] and second[k]."""
        e = self.embed(self.arrays(first + second))
        return euclidean(e[:len(first)], e[len(first):])


def _conv(x: np.ndarray, w: np.ndarray, b: np.ndarray, padding: int, stride: int = 1) -> np.ndarray:
    """(N, H, W, C) * w (C, kh, kw, O) + b -> (N, H', W', O)."""
    if padding:
        x = np.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    windows = sliding_window_view(x, w.shape[1:3], axis=(1, 2))[:, ::stride, ::stride]  # (N, H', W', C, kh, kw)
    return np.tensordot(windows, w, axes=([3, 4, 5], [0, 1, 2])) + b


def _maxpool(x: np.ndarray, k: int) -> np.ndarray:
    n, h, w, c = x.shape
    return x[:, :h // k * k, :w // k * k].reshape(n, h // k, k, w // k, k, c).max(axis=(2, 4))


class Bundle(Scorer):
    """A models/faceverify.npz file, ready to score pairs with NumPy alone."""

    def __init__(self, path: str | Path):
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            self.weights = {k: z[k] for k in z.files if k != "meta"}
        if meta.get("format") not in READS:
            raise ValueError(f"{path}: bundle format {meta.get('format')!r}, this code reads {' and '.join(map(str, READS))}")
        self.meta = meta
        self.ops = meta["ops"]
        self.threshold = float(meta["threshold"])
        self.preprocess = meta["preprocess"]
        self.tta = TTA.of(meta)
        self.normalize = bool(meta["normalize"])
        # conv weights to (C, kh, kw, O) once, so that each call is one tensordot per layer
        for op in self.ops:
            if op["op"] == "conv":
                self.weights[op["w"]] = np.ascontiguousarray(self.weights[op["w"]].transpose(1, 2, 3, 0))

    def _forward(self, x: np.ndarray) -> np.ndarray:
        """uint8 (N, H, W) -> embeddings (N, D), as Siamese.embed computes them."""
        x = x.astype(np.float32)
        mean = x.mean(axis=(1, 2), keepdims=True)
        std = np.maximum(x.std(axis=(1, 2), ddof=1, keepdims=True), 1.0)
        x = ((x - mean) / std)[..., None]  # (N, H, W, 1)
        a = self.weights
        for op in self.ops:
            kind = op["op"]
            if kind == "conv":
                x = _conv(x, a[op["w"]], a[op["b"]], op["padding"], op.get("stride", 1))
            elif kind == "affine":  # per-channel x * w + b: an eval-mode batch norm
                x = x * a[op["w"]] + a[op["b"]]
            elif kind == "relu":
                x = np.maximum(x, 0)
            elif kind == "maxpool":
                x = _maxpool(x, op["k"])
            elif kind == "flatten":  # in PyTorch's (C, H, W) order
                x = x.transpose(0, 3, 1, 2).reshape(len(x), -1)
            elif kind == "linear":
                x = x @ a[op["w"]].T + a[op["b"]]
            else:
                raise ValueError(f"unknown op {kind!r} in the bundle")
        return self._unit(x) if self.normalize else x

    @staticmethod
    def _unit(e: np.ndarray) -> np.ndarray:
        return e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)

    def embed(self, images: np.ndarray) -> np.ndarray:
        views = self.tta.views(images)
        e = sum(self._forward(v) for v in views)
        if len(views) > 1:
            e = self._unit(e) if self.normalize else e / len(views)
        return e.astype(np.float32)
