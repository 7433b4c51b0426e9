"""How often restricted mode's in-batch negatives are one person: a measurement, never a training input.

    python scripts/restricted_negatives.py [--lfw data/lfw-a] [--params params.yaml] [--val-fraction 0.1]

Restricted mode trains on the label classes of the official training pairs (the closure of "labelled
same" and "same image"), and batch-all mining takes two images of different classes as different people:
an assumption the pair labels do not state, since two classes can hold one person whom no label links.
This script reads the names, which training never does, to measure it on the training table the `pairs`
stage writes in restricted mode (validation components taken out, `--val-fraction`), for View 1 and for
each View 2 fold: among the classes the identity sampler draws (two images or more), the chance that two
distinct ones are one person, drawn as `train.identity_weight` draws them and equally, and the expected
number of such class pairs, and of wrong image negatives, in a batch of `params.yaml`'s sampler.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.data import label_identities  # noqa: E402
from pipeline.params import load_params  # noqa: E402
from pipeline.pairs import make_tables  # noqa: E402
from pipeline.views import FOLDS  # noqa: E402

WEIGHT = {"equal": lambda n: 1.0, "sqrt": np.sqrt, "linear": float}


def class_persons(rows: list[tuple]) -> list[tuple[str, int]]:
    """(person, images) of each label class of the pair rows (name1, i1, name2, i2, label), the classes
    built from the labels alone, the names kept only to measure."""
    index: dict[tuple[str, int], int] = {}
    idx1, idx2, label = [], [], []
    for n1, i1, n2, i2, y in rows:
        idx1.append(index.setdefault((n1, int(i1)), len(index)))
        idx2.append(index.setdefault((n2, int(i2)), len(index)))
        label.append(int(y))
    c1, c2 = label_identities(np.asarray(idx1), np.asarray(idx2), np.asarray(label))
    cls = dict(zip(idx1 + idx2, np.concatenate([c1, c2]).tolist()))  # image -> class
    person = {k: name for (name, _), k in index.items()}
    images, who = defaultdict(int), {}
    for k, c in cls.items():
        images[c] += 1
        who[c] = person[k]  # one person: only "same" labels join images
    return [(who[c], images[c]) for c in sorted(images)]


def one_person_chance(classes: list[tuple[str, int]], weight: str) -> float:
    """P(two distinct classes are one person) among the classes of two images or more (the identity
    sampler's groups), each drawn with probability in proportion to `weight` of its image count."""
    w = defaultdict(list)
    for name, n in classes:
        if n >= 2:
            w[name].append(WEIGHT[weight](n))
    total = sum(sum(v) for v in w.values())
    squares = sum(x * x for v in w.values() for x in v)
    pairs = total ** 2 - squares
    return (sum(sum(v) ** 2 for v in w.values()) - squares) / pairs if pairs else 0.0  # under two classes: no pair


def summary(name: str, rows: list[tuple], weight: str, p: int, k: int) -> str:
    classes = class_persons(rows)
    groups = [(who, n) for who, n in classes if n >= 2]
    per_person = defaultdict(int)
    for who, _ in groups:
        per_person[who] += 1
    chance, equal = one_person_chance(classes, weight), one_person_chance(classes, "equal")
    pairs = p * (p - 1) / 2
    return (f"{name}: {len(rows)} training pairs, {len(groups)} classes of two images or more (at most "
            f"{max(per_person.values(), default=0)} of one person); two of them one person: {chance:.5f} drawn {weight}, "
            f"{equal:.5f} equally; a batch of {p} classes: about {chance * pairs:.2f} of its {pairs:.0f} class "
            f"pairs, {chance * pairs * k * k:.1f} image negatives")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lfw", type=Path, default=ROOT / "data" / "lfw-a", help="the download stage's output")
    parser.add_argument("--params", type=Path, default=ROOT / "params.yaml")
    parser.add_argument("--val-fraction", type=float, default=0.1,
                        help="pairs.val_fraction of the restricted runs (docs/DECISIONS.md)")
    args = parser.parse_args(argv)
    if not (args.lfw / "pairsDevTrain.txt").exists():
        raise SystemExit(f"{args.lfw}: no pairsDevTrain.txt; run `dvc repro download` first")
    params = load_params(args.params)
    t = params.train
    p = max(1, round(t.identity_fraction * 2 * t.batch_size / t.per_identity))  # pipeline.data.IdentitySampler's P
    base = dataclasses.replace(params.pairs, mode="restricted", val_fraction=args.val_fraction)
    views = [("View 1", dataclasses.replace(base, protocol="view1"))]
    if (args.lfw / "pairs.txt").exists():
        views += [(f"View 2 fold {k}", dataclasses.replace(base, protocol="view2", fold=k)) for k in range(1, FOLDS + 1)]
    for name, pairs in views:
        tables, _ = make_tables(args.lfw, pairs, params.seed)
        print(summary(name, tables["train"], t.identity_weight, p, t.per_identity), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
