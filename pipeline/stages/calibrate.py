"""Stage `calibrate`: choose the distance threshold on the validation pairs only.

Reads:  MODEL (models/model.pt); PREPARED/images.npy + index.tsv; PAIRS/val.tsv; params `calibrate.*`,
        `pairs.mode`.
Writes: OUT (metrics/calibrate.json): the threshold, the criterion, and the validation figures at
        that threshold (embedding.validation_scores, the function the train stage validates with); in
        unrestricted mode also one-shot identification of the validation people (`val_id_*`, every
        prepared image of the people val.tsv names: pipeline/identification.py), the figures a recipe
        for identification is chosen on. No test pair or test person is ever looked at here.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import torch

from pipeline import files
from pipeline.record import runner
from pipeline.data import load_images, load_pairs
from pipeline.embedding import validation_scores
from pipeline.identification import identification, person_numbers
from pipeline.model import embed_all, load_checkpoint
from pipeline.params import flatten, load_params
from pipeline.tables import read_table
from pipeline.tta import TTA

log = logging.getLogger("pipeline.stages.calibrate")


def calibrate(model_path: Path, prepared: Path, val_table: Path, criterion: str, target_far: float,
              by_name: bool = False) -> dict:
    """The threshold and the validation figures; with `by_name` (unrestricted mode) also the one-shot
    identification of the validation people."""
    model, ckpt = load_checkpoint(model_path)
    images, rows = load_images(prepared)
    val = load_pairs(val_table, rows)
    _, scores = validation_scores(model, images, val, TTA.of(ckpt), criterion, target_far)
    threshold = scores.pop("val_threshold")
    out = {"criterion": criterion, "target_far": target_far, "threshold": threshold, **scores}
    if by_name:
        out.update(validation_identification(model, images, rows, val_table, TTA.of(ckpt)))
    return out


def validation_identification(model, images: torch.Tensor, rows: dict, val_table: Path, tta: TTA) -> dict:
    """`val_id_*`: one-shot identification of the people the validation pairs name, over every prepared
    image of theirs (unrestricted mode: validation people are held out whole)."""
    names = {name for n1, _, n2, _, _ in read_table(val_table) for name in (n1, n2)}
    keys = sorted(key for key in rows if key[0] in names)
    emb = embed_all(model, images[torch.tensor([rows[key] for key in keys])], tta).numpy()
    figures, _ = identification(emb, person_numbers([name for name, _ in keys]))
    return {f"val_{k}": v for k, v in figures.items()}


def parser() -> argparse.ArgumentParser:
    return runner.parser(__doc__, "model", "prepared", "pairs", "out")


def main(argv: list[str] | None = None) -> int:
    return runner.main("calibrate", parser(), run, argv)


def run(args, rec) -> None:
    params = load_params(args.params)
    p = params.calibrate
    rec.params({"seed": params.seed, **flatten(p, "calibrate.")})
    rec.tags({"model_sha256": files.digest(args.model)})
    result = calibrate(args.model, args.prepared, args.pairs / "val.tsv", p.criterion, p.target_far,
                       by_name=params.pairs.mode == "unrestricted")
    files.write_metrics(args.out, result, rec)
    rec.artifact(args.out)
    log.info("threshold %.4f (%s): validation accuracy %.4f", result["threshold"], p.criterion, result["val_accuracy"])


if __name__ == "__main__":
    sys.exit(main())
