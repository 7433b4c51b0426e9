"""Stage `calibrate`: choose the distance threshold on the validation pairs only.

Reads:  MODEL (models/model.pt); PREPARED/images.npy + index.tsv; PAIRS/val.tsv; params `calibrate.*`.
Writes: OUT (metrics/calibrate.json): the threshold, the criterion, and the validation figures at
        that threshold (embedding.validation_scores, the function the train stage validates with).
        No test pair is ever looked at here.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from pipeline import files, runner
from pipeline.data import load_images, load_pairs
from pipeline.embedding import validation_scores
from pipeline.model import load_checkpoint
from pipeline.params import flatten, load_params
from pipeline.tta import TTA

log = logging.getLogger("pipeline.calibrate")


def calibrate(model_path: Path, prepared: Path, val_table: Path, criterion: str, target_far: float) -> dict:
    model, ckpt = load_checkpoint(model_path)
    images, rows = load_images(prepared)
    val = load_pairs(val_table, rows)
    _, scores = validation_scores(model, images, val, TTA.of(ckpt), criterion, target_far)
    threshold = scores.pop("val_threshold")
    return {"criterion": criterion, "target_far": target_far, "threshold": threshold, **scores}


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    for name in ("model", "prepared", "pairs", "out"):
        parser.add_argument(f"--{name}", type=Path, required=True)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)

    def body(rec) -> None:
        params = load_params(args.params)
        p = params.calibrate
        rec.params({"seed": params.seed, **flatten(p, "calibrate.")})
        rec.tags({"model_sha256": files.digest(args.model)})
        result = calibrate(args.model, args.prepared, args.pairs / "val.tsv", p.criterion, p.target_far)
        files.write_metrics(args.out, result, rec)
        rec.artifact(args.out)
        log.info("threshold %.4f (%s): validation accuracy %.4f", result["threshold"], p.criterion, result["val_accuracy"])

    return runner.run("calibrate", args.params, body)


if __name__ == "__main__":
    sys.exit(main())
