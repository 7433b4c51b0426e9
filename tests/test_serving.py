"""The MLflow pyfunc model is logged as code, not as a pickled object, and loads where pickles are refused."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import yaml
from PIL import Image

from test_bundle import random_checkpoint

LOAD_AND_PREDICT = """
import base64, sys
import mlflow.pyfunc, pandas as pd
b64 = lambda path: base64.b64encode(open(path, "rb").read()).decode()
model = mlflow.pyfunc.load_model(sys.argv[1])
out = model.predict(pd.DataFrame({"image1": [b64(sys.argv[2])], "image2": [b64(sys.argv[3])]}))
import pipeline
print(pipeline.__file__, repr(float(out["distance"][0])), bool(out["same"][0]), float(out["threshold"][0]))
"""


def test_pyfunc_model_is_code_and_predicts_as_the_verifier_where_pickles_are_refused(tmp_path):
    import mlflow.pyfunc

    from pipeline.serve import serving
    from pipeline.verifier import Verifier

    ckpt = random_checkpoint(tmp_path / "model.pt", size=32)
    (tmp_path / "calibrate.json").write_text('{"threshold": 0.5}')
    rng = np.random.default_rng(0)
    pair = []
    for k in range(2):
        pair.append(tmp_path / f"face{k}.jpg")
        Image.fromarray(rng.integers(0, 256, (250, 250), dtype=np.uint8)).save(pair[-1])
    mlflow.pyfunc.save_model(tmp_path / "pyfunc", **serving.pyfunc_args(ckpt, tmp_path / "calibrate.json", tuple(pair)))

    saved = {p.name for p in (tmp_path / "pyfunc").iterdir()}
    assert "python_model.pkl" not in saved and "pyfunc_model.py" in saved
    flavor = yaml.safe_load((tmp_path / "pyfunc" / "MLmodel").read_text())["flavors"]["python_function"]
    assert flavor["model_code_path"].endswith("pyfunc_model.py")

    # a fresh interpreter outside the repository, pickles refused
    env = {**os.environ, "MLFLOW_ALLOW_PICKLE_DESERIALIZATION": "false", "PYTHONPATH": ""}
    out = subprocess.run([sys.executable, "-c", LOAD_AND_PREDICT, str(tmp_path / "pyfunc"), *map(str, pair)],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    source, distance, same, threshold = out.stdout.split()[-4:]
    assert source.startswith(str(tmp_path / "pyfunc"))  # the model's own copy of the code, not the checkout
    expected = Verifier(ckpt, 0.5).distances([Image.open(pair[0])], [Image.open(pair[1])])[0]
    assert float(distance) == pytest.approx(float(expected), abs=1e-6)
    assert same == str(bool(expected <= 0.5)) and float(threshold) == 0.5


@pytest.fixture(scope="module")
def served_model(tmp_path_factory):
    from pipeline.serve import serving
    tmp = tmp_path_factory.mktemp("served")
    ckpt = random_checkpoint(tmp / "model.pt", size=32)
    (tmp / "calibrate.json").write_text('{"threshold": 0.5}')
    model = serving.FaceVerifierModel()
    model.verifier = serving.load_verifier({"checkpoint": str(ckpt), "threshold": str(tmp / "calibrate.json")})
    return model


def b64(data: bytes) -> str:
    import base64
    return base64.b64encode(data).decode()


def png(width: int, height: int) -> bytes:
    import io
    buf = io.BytesIO()
    Image.new("L", (width, height)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.parametrize("image1, message", [
    ("not base64 at all!", "row 0, column image1: not valid base64"),
    (b64(b"just some text, not an image"), "row 0, column image1: not an image file Pillow can read"),
    (12345, "row 0, column image1: expected an image file in base64, got int"),
    (b64(png(12_000, 12_000)), "row 0, column image1: image of 12000x12000 pixels, larger than the 4096x4096 allowed"),
    (b64(png(250, 250)[:60]), "row 0, column image1: "),
])
def test_a_bad_image_is_one_400_message_naming_row_and_column(served_model, image1, message):
    import pandas as pd
    from mlflow.exceptions import MlflowException

    from pipeline.serve import serving
    good = b64(png(250, 250))
    with pytest.raises(serving.BadRequest) as err:
        served_model.predict(None, pd.DataFrame({"image1": [image1], "image2": [good]}))
    assert str(err.value.message).startswith(message)
    assert err.value.get_http_status_code() == 400
    # what the scoring server does with a model's MlflowException: prefix the message with the input, serialise
    err.value.message = f"Failed to predict data '...'. \nError: {err.value.message}"
    body = json.loads(err.value.serialize_as_json())
    assert body["message"].startswith(message) and "stack_trace" not in body and "Failed to predict" not in body["message"]
    assert isinstance(err.value, MlflowException)


def test_no_rows_or_a_missing_column_is_one_400_message(served_model):
    import pandas as pd

    from pipeline.serve import serving
    with pytest.raises(serving.BadRequest, match="no rows"):
        served_model.predict(None, pd.DataFrame({"image1": [], "image2": []}))
    with pytest.raises(serving.BadRequest, match="missing column 'image2'"):
        served_model.predict(None, pd.DataFrame({"image1": [b64(png(250, 250))]}))


def test_a_good_request_still_scores_after_bad_ones(served_model):
    import pandas as pd
    out = served_model.predict(None, pd.DataFrame({"image1": [b64(png(250, 250))], "image2": [b64(png(300, 200))]}))
    assert list(out.columns) == ["distance", "same", "threshold"] and len(out) == 1


def test_line_wrapped_base64_is_accepted_and_too_many_rows_refused(served_model):
    import base64

    import pandas as pd

    from pipeline.serve import serving
    wrapped = base64.encodebytes(png(250, 250)).decode()  # a newline every 76 characters
    out = served_model.predict(None, pd.DataFrame({"image1": [wrapped], "image2": [b64(png(250, 250))]}))
    assert len(out) == 1
    n = serving.MAX_ROWS + 1
    with pytest.raises(serving.BadRequest, match=f"{n} rows, more than the {serving.MAX_ROWS}"):
        served_model.predict(None, pd.DataFrame({"image1": ["x"] * n, "image2": ["x"] * n}))
