"""LFW View 2 of two configurations fused: each fold scored by its two networks together, no retraining.

A and B are configurations of docs/view2.json, named as `view2 paired` names them. For each fold both
finished, each fold experiment's model, prepared images and pairs are read through `dvc.api.open` at the
experiment's commit (a prepared set once, by the md5 the experiment's dvc.lock gives it). The two
networks are fused (`fused`: each unit embedding with its own test-time views, concatenated and scaled by
1/sqrt(2), so a pair's squared distance is the mean of the two networks'); the threshold comes from the
fold's validation pairs (`calibrate.criterion`) and scores its 600 test pairs, as the pipeline does for
one network. Both must have validated and tested each fold on the same pairs. `run` prints each
network's validation AUC recomputed beside its record (a check that the cache holds the runs' models),
the fused one, and the fusion against A and against B fold by fold, on validation (the test figures
when asked for); written, the fusion goes to docs/view2_fusion.json, docs/VIEW2.md and one MLflow run
(tag fusion=2). Two networks cost twice the training and twice every embedding.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import yaml

from pipeline import files
from pipeline.data import load_images, load_pairs
from pipeline.embedding import pair_distances
from pipeline.lab import view2
from pipeline.lab.records import ROOT, cell, git, paired_table, save
from pipeline.metrics import choose_threshold, verification_metrics
from pipeline.model import load_checkpoint
from pipeline.tta import TTA

# what a fold needs from its experiment, by the path the pipeline writes it to
MODEL, PREPARED, PAIRS = "models/model.pt", "data/prepared", "data/pairs"
FILES = (MODEL, f"{PREPARED}/images.npy", f"{PREPARED}/index.tsv", f"{PAIRS}/val.tsv", f"{PAIRS}/test.tsv")
# recorded single-network figures and those recomputed here may differ in the last digits (CPU kernels)
AGREE = 1e-4


# --- a fold's inputs, through DVC's API ------------------------------------------------------------

def exp_ref(name: str) -> str:
    """The Git ref DVC keeps experiment `name` under (`refs/exps/...`)."""
    refs = [r for r in git("for-each-ref", "--format=%(refname)", "refs/exps/").split() if r.rsplit("/", 1)[-1] == name]
    if len(refs) != 1:
        raise SystemExit(f"experiment {name}: {'not' if not refs else 'more than once'} among the DVC experiments "
                         f"(`dvc exp show`); its fold cannot be fused"
                         + (f"; one run in another clone comes with `dvc exp pull <remote> {name}`" if not refs else ""))
    return refs[0]


def open_output(path: str, rev: str):
    """Output file `path` as commit `rev` pinned it, from the DVC cache."""
    import dvc.api
    return dvc.api.open(path, repo=str(ROOT), rev=rev, mode="rb")


def prepared_key(name: str, rev: str) -> str:
    """The md5 that experiment `name`'s dvc.lock (at `rev`) gives its prepared images: folds that share it
    share one prepared set, read once."""
    try:
        outs = yaml.safe_load(git("show", f"{rev}:dvc.lock"))["stages"]["prepare"]["outs"]
        return next(o["md5"] for o in outs if o["path"] == PREPARED)
    except (subprocess.CalledProcessError, TypeError, KeyError, StopIteration):  # no dvc.lock, or no such output
        raise SystemExit(f"experiment {name}: its dvc.lock names no {PREPARED} output of a prepare stage; "
                         "its fold cannot be fused") from None


def fold_files(name: str, tmp: Path, loaded: dict) -> tuple[Path, str]:
    """(a folder under `tmp` holding FILES as fold experiment `name` wrote them, its prepared set's key); the
    prepared images are read into `loaded` under that key, and not copied again where they are there.
    A file missing: an error naming it."""
    rev, folder = exp_ref(name), Path(tempfile.mkdtemp(dir=tmp))
    key = prepared_key(name, rev)
    for path in FILES if key not in loaded else [f for f in FILES if not f.startswith(PREPARED)]:
        (folder / path).parent.mkdir(parents=True, exist_ok=True)
        try:
            with open_output(path, rev) as src, (folder / path).open("wb") as out:
                shutil.copyfileobj(src, out)
        except Exception as e:  # noqa: BLE001 - DVC raises several kinds for an output it cannot find
            raise SystemExit(f"experiment {name}: {path} is not in the DVC cache ({type(e).__name__}); "
                             f"`dvc exp pull <remote> {name}` brings it from a remote it was pushed to "
                             "(`dvc exp push`), else rerun the fold") from None
    if key not in loaded:
        loaded[key] = load_images(folder / PREPARED)
    return folder, key


def fold_sets(folder: Path, key: str, loaded: dict) -> tuple:
    """(images, validation PairSet, test PairSet) of one fold experiment: its prepared set (`loaded[key]`)
    and its own pairs."""
    images, rows = loaded[key]
    return images, *(load_pairs(folder / PAIRS / f"{s}.tsv", rows) for s in ("val", "test"))


# --- scoring ------------------------------------------------------------------------------------

def fused(squared: list[np.ndarray]) -> np.ndarray:
    """Distances of the fused embedding (the unit embeddings concatenated, scaled by 1/sqrt(M)) from each
    of the M networks' squared distances of the same pairs: the root of their mean, in [0, 2]."""
    return np.sqrt(np.mean(squared, axis=0))


def scored(d_val: np.ndarray, val, d_test: np.ndarray, test, criterion: str, target_far: float) -> dict:
    """The View 2 columns of one fold from pair distances: validation AUC; test accuracy, AUC and EER at
    the threshold `criterion` (`calibrate.criterion`) chooses on validation."""
    threshold = choose_threshold(d_val, val.label, criterion, target_far)
    v, t = verification_metrics(d_val, val.label, threshold), verification_metrics(d_test, test.label, threshold)
    return {"test acc": t["accuracy"], "test AUC": t["roc_auc"], "test EER": t["eer"], "val AUC": v["roc_auc"]}


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
    loaded: dict = {}
    for k in folds:
        with tempfile.TemporaryDirectory() as tmp:
            names = [r["folds"][k]["name"] for r in (ra, rb)]
            folders, keys = zip(*(fold_files(n, Path(tmp), loaded) for n in names))
            for rel in ("val.tsv", "test.tsv"):
                if (folders[0] / PAIRS / rel).read_bytes() != (folders[1] / PAIRS / rel).read_bytes():
                    raise SystemExit(f"fold {k}: experiments {names[0]} and {names[1]} have different {rel} "
                                     "(another protocol or pairs.split_seed): their fusion would score no common pairs")
            single, alone = [], {}
            for side, r, name, folder, key in zip("AB", (ra, rb), names, folders, keys):
                images, val, test = fold_sets(folder, key, loaded)  # each network on its own prepared images
                model, ckpt = load_checkpoint(folder / MODEL)  # with the test-time views its checkpoint names
                dv, dt = (pair_distances(model, images, s, TTA.of(ckpt)) for s in (val, test))
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
        lines += ["", f"fusion (B) against {side} = {r['commit']} {view2.sets_text(r['overrides'])}".rstrip()]
        lines += paired_table(runs, fusion, cols, unit="fold")
    return lines


def store(rec: dict) -> list[dict]:
    """docs/view2_fusion.json with `rec` in place of an earlier fusion of the same two configurations."""
    recs = view2.load_fusions()
    recs = [r for r in recs if (r["a"], r["b"]) != (rec["a"], rec["b"])] + [rec]
    save(recs, view2.FUSIONS)
    return recs


def run(ra: dict, rb: dict, show_test: bool = False, write: bool = False, mlflow: bool = True) -> int:
    """`fuse`: prints the fusion of A and B and each against it; `write` records it, test figures included,
    in docs/view2_fusion.json, docs/VIEW2.md and (with `mlflow`) MLflow."""
    if ra is rb:
        raise SystemExit("A and B are the same configuration: fusing a network with itself changes nothing")
    show_test = show_test or write
    rec = fuse(ra, rb, show_test=show_test)
    s = rec["summary"]
    print(f"fused, {len(rec['folds'])} folds: validation AUC {cell(s['val AUC'])}"
          + (f", test accuracy {cell(s['test acc'])}, AUC {cell(s['test AUC'])}" if show_test else " (test figures: --test)"))
    print("\n".join(comparison(rec, ("val AUC", "test acc", "test AUC") if show_test else ("val AUC",))))
    if write:
        store(rec)
        files.write_text(view2.OUT, view2.view2_md(view2.load_records(), view2.load_fusions()))
        print(f"wrote {os.path.relpath(view2.FUSIONS, ROOT)} and {os.path.relpath(view2.OUT, ROOT)}")
        if mlflow:
            view2.log_mlflow([view2.fusion_run(rec)])
    return 0
