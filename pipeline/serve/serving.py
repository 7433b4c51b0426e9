"""The trained verifier as an MLflow pyfunc model: preprocessing, network and threshold in one.

Input: a DataFrame with columns `image1`, `image2`, each an image file's bytes in base64 (any
format Pillow reads, up to MAX_SIDE pixels a side; aligned, centred faces like LFW-a). Output: columns
`distance`, `same` (bool), `threshold`. `mlflow models serve` answers the same over REST; a bad
request gets HTTP 400 with one message that names the row and the column and says what is wrong.

Logged as code (MLflow's "models from code": pipeline/serve/pyfunc_model.py with `pipeline/` as the code
path, the checkpoint and threshold as artifacts), not as a pickled Python object, which MLflow warns
about and will refuse to load by default.
"""
from __future__ import annotations

import base64
import binascii
import io
from importlib import metadata
from pathlib import Path

import mlflow.pyfunc
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INTERNAL_ERROR, INVALID_PARAMETER_VALUE
import numpy as np
import pandas as pd
from PIL import Image

from pipeline import files
from pipeline.bundle import euclidean
from pipeline.verifier import Verifier


MAX_SIDE = 4096  # pixels a side: far above LFW's 250; one such image decodes to at most 64 MiB (RGBA)
MAX_BASE64 = 32 * 1024 * 1024  # characters of one image's base64 text (24 MiB of file)
MAX_ROWS = 1024  # pairs in one request; each image is cropped and resized as soon as it is decoded


class BadRequest(MlflowException):
    """A client error (HTTP 400) whose message reaches the client as written.

    The scoring server rewrites the message of an MlflowException raised by the model to
    "Failed to predict data '<the whole input>'. Error: ..."; the first message set is kept here, so the
    client reads what is wrong without its own request echoed back (and, as for any MlflowException
    without one, no stack trace)."""

    def __init__(self, message: str):
        super().__init__(message, error_code=INVALID_PARAMETER_VALUE)

    message = property(lambda self: self.__dict__.get("_message", ""),
                       lambda self, value: self.__dict__.setdefault("_message", value))


def decode(b64, what: str) -> Image.Image:
    """The image in one cell; BadRequest naming `what` (row and column) when it is not a usable image.
    Its size is checked from the header, before any pixel is decoded."""
    if not isinstance(b64, (str, bytes)):
        raise BadRequest(f"{what}: expected an image file in base64, got {type(b64).__name__}")
    if len(b64) > MAX_BASE64:
        raise BadRequest(f"{what}: {len(b64)} base64 characters, more than the {MAX_BASE64} allowed")
    try:  # line-wrapped base64 (`base64`, base64.encodebytes) is fine: whitespace is no data
        data = base64.b64decode(b"".join(b64.split()) if isinstance(b64, bytes) else "".join(b64.split()), validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest(f"{what}: not valid base64") from None
    try:
        img = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError:
        raise BadRequest(f"{what}: image larger than the {MAX_SIDE}x{MAX_SIDE} pixels allowed") from None
    except Exception:  # noqa: BLE001 - whatever Pillow raises on bytes that are no image
        raise BadRequest(f"{what}: not an image file Pillow can read ({len(data)} bytes)") from None
    if max(img.size) > MAX_SIDE:
        raise BadRequest(f"{what}: image of {img.size[0]}x{img.size[1]} pixels, larger than the "
                         f"{MAX_SIDE}x{MAX_SIDE} allowed")
    try:
        img.load()
    except Exception as e:  # noqa: BLE001
        raise BadRequest(f"{what}: the image data is damaged ({type(e).__name__})") from None
    return img


def load_verifier(artifacts: dict) -> Verifier:
    """The Verifier of the model's artifacts {"checkpoint": model.pt, "threshold": calibrate.json}."""
    return Verifier(artifacts["checkpoint"], files.read_calibration(artifacts["threshold"])["threshold"])


class FaceVerifierModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        self.verifier = load_verifier(context.artifacts)

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        missing = [c for c in ("image1", "image2") if c not in model_input.columns]
        if missing:
            raise BadRequest(f"missing column {missing[0]!r}: send columns image1 and image2")
        if not len(model_input):
            raise BadRequest("no rows: send at least one pair of images")
        if len(model_input) > MAX_ROWS:
            raise BadRequest(f"{len(model_input)} rows, more than the {MAX_ROWS} pairs one request may hold")
        v = self.verifier

        def arrays(column: str) -> list[np.ndarray]:  # each image cropped and resized as soon as it is decoded
            return [v.arrays([decode(x, f"row {k}, column {column}")])[0] for k, x in enumerate(model_input[column])]
        first, second = arrays("image1"), arrays("image2")
        try:
            e = v.embed(np.stack(first + second))
        except Exception:  # noqa: BLE001 - a fault of ours: a 500 without the server's traceback
            raise MlflowException("internal error while scoring the pairs", error_code=INTERNAL_ERROR) from None
        d = euclidean(e[:len(first)], e[len(first):])
        t = v.threshold
        return pd.DataFrame({"distance": d.astype(np.float64), "same": d <= t, "threshold": np.full(len(d), t)})


def b64_file(path: str | Path) -> str:
    return base64.b64encode(Path(path).read_bytes()).decode("ascii")


def requirements() -> list[str]:
    """Pinned requirements of the logged model (no network look-up needed to infer them)."""
    names = ("torch", "torchvision", "mlflow", "numpy", "pandas", "pillow", "pyyaml", "scikit-learn")
    out = []
    for name in names:
        try:
            out.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            pass
    return out


def pyfunc_args(checkpoint: Path, threshold_file: Path, example_pair: tuple[Path, Path]) -> dict:
    """The keyword arguments of `mlflow.pyfunc.log_model` / `save_model` for this model: logged as code
    (pipeline/serve/pyfunc_model.py), not as a pickled object; the signature from one scored example pair."""
    from mlflow.models import infer_signature

    example = pd.DataFrame({"image1": [b64_file(example_pair[0])], "image2": [b64_file(example_pair[1])]})
    artifacts = {"checkpoint": str(checkpoint), "threshold": str(threshold_file)}
    scorer = FaceVerifierModel()
    scorer.verifier = load_verifier(artifacts)
    here = Path(__file__).resolve().parent  # pipeline/serve/; the whole package travels as the code path
    return dict(python_model=str(here / "pyfunc_model.py"), artifacts=artifacts, code_paths=[str(here.parent)],
                signature=infer_signature(example, scorer.predict(None, example)), input_example=example,
                pip_requirements=requirements())


def log_model(checkpoint: Path, threshold_file: Path, example_pair: tuple[Path, Path], registered_name: str | None):
    """Log (and register) the pyfunc model in the active MLflow run; returns the ModelInfo."""
    return mlflow.pyfunc.log_model(name="model", registered_model_name=registered_name,
                                   **pyfunc_args(checkpoint, threshold_file, example_pair))
