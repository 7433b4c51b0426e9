"""`faceverify`: verify a pair of face images, or score an LFW-format pairs file, with a trained model.

    faceverify verify A.jpg B.jpg [--model MODEL] [--json]
    faceverify eval --pairs PAIRS --images DIR [--model MODEL] --out OUT.json

MODEL is, by default, the pipeline's model in this workspace: models/faceverify.npz (written by the
export stage; scored with NumPy alone, so `verify` answers in well under a second) when it was
exported from the current models/model.pt, else models/model.pt with the threshold in
metrics/calibrate.json. It can also be a bundle (.npz), a checkpoint path (with --threshold, or a
metrics/calibrate.json beside the workspace), or an MLflow model URI (`models:/faceverify@champion`,
`runs:/<run id>/model`). Inputs should be aligned, centred faces like LFW-a's; any size, colour
mode and common format is accepted, and the model's own crop and resize are applied.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

from pipeline import files

# the workspace's outputs of the train, export and calibrate stages (tests/test_dvc_yaml.py checks them against dvc.yaml)
DEFAULT_MODEL = "models/model.pt"
DEFAULT_BUNDLE = "models/faceverify.npz"
DEFAULT_THRESHOLD = "metrics/calibrate.json"


class UserError(Exception):
    """A problem to report in one line."""


def default_model() -> str:
    """The workspace's bundle if it was exported from the workspace's checkpoint, else the checkpoint."""
    bundle, checkpoint = Path(DEFAULT_BUNDLE), Path(DEFAULT_MODEL)
    if not bundle.is_file():
        return DEFAULT_MODEL
    if checkpoint.is_file():
        import numpy as np
        try:
            with np.load(bundle, allow_pickle=False) as z:
                made_from = json.loads(str(z["meta"]))["checkpoint_sha256"]
        except Exception:  # noqa: BLE001 - an unreadable bundle: the checkpoint still answers
            made_from = None
        if made_from != files.digest(checkpoint):
            print(f"faceverify: note: {DEFAULT_BUNDLE} is not from the current {DEFAULT_MODEL} (run `dvc repro`); "
                  f"using {DEFAULT_MODEL}", file=sys.stderr)
            return DEFAULT_MODEL
    return DEFAULT_BUNDLE


def load_verifier(model: str | None, threshold: float | None):
    """(model, bundle.Scorer) for a bundle, a workspace checkpoint or an MLflow model URI; `threshold`, when
    given, replaces the model's calibrated one."""
    model = model or default_model()
    verifier = _load(model, threshold)
    if threshold is not None:
        verifier.threshold = threshold
    return model, verifier


def _load(model: str, threshold: float | None):
    """The scorer of `model`; a checkpoint takes `threshold`, or without one the workspace's calibrated threshold."""
    if "://" in model or model.startswith(("models:/", "runs:/")):
        os.environ.setdefault("MLFLOW_SKIP_PIP_REQUIREMENTS_CHECK", "true")
        import mlflow.pyfunc
        from pipeline.store import tracking_uri
        mlflow.set_tracking_uri(tracking_uri())
        try:
            return mlflow.pyfunc.load_model(model).unwrap_python_model().verifier
        except Exception as e:  # noqa: BLE001
            raise UserError(f"cannot load MLflow model {model}: {str(e).splitlines()[0]}") from None
    path = Path(model)
    if not path.is_file():
        hint = " (run `dvc repro` first to train one)" if model == DEFAULT_MODEL else ""
        raise UserError(f"{model}: no such model file{hint}")
    if path.suffix == ".npz":
        from pipeline.bundle import Bundle
        try:
            return Bundle(path)
        except Exception as e:  # noqa: BLE001 - a file that is not one of our bundles
            raise UserError(f"{model}: not a faceverify bundle ({type(e).__name__}: {str(e).splitlines()[0]})") from None
    if threshold is None:
        calib = Path(DEFAULT_THRESHOLD)
        if not calib.is_file():
            raise UserError(f"{model}: no threshold given and no {DEFAULT_THRESHOLD} here; pass --threshold")
        try:
            threshold = files.read_calibration(calib)["threshold"]
        except (ValueError, OSError) as e:  # each names the file
            raise UserError(str(e)) from None
    from pipeline.verifier import Verifier
    try:
        return Verifier(path, threshold)
    except Exception as e:  # noqa: BLE001 - a file that is not one of our checkpoints
        raise UserError(f"{model}: not a faceverify checkpoint ({type(e).__name__}: {str(e).splitlines()[0]})") from None


def open_image(path: str):
    from PIL import Image, UnidentifiedImageError
    try:
        img = Image.open(path)
        img.load()
        return img
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except (UnidentifiedImageError, OSError) as e:
        raise UserError(f"{path}: not a readable image ({e})") from None


def cmd_verify(args) -> int:
    model, verifier = load_verifier(args.model, args.threshold)
    d = float(verifier.distances([open_image(args.image1)], [open_image(args.image2)])[0])
    same = d <= verifier.threshold
    result = {"image1": args.image1, "image2": args.image2, "same": bool(same), "distance": d,
              "threshold": verifier.threshold, "model": model}
    if args.json:
        print(json.dumps(result))
    else:
        verdict = "SAME person" if same else "DIFFERENT people"
        print(f"{verdict}: distance {d:.4f} {'<=' if same else '>'} threshold {verifier.threshold:.4f} (model: {model})")
    return 0


def cmd_eval(args) -> int:
    from pipeline import lfw
    from pipeline.images import ImageError
    from pipeline.scoring import score_pairs_file

    model, verifier = load_verifier(args.model, args.threshold)
    if not Path(args.images).is_dir():
        raise UserError(f"{args.images}: no such image folder")
    try:
        _, _, _, metrics = score_pairs_file(verifier, Path(args.pairs), Path(args.images))
    except (lfw.ProtocolError, ImageError) as e:
        raise UserError(str(e)) from None
    metrics["model"] = model
    files.write_json(args.out, metrics)
    print(f"{metrics['n_pairs']} pairs: accuracy {metrics['accuracy']:.4f} "
          f"[{metrics['accuracy_ci95_low']:.4f}, {metrics['accuracy_ci95_high']:.4f}], ROC AUC {metrics['roc_auc']:.4f}, "
          f"EER {metrics['eer']:.4f} at threshold {metrics['threshold']:.4f}; written to {args.out}")
    return 0


def finite_float(text: str) -> float:
    """argparse type: a number that is not nan or inf (a nan threshold would call every pair different)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="faceverify", description="Face verification with the trained Siamese network.")
    sub = p.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--model", help=f"bundle (.npz), checkpoint path or MLflow model URI (default: {DEFAULT_BUNDLE} "
                        f"if exported from the current {DEFAULT_MODEL}, else {DEFAULT_MODEL})")
    common.add_argument("--threshold", type=finite_float, help="distance threshold (default: the model's calibrated one)")
    v = sub.add_parser("verify", parents=[common], help="are two face images the same person?")
    v.add_argument("image1")
    v.add_argument("image2")
    v.add_argument("--json", action="store_true", help="print one JSON object")
    v.set_defaults(func=cmd_verify)
    e = sub.add_parser("eval", parents=[common], help="score an LFW-format pairs file against an image folder")
    e.add_argument("--pairs", required=True, help="pairs file: header, then 'name i j' / 'name1 i name2 j' lines")
    e.add_argument("--images", required=True, help="folder laid out as DIR/<name>/<name>_NNNN.jpg")
    e.add_argument("--out", required=True, help="where to write the JSON metrics")
    e.set_defaults(func=cmd_eval)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except UserError as e:
        print(f"faceverify: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
