"""The prepared image array, pair tables as index arrays, and batch augmentation."""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.tables import read_table


@dataclass(frozen=True)
class PairSet:
    """A pair table resolved to rows of the image array."""
    idx1: np.ndarray  # (P,) row of the first image
    idx2: np.ndarray  # (P,) row of the second image
    label: np.ndarray  # (P,) 1 = same person
    id1: np.ndarray  # (P,) identity number of the first image (for in-batch mining)
    id2: np.ndarray
    # (rows, identity numbers) of the images an identity batch draws from, by row; None: the table's images
    pool: tuple[np.ndarray, np.ndarray] | None = None
    # restricted mode: the pairs of label classes a labelled different pair joins, each as lo * n + hi with
    # n = the number of classes; None: identities by name, any two of which are different people
    links: np.ndarray | None = None

    def different(self, ids: np.ndarray) -> np.ndarray:
        """(B, B) bool: which two of a batch's images (identity numbers `ids`) are known to show different
        people. By name, any two identities; from labels alone, only classes a labelled different pair
        joins (what the labels imply), never two classes no label relates."""
        if self.links is None:
            return ids[:, None] != ids[None, :]
        n = int(max(self.id1.max(), self.id2.max())) + 1
        lo, hi = np.minimum(ids[:, None], ids[None, :]), np.maximum(ids[:, None], ids[None, :])
        return np.isin(lo * n + hi, self.links) & (lo != hi)


def label_identities(idx1: np.ndarray, idx2: np.ndarray, label: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pseudo-identities from pair labels alone (no names): the classes of the equivalence closure
    of "same image" and "labelled same pair", which LFW's image-restricted protocol allows. Two
    classes count as different people only where a labelled different pair joins them (`label_links`)."""
    parent: dict[int, int] = {}

    def find(x: int) -> int:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b, y in zip(idx1.tolist(), idx2.tolist(), label.tolist()):
        ra, rb = find(a), find(b)
        if y and ra != rb:
            parent[ra] = rb
    roots = {}
    ids = [roots.setdefault(find(r), len(roots)) for r in np.concatenate([idx1, idx2]).tolist()]
    ids = np.asarray(ids, dtype=np.int64)
    return ids[:len(idx1)], ids[len(idx1):]


def label_links(id1: np.ndarray, id2: np.ndarray, label: np.ndarray) -> np.ndarray:
    """The class pairs (lo * n + hi, sorted) that a labelled different pair joins: every image of one
    class differs from every image of the other, and nothing more is implied."""
    n = int(max(id1.max(), id2.max())) + 1
    lo, hi = np.minimum(id1, id2)[label == 0], np.maximum(id1, id2)[label == 0]
    return np.unique(lo * n + hi)


def load_images(prepared: str | Path) -> tuple[torch.Tensor, dict[tuple[str, int], int]]:
    """uint8 images (N, 1, H, W) and {(name, number): row}."""
    prepared = Path(prepared)
    images = torch.from_numpy(np.load(prepared / "images.npy")).unsqueeze(1)
    rows = {}
    for k, line in enumerate((prepared / "index.tsv").read_text().splitlines()):
        name, number = line.split("\t")
        rows[(name, int(number))] = k
    return images, rows


def load_pairs(table: str | Path, rows: dict[tuple[str, int], int], by_name: bool = True,
               every_image: bool = False) -> PairSet:
    """Resolve a pairs table against the image index; a missing image is an error naming the line.

    Identity numbers come from the person names (`by_name`, unrestricted mode) or from the pair labels
    alone (restricted mode: label_identities, which reads no name). With `every_image` (by name only)
    the PairSet's `pool` holds every prepared image of the table's people, not only those its pairs name."""
    if every_image and not by_name:
        raise ValueError("every_image needs identities by name (unrestricted mode)")
    idx1, idx2, label, names = [], [], [], {}
    id1, id2 = [], []
    for k, (n1, i1, n2, i2, y) in enumerate(read_table(table), start=2):
        for n, i in ((n1, i1), (n2, i2)):
            if (n, i) not in rows:
                raise ValueError(f"{table}:{k}: image {n} {i} is not among the prepared images")
        idx1.append(rows[(n1, i1)]); idx2.append(rows[(n2, i2)]); label.append(y)
        id1.append(names.setdefault(n1, len(names))); id2.append(names.setdefault(n2, len(names)))
    if not label:
        raise ValueError(f"{table}: no pairs")
    as_array = lambda v: np.asarray(v, dtype=np.int64)  # noqa: E731
    idx1, idx2, label = as_array(idx1), as_array(idx2), as_array(label)
    if by_name:
        pool = None
        if every_image:
            found = sorted((row, names[name]) for (name, _), row in rows.items() if name in names)
            pool = (as_array([r for r, _ in found]), as_array([i for _, i in found]))
        return PairSet(idx1, idx2, label, as_array(id1), as_array(id2), pool)
    id1, id2 = label_identities(idx1, idx2, label)
    return PairSet(idx1, idx2, label, id1, id2, links=label_links(id1, id2, label))


def augment(x: torch.Tensor, gen: torch.Generator, flip: bool, max_rotate_deg: float, max_shift: float,
            max_scale: float) -> torch.Tensor:
    """Random mirror and small affine jitter of float images (B, 1, H, W) in 0..255, drawn from `gen`
    on the CPU wherever `x` lives, so a GPU sees the same augmentation."""
    b = x.shape[0]
    u = torch.rand(b, 5, generator=gen) * 2 - 1  # (B, 5) uniform in [-1, 1]
    angle = u[:, 0] * math.radians(max_rotate_deg)
    scale = 1 + u[:, 1] * max_scale
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    mirror = torch.where(u[:, 4] < 0, -1.0, 1.0) if flip else torch.ones(b)
    theta = torch.stack([
        torch.stack([cos * mirror, -sin, u[:, 2] * max_shift * 2], dim=1),
        torch.stack([sin * mirror, cos, u[:, 3] * max_shift * 2], dim=1),
    ], dim=1)  # (B, 2, 3); shifts in grid units, where the image spans [-1, 1]
    grid = F.affine_grid(theta.to(x.device, x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


class IdentitySampler:
    """Batches of images built from identities ("PxK"), for batch-all mining.

    Each batch of `batch_images` holds `per_identity` (K) images of each of P = batch_images // K
    identities, drawn from the identities with at least two images without replacement, with
    probability in proportion to their image count: a person with many photos, and the variation
    between them, comes back more often (one with 100 images about 50 times as often as one with 2,
    at most once a batch). An identity with fewer than K images repeats them (with different
    augmentation). Where K does not divide the batch, the rest is images drawn uniformly from every
    training image in reshuffled rounds. Everything is drawn from `gen`.
    """

    def __init__(self, pairs: PairSet, batch_images: int, per_identity: int):
        if pairs.pool is not None:
            self.rows, self.ids = pairs.pool
        else:
            rows, first = np.unique(np.concatenate([pairs.idx1, pairs.idx2]), return_index=True)
            self.rows, self.ids = rows, np.concatenate([pairs.id1, pairs.id2])[first]
        order = np.argsort(self.ids, kind="stable")
        _, starts, counts = np.unique(self.ids[order], return_index=True, return_counts=True)
        self.groups = [self.rows[order[s:s + c]] for s, c in zip(starts, counts) if c >= 2]
        if not self.groups:
            raise ValueError("train.sampler 'identities' needs an identity with at least two training images; "
                             "the training pairs have none")
        self.k = per_identity
        self.p = min(len(self.groups), max(1, batch_images // per_identity))
        self.n_fill = batch_images - self.p * self.k
        if self.n_fill < 0:
            raise ValueError(f"train.per_identity {per_identity} is more than a batch holds ({batch_images} images)")
        self.weights = torch.tensor([len(g) for g in self.groups], dtype=torch.float64)
        self._queue: list[int] = []

    def _take(self, n: int, size: int, gen: torch.Generator) -> np.ndarray:
        """n indices into range(size), in reshuffled rounds. An index a new round would repeat within the
        batch waits for the next batch while the round has others left."""
        q = self._queue
        out: list[int] = []
        while len(out) < n:
            if not q:
                q.extend(torch.randperm(size, generator=gen).tolist())
            pick = q.pop()
            if pick in out and any(x not in out for x in q):  # a new round repeated it: keep it for the next batch
                q.insert(0, pick)
                continue
            out.append(pick)
        return np.asarray(out, dtype=np.int64)

    def batch(self, gen: torch.Generator) -> tuple[np.ndarray, np.ndarray]:
        """(rows of the image array, identity numbers) of one batch."""
        rows = []
        for g in torch.multinomial(self.weights, self.p, replacement=False, generator=gen).tolist():
            group = self.groups[g]
            picks = torch.randperm(len(group), generator=gen).numpy()
            rows.append(group[np.resize(picks, self.k)])
        if self.n_fill:
            rows.append(self.rows[self._take(self.n_fill, len(self.rows), gen)])
        rows = np.concatenate(rows)
        return rows, self.ids[np.searchsorted(self.rows, rows)]
