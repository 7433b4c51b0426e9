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
                               neg_weight: float = 1.0, different: torch.Tensor | None = None) -> torch.Tensor:
    """Contrastive loss over every pair of a batch's embeddings (B, D) with identity labels (B,).

    The same formula as `contrastive_loss`, with the positive term averaged over all same-identity
    pairs and the negative term over the pairs known to be different people that are still inside the
    margin (the informative ones), so easy negatives do not dilute the gradient; `neg_weight` weights
    the negative term against the positive one. `different` (B, B) says which two images are known to
    be different people (default: any two of different identities); a pair neither the same nor known
    to differ counts for nothing.
    """
    d = euclidean_matrix(emb)  # (B, B)
    upper = torch.triu(torch.ones_like(d, dtype=torch.bool), diagonal=1)
    same = ids[:, None] == ids[None, :]
    if different is None:
        different = ~same
    return _pair_terms(d[upper], same[upper], different[upper], margin, pos_margin, neg_weight)


def _pair_terms(d: torch.Tensor, same: torch.Tensor, different: torch.Tensor, margin: float, pos_margin: float,
                neg_weight: float = 1.0) -> torch.Tensor:
    """(mean positive term + neg_weight * mean active negative term) / 2 of distances d (N,) with
    same-identity flags (N,) and known-different flags (N,)."""
    pos = F.relu(d[same] - pos_margin)
    hinge = F.relu(margin - d[different & ~same])
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


def _block(c_in: int, c_out: int, pool: bool = False) -> list[nn.Module]:
    """conv3x3 -> BN -> ReLU; with `pool`, a 2x2 max-pool between the BN and the ReLU (max-pooling and
    ReLU commute exactly, and the ReLU then touches a quarter of the values)."""
    return ([nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out)]
            + ([nn.MaxPool2d(2)] if pool else []) + [nn.ReLU(inplace=True)])


# what a checkpoint's config may still name from before these were fixed: only the value built today
FIXED = {"arch": "compact", "normalize": True, "dropout": 0.0, "pool_first": False, "stem": "stride"}


class Siamese(nn.Module):
    """Shared CNN branch + embedding head. `forward(x1, x2)` returns the distances (B,).

    Four stages at `width`, 2w, 4w and 8w channels, each halving the side: the first is one 4x4
    convolution of stride 2 + BN + ReLU (nothing runs at the full input resolution); each later one is
    `stage_convs[k]` conv3x3-BN-ReLU blocks, the last with a 2x2 max-pool. Then flatten -> linear ->
    L2-normalised embedding, so distances lie in [0, 2].
    """

    def __init__(self, in_size: int, width: int, embedding_dim: int, stage_convs: tuple[int, ...] | list[int]):
        super().__init__()
        stage_convs = [int(n) for n in stage_convs]
        if len(stage_convs) != 3 or min(stage_convs) < 1:
            raise ValueError(f"stage_convs {stage_convs} must be three numbers >= 1 (the stages after the first)")
        self.config = dict(in_size=in_size, width=width, embedding_dim=embedding_dim, stage_convs=stage_convs)
        self.normalize = True
        layers: list[nn.Module] = [nn.Conv2d(1, width, 4, stride=2, padding=1, bias=False), nn.BatchNorm2d(width),
                                   nn.ReLU(inplace=True)]
        c_in, side = width, in_size // 2
        for stage in (1, 2, 3):
            c_out = width * 2 ** stage
            for k in range(stage_convs[stage - 1]):
                layers += _block(c_in, c_out, pool=k == stage_convs[stage - 1] - 1)
                c_in = c_out
            side //= 2
        if side < 1:
            raise ValueError(f"the network needs an input of at least 16x16, got {in_size}x{in_size}")
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(c_in * side * side, embedding_dim))

    @classmethod
    def from_params(cls, params) -> "Siamese":
        """The model that `params` (a pipeline.params.Params: `prepare.image_size` and `train.*`) describes."""
        p = params.train
        return cls(params.prepare.image_size, p.width, p.embedding_dim, p.stage_convs)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 or float images (B, 1, H, W) in 0..255 -> unit-length embeddings (B, D)."""
        x = x.float()
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        std = x.std(dim=(1, 2, 3), keepdim=True).clamp_min(1.0)
        x = ((x - mean) / std).contiguous(memory_format=torch.channels_last)
        return F.normalize(self.head(self.features(x)).float(), dim=1)

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        e = self.embed(torch.cat([x1, x2]))  # one pass, so batch norm sees both branches alike
        a, b = e.chunk(2)
        return euclidean(a, b)


def build_model(config: dict) -> Siamese:
    """Rebuild a model from the constructor arguments stored in a checkpoint; a checkpoint of an
    architecture the code no longer builds is an error naming the setting."""
    if "arch" in config:  # the older form: a stem or stage_convs it leaves out meant these
        config = {"stem": "pool", "stage_convs": [2, 2, 2], **config}
    for key, value in FIXED.items():
        found = config.pop(key, value)
        if found != value:
            raise ValueError(f"checkpoint config {key}={found!r}: this version builds {key}={value!r} only "
                             "(commit ea681be builds the other)")
    return Siamese(**config)


def _state_dict(saved: dict) -> dict:
    """A checkpoint's weights under today's names: the head's linear layer was `head.2` behind a dropout."""
    return {k.replace("head.2.", "head.1.", 1) if k.startswith("head.2.") else k: v for k, v in saved.items()}


@torch.no_grad()
def embed_all(model: Siamese, images: torch.Tensor, tta: TTA, batch_size: int = 512,
              autocast_dtype: torch.dtype | None = None) -> torch.Tensor:
    """Embeddings (N, D) of uint8 images (N, 1, H, W) in eval mode: the mean over the views of `tta` of each
    image's embeddings, renormalised."""
    model.eval()
    device = next(model.parameters()).device
    out = []
    for start in range(0, len(images), batch_size):
        x = images[start:start + batch_size].to(device)
        with torch.autocast(device.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
            e = sum(model.embed(v) for v in tta.views(x))
        e = e.float()
        out.append(F.normalize(e, dim=1))
    return torch.cat(out).cpu()


def load_checkpoint(path) -> tuple[Siamese, dict]:
    """(model in eval mode, checkpoint dict) from a file written by the train stage.

    Loaded with `weights_only=True`: a checkpoint from an untrusted source cannot run code.
    """
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    model = build_model(ckpt["config"])
    model.load_state_dict(_state_dict(ckpt["state_dict"]))
    # channels-last weights, as in training: the same embeddings, faster on the CPU than contiguous ones
    return model.to(memory_format=torch.channels_last).eval(), ckpt
