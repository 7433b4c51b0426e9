"""Stage `export`: the trained model and its threshold as one NumPy file that scores pairs without PyTorch.

Reads:  MODEL (models/model.pt); THRESHOLD (metrics/calibrate.json).
Writes: OUT (models/faceverify.npz): the network with batch norm folded into the convolutions (a
        per-channel affine op where it follows a max-pool), the preprocessing, the test-time views,
        the threshold and the checkpoint's SHA-256 (see pipeline/bundle.py). `faceverify verify`
        uses it when it matches models/model.pt.
In MLflow: the bundle as an artifact of this stage's run.

The stage checks its own output: the bundle's distances on random images must match the PyTorch
model's to 1e-4, or nothing is written.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

from pipeline import files
from pipeline.record import runner
from pipeline.bundle import FORMAT, Bundle, euclidean
from pipeline.verifier import Verifier

log = logging.getLogger("pipeline.stages.export")


def bundle_arrays(verifier: Verifier, checkpoint_sha256: str) -> dict[str, np.ndarray]:
    """The npz contents: 'meta' (JSON: ops, preprocessing, threshold) and one float32 array per weight."""
    model = verifier.fast  # batch norm already folded into the convolutions
    arrays: dict[str, np.ndarray] = {}
    ops: list[dict] = []

    def add(t: torch.Tensor) -> str:
        name = f"a{len(arrays)}"
        arrays[name] = t.detach().float().contiguous().numpy().copy()
        return name

    for layer in list(model.features) + list(model.head):
        if isinstance(layer, nn.Conv2d):
            # a string padding ("same", "valid") fails the length test too
            if len(set(layer.stride)) != 1 or layer.dilation != (1, 1) or layer.groups != 1 or len(set(layer.padding)) != 1:
                raise ValueError(f"cannot export {layer}: only ungrouped convolutions with square stride and padding")
            bias = layer.bias if layer.bias is not None else torch.zeros(layer.out_channels)
            op = {"op": "conv", "w": add(layer.weight), "b": add(bias), "padding": int(layer.padding[0])}
            if layer.stride[0] != 1:  # only when set: bundles of stride-1 networks stay as they were
                op["stride"] = int(layer.stride[0])
            ops.append(op)
        elif isinstance(layer, nn.ReLU):
            ops.append({"op": "relu"})
        elif isinstance(layer, nn.MaxPool2d):
            if layer.stride != layer.kernel_size or layer.padding or layer.ceil_mode or not isinstance(layer.kernel_size, int):
                raise ValueError(f"cannot export {layer}: only non-overlapping max-pooling")
            ops.append({"op": "maxpool", "k": layer.kernel_size})
        elif isinstance(layer, nn.Flatten):
            ops.append({"op": "flatten"})
        elif isinstance(layer, nn.Linear):
            ops.append({"op": "linear", "w": add(layer.weight), "b": add(layer.bias)})
        else:
            raise ValueError(f"cannot export layer {layer}")
    meta = {"format": FORMAT, "ops": ops, "threshold": verifier.threshold, "preprocess": verifier.preprocess,
            "tta_flip": verifier.tta.flip, "tta_shift": verifier.tta.shift, "normalize": True,
            "config": verifier.ckpt["config"], "checkpoint_sha256": checkpoint_sha256}
    return {"meta": np.array(json.dumps(meta)), **arrays}


def export(model_path: Path, threshold: float, out: Path, check_images: int = 8) -> float:
    """Write the bundle of `model_path` to `out`; returns the largest distance difference to PyTorch."""
    verifier = Verifier(model_path, threshold)
    with files.atomic_path(out) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **bundle_arrays(verifier, files.digest(model_path)))
        side = verifier.preprocess["size"]
        images = np.random.default_rng(0).integers(0, 256, (2 * check_images, side, side), dtype=np.uint8)
        first, second = np.split(np.arange(2 * check_images), 2)
        diff = float(np.abs(_distances(Bundle(tmp), images, first, second) - _distances(verifier, images, first, second)).max())
        if not diff <= 1e-4:
            raise ValueError(f"{out}: the exported bundle's distances differ from the model's by {diff:.2e} (> 1e-4)")
    return diff


def _distances(scorer, images: np.ndarray, first: np.ndarray, second: np.ndarray) -> np.ndarray:
    e = scorer.embed(images)
    return euclidean(e[first], e[second])


def parser() -> argparse.ArgumentParser:
    return runner.parser(__doc__, "model", "threshold", "out")


def main(argv: list[str] | None = None) -> int:
    return runner.main("export", parser(), run, argv)


def run(args, rec) -> None:
    diff = export(args.model, files.read_calibration(args.threshold)["threshold"], args.out)
    rec.tags({"model_sha256": files.digest(args.model)})
    rec.artifact(args.out)
    log.info("wrote %s (%.0f KiB); distances match the PyTorch model to %.1e", args.out, args.out.stat().st_size / 1024, diff)


if __name__ == "__main__":
    sys.exit(main())
