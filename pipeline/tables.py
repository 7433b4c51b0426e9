"""The pair-table format: `name1 i1 name2 i2 label` rows, tab-separated under a header line."""
from __future__ import annotations

from pathlib import Path

from pipeline import files, lfw

Row = tuple[str, int, str, int, int]  # name1, i1, name2, i2, label (1 = same person)
HEADER = "name1\ti1\tname2\ti2\tlabel"


def as_row(p: lfw.Pair) -> Row:
    return (p.name1, p.i1, p.name2, p.i2, int(p.same))


def write_table(path: Path, rows: list[Row]) -> None:
    lines = [HEADER] + ["\t".join(map(str, r)) for r in rows]
    files.write_text(path, "\n".join(lines) + "\n")


def read_table(path: str | Path) -> list[Row]:
    """Rows of a table written by write_table; a malformed line is an error naming the file and line."""
    path = Path(path)
    rows = []
    for k, line in enumerate(path.read_text().splitlines()[1:], start=2):
        f = line.split("\t")
        if len(f) != 5:
            raise ValueError(f"{path}:{k}: expected 5 tab-separated fields, got {len(f)}")
        try:
            rows.append((f[0], int(f[1]), f[2], int(f[3]), int(f[4])))
        except ValueError:
            raise ValueError(f"{path}:{k}: image numbers and the label must be integers") from None
    return rows
