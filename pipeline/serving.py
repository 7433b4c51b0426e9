"""The trained verifier as an MLflow pyfunc model: preprocessing, network and threshold in one.

Input: a DataFrame with columns `image1`, `image2`, each an image file's bytes in base64 (any
format and size Pillow reads; aligned, centred faces like LFW-a). Output: columns `distance`,
`same` (bool), `threshold`. `mlflow models serve` answers the same over REST.

Logged as code (MLflow's "models from code": pipeline/pyfunc_model.py with `pipeline/` as the code
path, the checkpoint and threshold as artifacts), not as a pickled Python object, which MLflow warns
about and will refuse to load by default.
"""
from __future__ import annotations

import base64
import io
from importlib import metadata
from pathlib import Path

import mlflow.pyfunc
import numpy as np
import pandas as pd
from PIL import Image

from pipeline import files
from pipeline.verifier import Verifier


def decode(b64: str, what: str) -> Image.Image:
    try:
        return Image.open(io.BytesIO(base64.b64decode(b64)))
    except Exception as e:  # noqa: BLE001
        raise ValueError(f"{what}: not a readable base64-encoded image ({e})") from None


def load_verifier(artifacts: dict) -> Verifier:
    """The Verifier of the model's artifacts {"checkpoint": model.pt, "threshold": calibrate.json}."""
    return Verifier(artifacts["checkpoint"], files.read_calibration(artifacts["threshold"])["threshold"])


class FaceVerifierModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        self.verifier = load_verifier(context.artifacts)

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        first = [decode(v, f"row {k} image1") for k, v in enumerate(model_input["image1"])]
        second = [decode(v, f"row {k} image2") for k, v in enumerate(model_input["image2"])]
        d = self.verifier.distances(first, second)
        t = self.verifier.threshold
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
    (pipeline/pyfunc_model.py), not as a pickled object; the signature from one scored example pair."""
    from mlflow.models import infer_signature

    example = pd.DataFrame({"image1": [b64_file(example_pair[0])], "image2": [b64_file(example_pair[1])]})
    artifacts = {"checkpoint": str(checkpoint), "threshold": str(threshold_file)}
    scorer = FaceVerifierModel()
    scorer.verifier = load_verifier(artifacts)
    here = Path(__file__).resolve().parent
    return dict(python_model=str(here / "pyfunc_model.py"), artifacts=artifacts, code_paths=[str(here)],
                signature=infer_signature(example, scorer.predict(None, example)), input_example=example,
                pip_requirements=requirements())


def log_model(checkpoint: Path, threshold_file: Path, example_pair: tuple[Path, Path], registered_name: str | None):
    """Log (and register) the pyfunc model in the active MLflow run; returns the ModelInfo."""
    return mlflow.pyfunc.log_model(name="model", registered_model_name=registered_name,
                                   **pyfunc_args(checkpoint, threshold_file, example_pair))
