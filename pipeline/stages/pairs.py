"""Stage `pairs`: the train, validation and test pair tables, seeded and written to disk.

Reads:  DATA/pairsDevTrain.txt, DATA/pairsDevTest.txt, DATA/peopleDevTrain.txt (View 1) or DATA/pairs.txt,
        DATA/people.txt (View 2, `pairs.protocol: view2`); params `seed`, `pairs.*`.
Writes: OUT/train.tsv, OUT/val.tsv, OUT/test.tsv (columns name1 i1 name2 i2 label; label 1 = same
        person); REPORT (metrics/pairs.json): counts and identity overlaps.

- restricted (LFW's image-restricted protocol): only the official pairsDevTrain pairs, their labels
  and the image files they name; person names are never read. The pairs form a graph over image
  files; whole connected components of it are moved to validation, in a seeded order, until it holds
  about `val_fraction` of the same and of the different pairs. So no image, and no identity that the labels imply, is on both sides;
  the same person may still appear on both sides through images no label links (the report counts it,
  from the names, as an audit that nothing learns from).
- unrestricted: a `val_fraction` of peopleDevTrain identities is held out; balanced pairs are
  drawn from the images of each side's identities. Validation and training people are disjoint.
The test table is exactly pairsDevTest.txt; its people never appear in training or validation.

The validation side (which identities or components are held out, and their pairs) is drawn from
`pairs.split_seed` alone, the training pairs from `seed`: runs of several seeds, or of any other
training params, are scored on the same validation pairs, so their validation AUCs compare.

View 2 (`pairs.protocol: view2`, `pairs.fold: K`): the test table is fold K of pairs.txt (600 pairs);
restricted mode trains on the other nine folds' pairs, unrestricted mode on the other nine folds' people
(people.txt). Validation is carved from that training side as above.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np

from pipeline import files, lfw, views
from pipeline.record import runner
from pipeline.params import PairsParams, flatten, load_params
from pipeline.tables import Row, as_row, write_table

log = logging.getLogger("pipeline.stages.pairs")


def pair_components(pairs: list[lfw.Pair]) -> list[int]:
    """For each pair, the number of its connected component in the graph whose nodes are image files
    and whose edges are the pairs (same or different). Numbered in order of first appearance."""
    parent: dict[tuple[str, int], tuple[str, int]] = {}

    def find(x):
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for p in pairs:
        a, b = find((p.name1, p.i1)), find((p.name2, p.i2))
        if a != b:
            parent[a] = b
    numbers: dict[tuple[str, int], int] = {}
    return [numbers.setdefault(find((p.name1, p.i1)), len(numbers)) for p in pairs]


def split_restricted(pairs: list[lfw.Pair], val_fraction: float, rng: np.random.Generator) -> tuple[list[Row], list[Row]]:
    """(train rows, val rows) from the official training pairs alone: whole components of the pair
    graph go to validation, in a seeded order, each while it keeps the validation same and different
    pairs within `val_fraction` of the official ones (so validation stays about as balanced)."""
    component = pair_components(pairs)
    members: dict[int, list[int]] = {}
    for k, c in enumerate(component):
        members.setdefault(c, []).append(k)
    n_same = sum(p.same for p in pairs)
    target = {True: round(val_fraction * n_same), False: round(val_fraction * (len(pairs) - n_same))}
    taken = {True: 0, False: 0}
    held: set[int] = set()
    for c in rng.permutation(len(members)).tolist():
        counts = {y: sum(pairs[k].same == y for k in members[c]) for y in (True, False)}
        if any(taken[y] + counts[y] > target[y] for y in counts):
            continue
        held.update(members[c])
        taken = {y: taken[y] + counts[y] for y in taken}
        if taken == target:
            break
    train = [as_row(p) for k, p in enumerate(pairs) if k not in held]
    val = [as_row(p) for k, p in enumerate(pairs) if k in held]
    return train, val


def sample_pairs(people: dict[str, int], n: int, rng: np.random.Generator) -> list[Row]:
    """n/2 same and n/2 different pairs from `people` ({name: image count}), no pair of an image with itself."""
    names = sorted(people)
    multi = [name for name in names if people[name] >= 2]
    if not multi or len(names) < 2:
        raise ValueError(f"need >= 2 identities and one with >= 2 images to draw pairs, got {len(names)} identities")
    rows: list[Row] = []
    for _ in range(n // 2):
        name = multi[rng.integers(len(multi))]
        i, j = rng.choice(people[name], size=2, replace=False) + 1
        rows.append((name, int(i), name, int(j), 1))
    for _ in range(n // 2):
        a, b = rng.choice(len(names), size=2, replace=False)
        n1, n2 = names[a], names[b]
        rows.append((n1, int(rng.integers(people[n1])) + 1, n2, int(rng.integers(people[n2])) + 1, 0))
    return rows


def split_unrestricted(people: dict[str, int], p: PairsParams, split_rng: np.random.Generator,
                       train_rng: np.random.Generator) -> tuple[list[Row], list[Row]]:
    """(train rows, val rows): the held-out identities and their pairs from `split_rng` alone, the
    training pairs from `train_rng`, so the validation side does not move with the training draws."""
    names = sorted(people)
    val_ids = set(split_rng.choice(names, size=max(2, round(p.val_fraction * len(names))), replace=False).tolist())
    train_people = {n: c for n, c in people.items() if n not in val_ids}
    val_people = {n: c for n, c in people.items() if n in val_ids}
    val = sample_pairs(val_people, p.n_val_pairs, split_rng)
    return sample_pairs(train_people, p.n_train_pairs, train_rng), val


def identities(rows: list[Row]) -> set[str]:
    return {r[0] for r in rows} | {r[2] for r in rows}


def images(rows: list[Row]) -> set[tuple[str, int]]:
    return {(r[0], r[1]) for r in rows} | {(r[2], r[3]) for r in rows}


def view2_sources(data: Path, fold: int) -> tuple[list[lfw.Pair], list[lfw.Pair], dict[str, int]]:
    """(fold `fold`'s test pairs, the other nine folds' pairs, the other nine folds' people) of View 2.
    A person of the test fold's pairs is never among the training people, whatever people.txt says."""
    folds = views.pair_folds(data / "pairs.txt")
    people_folds = views.people_folds(data / "people.txt")
    test = folds[fold - 1]
    train_pairs = [x for k, f in enumerate(folds) if k != fold - 1 for x in f]
    test_names = {x.name1 for x in test} | {x.name2 for x in test}
    people = {n: c for k, f in enumerate(people_folds) if k != fold - 1 for n, c in f.items() if n not in test_names}
    return test, train_pairs, people


def make_tables(data: Path, p: PairsParams, seed: int) -> tuple[dict[str, list[Row]], dict]:
    """The three tables and their report; pure apart from reading the protocol files. The validation
    side is drawn from `p.split_seed`, the training pairs from `seed`."""
    split_rng = np.random.default_rng([p.split_seed, 0])  # two streams apart even where seed == split_seed
    if p.protocol == "view2":
        test_pairs, train_pairs, train_people = view2_sources(data, p.fold)
        source = f"pairs.txt fold {p.fold}"
    else:
        test_pairs = lfw.parse_pairs(data / "pairsDevTest.txt")
        source = "pairsDevTest.txt"
    test = [as_row(x) for x in test_pairs]
    if p.mode == "restricted":
        pairs = train_pairs if p.protocol == "view2" else lfw.parse_pairs(data / "pairsDevTrain.txt")
        train, val = split_restricted(pairs, p.val_fraction, split_rng)
    else:
        people = train_people if p.protocol == "view2" else lfw.parse_people(data / "peopleDevTrain.txt")
        train, val = split_unrestricted(people, p, split_rng, np.random.default_rng([seed, 1]))
    tables = {"train": train, "val": val, "test": test}
    ids = {k: identities(v) for k, v in tables.items()}
    overlaps = {
        "train_val_shared_people": len(ids["train"] & ids["val"]),
        "train_test_shared_people": len(ids["train"] & ids["test"]),
        "val_test_shared_people": len(ids["val"] & ids["test"]),
        "train_val_shared_images": len(images(train) & images(val)),
    }
    # restricted mode cannot know people its labels do not link: train/val sharing a person is reported there
    must_be_zero = [k for k in overlaps if k != "train_val_shared_people" or p.mode == "unrestricted"]
    for key in must_be_zero:
        if overlaps[key]:
            raise ValueError(f"identity leakage: {key} = {overlaps[key]}")
    for key, rows in tables.items():
        if not any(r[4] for r in rows) or all(r[4] for r in rows):
            raise ValueError(f"the {key} table needs both same and different pairs; got {len(rows)} pairs")
    report = {"mode": p.mode, "protocol": p.protocol, **({"fold": p.fold} if p.protocol == "view2" else {}),
              "test_source": source, **overlaps}
    for key, rows in tables.items():
        report[f"{key}_pairs"] = len(rows)
        report[f"{key}_same"] = sum(r[4] for r in rows)
        report[f"{key}_people"] = len(ids[key])
    return tables, report


def parser() -> argparse.ArgumentParser:
    return runner.parser(__doc__, "data", "out", "report")


def main(argv: list[str] | None = None) -> int:
    return runner.main("pairs", parser(), run, argv)


def run(args, rec) -> None:
    params = load_params(args.params)
    rec.params({"seed": params.seed, **flatten(params.pairs, "pairs.")})
    tables, report = make_tables(args.data, params.pairs, params.seed)
    with files.atomic_dir(args.out) as tmp:
        for key, rows in tables.items():
            write_table(tmp / f"{key}.tsv", rows)
    files.write_metrics(args.report, report, rec)
    log.info("pairs written to %s: %s", args.out, report)


if __name__ == "__main__":
    sys.exit(main())
