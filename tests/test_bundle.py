"""The export stage and the torch-free bundle: the same distances as the checkpoint, or nothing written."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import ROOT
from pipeline.serve import cli
from pipeline.stages import export
from pipeline.bundle import Bundle
from pipeline.model import Siamese
from pipeline.tta import TTA
from pipeline.verifier import Verifier, fold_batchnorm


def random_checkpoint(path, size=32, tta_flip=True, seed=0, stage_convs=(2, 2, 2), tta_shift=0):
    """A checkpoint of an untrained model whose batch norms have non-trivial statistics."""
    torch.manual_seed(seed)
    model = Siamese(in_size=size, width=4, embedding_dim=8, stage_convs=stage_convs)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    torch.save({"config": model.config, "state_dict": model.state_dict(), "tta_flip": tta_flip, "tta_shift": tta_shift, "margin": 1.0,
                "preprocess": {"crop": [65, 70, 185, 190], "size": size}}, path)
    return path


def images(n, size, seed=1):
    return np.random.default_rng(seed).integers(0, 256, (n, size, size), dtype=np.uint8)


@pytest.mark.parametrize("size, tta, stage_convs", [
    (32, TTA(True), (2, 2, 2)),
    (32, TTA(False), (2, 2, 2)),
    (33, TTA(True), (1, 2, 2)),
    (32, TTA(True), (1, 1, 3)),
    (33, TTA(True, 2), (1, 2, 2)),
    (32, TTA(False, 1), (1, 1, 1))])
def test_bundle_embeds_as_the_checkpoint_does(tmp_path, size, tta, stage_convs):
    ckpt = random_checkpoint(tmp_path / "model.pt", size, tta.flip, stage_convs=stage_convs, tta_shift=tta.shift)
    export.export(ckpt, 0.7, tmp_path / "fv.npz")
    bundle, verifier = Bundle(tmp_path / "fv.npz"), Verifier(ckpt, 0.7)
    assert [op.get("stride", 1) for op in bundle.ops if op["op"] == "conv"][0] == 2  # the strided first convolution
    x = images(6, size)
    expected = verifier.embed(x)
    assert bundle.embed(x) == pytest.approx(expected, abs=1e-5)
    assert bundle.threshold == 0.7 and bundle.tta == tta and bundle.preprocess["size"] == size
    # folding batch norm changes nothing but speed
    from pipeline.model import embed_all
    plain = embed_all(verifier.model, torch.from_numpy(x).unsqueeze(1), tta).numpy()
    assert expected == pytest.approx(plain, abs=1e-5)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fold_batchnorm(verifier.model).features)


def test_pairs_score_alike_from_image_files(tmp_path):
    ckpt = random_checkpoint(tmp_path / "model.pt")
    export.export(ckpt, 0.7, tmp_path / "fv.npz")
    pics = [Image.fromarray(a).resize((250, 250)) for a in images(4, 64)]
    got = Bundle(tmp_path / "fv.npz").distances(pics[:2], pics[2:])
    assert got == pytest.approx(Verifier(ckpt, 0.7).distances(pics[:2], pics[2:]), abs=1e-5)
    assert got.shape == (2,) and (got > 0).all()


def test_a_format_1_bundle_reads_without_a_shift_and_an_unknown_format_is_refused(tmp_path):
    """Format 2 added `tta_shift`: a format-1 file (no key) still scores, as shift 0; a newer one is refused."""
    export.export(random_checkpoint(tmp_path / "model.pt"), 0.7, tmp_path / "fv.npz")
    with np.load(tmp_path / "fv.npz", allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(str(arrays["meta"]))
    assert meta["format"] == 2 and meta["tta_shift"] == 0
    for fmt, name in ((1, "old.npz"), (3, "new.npz")):
        old = {k: v for k, v in meta.items() if k != "tta_shift"} | {"format": fmt}
        np.savez(tmp_path / name, **{**arrays, "meta": np.array(json.dumps(old))})
    x = images(3, 32)
    assert Bundle(tmp_path / "old.npz").tta == TTA(True, 0)
    assert np.array_equal(Bundle(tmp_path / "old.npz").embed(x), Bundle(tmp_path / "fv.npz").embed(x))
    with pytest.raises(ValueError, match=r"new.npz: bundle format 3, this code reads 1 and 2"):
        Bundle(tmp_path / "new.npz")


def test_a_bundle_that_does_not_match_is_not_written(tmp_path, monkeypatch):
    ckpt = random_checkpoint(tmp_path / "model.pt")
    monkeypatch.setattr(Bundle, "embed", lambda self, x: np.zeros((len(x), 8), np.float32))
    with pytest.raises(ValueError, match=r"fv.npz: the exported bundle's distances differ"):
        export.export(ckpt, 0.7, tmp_path / "fv.npz")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]


def test_export_stage_errors_name_the_file(tmp_path, caplog, monkeypatch):
    monkeypatch.setenv("FACEVERIFY_TRACKING", "off")
    ckpt = random_checkpoint(tmp_path / "model.pt")
    (tmp_path / "calibrate.json").write_text(json.dumps({"criterion": "accuracy"}))
    argv = ["--model", str(ckpt), "--threshold", str(tmp_path / "calibrate.json"), "--out", str(tmp_path / "fv.npz")]
    assert export.main(argv) == 1
    assert "calibrate.json: no 'threshold' key" in caplog.text and not (tmp_path / "fv.npz").exists()
    (tmp_path / "calibrate.json").write_text('{"threshold": 0.5,}')
    assert export.main(argv) == 1
    assert "calibrate.json:1: not valid JSON" in caplog.text and not (tmp_path / "fv.npz").exists()
    (tmp_path / "calibrate.json").write_text(json.dumps({"threshold": 0.5}))
    assert export.main(argv) == 0 and Bundle(tmp_path / "fv.npz").threshold == 0.5


def test_a_file_that_is_not_a_bundle_is_one_clear_error(tmp_path):
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    (tmp_path / "meta.npz").write_bytes(b"not a zip")
    for name in ("other.npz", "meta.npz"):
        with pytest.raises(cli.UserError, match=rf"{name}: not a faceverify bundle"):
            cli.load_verifier(str(tmp_path / name), None)


def test_verify_uses_the_bundle_without_importing_torch(tmp_path, lfw_dir):
    """The workspace default: the bundle when it comes from the current checkpoint, else the checkpoint."""
    (tmp_path / "models").mkdir()
    ckpt = random_checkpoint(tmp_path / "models" / "model.pt", size=64)
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics" / "calibrate.json").write_text(json.dumps({"threshold": 0.7}))
    export.export(ckpt, 0.7, tmp_path / "models" / "faceverify.npz")
    a, b = sorted((lfw_dir / "lfw2").rglob("*.jpg"))[:2]
    probe = ("import json, sys; from pipeline.serve import cli; rc = cli.main(['verify', sys.argv[1], sys.argv[2], '--json']); "
             "print(json.dumps({'torch': 'torch' in sys.modules, 'rc': rc}))")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    def verify():
        out = subprocess.run([sys.executable, "-c", probe, str(a), str(b)], cwd=tmp_path, env=env, capture_output=True,
                             text=True, check=True)
        verdict, status = (json.loads(line) for line in out.stdout.splitlines())
        return verdict, status, out.stderr

    verdict, status, _ = verify()
    assert status == {"torch": False, "rc": 0} and verdict["model"] == "models/faceverify.npz"
    expected = Verifier(ckpt, 0.7).distances([Image.open(a)], [Image.open(b)])[0]
    assert verdict["distance"] == pytest.approx(float(expected), abs=1e-5)

    random_checkpoint(ckpt, size=64, seed=1)  # retrained, not yet exported: the bundle is stale
    verdict, status, err = verify()
    assert status == {"torch": True, "rc": 0} and verdict["model"] == "models/model.pt"
    assert "models/faceverify.npz is not from the current models/model.pt" in err


def test_the_threshold_option_replaces_the_calibrated_one_for_a_bundle_and_a_checkpoint(tmp_path, lfw_dir, monkeypatch,
                                                                                          capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()
    ckpt = random_checkpoint(tmp_path / "models" / "model.pt", size=64)
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics" / "calibrate.json").write_text(json.dumps({"threshold": 0.7}))
    export.export(ckpt, 0.7, tmp_path / "models" / "faceverify.npz")
    a, b = (str(p) for p in sorted((lfw_dir / "lfw2").rglob("*.jpg"))[:2])
    for model in ("models/faceverify.npz", "models/model.pt"):
        for extra, expected in (([], 0.7), (["--threshold", "0.25"], 0.25)):
            assert cli.main(["verify", a, b, "--json", "--model", model] + extra) == 0
            verdict = json.loads(capsys.readouterr().out)
            assert verdict["threshold"] == expected and verdict["same"] == (verdict["distance"] <= expected)
