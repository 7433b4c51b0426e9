"""Scoring LFW-format pairs files against an image folder: the path of the evaluate stage and `faceverify eval`."""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from pipeline import lfw
from pipeline.bundle import Scorer, euclidean
from pipeline.images import load_image
from pipeline.metrics import verification_metrics


def image_path(images_dir: Path, name: str, i: int) -> Path:
    """DIR/<name>/<name>_NNNN.jpg (the `lfw2/` part of lfw.image_relpath is the folder given)."""
    return images_dir / Path(lfw.image_relpath(name, i)).relative_to(lfw.IMAGE_DIR)


def pair_images(scorer: Scorer, images_dir: Path, pairs: list[lfw.Pair],
                extra=()) -> tuple[list[tuple[str, int]], np.ndarray]:
    """(keys, uint8 images (N, size, size)) of the distinct images of `pairs` and the `extra` (name, number)
    keys, each decoded and preprocessed once."""
    keys = sorted({(p.name1, p.i1) for p in pairs} | {(p.name2, p.i2) for p in pairs} | set(extra))
    return keys, read_images(scorer, images_dir, keys)


def read_images(scorer: Scorer, images_dir: Path, keys: list[tuple[str, int]]) -> np.ndarray:
    """uint8 images (N, size, size) of the (name, number) `keys`, preprocessed as `scorer` wants them, on a
    thread a core (Pillow lets go of the GIL while it decodes and resizes)."""
    crop, size = scorer.preprocess["crop"], scorer.preprocess["size"]
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        arrays = list(pool.map(lambda key: load_image(image_path(images_dir, *key), crop, size, strict=False), keys))
    return np.stack(arrays)


def pair_rows(keys: list[tuple[str, int]], pairs: list[lfw.Pair]) -> tuple[list[int], list[int]]:
    """For each pair, the rows of its first and of its second image in `keys` (as pair_images returns them)."""
    row = {k: r for r, k in enumerate(keys)}
    return [row[(p.name1, p.i1)] for p in pairs], [row[(p.name2, p.i2)] for p in pairs]


def embed_pairs(scorer: Scorer, images_dir: Path, pairs: list[lfw.Pair], extra=()) -> tuple[np.ndarray, dict, np.ndarray]:
    """(distances (P,) of LFW pairs, {key: row}, embeddings) of the pairs' images and the `extra` (name,
    number) keys, read from an image folder; each distinct image is decoded and embedded once."""
    keys, images = pair_images(scorer, images_dir, pairs, extra)
    emb = scorer.embed(images)
    first, second = pair_rows(keys, pairs)
    return euclidean(emb[first], emb[second]), {k: r for r, k in enumerate(keys)}, emb


def score_pairs(scorer: Scorer, images_dir: Path, pairs: list[lfw.Pair]) -> np.ndarray:
    """Distances (P,) of LFW pairs read from an image folder."""
    return embed_pairs(scorer, images_dir, pairs)[0]


def labelled(distances: np.ndarray, pairs: list[lfw.Pair], threshold: float):
    """(distances, labels, metrics at `threshold`) of LFW pairs' distances."""
    labels = np.array([int(p.same) for p in pairs])
    return distances, labels, verification_metrics(distances, labels, threshold)


def score_labelled(scorer: Scorer, images_dir: Path, pairs: list[lfw.Pair]):
    """(distances, labels, metrics at scorer.threshold) of LFW pairs against an image folder."""
    return labelled(score_pairs(scorer, images_dir, pairs), pairs, scorer.threshold)


def score_pairs_file(scorer: Scorer, pairs_file: Path, images_dir: Path):
    """(pairs, distances, labels, metrics at scorer.threshold) of an LFW-format pairs file against an image folder."""
    pairs = lfw.parse_pairs(pairs_file)
    return pairs, *score_labelled(scorer, images_dir, pairs)
