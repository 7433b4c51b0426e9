"""The Siamese network: one CNN backbone shared by both images, Euclidean distance, contrastive loss.

Images enter as uint8 (B, 1, H, W); the model standardises each image itself, so every caller
(training, evaluation, `faceverify`, the MLflow model) feeds the same raw pixels.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.tta import TTA


def contrastive_loss(distance: torch.Tensor, same: torch.Tensor, margin: float, pos_margin: float = 0.0,
                     neg_weight: float = 1.0) -> torch.Tensor:
    """Contrastive loss of Hadsell, Chopra & LeCun (2006), averaged over pairs.

    L = y * max(0, d - pos_margin)^2 / 2 + w * (1 - y) * max(0, margin - d)^2 / 2

    with d the Euclidean distance between the two embeddings and y = 1 for a same-person pair,
    y = 0 for a different-person pair: same pairs are pulled together (to within `pos_margin`;
    0 is the original loss), different pairs pushed apart until they are `margin` away, their
    term weighted by w = `neg_weight` (1: the original loss).
    """
    y = same.to(distance.dtype)
    return (y * F.relu(distance - pos_margin).pow(2)
            + neg_weight * (1 - y) * F.relu(margin - distance).pow(2)).mean() / 2


def batch_all_contrastive_loss(emb: torch.Tensor, ids: torch.Tensor, margin: float, pos_margin: float = 0.0,
                               neg_weight: float = 1.0) -> torch.Tensor:
    """Contrastive loss over every pair of a batch's embeddings (B, D) with identity labels (B,).

    The same formula as `contrastive_loss`, with the positive term averaged over all same-identity
    pairs and the negative term over the different-identity pairs still inside the margin (the
    informative ones), so easy negatives do not dilute the gradient; `neg_weight` weights the
    negative term against the positive one.
    """
    d = euclidean_matrix(emb)  # (B, B)
    upper = torch.triu(torch.ones_like(d, dtype=torch.bool), diagonal=1)
    return _pair_terms(d[upper], (ids[:, None] == ids[None, :])[upper], margin, pos_margin, neg_weight)


def cross_contrastive_loss(emb: torch.Tensor, ids: torch.Tensor, memory: torch.Tensor, memory_ids: torch.Tensor,
                           margin: float, pos_margin: float = 0.0, neg_weight: float = 1.0) -> torch.Tensor:
    """`batch_all_contrastive_loss` over every pair of one of a batch's embeddings (B, D) and one of
    `memory`'s (M, D), earlier batches' embeddings held fixed (no gradient flows into them), with their
    identity labels (B,) and (M,)."""
    d = euclidean_matrix(emb, memory)  # (B, M)
    return _pair_terms(d.flatten(), (ids[:, None] == memory_ids[None, :]).flatten(), margin, pos_margin, neg_weight)


def _pair_terms(d: torch.Tensor, same: torch.Tensor, margin: float, pos_margin: float,
                neg_weight: float = 1.0) -> torch.Tensor:
    """(mean positive term + neg_weight * mean active negative term) / 2 of distances d (N,) with
    same-identity flags (N,)."""
    pos = F.relu(d[same] - pos_margin)
    hinge = F.relu(margin - d[~same])
    active = hinge > 0
    pos_term = pos.pow(2).mean() if pos.numel() else d.new_zeros(())
    neg_term = hinge[active].pow(2).mean() if active.any() else d.new_zeros(())
    return (pos_term + neg_weight * neg_term) / 2


def euclidean(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise Euclidean distance (B,) between embeddings a, b (B, D)."""
    return (a - b).pow(2).sum(dim=1).clamp_min(1e-12).sqrt()


def euclidean_matrix(a: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
    """All Euclidean distances (A, B) between the rows of embeddings a (A, D) and b (B, D); b defaults to a."""
    sq_a = a.pow(2).sum(1)
    sq_b, b = (sq_a, a) if b is None else (b.pow(2).sum(1), b)  # one square sum for a alone: the same gradient bits
    return (sq_a[:, None] + sq_b[None, :] - 2 * a @ b.T).clamp_min(1e-12).sqrt()


def _block(c_in: int, c_out: int, k: int, pool: str = "") -> list[nn.Module]:
    """conv -> BN -> ReLU; with a 2x2 max-pool where `pool` says: "first", between the conv and the BN;
    "last", between the BN and the ReLU."""
    maxpool = [nn.MaxPool2d(2)]
    return ([nn.Conv2d(c_in, c_out, k, padding=k // 2, bias=False)] + (maxpool if pool == "first" else [])
            + [nn.BatchNorm2d(c_out)] + (maxpool if pool == "last" else []) + [nn.ReLU(inplace=True)])


class Siamese(nn.Module):
    """Shared CNN branch + embedding head. `forward(x1, x2)` returns the distances (B,).

    arch "compact": four stages of conv3x3-BN-ReLU (one in the first stage, `stage_convs` in each
    stage after it: two by default) + max-pool (width, 2w, 4w, 8w channels), then flatten -> dropout
    -> linear -> embedding. Each stage's
    max-pool sits between its last BN and ReLU: max-pooling and ReLU commute exactly (the same
    outputs, and the same gradients: each value gets its window's gradient or zero either way), and
    the ReLU then touches a quarter of the values. The state dict is that of the order
    conv-BN-ReLU-pool (ReLU and max-pool hold no parameters). With `pool_first`
    each stage's max-pool comes right after its last conv, before that conv's BN and ReLU: the same
    function wherever the BN scale is positive (max-pooling commutes with an increasing map), and
    the BN and ReLU then touch a quarter of the values (on a CPU they, not the convolutions, bound
    the training step).
    With `stem="stride"` the first stage is one 4x4 convolution of stride 2 (the receptive field of
    conv3x3 + 2x2 max-pool) followed by BN and ReLU, with no max-pool: nothing then runs at the full
    input resolution, where the pool stem's first stage makes a small share of the FLOPs and a large
    share of the activations. `pool_first` then applies to the three later stages.
    arch "koch2015": Koch, Zemel & Salakhutdinov (2015) at 105x105: conv 64@10x10, 128@7x7,
    128@4x4, 256@4x4, each with BN + ReLU, max-pool after the first three (before their ReLU, as
    above), then linear -> embedding.
    """

    def __init__(self, arch: str = "compact", in_size: int = 64, width: int = 32, embedding_dim: int = 128,
                 normalize: bool = True, dropout: float = 0.0, pool_first: bool = False, stem: str = "pool",
                 stage_convs: tuple[int, ...] | list[int] = (2, 2, 2)):
        super().__init__()
        self.config = dict(arch=arch, in_size=in_size, width=width, embedding_dim=embedding_dim,
                           normalize=normalize, dropout=dropout)
        if pool_first:  # only when set: checkpoints from before the option rebuild unchanged
            self.config["pool_first"] = True
        if stem != "pool":  # likewise
            self.config["stem"] = stem
        stage_convs = [int(n) for n in stage_convs]
        if len(stage_convs) != 3 or min(stage_convs) < 1:
            raise ValueError(f"stage_convs {stage_convs} must be three numbers >= 1 (the stages after the first)")
        if stage_convs != [2, 2, 2]:  # likewise
            self.config["stage_convs"] = stage_convs
        if stem not in ("pool", "stride"):
            raise ValueError(f"unknown stem {stem!r} (expected 'pool' or 'stride')")
        self.normalize = normalize
        if arch == "compact":
            layers: list[nn.Module] = []
            c_in, side = 1, in_size
            for stage in range(4):
                c_out = width * 2 ** stage
                # one conv at full resolution (it dominates the cost there), stage_convs in each later stage
                for _ in range(stage_convs[stage - 1] - 1 if stage else 0):
                    layers += _block(c_in, c_out, 3)
                    c_in = c_out
                if stage == 0 and stem == "stride":
                    layers += [nn.Conv2d(c_in, c_out, 4, stride=2, padding=1, bias=False), nn.BatchNorm2d(c_out),
                               nn.ReLU(inplace=True)]
                else:
                    layers += _block(c_in, c_out, 3, pool="first" if pool_first else "last")
                c_in, side = c_out, side // 2
        elif arch == "koch2015":
            if pool_first or stem != "pool" or stage_convs != [2, 2, 2]:
                raise ValueError("pool_first, stem and stage_convs apply to arch 'compact' only")
            layers = ([nn.Conv2d(1, 64, 10), nn.BatchNorm2d(64), nn.MaxPool2d(2), nn.ReLU(inplace=True),
                      nn.Conv2d(64, 128, 7), nn.BatchNorm2d(128), nn.MaxPool2d(2), nn.ReLU(inplace=True),
                      nn.Conv2d(128, 128, 4), nn.BatchNorm2d(128), nn.MaxPool2d(2), nn.ReLU(inplace=True),
                      nn.Conv2d(128, 256, 4), nn.BatchNorm2d(256), nn.ReLU(inplace=True)])
            side = ((((in_size - 9) // 2 - 6) // 2 - 3) // 2) - 3
            c_in = 256
        else:
            raise ValueError(f"unknown arch {arch!r} (expected 'compact' or 'koch2015')")
        if side < 1:
            raise ValueError(f"arch {arch!r} needs a larger input than {in_size}x{in_size} (koch2015 is made for 105)")
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(dropout), nn.Linear(c_in * side * side, embedding_dim))

    @classmethod
    def from_params(cls, params) -> "Siamese":
        """The model that `params` (a pipeline.params.Params: `prepare.image_size` and `train.*`) describes."""
        p = params.train
        return cls(p.arch, params.prepare.image_size, p.width, p.embedding_dim, p.normalize, p.dropout, p.pool_first,
                   p.stem, p.stage_convs)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 or float images (B, 1, H, W) in 0..255 -> embeddings (B, D), unit length if `normalize`."""
        x = x.float()
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        std = x.std(dim=(1, 2, 3), keepdim=True).clamp_min(1.0)
        x = ((x - mean) / std).contiguous(memory_format=torch.channels_last)
        e = self.head(self.features(x)).float()
        return F.normalize(e, dim=1) if self.normalize else e

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        e = self.embed(torch.cat([x1, x2]))  # one pass, so batch norm sees both branches alike
        a, b = e.chunk(2)
        return euclidean(a, b)


def build_model(config: dict) -> Siamese:
    """Rebuild a model from the constructor arguments stored in a checkpoint."""
    return Siamese(**config)


@torch.no_grad()
def embed_all(model: Siamese, images: torch.Tensor, tta: TTA, batch_size: int = 512,
              autocast_dtype: torch.dtype | None = None) -> torch.Tensor:
    """Embeddings (N, D) of uint8 images (N, 1, H, W) in eval mode: the mean over the views of `tta` of each
    image's embeddings (renormalised when the model normalises)."""
    model.eval()
    device = next(model.parameters()).device
    out = []
    for start in range(0, len(images), batch_size):
        x = images[start:start + batch_size].to(device)
        with torch.autocast(device.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
            e = sum(model.embed(v) for v in tta.views(x))
        e = e.float()
        out.append(F.normalize(e, dim=1) if model.normalize else e / tta.count)
    return torch.cat(out).cpu()


def load_checkpoint(path) -> tuple[Siamese, dict]:
    """(model in eval mode, checkpoint dict) from a file written by the train stage.

    Loaded with `weights_only=True`: a checkpoint from an untrusted source cannot run code.
    """
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    model = build_model(ckpt["config"])
    model.load_state_dict(ckpt["state_dict"])
    # channels-last weights, as in training: the same embeddings, faster on the CPU than contiguous ones
    return model.to(memory_format=torch.channels_last).eval(), ckpt
