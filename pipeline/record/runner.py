"""How every stage runs: its log format, its MLflow record, progress lines, and errors as one line with exit 1.

Record keeping only: nothing here changes a stage's outputs, so no stage lists it as a DVC dependency.
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Callable

from pipeline.record import tracking
from pipeline.files import StageError

log = logging.getLogger("pipeline.record.runner")

# what a stage reports as one line (the message names the file, key or remedy); anything else is a bug
# and keeps its traceback
EXPECTED = (StageError, ValueError, OSError)


def setup_logging(level: int = logging.INFO) -> None:
    """The one log format of every stage's command line."""
    logging.basicConfig(level=level, format="%(asctime)s %(name)s %(levelname)s %(message)s")


def parser(doc: str, *paths: str) -> argparse.ArgumentParser:
    """Every stage's command line: `--params` (params.yaml) and the required paths it reads and writes."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    for name in paths:
        parser.add_argument(f"--{name}", type=Path, required=True)
    return parser


def main(stage: str, parser: argparse.ArgumentParser, body: Callable[[argparse.Namespace, tracking.Recorder], None],
         argv: list[str] | None = None, record: bool = True, level: int = logging.INFO) -> int:
    """Every stage's `main`: parse `argv`, then `body(args, recorder)` as `run` runs it."""
    args = parser.parse_args(argv)
    return run(stage, args.params, lambda rec: body(args, rec), record, level)


def run(stage: str, params_path: str | Path, body: Callable[[tracking.Recorder], None], record: bool = True,
        level: int = logging.INFO) -> int:
    """Run `body(recorder)` as stage `stage`: 0 when it returns, 1 (its error logged in one line, the MLflow
    run marked FAILED) when it raises one of EXPECTED. With `record` False, nothing goes to MLflow."""
    setup_logging(level)
    if not record:
        return _guarded(body, tracking.Recorder(stage))
    with tracking.stage_run(stage, params_path) as rec:
        return _guarded(body, rec)


def _guarded(body, rec: tracking.Recorder) -> int:
    try:
        body(rec)
    except EXPECTED as e:
        log.error("%s", e)
        rec.fail()
        return 1
    return 0


class Progress:
    """A log line about every `every` seconds in a long loop (images/s and the time left), for logs that
    are not a terminal; on a terminal tqdm's bar says the same and this stays silent."""

    def __init__(self, what: str, total: int, unit: str, every: float = 30.0, stream=None):
        self.what, self.total, self.unit, self.every = what, total, unit, every
        stream = stream if stream is not None else sys.stderr
        self.enabled = not (hasattr(stream, "isatty") and stream.isatty())
        self.start = self.last = time.perf_counter()

    def update(self, done: int, **extra) -> None:
        now = time.perf_counter()
        if not self.enabled or now - self.last < self.every or done <= 0:
            return
        self.last = now
        rate = done / (now - self.start)
        left = (self.total - done) / rate if rate else float("inf")
        more = "".join(f"  {k} {v}" for k, v in extra.items())
        log.info("%s: %d/%d %s, %.0f %s/s, %.0f s left%s", self.what, done, self.total, self.unit, rate, self.unit,
                 left, more)
