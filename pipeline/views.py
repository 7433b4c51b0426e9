"""LFW's two evaluation protocols ("views") and View 2's folds.

View 1 is for development: train on the pairsDevTrain pairs or the peopleDevTrain people, test on
the 1,000 pairs of pairsDevTest.txt. View 2 is the number the literature reports: pairs.txt's
6,000 pairs in 10 folds of 300 same and 300 different pairs, people.txt the 10 folds' people.
Fold k is scored by a model trained without fold k: without its people (unrestricted), or on the
other nine folds' pairs alone (image-restricted).
"""
from __future__ import annotations

from pathlib import Path

from pipeline import lfw

FOLDS = 10
VIEW2_FILES = ("pairs.txt", "people.txt")


def pair_folds(path: str | Path) -> list[list[lfw.Pair]]:
    """The folds of a View 2 pairs file (header `10<TAB>300`), each in file order."""
    path = Path(path)
    pairs = lfw.parse_pairs(path)  # checks the header's counts and each fold's same-then-different order
    header = path.read_text(encoding="utf-8").split("\n", 1)[0].split()
    if len(header) != 2 or header[0] != str(FOLDS):
        raise lfw.ProtocolError(f"{path}:1: a View 2 pairs file starts with '{FOLDS}<TAB>N', got {' '.join(header)!r}")
    size = len(pairs) // FOLDS
    return [pairs[k * size:(k + 1) * size] for k in range(FOLDS)]


def people_folds(path: str | Path) -> list[dict[str, int]]:
    """[{name: image count}] per fold of people.txt: a line `10`, then per fold its count and that many
    `name<TAB>count` lines. A name listed in two folds is an error."""
    path = Path(path)
    lines = lfw._lines(path)
    if not lines or lines[0].strip() != str(FOLDS):
        raise lfw.ProtocolError(f"{path}:1: a View 2 people file starts with a line '{FOLDS}', got {lines[0] if lines else ''!r}")
    folds: list[dict[str, int]] = []
    seen: dict[str, int] = {}
    k = 1
    for fold in range(FOLDS):
        if k >= len(lines):
            raise lfw.ProtocolError(f"{path}: ends after {fold} of {FOLDS} folds")
        n = lfw._int(lines[k].strip(), path, k + 1, f"fold {fold + 1} people count")
        people: dict[str, int] = {}
        for lineno in range(k + 2, k + 2 + n):
            if lineno - 1 >= len(lines):
                raise lfw.ProtocolError(f"{path}: ends inside fold {fold + 1} ({n} people announced at line {k + 1})")
            fields = lines[lineno - 1].split()
            if len(fields) != 2:
                raise lfw.ProtocolError(f"{path}:{lineno}: expected 'name<TAB>count', got {lines[lineno - 1]!r}")
            if fields[0] in seen:
                raise lfw.ProtocolError(f"{path}:{lineno}: {fields[0]} is already in fold {seen[fields[0]]}")
            seen[fields[0]] = fold + 1
            people[fields[0]] = lfw._int(fields[1], path, lineno, "image count")
        folds.append(people)
        k += n + 1
    if k != len(lines):
        raise lfw.ProtocolError(f"{path}:{k + 1}: {len(lines) - k} lines after the {FOLDS} folds")
    return folds
