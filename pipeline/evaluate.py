"""Stage `evaluate`: score the official test pairs at the calibrated threshold.

Reads:  MODEL (models/model.pt); THRESHOLD (metrics/calibrate.json); PAIRS_FILE (the official
        data/lfw-a/pairsDevTest.txt) against IMAGES (data/lfw-a/lfw2); for the model card, params.yaml,
        metrics/pairs.json and metrics/train.json.
Writes: METRICS (metrics/evaluate.json): accuracy with its 95% interval, ROC AUC, EER, TAR at 1% FAR,
        confusion counts; PREDICTIONS (results/predictions.csv): one row per pair; PLOTS folder:
        roc.csv (threshold -1 marks the "accept nothing" point), distances.csv (histogram of same and
        different distances) and their PNG renderings; CARD (reports/model_card.md).
In MLflow: the same metrics, these files as artifacts, and the model as a registered pyfunc.

`score_pairs_file` is the one scoring path: `faceverify eval` calls it for any LFW-format pairs
file and image folder.
"""
from __future__ import annotations

import argparse
import csv
import io
import logging
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import yaml

from pipeline import files, lfw, tracking
from pipeline.card import model_card
from pipeline.metrics import roc, verification_metrics
from pipeline.bundle import Scorer, euclidean
from pipeline.prepare import load_image
from pipeline.verifier import Verifier

log = logging.getLogger("pipeline.evaluate")


def image_path(images_dir: Path, name: str, i: int) -> Path:
    """DIR/<name>/<name>_NNNN.jpg (the `lfw2/` part of lfw.image_relpath is the folder given)."""
    return images_dir / Path(lfw.image_relpath(name, i)).relative_to(lfw.IMAGE_DIR)


def pair_images(scorer: Scorer, images_dir: Path, pairs: list[lfw.Pair]) -> tuple[list[tuple[str, int]], np.ndarray]:
    """(keys, uint8 images (N, size, size)) of the distinct images of `pairs`, decoded and preprocessed once,
    on a thread a core (Pillow lets go of the GIL while it decodes and resizes)."""
    keys = sorted({(p.name1, p.i1) for p in pairs} | {(p.name2, p.i2) for p in pairs})
    crop, size = scorer.preprocess["crop"], scorer.preprocess["size"]
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        arrays = list(pool.map(lambda key: load_image(image_path(images_dir, *key), crop, size, strict=False), keys))
    return keys, np.stack(arrays)


def score_pairs(scorer: Scorer, images_dir: Path, pairs: list[lfw.Pair]) -> np.ndarray:
    """Distances (P,) of LFW pairs read from an image folder; each distinct image is decoded and embedded once."""
    keys, images = pair_images(scorer, images_dir, pairs)
    emb = scorer.embed(images)
    first, second = pair_rows(keys, pairs)
    return euclidean(emb[first], emb[second])


def pair_rows(keys: list[tuple[str, int]], pairs: list[lfw.Pair]) -> tuple[list[int], list[int]]:
    """For each pair, the rows of its first and of its second image in `keys` (as pair_images returns them)."""
    row = {k: r for r, k in enumerate(keys)}
    return [row[(p.name1, p.i1)] for p in pairs], [row[(p.name2, p.i2)] for p in pairs]


def score_pairs_file(scorer: Scorer, pairs_file: Path, images_dir: Path):
    """(pairs, distances, labels, metrics at scorer.threshold) of an LFW-format pairs file against an image folder."""
    pairs = lfw.parse_pairs(pairs_file)
    distances = score_pairs(scorer, images_dir, pairs)
    labels = np.array([int(p.same) for p in pairs])
    return pairs, distances, labels, verification_metrics(distances, labels, scorer.threshold)


def histogram(distances: np.ndarray, labels: np.ndarray, bins: int = 40) -> list[dict]:
    edges = np.linspace(0, max(2.0, float(distances.max())), bins + 1)
    same, _ = np.histogram(distances[labels == 1], edges)
    diff, _ = np.histogram(distances[labels == 0], edges)
    return [{"distance": round(float((edges[k] + edges[k + 1]) / 2), 4), "same": int(same[k]), "different": int(diff[k])}
            for k in range(bins)]


def to_csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def write_pngs(plots: Path, fpr, tpr, auc: float, distances, labels, threshold: float) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot(fpr, tpr, label=f"AUC = {auc:.3f}")
    ax.plot([0, 1], [0, 1], "k:", lw=0.8)
    ax.set(xlabel="false accept rate", ylabel="true accept rate", title="ROC, official test pairs")
    ax.legend(loc="lower right")
    with files.atomic_path(plots / "roc.png") as tmp:
        fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(6, 4))
    bins = np.linspace(0, max(2.0, float(distances.max())), 41)
    ax.hist(distances[labels == 1], bins, alpha=0.6, label="same person")
    ax.hist(distances[labels == 0], bins, alpha=0.6, label="different people")
    ax.axvline(threshold, color="k", ls="--", label=f"threshold {threshold:.3f}")
    ax.set(xlabel="embedding distance", ylabel="pairs", title="Distances, official test pairs")
    ax.legend()
    with files.atomic_path(plots / "distances.png") as tmp:
        fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)


# pairs.* params that restricted mode does not read: its pairs are the official ones, split by val_fraction
UNRESTRICTED_ONLY = ("n_train_pairs", "n_val_pairs")


def val_pairs_key(params: dict) -> str:
    """What the validation pairs are drawn from: the seed and every `pairs.*` param the pairs stage
    reads in its mode (it draws them from the fixed protocol files). Validation AUCs compare only
    under the same key. In unrestricted mode n_train_pairs counts too: the training pairs are
    drawn first, from the same random stream."""
    pairs = params["pairs"]
    unread = UNRESTRICTED_ONLY if pairs["mode"] == "restricted" else ()
    return " ".join([f"seed={params['seed']}"] + [f"pairs.{k}={v}" for k, v in sorted(pairs.items()) if k not in unread])


def register(rec: tracking.Recorder, model: Path, threshold: Path, example: tuple[Path, Path], val_auc: float,
             val_pairs: str) -> None:
    """Log the pyfunc model in this stage's run, register it, and move the champion alias on validation AUC
    (only against a champion measured on the same validation pairs)."""
    if not rec.active:
        return
    from pipeline import serving

    def log_and_promote(client):
        with tracking.store_lock():  # parallel experiments: one new version number and one alias move at a time
            with rec.mlflow.start_run(run_id=rec.child_id):
                info = serving.log_model(model, threshold, example, tracking.REGISTERED_MODEL)
            version = str(info.registered_model_version)
            tracking.promote(client, tracking.REGISTERED_MODEL, version, val_auc, val_pairs)
        rec.tags({"registered_model": f"{tracking.REGISTERED_MODEL}/{version}"}, parent_too=True)

    rec.call(log_and_promote, retries=0)  # a retry would register the model twice


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=Path("models/model.pt"))
    parser.add_argument("--threshold", type=Path, default=Path("metrics/calibrate.json"))
    parser.add_argument("--pairs-file", type=Path, default=Path("data/lfw-a/pairsDevTest.txt"))
    parser.add_argument("--images", type=Path, default=Path("data/lfw-a/lfw2"))
    parser.add_argument("--metrics", type=Path, default=Path("metrics/evaluate.json"))
    parser.add_argument("--predictions", type=Path, default=Path("results/predictions.csv"))
    parser.add_argument("--plots", type=Path, default=Path("plots"))
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--pairs-report", type=Path, default=Path("metrics/pairs.json"))
    parser.add_argument("--train-report", type=Path, default=Path("metrics/train.json"))
    parser.add_argument("--card", type=Path, default=Path("reports/model_card.md"))
    args = parser.parse_args(argv)
    tracking.setup_logging()
    with tracking.stage_run("evaluate", args.params) as rec:
        return _main(args, rec)


def _main(args, rec: tracking.Recorder) -> int:
    try:  # every input read, and the card built, before any output is written
        params = yaml.safe_load(Path(args.params).read_text())
        calibration = files.read_calibration(args.threshold)
        threshold = calibration["threshold"]
        pairs_report, train_report = files.read_json(args.pairs_report), files.read_json(args.train_report)
        verifier = Verifier(args.model, threshold)
        pairs, d, y, metrics = score_pairs_file(verifier, args.pairs_file, args.images)
        try:
            card = model_card(params, verifier.ckpt["config"], pairs_report, train_report, calibration, metrics)
        except KeyError as e:
            raise ValueError(f"model card: no key {e} in {args.params}, {args.threshold}, {args.pairs_report} or "
                             f"{args.train_report} (written by an older version of the pipeline? run `dvc repro`)") from None
    except (ValueError, OSError, KeyError, lfw.ProtocolError) as e:
        log.error("%s", e)
        rec.fail()
        return 1
    rec.tags({"model_sha256": files.digest(args.model)})
    rec.params({"seed": params["seed"]})
    files.write_text(args.predictions, to_csv([
        {"name1": p.name1, "i1": p.i1, "name2": p.name2, "i2": p.i2, "label": int(l),
         "distance": round(float(dist), 6), "prediction": int(dist <= threshold)}
        for p, l, dist in zip(pairs, y, d)]))
    fpr, tpr, thr = roc(d, y)
    files.write_text(args.plots / "roc.csv", to_csv([{"fpr": round(float(a), 6), "tpr": round(float(b), 6), "threshold": round(float(t), 6)}
                                                     for a, b, t in zip(fpr, tpr, np.where(np.isfinite(thr), thr, -1.0))]))
    files.write_text(args.plots / "distances.csv", to_csv(histogram(d, y)))
    write_pngs(args.plots, fpr, tpr, metrics["roc_auc"], d, y, threshold)
    tracking.write_metrics(args.metrics, metrics, rec)
    for path in (args.threshold, args.predictions, args.plots / "roc.png", args.plots / "distances.png",
                 args.plots / "roc.csv", args.plots / "distances.csv"):
        rec.artifact(path)
    files.write_text(args.card, card)
    rec.artifact(args.card)
    first = pairs[0]
    example = (image_path(args.images, first.name1, first.i1), image_path(args.images, first.name2, first.i2))
    register(rec, args.model, args.threshold, example, calibration["val_roc_auc"], val_pairs_key(params))
    log.info("test accuracy %.4f [%.4f, %.4f], AUC %.4f, EER %.4f on %d pairs", metrics["accuracy"],
             metrics["accuracy_ci95_low"], metrics["accuracy_ci95_high"], metrics["roc_auc"], metrics["eer"], metrics["n_pairs"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
