"""One-shot identification: one photo of each person enrolled, every other photo recognised against them.

The test people's images are split once, by a fixed seed (`SEED`, the same for every run, so runs
compare on the same gallery): one image of each person goes to the gallery, the person's other
images are probes. A probe's rank is the place of its own person's gallery image among all gallery
images by embedding distance, ties counted against it (an equal distance to another person ranks that
person first), so a constant embedding scores rank 1 for nobody.

- all-way rank-k: the share of probes whose rank is at most k among every test person (the CMC curve);
- N-way (Koch, Zemel & Salakhutdinov 2015): `DRAWS` seeded draws of a probe and N-1 other people,
  one gallery image each; a hit where the probe's own person is strictly nearest;
- open set (the figure a deployment needs): half the people enrolled (seeded), their probes genuine,
  every image of the other half an impostor; the detection and identification rate (DIR) is the share
  of genuine probes whose nearest enrolled person is their own and within the distance at which 1% of
  impostors are accepted.

A research measure of one-shot generalisation on LFW, not a tool to identify people.
"""
from __future__ import annotations

import numpy as np

SEED = 0  # draws the gallery, the N-way trials and the enrolled half; fixed so that runs compare
DRAWS = 20_000  # N-way trials
WAYS = (5, 20, 100)
CMC_RANKS = 50


def split_gallery(people: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(gallery rows, probe rows) of images labelled with person numbers `people` (N,): one image of each
    person, drawn from `rng`, in the gallery (ordered by person), the rest probes."""
    order = np.argsort(people, kind="stable")
    _, starts, counts = np.unique(people[order], return_index=True, return_counts=True)
    picks = starts + (rng.random(len(starts)) * counts).astype(np.int64)
    gallery = order[picks]
    probes = np.setdiff1d(np.arange(len(people)), gallery)
    return gallery, probes


def distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Euclidean distances (A, B) between the rows of embeddings a (A, D) and b (B, D)."""
    sq = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * a @ b.T
    return np.sqrt(np.clip(sq, 0, None))


def ranks(dist: np.ndarray, true_col: np.ndarray) -> np.ndarray:
    """Rank (P,) of each probe's own gallery column in its row of `dist` (P, G): 1 + the columns nearer
    or as near, ties counted against the probe."""
    own = dist[np.arange(len(dist)), true_col][:, None]
    return (dist <= own).sum(1)


def cmc(probe_ranks: np.ndarray, max_rank: int = CMC_RANKS) -> np.ndarray:
    """Share of probes identified within rank k, for k = 1..max_rank."""
    return np.array([(probe_ranks <= k).mean() for k in range(1, max_rank + 1)])


def n_way(dist: np.ndarray, true_col: np.ndarray, n: int, rng: np.random.Generator, draws: int = DRAWS) -> float:
    """Koch-style N-way one-shot accuracy: in each of `draws` trials a probe (a row of `dist`) and N-1 other
    gallery columns, drawn from `rng`; a hit where the probe's own column is strictly nearest."""
    g = dist.shape[1]
    if n > g:
        raise ValueError(f"{n}-way identification needs {n} people with a gallery image; there are {g}")
    if n < 2:
        raise ValueError(f"N-way identification needs N >= 2, got {n}")
    hits = 0
    for p in rng.integers(len(dist), size=draws):
        others = rng.choice(g - 1, size=n - 1, replace=False)
        others += others >= true_col[p]  # skip the probe's own column
        hits += dist[p, true_col[p]] < dist[p, others].min()
    return hits / draws


def open_set_dir(dist: np.ndarray, cols: np.ndarray, probes: np.ndarray, rng: np.random.Generator,
                 far: float = 0.01) -> float:
    """Detection and identification rate at false-alarm rate `far`: distances `dist` (N, G) of every image to
    every gallery image, each image's own gallery column `cols` (N,), the probe rows `probes`; half the
    gallery people enrolled (drawn from `rng`: the larger half of those with a probe, the smaller half of
    the others), the other half's images impostors."""
    g = dist.shape[1]
    with_probe = np.isin(np.arange(g), cols[probes])
    enrolled = np.zeros(g, dtype=bool)
    for group, share in ((np.flatnonzero(with_probe), np.ceil), (np.flatnonzero(~with_probe), np.floor)):
        enrolled[rng.choice(group, size=int(share(len(group) / 2)), replace=False)] = True
    if enrolled.all() or not (enrolled & with_probe).any():
        raise ValueError(f"open-set identification needs 2 people, one with a second image; there are {g}")
    impostors = ~enrolled[cols]
    genuine = np.zeros(len(cols), dtype=bool)
    genuine[probes] = True
    genuine &= enrolled[cols]
    sub = dist[:, enrolled]
    enrolled_cols = np.flatnonzero(enrolled)
    nearest = enrolled_cols[sub.argmin(1)]
    nearest_d = sub.min(1)
    # accept at distance <= t: the largest t that accepts at most `far` of the impostors
    imp = np.sort(nearest_d[impostors])
    allowed = int(np.floor(far * len(imp)))
    t = imp[allowed] if allowed < len(imp) else np.inf  # accepting below imp[allowed] admits `allowed` impostors
    hit = (nearest == cols) & (nearest_d < t)
    return float(hit[genuine].mean())


def identification(emb: np.ndarray, people: np.ndarray, ways=WAYS) -> tuple[dict, np.ndarray]:
    """({metric: value}, CMC curve) of embeddings `emb` (N, D) of the test people's images, person numbers
    `people` (N,). N-way figures for N above the number of people are left out (a tiny test set)."""
    rng = np.random.default_rng(SEED)
    gallery, probes = split_gallery(people, rng)
    if not len(probes):
        raise ValueError("one-shot identification needs a person with two or more images")
    dist = distances(emb, emb[gallery])  # (N, G)
    col_of = {int(p): k for k, p in enumerate(people[gallery])}
    cols = np.array([col_of[int(p)] for p in people])  # each image's own gallery column
    true_col = cols[probes]
    probe_dist = dist[probes]
    r = ranks(probe_dist, true_col)
    curve = cmc(r, min(CMC_RANKS, len(gallery)))
    out = {"id_people": len(gallery), "id_probes": len(probes), "id_rank1": float(curve[0]),
           "id_rank5": float(curve[min(5, len(curve)) - 1])}
    for n in ways:
        if n <= len(gallery):
            out[f"id_{n}way"] = n_way(probe_dist, true_col, n, rng)
    out["id_dir_at_far_1pct"] = open_set_dir(dist, cols, probes, rng)
    return out, curve


def person_numbers(names: list[str]) -> np.ndarray:
    """Person numbers (N,) of images given by their person's name (N,): the distinct names numbered in order."""
    number = {name: k for k, name in enumerate(sorted(set(names)))}
    return np.array([number[name] for name in names])


def n_way_figures(metrics: dict) -> list[tuple[int, float]]:
    """[(N, N-way rank-1)] of a metrics mapping's `id_{N}way` figures, by N."""
    return sorted((int(k[3:-3]), v) for k, v in metrics.items() if k.startswith("id_") and k.endswith("way"))
