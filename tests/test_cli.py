"""`faceverify verify` and `faceverify eval` on a tiny model trained on the synthetic faces."""
import json

import pytest
import torch
import yaml
from PIL import Image

from conftest import small_params
from pipeline import lfw, scoring
from pipeline.serve import cli
from pipeline.stages import evaluate, train
from pipeline.data import load_images, load_pairs
from pipeline.params import load_params
from pipeline.verifier import Verifier
from pipeline.tables import as_row, write_table


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, prepared, tables):
    """A workspace as `dvc repro` leaves it: models/model.pt and metrics/calibrate.json."""
    ws = tmp_path_factory.mktemp("ws")
    (ws / "params.yaml").write_text(yaml.safe_dump(small_params(**{"train.epochs": 4})))
    params = load_params(ws / "params.yaml")
    images, rows = load_images(prepared)
    model, _, _ = train.fit(images, load_pairs(tables / "train.tsv", rows), load_pairs(tables / "val.tsv", rows), params)
    (ws / "models").mkdir()
    torch.save(train.checkpoint(model, params), ws / "models" / "model.pt")
    (ws / "metrics").mkdir()
    (ws / "metrics" / "calibrate.json").write_text(json.dumps({"threshold": 0.9}))
    return ws


def image(lfw_dir, name, i):
    return str(lfw_dir / lfw.image_relpath(name, i))


def test_verify_prints_the_verdict_and_agrees_with_eval(workspace, lfw_dir, monkeypatch, capsys):
    monkeypatch.chdir(workspace)
    first = lfw.parse_pairs(lfw_dir / "pairsDevTest.txt")[0]
    a, b = image(lfw_dir, first.name1, first.i1), image(lfw_dir, first.name2, first.i2)
    assert cli.main(["verify", a, b, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["threshold"] == 0.9 and result["model"] == "models/model.pt"
    assert result["same"] == (result["distance"] <= 0.9)
    expected = scoring.score_pairs(Verifier(workspace / "models" / "model.pt", 0.9), lfw_dir / "lfw2", [first])[0]
    assert result["distance"] == pytest.approx(float(expected), abs=1e-5)
    assert cli.main(["verify", a, b]) == 0
    text = capsys.readouterr().out
    assert ("SAME person" in text) == result["same"] and "threshold 0.9000" in text


def test_verify_accepts_other_sizes_modes_and_formats(workspace, lfw_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(workspace)
    first = lfw.parse_pairs(lfw_dir / "pairsDevTest.txt")[0]
    a = image(lfw_dir, first.name1, first.i1)
    png = tmp_path / "big.png"
    Image.open(a).resize((500, 500)).convert("RGB").save(png)
    assert cli.main(["verify", a, str(png), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["distance"] < 0.2  # the same picture, enlarged and in colour


def test_eval_writes_the_metrics_json(workspace, lfw_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(workspace)
    out = tmp_path / "out.json"
    assert cli.main(["eval", "--pairs", str(lfw_dir / "pairsDevTest.txt"), "--images", str(lfw_dir / "lfw2"),
                     "--out", str(out)]) == 0
    m = json.loads(out.read_text())
    assert m["n_pairs"] == len(lfw.parse_pairs(lfw_dir / "pairsDevTest.txt")) and m["threshold"] == 0.9
    assert {"accuracy", "roc_auc", "eer"} <= set(m) and "accuracy" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["verify", "nope.jpg", "nope2.jpg"], "nope.jpg: no such file"),
    (["verify", "params.yaml", "params.yaml"], "params.yaml: not a readable image"),
    (["verify", "a.jpg", "b.jpg", "--model", "missing.pt"], "missing.pt: no such model file"),
    (["verify", "a.jpg", "b.jpg", "--model", "params.yaml"], "params.yaml: not a faceverify checkpoint"),
    (["eval", "--pairs", "bad_pairs.txt", "--images", "IMAGES", "--out", "o.json"], r"bad_pairs.txt:2: expected 3 fields"),
    (["eval", "--pairs", "PAIRS", "--images", "no_such_dir", "--out", "o.json"], "no_such_dir: no such image folder"),
])
def test_errors_are_one_clear_line(workspace, lfw_dir, monkeypatch, capsys, argv, message):
    monkeypatch.chdir(workspace)
    (workspace / "bad_pairs.txt").write_text("1\nA\t1\n")
    argv = [str(lfw_dir / "lfw2") if a == "IMAGES" else str(lfw_dir / "pairsDevTest.txt") if a == "PAIRS" else a for a in argv]
    assert cli.main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("faceverify: error:") and message.split(":")[0] in err and len(err.splitlines()) == 1
    import re
    assert re.search(message, err)


def test_no_trained_model_yet(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["verify", "a.jpg", "b.jpg"]) == 1
    assert "run `dvc repro` first" in capsys.readouterr().err


def test_eval_and_verify_on_a_bundle_agree_with_the_checkpoint(workspace, lfw_dir, tmp_path, monkeypatch, capsys):
    from pipeline.stages import export
    monkeypatch.chdir(workspace)
    bundle = tmp_path / "fv.npz"
    export.export(workspace / "models" / "model.pt", 0.9, bundle)
    outs = {}
    for model in ("models/model.pt", str(bundle)):
        outs[model] = tmp_path / f"{len(outs)}.json"
        assert cli.main(["eval", "--pairs", str(lfw_dir / "pairsDevTest.txt"), "--images", str(lfw_dir / "lfw2"),
                         "--out", str(outs[model]), "--model", model]) == 0
    a, b = (json.loads(p.read_text()) for p in outs.values())
    assert b["model"] == str(bundle) and a["roc_auc"] == pytest.approx(b["roc_auc"], abs=1e-6)
    assert (a["accuracy"], a["threshold"]) == (b["accuracy"], b["threshold"])


def test_pair_images_decode_on_threads_in_order_and_name_a_broken_file(lfw_dir, tmp_path):
    import re
    import shutil
    from types import SimpleNamespace

    import numpy as np
    from pipeline.images import ImageError, load_image
    pairs = lfw.parse_pairs(lfw_dir / "pairsDevTest.txt")
    scorer = SimpleNamespace(preprocess={"crop": [55, 55, 195, 195], "size": 24})
    keys, arrays = scoring.pair_images(scorer, lfw_dir / "lfw2", pairs)
    assert len(keys) == len(arrays) > 2
    for key, array in zip(keys, arrays):  # row k is keys[k]'s image, as decoded alone
        assert np.array_equal(array, load_image(scoring.image_path(lfw_dir / "lfw2", *key), [55, 55, 195, 195], 24))
    images = shutil.copytree(lfw_dir / "lfw2", tmp_path / "lfw2")
    bad = scoring.image_path(images, *keys[len(keys) // 2])
    bad.write_bytes(b"not a jpeg")
    with pytest.raises(ImageError, match=re.escape(str(bad))):
        scoring.pair_images(scorer, images, pairs)


@pytest.mark.parametrize("text, message", [
    ('{"threshold": ', "metrics/calibrate.json:1: not valid JSON (Expecting value, column 15)"),
    ('{"criterion": "eer"}', "metrics/calibrate.json: no 'threshold' key"),
    ('{"threshold": "abc"}', "metrics/calibrate.json: 'threshold' is 'abc', not a finite number"),
])
def test_a_broken_calibration_file_is_one_clear_line(workspace, lfw_dir, tmp_path, monkeypatch, capsys, text, message):
    import shutil
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics" / "calibrate.json").write_text(text)
    shutil.copytree(workspace / "models", tmp_path / "models")
    monkeypatch.chdir(tmp_path)
    assert cli.main(["verify", image(lfw_dir, "Person_001", 1), image(lfw_dir, "Person_001", 2)]) == 1
    err = capsys.readouterr().err.strip()
    assert err == f"faceverify: error: {message}"
    assert cli.main(["verify", image(lfw_dir, "Person_001", 1), image(lfw_dir, "Person_001", 2), "--threshold", "0.9"]) == 0


def test_evaluate_stage_reads_every_input_before_writing_any_output(workspace, lfw_dir, tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("FACEVERIFY_TRACKING", "off")
    (tmp_path / "pairs.json").write_text('{"mode": "unrestricted"}')
    write_table(tmp_path / "test.tsv", [as_row(p) for p in lfw.parse_pairs(lfw_dir / "pairsDevTest.txt")])
    outs = {"--metrics": tmp_path / "out" / "evaluate.json", "--predictions": tmp_path / "out" / "predictions.csv",
            "--plots": tmp_path / "out" / "plots", "--card": tmp_path / "out" / "card.md"}
    argv = ["--model", str(workspace / "models" / "model.pt"), "--threshold", str(workspace / "metrics" / "calibrate.json"),
            "--test-pairs", str(tmp_path / "test.tsv"), "--images", str(lfw_dir / "lfw2"), "--people", str(lfw_dir),
            "--params", str(workspace / "params.yaml"), "--pairs-report", str(tmp_path / "pairs.json"),
            "--train-report", str(tmp_path / "train.json")] + [str(a) for kv in outs.items() for a in kv]
    assert evaluate.main(argv) == 1  # no train report
    assert "train.json" in caplog.text and "No such file" in caplog.text
    (tmp_path / "train.json").write_text('{"best_epoch": 2, "stopped_epoch": 3,')
    caplog.clear()
    assert evaluate.main(argv) == 1
    assert "train.json:1: not valid JSON" in caplog.text
    (tmp_path / "train.json").write_text('{"best_epoch": 2, "stopped_epoch": 3}')
    caplog.clear()
    assert evaluate.main(argv) == 1  # the calibration file of the fixture has only a threshold, the pairs report only a mode
    assert "model card: no key" in caplog.text and "calibrate.json" in caplog.text
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("value", ["nan", "inf", "abc"])
def test_a_threshold_that_is_not_a_finite_number_is_refused(value, capsys):
    with pytest.raises(SystemExit) as exit:
        cli.main(["verify", "a.jpg", "b.jpg", "--threshold", value])
    assert exit.value.code == 2 and f"argument --threshold: '{value}' is not a finite number" in capsys.readouterr().err


def test_an_unreadable_calibration_file_is_one_clear_line(workspace, lfw_dir, monkeypatch, capsys):
    from pipeline import files

    def unreadable(path):  # as for a file without read permission (root, running the tests, reads any file)
        raise PermissionError(13, "Permission denied", str(path))
    monkeypatch.setattr(files, "read_calibration", unreadable)
    monkeypatch.chdir(workspace)
    assert cli.main(["verify", image(lfw_dir, "Person_001", 1), image(lfw_dir, "Person_001", 2), "--model", "models/model.pt"]) == 1
    assert capsys.readouterr().err.strip() == "faceverify: error: [Errno 13] Permission denied: 'metrics/calibrate.json'"
