"""Which threshold criterion carries over to people the threshold was not chosen on, on validation data only.

    python scripts/threshold_split.py SEED=MODEL [SEED=MODEL ...] [--splits 40]

For each model, trained with `seed: SEED` (MODEL a models/model.pt), the validation table that
the pairs stage draws (params.yaml's `pairs.*`) is cut `--splits` times into two
random halves of its people. The threshold is chosen on the pairs within one half by each of the
calibrate stage's criteria `accuracy` and `eer`, and scored on the pairs within the other half:
people it never saw, as the test people are. The score is the balanced accuracy (the mean of the
same-pair and different-pair accuracies: a half keeps all its people's same pairs but only the
different pairs whose two people fell in it, and the test pairs are balanced), on the half's pairs
as drawn and on its distinct pairs (a person with two images gives one pair, drawn many times).
The test pairs are not read. Reads data/lfw-a and data/prepared (run `dvc repro` first);
unrestricted mode only.
The held-out people are those of params.yaml's `pairs.split_seed` (every seed's); a model
trained before that param existed held out those of its own seed: run the script at its commit.
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "scripts")]

from pipeline import lfw  # noqa: E402
from pipeline.data import load_images  # noqa: E402
from pipeline.metrics import choose_threshold  # noqa: E402
from pipeline.model import load_checkpoint  # noqa: E402
from pipeline.pairs import identities, make_tables  # noqa: E402
from pipeline.tta import TTA  # noqa: E402
from val_draws import Embedded, distinct, model_specs, unrestricted_params  # noqa: E402

CRITERIA = ("accuracy", "eer")


def balanced_accuracy(d: np.ndarray, y: np.ndarray, t: float) -> float:
    same = y.astype(bool)
    return float(((d[same] <= t).mean() + (d[~same] > t).mean()) / 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", help="SEED=PATH of a model trained with that seed")
    parser.add_argument("--splits", type=int, default=40)
    args = parser.parse_args()
    params = unrestricted_params()
    data = ROOT / "data" / "lfw-a"
    images, rows = load_images(ROOT / "data" / "prepared")
    gains = {"as drawn": [], "distinct": []}
    for seed, path in model_specs(args.models):
        model, ckpt = load_checkpoint(path)
        val = make_tables(data, params.pairs, seed)[0]["val"]
        held_out = identities(val)
        people = sorted(held_out)
        score = Embedded(model, images, rows, TTA.of(ckpt), {k for k in rows if k[0] in held_out}).distances
        results = {c: {"as drawn": [], "distinct": [], "threshold": []} for c in CRITERIA}
        for split in range(args.splits):
            half = set(np.random.default_rng([seed, split]).permutation(people)[:len(people) // 2])
            chosen = [r for r in val if r[0] in half and r[2] in half]
            other = [r for r in val if r[0] not in half and r[2] not in half]
            d, y = score(chosen)
            targets = {"as drawn": score(other), "distinct": score(distinct(other))}
            for c in CRITERIA:
                t = choose_threshold(d, y, c)
                results[c]["threshold"].append(t)
                for name, (d_other, y_other) in targets.items():
                    results[c][name].append(balanced_accuracy(d_other, y_other, t))
        print(f"seed {seed} ({path}): {len(people)} validation people, {args.splits} splits into halves")
        for c in CRITERIA:
            r = results[c]
            print(f"  {c:>8}: balanced accuracy on the other half {statistics.mean(r['as drawn']):.4f} "
                  f"(its distinct pairs {statistics.mean(r['distinct']):.4f}); threshold "
                  f"{statistics.mean(r['threshold']):.3f} ± {statistics.stdev(r['threshold']):.3f}")
        for name in gains:
            gains[name].append(statistics.mean(results["eer"][name]) - statistics.mean(results["accuracy"][name]))
    for name, g in gains.items():
        print(f"eer minus accuracy, pairs {name}: " + " / ".join(f"{x:+.4f}" for x in g)
              + f" (mean {statistics.mean(g):+.4f})")


if __name__ == "__main__":
    main()
