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

Prints, per fold, each network's validation AUC and test accuracy recomputed beside those its
experiment recorded (a check that the cache holds the runs' models), then the fused figures, and the
fusion against A and against B fold by fold (paired: mean difference, standard error, t, wins).
With --write, the fusion goes to docs/view2_fusion.json, its section of docs/VIEW2.md, README's results
block (a fusion of the committed restricted recipe's seeds) and one MLflow run (tag fusion=2).
Two networks cost twice the training and twice every embedding.
"""
from __future__ import annotations

import argparse
import json
import os
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

from pipeline import files  # noqa: E402
from pipeline.data import load_images, load_pairs  # noqa: E402
from pipeline.embedding import pair_distances  # noqa: E402
from pipeline.metrics import choose_threshold, verification_metrics  # noqa: E402
from pipeline.model import load_checkpoint  # noqa: E402
from pipeline.tta import TTA  # noqa: E402

CACHE = ROOT / ".dvc" / "cache" / "files" / "md5"
# what a fold needs from its experiment: the output of its stage, by dvc.lock path
OUTS = {"prepared": "data/prepared", "pairs": "data/pairs", "model": "models/model.pt"}
# recorded single-network figures and those recomputed here may differ in the last digits (CPU kernels)
AGREE = 1e-4


def cached(md5: str) -> Path:
    return CACHE / md5[:2] / md5[2:]


def lock_outs(lock_text: str) -> dict[str, str]:
    """{output path: md5} of every stage output a dvc.lock names."""
    lock = yaml.safe_load(lock_text)
    return {o["path"]: o["md5"] for stage in lock.get("stages", {}).values() for o in stage.get("outs", [])}


def dir_files(md5: str, where: str) -> dict[str, Path]:
    """{relative path: cache file} of a directory output; a missing cache entry names `where`."""
    manifest = cached(md5)
    if not manifest.exists():
        raise SystemExit(f"{where}: not in the DVC cache ({os.path.relpath(manifest, ROOT)}); "
                         "`dvc pull` it, or rerun the fold")
    out = {e["relpath"]: cached(e["md5"]) for e in json.loads(manifest.read_text())}
    missing = [p for p, f in out.items() if not f.exists()]
    if missing:
        raise SystemExit(f"{where}: {missing[0]} is not in the DVC cache; `dvc pull` it, or rerun the fold")
    return out


def exp_ref(name: str) -> str:
    refs = [r for r in experiments_table.git("for-each-ref", "--format=%(refname)", "refs/exps/").split()
            if r.rsplit("/", 1)[-1] == name]
    if len(refs) != 1:
        raise SystemExit(f"experiment {name}: {'not' if not refs else 'more than once'} among the DVC experiments "
                         "(`dvc exp show`); its fold cannot be fused")
    return refs[0]


def fold_inputs(name: str) -> dict:
    """The prepared images' and pairs' cache files and the model of fold experiment `name`."""
    outs = lock_outs(experiments_table.git("show", f"{exp_ref(name)}:dvc.lock"))
    absent = [p for p in OUTS.values() if p not in outs]
    if absent:
        raise SystemExit(f"experiment {name}: its dvc.lock names no output {absent[0]}")
    model = cached(outs[OUTS["model"]])
    if not model.exists():
        raise SystemExit(f"experiment {name}: its model is not in the DVC cache ({os.path.relpath(model, ROOT)})")
    return {"model": model,
            "prepared": dir_files(outs[OUTS["prepared"]], f"experiment {name}: {OUTS['prepared']}"),
            "pairs": dir_files(outs[OUTS["pairs"]], f"experiment {name}: {OUTS['pairs']}")}


def linked(tmp: Path, found: dict[str, Path]) -> Path:
    """A directory of links to cache files under their output names, for the pipeline's loaders."""
    tmp.mkdir(parents=True, exist_ok=True)
    for rel, f in found.items():
        os.symlink(f, tmp / rel)
    return tmp


def fold_distances(model_path: Path, images, sets: tuple) -> list[np.ndarray]:
    """One network's distances of each pair set, with the test-time views its checkpoint names."""
    model, ckpt = load_checkpoint(model_path)
    tta = TTA.of(ckpt)
    return [pair_distances(model, images, s, tta) for s in sets]


def scored(d_val: np.ndarray, val, d_test: np.ndarray, test, criterion: str, target_far: float) -> dict:
    """The View 2 columns of one fold: validation AUC; test accuracy, AUC and EER at the validation threshold."""
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


def fuse(ra: dict, rb: dict, log=print) -> dict:
    """The fusion record of configurations `ra` and `rb` over the folds both finished."""
    criterion, target_far = calibration([ra, rb])
    folds = sorted(ra["folds"].keys() & rb["folds"].keys(), key=int)
    if not folds:
        raise SystemExit("the two configurations have no finished fold in common")
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        loaded = {}
        for k in folds:
            names = [r["folds"][k]["name"] for r in (ra, rb)]
            inputs = [fold_inputs(n) for n in names]
            for rel in ("val.tsv", "test.tsv"):
                if inputs[0]["pairs"][rel] != inputs[1]["pairs"][rel]:
                    raise SystemExit(f"fold {k}: experiments {names[0]} and {names[1]} have different {rel} "
                                     "(another protocol or pairs.split_seed): their fusion would score no common pairs")
            key = inputs[0]["prepared"]["images.npy"]
            if key not in loaded:
                loaded[key] = load_images(linked(Path(tmp) / f"prepared{len(loaded)}", inputs[0]["prepared"]))
            images, rows = loaded[key]
            pairs_dir = linked(Path(tmp) / f"pairs{k}", {r: inputs[0]["pairs"][r] for r in ("val.tsv", "test.tsv")})
            val, test = (load_pairs(pairs_dir / f"{s}.tsv", rows) for s in ("val", "test"))
            single = [tuple(fold_distances(i["model"], images, (val, test))) for i in inputs]
            for side, r, name, (dv, dt) in zip("AB", (ra, rb), names, single):
                got, was = scored(dv, val, dt, test, criterion, target_far), r["folds"][k]["metrics"]
                off = [c for c in ("val AUC", "test acc") if was.get(c) is not None and abs(got[c] - was[c]) > AGREE]
                log(f"fold {k} {side} ({name}): validation AUC {got['val AUC']:.5f} (recorded {was.get('val AUC')}), "
                    f"test accuracy {got['test acc']:.4f} (recorded {was.get('test acc')})"
                    + (f"; WARNING: {', '.join(off)} differ from the record" if off else ""))
            metrics = fuse_fold(single, val, test, criterion, target_far)
            metrics.update({"val AUC A": ra["folds"][k]["metrics"].get("val AUC"),
                            "val AUC B": rb["folds"][k]["metrics"].get("val AUC")})
            log(f"fold {k} fused: validation AUC {metrics['val AUC']:.5f}, test accuracy {metrics['test acc']:.4f}, "
                f"AUC {metrics['test AUC']:.4f}")
            out[k] = {"names": names, "metrics": metrics}
    rec = {"a": {"commit": ra["commit"], "overrides": ra["overrides"]},
           "b": {"commit": rb["commit"], "overrides": rb["overrides"]},
           "mode": ra["params"].get("pairs.mode"), "criterion": criterion, "folds": out}
    return summarised(rec)


def summarised(rec: dict) -> dict:
    rec["summary"] = {c: view2.mean_se([f["metrics"][c] for f in rec["folds"].values() if f["metrics"].get(c) is not None])
                      for c in view2.FUSION_COLUMNS}
    return rec


def comparison(rec: dict, ra: dict, rb: dict) -> list[str]:
    """The fusion against each of its configurations, fold by fold."""
    fusion = {int(k): ("fused", f["metrics"]) for k, f in rec["folds"].items()}
    lines = []
    for side, r in (("A", ra), ("B", rb)):
        runs = {int(k): (r["commit"], f["metrics"]) for k, f in r["folds"].items()}
        lines += ["", f"fusion (B) against {side} = {r['commit']} {view2._sets_text(r['overrides'])}".rstrip()]
        lines += experiments_table.paired_table(runs, fusion, ("val AUC", "test acc", "test AUC"), unit="fold")
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
    parser.add_argument("--write", action="store_true", help="record it in docs/view2_fusion.json, docs/VIEW2.md and MLflow")
    parser.add_argument("--no-mlflow", action="store_true", help="with --write: not in MLflow")
    args = parser.parse_args(argv)
    common = experiments_table.plain(view2.parse_sets(args.set))
    recs = view2.load_records()
    ra = view2.find_record(recs, args.a, {**common, **experiments_table.plain(view2.parse_sets(args.a_set, "--a-set"))}, "A")
    rb = view2.find_record(recs, args.b, {**common, **experiments_table.plain(view2.parse_sets(args.b_set, "--b-set"))}, "B")
    if ra is rb:
        parser.error("A and B are the same configuration: fusing a network with itself changes nothing")
    rec = fuse(ra, rb)
    s = rec["summary"]
    print(f"fused, {len(rec['folds'])} folds: test accuracy {view2._cell(s['test acc'])}, AUC {view2._cell(s['test AUC'])}, "
          f"validation AUC {view2._cell(s['val AUC'])}")
    print("\n".join(comparison(rec, ra, rb)))
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
