"""How much the validation figures of a trained model depend on which validation pairs are drawn.

    python scripts/val_draws.py SEED=MODEL [SEED=MODEL ...] [--draws 5] [--sizes 2000 20000] [--criterion C]

For each model, trained with `seed: SEED` (MODEL a models/model.pt), the people its validation
pairs come from (those of the pairs stage's validation table under params.yaml's
`pairs.*`), and from them `--draws` independent draws of each size in `--sizes`, balanced and
sampled as the pairs stage samples: the ROC AUC of each draw, the threshold it gives by
`--criterion` (default: params.yaml's `calibrate.criterion`, the calibrate stage's choice) and that threshold's accuracy on one more, separate draw of
20,000 pairs. The official test pairs are scored at each threshold too, and never used to choose.
Reads data/lfw-a and data/prepared (run `dvc repro` first); unrestricted mode only.
The held-out people are those of params.yaml's `pairs.split_seed` (every seed's); a model
trained before that param existed held out those of its own seed: run the script at its commit.
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline import lfw  # noqa: E402
from pipeline.data import load_images  # noqa: E402
from pipeline.metrics import choose_threshold  # noqa: E402
from pipeline.model import embed_all, euclidean, load_checkpoint  # noqa: E402
from pipeline.pairs import Row, identities, make_tables, sample_pairs  # noqa: E402
from pipeline.params import load_params  # noqa: E402
from pipeline.tta import TTA  # noqa: E402


class Embedded:
    """A model's embeddings of a set of images, computed once; the distances of any pair table over them."""

    def __init__(self, model, images: torch.Tensor, rows: dict, tta: TTA, keys: set[tuple[str, int]]):
        keys = sorted(keys)
        self.at = {k: j for j, k in enumerate(keys)}
        self.emb = embed_all(model, images[torch.tensor([rows[k] for k in keys])], tta)

    def distances(self, table: list[Row]) -> tuple[np.ndarray, np.ndarray]:
        """(distances, labels) of a pair table."""
        a, b = (torch.tensor([self.at[(r[n], r[n + 1])] for r in table]) for n in (0, 2))
        return euclidean(self.emb[a], self.emb[b]).numpy(), np.array([r[4] for r in table])


def distinct(table: list[Row]) -> list[Row]:
    """The table without repeats of a pair (in either order), first occurrence kept."""
    seen, out = set(), []
    for r in table:
        key = tuple(sorted([(r[0], r[1]), (r[2], r[3])]))
        if key not in seen:
            seen.add(key)
            out.append(r)
    return out


def unrestricted_params():
    """params.yaml, which must draw validation pairs (unrestricted mode)."""
    params = load_params(ROOT / "params.yaml")
    if params.pairs.mode != "unrestricted":
        raise SystemExit("params.yaml: pairs.mode must be 'unrestricted' (restricted mode draws no validation pairs)")
    return params


def model_specs(specs: list[str]) -> list[tuple[int, str]]:
    """(seed, path) of each SEED=PATH argument."""
    out = []
    for spec in specs:
        seed, sep, path = spec.partition("=")
        if not sep or not seed.isdigit():
            raise SystemExit(f"{spec!r}: expected SEED=PATH, e.g. 0=models/model.pt")
        out.append((int(seed), path))
    return out


def accuracy(d: np.ndarray, y: np.ndarray, t: float) -> float:
    return float(((d <= t) == y.astype(bool)).mean())


def spread(values: list[float]) -> str:
    return f"{min(values):.4f} to {max(values):.4f} (mean {statistics.mean(values):.4f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", help="SEED=PATH of a model trained with that seed")
    parser.add_argument("--draws", type=int, default=5)
    parser.add_argument("--sizes", type=int, nargs="+", default=[2000, 20000])
    parser.add_argument("--criterion", choices=["accuracy", "eer", "far"], help="default: params.yaml's calibrate.criterion")
    args = parser.parse_args()
    params = unrestricted_params()
    criterion = args.criterion or params.calibrate.criterion
    data = ROOT / "data" / "lfw-a"
    images, rows = load_images(ROOT / "data" / "prepared")
    people = lfw.parse_people(data / "peopleDevTrain.txt")
    for seed, path in model_specs(args.models):
        model, ckpt = load_checkpoint(path)
        tables, _ = make_tables(data, params.pairs, seed)
        held_out = {n: c for n, c in people.items() if n in identities(tables["val"])}
        # every image of the held-out people and of the test pairs, embedded once for all the draws
        keys = {k for k in rows if k[0] in held_out} | {(r[n], r[n + 1]) for r in tables["test"] for n in (0, 2)}
        score = Embedded(model, images, rows, TTA.of(ckpt), keys).distances
        d_check, y_check = score(sample_pairs(held_out, 20000, np.random.default_rng([seed, 1])))
        d_test, y_test = score(tables["test"])
        same = [r for r in distinct(tables["val"]) if r[4]]
        print(f"seed {seed} ({path}): {len(held_out)} validation people; the validation table's "
              f"{sum(r[4] for r in tables['val']):,} same-person pairs are {len(same):,} distinct pairs of "
              f"{len({s[0] for s in same})} people (the test pairs': {len({r[0] for r in tables['test'] if r[4]})} people); "
              f"test AUC {roc_auc_score(y_test, -d_test):.4f}")
        for k, size in enumerate(args.sizes):
            aucs, check, test = [], [], []
            for draw in range(args.draws):
                d, y = score(sample_pairs(held_out, size, np.random.default_rng([seed, 2, k, draw])))
                t = choose_threshold(d, y, criterion, params.calibrate.target_far)
                aucs.append(float(roc_auc_score(y, -d)))
                check.append(accuracy(d_check, y_check, t))
                test.append(accuracy(d_test, y_test, t))
            print(f"  {args.draws} draws of {size:,} pairs: AUC {spread(aucs)}; their thresholds' accuracy on a "
                  f"separate 20,000-pair draw {spread(check)}, on the test pairs {spread(test)}")


if __name__ == "__main__":
    main()
