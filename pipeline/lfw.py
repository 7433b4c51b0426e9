"""The LFW protocol files and folder layout: parsing, paths and the official checksums.

Pairs files: a header line ("500" for View 1, "10<TAB>300" for View 2's folds), then per fold
N "same" lines `name<TAB>i<TAB>j` and N "different" lines `name1<TAB>i<TAB>name2<TAB>j`.
Image numbers are 1-based: `name 3` is `lfw2/name/name_0003.jpg`.
People files: a header count, then `name<TAB>count` lines.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

IMAGE_DIR = "lfw2"

# The official MD5s (the ones torchvision's LFW datasets check).
PROTOCOL_MD5 = {
    "pairsDevTrain.txt": "4f27cbf15b2da4a85c1907eb4181ad21",
    "pairsDevTest.txt": "5132f7440eb68cf58910c8a45a2ac10b",
    "pairs.txt": "9f1ba174e4e1c508ff7cdf10ac338a7d",
    "people.txt": "450f0863dd89e85e73936a6d71a3474b",
    "peopleDevTrain.txt": "54eaac34beb6d042ed3a7d883e247a21",
    "peopleDevTest.txt": "e4bf5be0a43b5dcd9dc5ccfcb8fb19c5",
}
# The View 1 files the pipeline needs; the others are kept when present.
REQUIRED = ("pairsDevTrain.txt", "pairsDevTest.txt", "peopleDevTrain.txt", "peopleDevTest.txt")


class ProtocolError(ValueError):
    """A malformed protocol file; the message names the file and line."""


@dataclass(frozen=True)
class Pair:
    name1: str
    i1: int
    name2: str
    i2: int

    @property
    def same(self) -> bool:
        return self.name1 == self.name2


def image_relpath(name: str, i: int) -> str:
    """Path of image number `i` (1-based) of `name`, relative to the dataset root."""
    return f"{IMAGE_DIR}/{name}/{name}_{i:04d}.jpg"


def _int(field: str, path: Path, lineno: int, what: str) -> int:
    try:
        value = int(field)
    except ValueError:
        raise ProtocolError(f"{path}:{lineno}: {what} {field!r} is not an integer") from None
    if value < 1:
        raise ProtocolError(f"{path}:{lineno}: {what} {value} must be >= 1")
    return value


def _lines(path: Path) -> list[str]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ProtocolError(f"{path}: no such file") from None
    except UnicodeDecodeError as e:
        raise ProtocolError(f"{path}: not a UTF-8 text file ({e.reason})") from None
    return [line.rstrip("\r") for line in text.split("\n") if line.strip()]


def parse_pairs_line(line: str, path: Path, lineno: int) -> Pair:
    fields = line.split()
    if len(fields) == 3:
        name, i, j = fields
        return Pair(name, _int(i, path, lineno, "image number"), name, _int(j, path, lineno, "image number"))
    if len(fields) == 4:
        n1, i, n2, j = fields
        return Pair(n1, _int(i, path, lineno, "image number"), n2, _int(j, path, lineno, "image number"))
    raise ProtocolError(f"{path}:{lineno}: expected 3 fields (same) or 4 fields (different), got {len(fields)}: {line!r}")


def parse_pairs(path: str | Path) -> list[Pair]:
    """All pairs of a pairs file, in file order; the header's counts are checked."""
    path = Path(path)
    lines = _lines(path)
    if not lines:
        raise ProtocolError(f"{path}:1: empty file, expected a header line")
    header = lines[0].split()
    if len(header) == 1:
        folds, per_fold = 1, _int(header[0], path, 1, "header count")
    elif len(header) == 2:
        folds, per_fold = _int(header[0], path, 1, "fold count"), _int(header[1], path, 1, "header count")
    else:
        raise ProtocolError(f"{path}:1: header must be 'N' or 'FOLDS<TAB>N', got {lines[0]!r}")
    pairs = [parse_pairs_line(line, path, k + 2) for k, line in enumerate(lines[1:])]
    expected = folds * 2 * per_fold
    if len(pairs) != expected:
        raise ProtocolError(f"{path}:1: header announces {expected} pairs ({folds} x 2 x {per_fold}), file has {len(pairs)}")
    for fold in range(folds):
        for k, pair in enumerate(pairs[fold * 2 * per_fold:(fold + 1) * 2 * per_fold]):
            if pair.same != (k < per_fold):
                lineno = 2 + fold * 2 * per_fold + k
                kind = "same" if k < per_fold else "different"
                raise ProtocolError(f"{path}:{lineno}: expected a {kind}-person pair here, got {lines[lineno - 1]!r}")
    return pairs


def parse_people(path: str | Path) -> dict[str, int]:
    """{name: image count} of a View 1 people file; the header count is checked."""
    path = Path(path)
    lines = _lines(path)
    if not lines:
        raise ProtocolError(f"{path}:1: empty file, expected a header line")
    n = _int(lines[0].strip(), path, 1, "header count")
    people: dict[str, int] = {}
    for k, line in enumerate(lines[1:], start=2):
        fields = line.split()
        if len(fields) != 2:
            raise ProtocolError(f"{path}:{k}: expected 'name<TAB>count', got {line!r}")
        if fields[0] in people:
            raise ProtocolError(f"{path}:{k}: {fields[0]} is listed twice")
        people[fields[0]] = _int(fields[1], path, k, "image count")
    if len(people) != n:
        raise ProtocolError(f"{path}:1: header announces {n} people, file has {len(people)}")
    return people
