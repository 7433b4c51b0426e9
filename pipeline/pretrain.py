"""Label-free pretraining: the embedding network learns from the training images alone, before the pairs.

VICReg (Bardes, Ponce & LeCun 2022): two strongly augmented views of each image go through the network
and a projector; the loss pulls each image's two views together (invariance), keeps every projected
dimension's spread over the batch at or above 1 (variance) and decorrelates the dimensions
(covariance). No pair of different images is assumed to show two people, and no label or name is
read, so it belongs to every LFW category, image-restricted included. The projector is dropped
afterwards; the supervised training then starts from the pretrained network.
"""
from __future__ import annotations

import logging
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.data import augment
from pipeline.embedding import TrainingError
from pipeline.model import Siamese

log = logging.getLogger("pipeline.pretrain")

# VICReg's published weights (invariance, variance, covariance) and projector width
WEIGHTS = (25.0, 25.0, 1.0)
PROJECTOR = 512
# the views: stronger than training's augmentation (the task is to see through it), plus a cut-out patch
VIEW_AUGMENT = {"flip": True, "max_rotate_deg": 15.0, "max_shift": 0.1, "max_scale": 0.15}
ERASE_SIDE = 0.35  # side of the cut-out square, as a share of the image side


def vicreg_loss(z1: torch.Tensor, z2: torch.Tensor, weights=WEIGHTS) -> torch.Tensor:
    """VICReg loss of two views' projections (B, D), row k of each from the same image."""
    inv = F.mse_loss(z1, z2)
    var = cov = z1.new_zeros(())
    n, d = z1.shape
    for z in (z1, z2):
        z = z - z.mean(0)
        std = torch.sqrt(z.var(0) + 1e-4)
        var = var + F.relu(1 - std).mean() / 2
        c = (z.T @ z) / (n - 1)  # (D, D)
        cov = cov + (c.pow(2).sum() - c.diagonal().pow(2).sum()) / d
    return weights[0] * inv + weights[1] * var + weights[2] * cov


def views(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """One random view (B, 1, H, W) of float images x in 0..255: affine jitter and mirror, then a grey
    square of side ERASE_SIDE at a random place; every draw from `gen`."""
    x = augment(x, gen, **VIEW_AUGMENT)
    b, _, h, w = x.shape
    s = max(1, round(ERASE_SIDE * h))
    top = (torch.rand(b, generator=gen) * (h - s + 1)).long()
    left = (torch.rand(b, generator=gen) * (w - s + 1)).long()
    rows = torch.arange(h)[None, :, None]
    cols = torch.arange(w)[None, None, :]
    box = ((rows >= top[:, None, None]) & (rows < top[:, None, None] + s)
           & (cols >= left[:, None, None]) & (cols < left[:, None, None] + s))  # (B, H, W)
    return torch.where(box[:, None].to(x.device), x.mean(dim=(1, 2, 3), keepdim=True), x)


def projector(d_in: int) -> nn.Module:
    return nn.Sequential(nn.Linear(d_in, PROJECTOR), nn.BatchNorm1d(PROJECTOR), nn.ReLU(inplace=True),
                         nn.Linear(PROJECTOR, PROJECTOR))


def pretrain(model: Siamese, images: torch.Tensor, rows: np.ndarray, epochs: int, batch_images: int, lr: float,
             weight_decay: float, seed: int, device: torch.device, dtype: torch.dtype | None = None) -> list[float]:
    """VICReg on the images `rows` of uint8 `images` (N, 1, H, W) for `epochs` passes of `batch_images`
    images each step (AdamW, one epoch of warm-up, cosine to 0); `model` is changed in place. Returns
    each epoch's mean loss."""
    if len(rows) < 2:
        raise ValueError(f"label-free pretraining needs at least 2 training images, got {len(rows)}")
    gen = torch.Generator().manual_seed(seed * 100_003 + 7)
    torch.manual_seed(seed * 100_003 + 7)
    head = projector(model.config["embedding_dim"]).to(device)
    params = list(model.parameters()) + list(head.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    steps = max(1, len(rows) // batch_images)
    total = epochs * steps
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / steps if s < steps else 0.5 * (1 + math.cos(math.pi * (s - steps) / max(1, total - steps))))
    losses = []
    model.train(), head.train()
    for epoch in range(1, epochs + 1):
        order = torch.randperm(len(rows), generator=gen).numpy()
        seen = 0.0
        for k in range(steps):
            batch = rows[order[k * batch_images:(k + 1) * batch_images]]
            x = images[torch.from_numpy(batch)].float()
            x = torch.cat([views(x, gen), views(x, gen)]).to(device)  # (2B, 1, H, W): view 1, then view 2
            with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
                z1, z2 = head(model.represent(x)).float().chunk(2)
            loss = vicreg_loss(z1, z2)
            if not torch.isfinite(loss):
                raise TrainingError(f"pretraining epoch {epoch}: the loss is {loss.item()}; stopping (lower train.lr?)")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            seen += loss.item()
        losses.append(seen / steps)
        log.info("pretraining epoch %d/%d  VICReg loss %.4f", epoch, epochs, losses[-1])
    return losses
