"""How often restricted mode's in-batch negatives are one person: a measurement, never a training input.

    python scripts/restricted_negatives.py [--lfw data/lfw-a]

Restricted mode trains on the label classes of the official training pairs (the closure of "labelled
same" and "same image"), and batch-all mining takes two images of different classes as different people:
an assumption the pair labels do not state, since two classes can hold one person whom no label links.
This script reads the names, which training never does, to measure it: for View 1's pairsDevTrain and
each View 2 fold's training side (the other nine folds' pairs), the chance that two distinct classes are
one person, with classes drawn in proportion to their images (`train.identity_weight` linear, the
default) and equally, and the expected number of such class pairs in a batch of `--classes` classes.
"""
from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline import lfw, views  # noqa: E402
from pipeline.data import label_identities  # noqa: E402


def class_persons(pairs: list[lfw.Pair]) -> list[tuple[str, int]]:
    """(person, images) of each label class of `pairs`, the classes built from the labels alone."""
    rows: dict[tuple[str, int], int] = {}
    idx1, idx2, label = [], [], []
    for p in pairs:
        idx1.append(rows.setdefault((p.name1, p.i1), len(rows)))
        idx2.append(rows.setdefault((p.name2, p.i2), len(rows)))
        label.append(int(p.same))
    c1, c2 = label_identities(np.asarray(idx1), np.asarray(idx2), np.asarray(label))
    cls = dict(zip(idx1 + idx2, np.concatenate([c1, c2]).tolist()))  # image row -> class
    person = {row: name for (name, _), row in rows.items()}
    images, who = defaultdict(int), {}
    for row, c in cls.items():
        images[c] += 1
        who[c] = person[row]  # a class is one person: only "same" labels join images
    return [(who[c], images[c]) for c in sorted(images)]


def one_person_chance(classes: list[tuple[str, int]], weighted: bool) -> float:
    """P(two distinct classes are one person), classes drawn in proportion to images or equally."""
    w = defaultdict(list)
    for name, n in classes:
        w[name].append(float(n) if weighted else 1.0)
    total = sum(sum(v) for v in w.values())
    squares = sum(x * x for v in w.values() for x in v)
    same = sum(sum(v) ** 2 for v in w.values()) - squares
    return same / (total ** 2 - squares)


def summary(name: str, pairs: list[lfw.Pair], batch_classes: int) -> str:
    classes = class_persons(pairs)
    lin, eq = one_person_chance(classes, True), one_person_chance(classes, False)
    per_batch = batch_classes * (batch_classes - 1) / 2
    return (f"{name}: {len(pairs)} pairs, {len(classes)} classes of {sum(n for _, n in classes)} images, "
            f"{len({p for p, _ in classes})} people; two classes one person: {lin:.5f} in proportion to images "
            f"({lin * per_batch:.3f} of a batch's {per_batch:.0f} class pairs), {eq:.5f} equally")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lfw", type=Path, default=ROOT / "data" / "lfw-a", help="the download stage's output")
    parser.add_argument("--classes", type=int, default=32, help="classes in a batch (batch_size / per_identity)")
    args = parser.parse_args(argv)
    if not (args.lfw / "pairsDevTrain.txt").exists():
        raise SystemExit(f"{args.lfw}: no pairsDevTrain.txt; run `dvc repro download` first")
    print(summary("View 1 pairsDevTrain", lfw.parse_pairs(args.lfw / "pairsDevTrain.txt"), args.classes), flush=True)
    if (args.lfw / "pairs.txt").exists():
        folds = views.pair_folds(args.lfw / "pairs.txt")
        for k in range(len(folds)):
            train = [p for j, fold in enumerate(folds) if j != k for p in fold]
            print(summary(f"View 2 fold {k + 1}'s training side", train, args.classes), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
