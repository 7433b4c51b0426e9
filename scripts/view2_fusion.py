"""LFW View 2 of two configurations fused: each fold scored by its two networks together, no retraining.

    python scripts/view2_fusion.py COMMIT_A COMMIT_B [-S k=v] [--a-set k=v] [--b-set k=v] [--write]

A and B are configurations of docs/view2.json, named as `python scripts/view2.py paired` names them
(pipeline commit and overrides; -S for what both ran with). For each fold both finished, the fold
experiments' dvc.lock files name their models and pairs in the DVC cache. The fold's two networks are
fused: each unit embedding with its own test-time views, concatenated and scaled by 1/sqrt(2)
(scripts/fusion.py), so a pair's squared distance is the mean of the two networks' squared distances.
The threshold comes from the fold's validation pairs (`calibrate.criterion` of the configurations) and
scores the fold's 600 test pairs, as the pipeline does for one network. Both configurations must have
validated and tested each fold on the same pairs (the same protocol and `pairs.split_seed`).

Prints, per fold, each network's validation AUC recomputed beside the one its experiment recorded (a
check that the cache holds the runs' models), then the fused one, and the fusion against A and against B
fold by fold (paired: mean difference, standard error, t, wins), all on validation, where a choice is
made; --test adds the test figures.
With --write, the fusion goes to docs/view2_fusion.json, its section of docs/VIEW2.md, README's results
block (a fusion of the committed restricted recipe's seeds) and one MLflow run (tag fusion=2).
Two networks cost twice the training and twice every embedding.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

import experiments_table  # noqa: E402
import view2  # noqa: E402
from fusion import fused  # noqa: E402
from tta_views import distance_scores  # noqa: E402

from pipeline import files  # noqa: E402
from pipeline.data import load_images, load_pairs  # noqa: E402
from pipeline.embedding import pair_distances  # noqa: E402
from pipeline.model import load_checkpoint  # noqa: E402
from pipeline.tta import TTA  # noqa: E402

CACHE: Path | None = None  # DVC 3's md5-named files; None until read from `dvc cache dir`
# what a fold needs from its experiment: the output of its stage, by dvc.lock path
OUTS = {"prepared": "data/prepared", "pairs": "data/pairs", "model": "models/model.pt"}
# recorded single-network figures and those recomputed here may differ in the last digits (CPU kernels)
AGREE = 1e-4


def cached(md5: str) -> Path:
    global CACHE
    if CACHE is None:
        out = subprocess.run(["dvc", "cache", "dir"], cwd=ROOT, capture_output=True, text=True)
        CACHE = Path(out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else ROOT / ".dvc" / "cache") / "files" / "md5"
    return CACHE / md5[:2] / md5[2:]


def fetch_hint(name: str) -> str:
    return (f"`dvc exp pull <remote> {name}` brings it from a remote it was pushed to (`dvc exp push`); "
            "else rerun the fold")


def lock_outs(lock_text: str) -> dict[str, str]:
    """{output path: md5} of every stage output a dvc.lock names."""
    lock = yaml.safe_load(lock_text)
    return {o["path"]: o["md5"] for stage in lock.get("stages", {}).values() for o in stage.get("outs", [])}


def dir_files(md5: str, name: str, path: str) -> dict[str, Path]:
    """{relative path: cache file} of directory output `path` of experiment `name`; missing: an error naming them."""
    manifest = cached(md5)
    if not manifest.exists():
        raise SystemExit(f"experiment {name}: {path} is not in the DVC cache ({os.path.relpath(manifest, ROOT)}); "
                         + fetch_hint(name))
    out = {e["relpath"]: cached(e["md5"]) for e in json.loads(manifest.read_text())}
    missing = [p for p, f in out.items() if not f.exists()]
    if missing:
        raise SystemExit(f"experiment {name}: {path}/{missing[0]} is not in the DVC cache; " + fetch_hint(name))
    return out


def exp_ref(name: str) -> str:
    refs = [r for r in experiments_table.git("for-each-ref", "--format=%(refname)", "refs/exps/").split()
            if r.rsplit("/", 1)[-1] == name]
    if len(refs) != 1:
        raise SystemExit(f"experiment {name}: {'not' if not refs else 'more than once'} among the DVC experiments "
                         f"(`dvc exp show`); its fold cannot be fused"
                         + (f"; one run in another clone comes with `dvc exp pull <remote> {name}`" if not refs else ""))
    return refs[0]


def fold_inputs(name: str) -> dict:
    """The prepared images' and pairs' cache files and the model of fold experiment `name`."""
    outs = lock_outs(experiments_table.git("show", f"{exp_ref(name)}:dvc.lock"))
    absent = [p for p in OUTS.values() if p not in outs]
    if absent:
        raise SystemExit(f"experiment {name}: its dvc.lock names no output {absent[0]}")
    model = cached(outs[OUTS["model"]])
    if not model.exists():
        raise SystemExit(f"experiment {name}: its model is not in the DVC cache ({os.path.relpath(model, ROOT)}); "
                         + fetch_hint(name))
    return {"model": model, **{k: dir_files(outs[OUTS[k]], name, OUTS[k]) for k in ("prepared", "pairs")}}


def linked(tmp: Path, found: dict[str, Path]) -> Path:
    """A new directory under `tmp` of links to cache files under their output names, for the pipeline's loaders."""
    folder = Path(tempfile.mkdtemp(dir=tmp))
    for rel, f in found.items():
        os.symlink(f, folder / rel)
    return folder


def fold_sets(inputs: dict, tmp: Path, loaded: dict) -> tuple:
    """(images, validation PairSet, test PairSet) of one fold experiment's own prepared images and pairs;
    prepared sets already loaded (by the md5 of images.npy) are taken from `loaded`."""
    key = inputs["prepared"]["images.npy"]
    if key not in loaded:
        loaded[key] = load_images(linked(tmp, inputs["prepared"]))
    images, rows = loaded[key]
    pairs_dir = linked(tmp, {r: inputs["pairs"][r] for r in ("val.tsv", "test.tsv")})
    return images, *(load_pairs(pairs_dir / f"{s}.tsv", rows) for s in ("val", "test"))


def fold_distances(model_path: Path, images, sets: tuple) -> list[np.ndarray]:
    """One network's distances of each pair set, with the test-time views its checkpoint names."""
    model, ckpt = load_checkpoint(model_path)
    tta = TTA.of(ckpt)
    return [pair_distances(model, images, s, tta) for s in sets]


def scored(d_val: np.ndarray, val, d_test: np.ndarray, test, criterion: str, target_far: float) -> dict:
    """The View 2 columns of one fold: validation AUC; test accuracy, AUC and EER at the validation threshold."""
    r = distance_scores(d_val, val, d_test, test, criterion, target_far)
    return {"test acc": r["test_accuracy"], "test AUC": r["test_auc"], "test EER": r["test_eer"], "val AUC": r["val_auc"]}


def fuse_fold(single: list[tuple[np.ndarray, np.ndarray]], val, test, criterion: str, target_far: float) -> dict:
    """Fused figures from each network's (validation, test) distances of the same pairs."""
    return scored(fused([v ** 2 for v, _ in single]), val, fused([t ** 2 for _, t in single]), test, criterion, target_far)


def calibration(recs: list[dict]) -> tuple[str, float]:
    crit = {(r["params"].get("calibrate.criterion"), r["params"].get("calibrate.target_far")) for r in recs}
    if len(crit) != 1:
        raise SystemExit(f"the configurations choose their thresholds differently: {sorted(crit, key=str)}")
    return crit.pop()


def fuse(ra: dict, rb: dict, log=print, show_test: bool = True) -> dict:
    """The fusion record of configurations `ra` and `rb` over the folds both finished: per fold the fused
    figures and each network's, all computed here (each network's also checked against its record)."""
    criterion, target_far = calibration([ra, rb])
    folds = sorted(ra["folds"].keys() & rb["folds"].keys(), key=int)
    if not folds:
        raise SystemExit("the two configurations have no finished fold in common")
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        loaded: dict = {}
        for k in folds:
            names = [r["folds"][k]["name"] for r in (ra, rb)]
            inputs = [fold_inputs(n) for n in names]
            for rel in ("val.tsv", "test.tsv"):
                if inputs[0]["pairs"][rel] != inputs[1]["pairs"][rel]:
                    raise SystemExit(f"fold {k}: experiments {names[0]} and {names[1]} have different {rel} "
                                     "(another protocol or pairs.split_seed): their fusion would score no common pairs")
            single, alone = [], {}
            for side, r, name, i in zip("AB", (ra, rb), names, inputs):
                images, val, test = fold_sets(i, Path(tmp), loaded)  # each network on its own prepared images
                dv, dt = fold_distances(i["model"], images, (val, test))
                single.append((dv, dt))
                got, was = scored(dv, val, dt, test, criterion, target_far), r["folds"][k]["metrics"]
                alone[side] = got
                checked = ("val AUC", "test acc") if show_test else ("val AUC",)
                off = [c for c in checked if was.get(c) is not None and abs(got[c] - was[c]) > AGREE]
                log(f"fold {k} {side} ({name}): validation AUC {got['val AUC']:.5f} (recorded {was.get('val AUC')})"
                    + (f", test accuracy {got['test acc']:.4f} (recorded {was.get('test acc')})" if show_test else "")
                    + (f"; WARNING: {', '.join(off)} not as recorded" if off else ""))
            metrics = fuse_fold(single, val, test, criterion, target_far)
            metrics.update({"val AUC A": alone["A"]["val AUC"], "val AUC B": alone["B"]["val AUC"]})
            log(f"fold {k} fused: validation AUC {metrics['val AUC']:.5f}"
                + (f", test accuracy {metrics['test acc']:.4f}, AUC {metrics['test AUC']:.4f}" if show_test else ""))
            out[k] = {"names": names, "metrics": metrics, "alone": alone}
    rec = {"a": {"commit": ra["commit"], "overrides": ra["overrides"]},
           "b": {"commit": rb["commit"], "overrides": rb["overrides"]},
           "mode": ra["params"].get("pairs.mode"), "criterion": criterion, "folds": out}
    return {**rec, "summary": view2.fold_summary(out, view2.FUSION_COLUMNS)}


def comparison(rec: dict, cols: tuple[str, ...] = ("val AUC", "test acc", "test AUC")) -> list[str]:
    """The fusion against each of its networks alone, fold by fold, all figures computed by `fuse`."""
    fusion = {int(k): ("fused", f["metrics"]) for k, f in rec["folds"].items()}
    lines = []
    for side in ("A", "B"):
        r = rec[side.lower()]
        runs = {int(k): (r["commit"], f["alone"][side]) for k, f in rec["folds"].items()}
        lines += ["", f"fusion (B) against {side} = {r['commit']} {view2._sets_text(r['overrides'])}".rstrip()]
        lines += experiments_table.paired_table(runs, fusion, cols, unit="fold")
    return lines


def store(rec: dict) -> list[dict]:
    """docs/view2_fusion.json with `rec` in place of an earlier fusion of the same two configurations."""
    recs = view2.load_fusions()
    recs = [r for r in recs if (r["a"], r["b"]) != (rec["a"], rec["b"])] + [rec]
    files.write_text(view2.FUSIONS, json.dumps(recs, indent=1, ensure_ascii=False) + "\n")
    return recs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a", metavar="COMMIT_A", help="configuration A's pipeline commit, as docs/VIEW2.md names it")
    parser.add_argument("b", metavar="COMMIT_B", help="configuration B's pipeline commit (may be A's)")
    parser.add_argument("-S", "--set", action="append", default=[], metavar="KEY=VALUE", help="an override both ran with")
    parser.add_argument("--a-set", action="append", default=[], metavar="KEY=VALUE", help="an override of A's alone")
    parser.add_argument("--b-set", action="append", default=[], metavar="KEY=VALUE", help="an override of B's alone")
    parser.add_argument("--test", action="store_true", help="also print the test figures (selection reads validation alone)")
    parser.add_argument("--write", action="store_true",
                        help="record it, test figures included, in docs/view2_fusion.json, docs/VIEW2.md and MLflow")
    parser.add_argument("--no-mlflow", action="store_true", help="with --write: not in MLflow")
    args = parser.parse_args(argv)
    common = experiments_table.plain(view2.parse_sets(args.set))
    recs = view2.load_records()
    ra = view2.find_record(recs, args.a, {**common, **experiments_table.plain(view2.parse_sets(args.a_set, "--a-set"))}, "A")
    rb = view2.find_record(recs, args.b, {**common, **experiments_table.plain(view2.parse_sets(args.b_set, "--b-set"))}, "B")
    if ra is rb:
        parser.error("A and B are the same configuration: fusing a network with itself changes nothing")
    show_test = args.test or args.write
    rec = fuse(ra, rb, show_test=show_test)
    s = rec["summary"]
    print(f"fused, {len(rec['folds'])} folds: validation AUC {view2._cell(s['val AUC'])}"
          + (f", test accuracy {view2._cell(s['test acc'])}, AUC {view2._cell(s['test AUC'])}" if show_test else
             " (test figures: --test)"))
    print("\n".join(comparison(rec, ("val AUC", "test acc", "test AUC") if show_test else ("val AUC",))))
    if args.write:
        store(rec)
        files.write_text(view2.OUT, view2.view2_md(recs, view2.load_fusions()))
        print(f"wrote {view2.FUSIONS.relative_to(ROOT)} and {view2.OUT.relative_to(ROOT)}")
        view2.refresh_readme()
        if not args.no_mlflow:
            view2.log_mlflow([view2.fusion_run(rec)])
    return 0


if __name__ == "__main__":
    sys.exit(main())
