"""Stage `evaluate`: score the official test pairs at the calibrated threshold.

Reads:  MODEL (models/model.pt); THRESHOLD (metrics/calibrate.json); TEST_PAIRS (data/pairs/test.tsv: the
        official pairsDevTest.txt, or a View 2 fold of pairs.txt) against IMAGES (data/lfw-a/lfw2); the test
        people (PEOPLE: peopleDevTest.txt, or the fold's people of people.txt) and every image of theirs; for
        the model card, params.yaml, metrics/pairs.json and metrics/train.json.
Writes: METRICS (metrics/evaluate.json): accuracy with its 95% interval, ROC AUC, EER, TAR at 1% FAR,
        confusion counts, and one-shot identification of the test people (`id_*`, pipeline/identification.py);
        PREDICTIONS (results/predictions.csv): one row per pair; PLOTS folder: roc.csv (threshold -1 marks
        the "accept nothing" point), distances.csv (histogram of same and different distances), cmc.csv
        (identification rate by rank) and their PNG renderings; CARD (reports/model_card.md).
In MLflow: the same metrics, these files as artifacts, and the model as a registered pyfunc
(pipeline/record/registry.py).
"""
from __future__ import annotations

import argparse
import csv
import io
import logging
import sys
from pathlib import Path

import numpy as np

from pipeline import files, lfw, views
from pipeline.record import registry, runner
from pipeline.card import model_card
from pipeline.identification import identification, n_way_figures, person_numbers
from pipeline.metrics import roc
from pipeline.params import load_params
from pipeline.scoring import embed_pairs, image_path, labelled
from pipeline.tables import read_table
from pipeline.verifier import Verifier

log = logging.getLogger("pipeline.stages.evaluate")


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


def write_cmc_png(plots: Path, curve: np.ndarray, people: int) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 4))
    ranks = np.arange(1, len(curve) + 1)
    ax.plot(ranks, curve, marker=".", label=f"rank 1: {curve[0]:.3f}")
    ax.set(xlabel="rank", ylabel="identification rate", ylim=(0, 1),
           title=f"One-shot identification (CMC), {people} test people")
    ax.legend(loc="lower right")
    with files.atomic_path(plots / "cmc.png") as tmp:
        fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)


def test_people(data: Path, protocol: str, fold: int) -> dict[str, int]:
    """{name: image count} of the people the test pairs come from: peopleDevTest.txt, or fold `fold` of people.txt."""
    if protocol == "view2":
        return views.people_folds(data / "people.txt")[fold - 1]
    return lfw.parse_people(data / "peopleDevTest.txt")


def score(verifier: Verifier, images_dir: Path, pairs: list[lfw.Pair], people: dict[str, int]):
    """(distances, labels, verification metrics) of the test pairs and (figures, CMC curve) of one-shot
    identification among every image of the test `people`, from one embedding of each distinct image."""
    keys = [(name, i) for name in sorted(people) for i in range(1, people[name] + 1)]
    d, row, emb = embed_pairs(verifier, images_dir, pairs, keys)
    return labelled(d, pairs, verifier.threshold), identification(emb[[row[k] for k in keys]],
                                                                  person_numbers([name for name, _ in keys]))


def parser() -> argparse.ArgumentParser:
    # --people: the folder of peopleDevTest.txt and people.txt (data/lfw-a)
    return runner.parser(__doc__, "model", "threshold", "test-pairs", "images", "people", "metrics", "predictions", "plots", "pairs-report", "train-report", "card")


def main(argv: list[str] | None = None) -> int:
    return runner.main("evaluate", parser(), run, argv)


def run(args, rec) -> None:
    # every input read, and the card built, before any output is written
    params = load_params(args.params)
    calibration = files.read_calibration(args.threshold)
    threshold = calibration["threshold"]
    pairs_report, train_report = files.read_json(args.pairs_report), files.read_json(args.train_report)
    verifier = Verifier(args.model, threshold)
    pairs = [lfw.Pair(n1, i1, n2, i2) for n1, i1, n2, i2, _ in read_table(args.test_pairs)]
    (d, y, metrics), (ident, curve) = score(verifier, args.images, pairs,
                                            test_people(args.people, params.pairs.protocol, params.pairs.fold))
    metrics.pop("threshold")  # calibrate.json holds it
    metrics.update(ident)
    try:
        card = model_card(params, verifier.ckpt["config"], pairs_report, train_report, calibration, metrics)
    except KeyError as e:
        raise ValueError(f"model card: no key {e} in {args.threshold}, {args.pairs_report} or {args.train_report} "
                         "(written by an older version of the pipeline? run `dvc repro`)") from None
    rec.tags({"model_sha256": files.digest(args.model)})
    rec.params({"seed": params.seed})
    files.write_text(args.predictions, to_csv([
        {"name1": p.name1, "i1": p.i1, "name2": p.name2, "i2": p.i2, "label": int(label),
         "distance": round(float(dist), 6), "prediction": int(dist <= threshold)}
        for p, label, dist in zip(pairs, y, d)]))
    fpr, tpr, thr = roc(d, y)
    files.write_text(args.plots / "roc.csv", to_csv([{"fpr": round(float(a), 6), "tpr": round(float(b), 6), "threshold": round(float(t), 6)}
                                                     for a, b, t in zip(fpr, tpr, np.where(np.isfinite(thr), thr, -1.0))]))
    files.write_text(args.plots / "distances.csv", to_csv(histogram(d, y)))
    files.write_text(args.plots / "cmc.csv", to_csv([{"rank": k + 1, "identification_rate": round(float(v), 6)}
                                                     for k, v in enumerate(curve)]))
    write_pngs(args.plots, fpr, tpr, metrics["roc_auc"], d, y, threshold)
    write_cmc_png(args.plots, curve, ident["id_people"])
    files.write_metrics(args.metrics, metrics, rec)
    files.write_text(args.card, card)
    for path in (args.threshold, args.predictions, args.plots / "roc.csv", args.plots / "distances.csv",
                 args.plots / "cmc.csv"):
        rec.artifact(path)
    for path in (args.plots / "roc.png", args.plots / "distances.png", args.plots / "cmc.png", args.card):  # what a reader of the parent wants
        rec.artifact(path, parent_too=True)
    first = pairs[0]
    example = (image_path(args.images, first.name1, first.i1), image_path(args.images, first.name2, first.i2))
    registry.register(rec, args.model, args.threshold, example, calibration["val_roc_auc"], registry.val_pairs_key(params))
    log.info("test accuracy %.4f [%.4f, %.4f], AUC %.4f, EER %.4f on %d pairs", metrics["accuracy"],
             metrics["accuracy_ci95_low"], metrics["accuracy_ci95_high"], metrics["roc_auc"], metrics["eer"], metrics["n_pairs"])
    log.info("one-shot identification of %d people: rank-1 %.4f, rank-5 %.4f, %s", ident["id_people"], ident["id_rank1"],
             ident["id_rank5"], ", ".join(f"{n}-way {v:.4f}" for n, v in n_way_figures(ident)))


if __name__ == "__main__":
    sys.exit(main())
