"""Embedding pairs with a model: the device, the training precision, pair distances and the validation figures.

Validation is scored in fp32 whatever the training precision, by one function for the train and
calibrate stages, so both report the same figures for the same model and pairs, and the threshold
is chosen in the precision that evaluation and serving use.
"""
from __future__ import annotations

import logging

import numpy as np
import torch

from pipeline.data import PairSet
from pipeline.files import StageError
from pipeline.metrics import choose_threshold, verification_metrics
from pipeline.model import Siamese, embed_all, euclidean
from pipeline.tta import TTA

log = logging.getLogger("pipeline.embedding")


class TrainingError(StageError):
    """Training cannot go on (a missing device, a non-finite loss); the message says what to do."""


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise TrainingError("train.device is 'cuda' but no CUDA device is available")
    return torch.device(name)


NATIVE_BF16 = ("avx512_bf16", "amx_bf16", "bf16")  # torch.cpu.get_capabilities() keys: x86, x86, ARM


def cpu_bf16() -> tuple[bool, bool]:
    """(runs, native): whether oneDNN runs bf16 on this CPU at all, and whether in hardware (AVX-512 BF16,
    AMX, ARM bf16) rather than emulated (plain AVX-512, say), which is several times slower than fp32."""
    runs = bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    caps = torch.cpu.get_capabilities()
    return runs, runs and any(caps.get(key) for key in NATIVE_BF16)


def autocast_dtype(device: torch.device, precision: str) -> torch.dtype | None:
    """The autocast dtype of `precision` on `device` (None: fp32). On a CPU 'auto' is bf16 where the
    hardware runs it natively, else fp32, and 'bf16' is bf16 wherever it runs at all (with a warning where
    it is emulated), else fp32; on CUDA both are bf16 where `torch.cuda.is_bf16_supported()`."""
    if precision == "fp32":
        return None
    if device.type == "cuda":
        runs = native = torch.cuda.is_bf16_supported()
    else:
        runs, native = cpu_bf16()
    if precision == "auto":
        return torch.bfloat16 if native else None
    if not runs:
        log.warning("bf16 is not supported on %s; training in fp32", device)
        return None
    if not native:
        log.warning("bf16 is emulated on this CPU (no AVX-512 BF16, AMX or ARM bf16): slower than fp32")
    return torch.bfloat16


def pair_distances(model: Siamese, images: torch.Tensor, pairs: PairSet, tta: TTA,
                   dtype: torch.dtype | None = None) -> np.ndarray:
    """Distances (P,) of a pair set, each distinct image embedded once (fp32 unless `dtype` says otherwise)."""
    rows, inverse = np.unique(np.concatenate([pairs.idx1, pairs.idx2]), return_inverse=True)
    emb = embed_all(model, images[torch.from_numpy(rows)], tta, autocast_dtype=dtype)
    n = len(pairs.idx1)
    a, b = torch.from_numpy(inverse[:n]), torch.from_numpy(inverse[n:])
    return euclidean(emb[a], emb[b]).numpy()


def validation_scores(model: Siamese, images: torch.Tensor, val: PairSet, tta: TTA, criterion: str = "accuracy",
                      target_far: float = 0.01) -> tuple[np.ndarray, dict]:
    """(distances, figures) of a model on the validation pairs, in fp32: every `verification_metrics`
    figure, keys prefixed `val_`, at the threshold that `criterion` chooses on these same pairs."""
    d = pair_distances(model, images, val, tta)
    threshold = choose_threshold(d, val.label, criterion, target_far)
    return d, {f"val_{k}": v for k, v in verification_metrics(d, val.label, threshold).items()}
