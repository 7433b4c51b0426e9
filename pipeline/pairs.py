"""Stage `pairs`: the train, validation and test pair tables, seeded and written to disk.

Reads:  DATA/pairsDevTrain.txt, DATA/pairsDevTest.txt, DATA/peopleDevTrain.txt, DATA/peopleDevTest.txt;
        params `seed`, `pairs.*`.
Writes: OUT/train.tsv, OUT/val.tsv, OUT/test.tsv (columns name1 i1 name2 i2 label; label 1 = same
        person); REPORT (metrics/pairs.json): counts and identity overlaps (all zero).

Validation identities are carved out of the training identities by person, so early stopping
and the threshold never see a test identity, and training never sees a validation identity.
- restricted: only the official pairsDevTrain pairs. Validation pairs are drawn from them
  (balanced), their people become the validation identities, and a training pair that touches
  one of those people moves to validation (both people held out) or is dropped (one of them).
- unrestricted: a `val_fraction` of peopleDevTrain identities is held out; balanced pairs are
  drawn from the images of each side's identities.
The test table is exactly pairsDevTest.txt.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np

from pipeline import files, lfw, tracking
from pipeline.params import PairsParams, flatten, load_params

log = logging.getLogger("pipeline.pairs")

Row = tuple[str, int, str, int, int]  # name1, i1, name2, i2, label


def as_row(p: lfw.Pair) -> Row:
    return (p.name1, p.i1, p.name2, p.i2, int(p.same))


def split_restricted(pairs: list[lfw.Pair], val_fraction: float, rng: np.random.Generator) -> tuple[list[Row], list[Row], int]:
    """(train rows, val rows, dropped count) from the official training pairs alone."""
    order = rng.permutation(len(pairs))
    n_val_each = max(1, round(val_fraction * len(pairs) / 2))
    val_ids: set[str] = set()
    taken = {True: 0, False: 0}
    for k in order:
        p = pairs[k]
        if taken[p.same] < n_val_each:
            taken[p.same] += 1
            val_ids.update((p.name1, p.name2))
    train, val, dropped = [], [], 0
    for p in pairs:
        held = (p.name1 in val_ids) + (p.name2 in val_ids)
        if held == 0:
            train.append(as_row(p))
        elif held == 2:
            val.append(as_row(p))
        else:
            dropped += 1
    return train, val, dropped


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


def split_unrestricted(people: dict[str, int], p: PairsParams, rng: np.random.Generator) -> tuple[list[Row], list[Row]]:
    names = sorted(people)
    val_ids = set(rng.choice(names, size=max(2, round(p.val_fraction * len(names))), replace=False).tolist())
    train_people = {n: c for n, c in people.items() if n not in val_ids}
    val_people = {n: c for n, c in people.items() if n in val_ids}
    return sample_pairs(train_people, p.n_train_pairs, rng), sample_pairs(val_people, p.n_val_pairs, rng)


def identities(rows: list[Row]) -> set[str]:
    return {r[0] for r in rows} | {r[2] for r in rows}


def make_tables(data: Path, p: PairsParams, seed: int) -> tuple[dict[str, list[Row]], dict]:
    """The three tables and their report; pure apart from reading the protocol files."""
    rng = np.random.default_rng(seed)
    test = [as_row(x) for x in lfw.parse_pairs(data / "pairsDevTest.txt")]
    dropped = 0
    if p.mode == "restricted":
        train, val, dropped = split_restricted(lfw.parse_pairs(data / "pairsDevTrain.txt"), p.val_fraction, rng)
    else:
        train, val = split_unrestricted(lfw.parse_people(data / "peopleDevTrain.txt"), p, rng)
    tables = {"train": train, "val": val, "test": test}
    ids = {k: identities(v) for k, v in tables.items()}
    overlaps = {
        "train_val_shared_people": len(ids["train"] & ids["val"]),
        "train_test_shared_people": len(ids["train"] & ids["test"]),
        "val_test_shared_people": len(ids["val"] & ids["test"]),
    }
    for key, n in overlaps.items():
        if n:
            raise ValueError(f"identity leakage: {key} = {n}")
    for key, rows in tables.items():
        if not any(r[4] for r in rows) or all(r[4] for r in rows):
            raise ValueError(f"the {key} table needs both same and different pairs; got {len(rows)} pairs")
    report = {"mode": p.mode, "dropped_pairs": dropped, **overlaps}
    for key, rows in tables.items():
        report[f"{key}_pairs"] = len(rows)
        report[f"{key}_same"] = sum(r[4] for r in rows)
        report[f"{key}_people"] = len(ids[key])
    return tables, report


def write_table(path: Path, rows: list[Row]) -> None:
    lines = ["name1\ti1\tname2\ti2\tlabel"] + ["\t".join(map(str, r)) for r in rows]
    files.write_text(path, "\n".join(lines) + "\n")


def read_table(path: str | Path) -> list[Row]:
    """Rows of a table written by write_table."""
    path = Path(path)
    rows = []
    for k, line in enumerate(path.read_text().splitlines()[1:], start=2):
        f = line.split("\t")
        if len(f) != 5:
            raise ValueError(f"{path}:{k}: expected 5 tab-separated fields, got {len(f)}")
        rows.append((f[0], int(f[1]), f[2], int(f[3]), int(f[4])))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--data", type=Path, default=Path("data/lfw-a"))
    parser.add_argument("--out", type=Path, default=Path("data/pairs"))
    parser.add_argument("--report", type=Path, default=Path("metrics/pairs.json"))
    args = parser.parse_args(argv)
    tracking.setup_logging()
    with tracking.stage_run("pairs", args.params) as rec:
        try:
            params = load_params(args.params)
            rec.params({"seed": params.seed, **flatten(params.pairs, "pairs.")})
            tables, report = make_tables(args.data, params.pairs, params.seed)
        except (ValueError, lfw.ProtocolError) as e:
            log.error("%s", e)
            rec.fail()
            return 1
        with files.atomic_dir(args.out) as tmp:
            for key, rows in tables.items():
                write_table(tmp / f"{key}.tsv", rows)
        tracking.write_metrics(args.report, report, rec)
    log.info("pairs written to %s: %s", args.out, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
