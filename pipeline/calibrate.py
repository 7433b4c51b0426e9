"""Stage `calibrate`: choose the distance threshold on the validation pairs only.

Reads:  MODEL (models/model.pt); PREPARED/images.npy + index.tsv; PAIRS/val.tsv; params `calibrate.*`.
Writes: OUT (metrics/calibrate.json): the threshold, the criterion, and the validation metrics
        at that threshold. No test pair is ever looked at here.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from pipeline import files, tracking
from pipeline.data import load_images, load_pairs
from pipeline.metrics import choose_threshold, verification_metrics
from pipeline.model import load_checkpoint
from pipeline.params import flatten, load_params
from pipeline.train import pair_distances

log = logging.getLogger("pipeline.calibrate")


def calibrate(model_path: Path, prepared: Path, val_table: Path, criterion: str, target_far: float) -> dict:
    model, ckpt = load_checkpoint(model_path)
    images, rows = load_images(prepared)
    val = load_pairs(val_table, rows)
    d = pair_distances(model, images, val, ckpt["tta_flip"], dtype=None)
    threshold = choose_threshold(d, val.label, criterion, target_far)
    return {"criterion": criterion, "target_far": target_far, **{f"val_{k}": v for k, v in verification_metrics(d, val.label, threshold).items()},
            "threshold": threshold}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--model", type=Path, default=Path("models/model.pt"))
    parser.add_argument("--prepared", type=Path, default=Path("data/prepared"))
    parser.add_argument("--pairs", type=Path, default=Path("data/pairs"))
    parser.add_argument("--out", type=Path, default=Path("metrics/calibrate.json"))
    args = parser.parse_args(argv)
    tracking.setup_logging()
    with tracking.stage_run("calibrate", args.params) as rec:
        try:
            params = load_params(args.params)
            p = params.calibrate
            rec.params({"seed": params.seed, **flatten(p, "calibrate.")})
            rec.tags({"model_sha256": files.digest(args.model)})
            result = calibrate(args.model, args.prepared, args.pairs / "val.tsv", p.criterion, p.target_far)
        except (ValueError, OSError) as e:
            log.error("%s", e)
            rec.fail()
            return 1
        tracking.write_metrics(args.out, result, rec)
        rec.artifact(args.out)
    log.info("threshold %.4f (%s): validation accuracy %.4f", result["threshold"], p.criterion, result["val_accuracy"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
