import numpy as np
import pytest
from PIL import Image

from conftest import small_params
from pipeline import images as imaging
from pipeline.stages import prepare


def test_prepared_array_matches_the_index(prepared, lfw_dir):
    images = np.load(prepared / "images.npy")
    index = (prepared / "index.tsv").read_text().splitlines()
    p = small_params()["prepare"]  # what the fixture ran with: the synthetic faces' box, a 32-pixel side
    assert images.dtype == np.uint8 and images.shape == (len(index), p["image_size"], p["image_size"])
    assert len(index) == sum(1 for _ in (lfw_dir / "lfw2").glob("*/*.jpg"))
    name, number = index[5].split("\t")
    expected = imaging.load_image(lfw_dir / "lfw2" / name / f"{name}_{int(number):04d}.jpg", p["crop"], p["image_size"])
    assert np.array_equal(images[5], expected)


def test_preprocess_scales_the_crop_to_other_sizes_and_modes():
    rng = np.random.default_rng(0)
    gray = Image.fromarray(rng.integers(0, 256, (250, 250), dtype=np.uint8), mode="L")
    big_rgb = gray.resize((500, 500), Image.Resampling.NEAREST).convert("RGB")
    a = imaging.preprocess(gray, [65, 70, 185, 190], 32).astype(int)
    b = imaging.preprocess(big_rgb, [65, 70, 185, 190], 32).astype(int)
    assert a.shape == b.shape == (32, 32)
    assert np.abs(a - b).mean() < 3  # the same face box, whatever the input's size and mode


@pytest.mark.parametrize("make, message", [
    (lambda p: p.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg"), "cannot decode image"),
    (lambda p: p.write_text("hello"), "cannot decode image"),
    (lambda p: Image.new("L", (100, 100)).save(p, format="JPEG"), r"expected a 250x250 grayscale \(mode L\) image, got 100x100 mode L"),
    (lambda p: Image.new("RGB", (250, 250)).save(p, format="JPEG"), r"got 250x250 mode RGB"),
])
def test_bad_images_name_the_file(tmp_path, make, message):
    path = tmp_path / "x.jpg"
    make(path)
    with pytest.raises(imaging.ImageError, match=message) as err:
        imaging.load_image(path, [65, 70, 185, 190], 32)
    assert str(path) in str(err.value)


def test_missing_image(tmp_path):
    with pytest.raises(imaging.ImageError, match="no such image file"):
        imaging.load_image(tmp_path / "none.jpg", [65, 70, 185, 190], 32)


def test_prepare_stage_fails_cleanly_on_a_corrupt_image(tmp_path, lfw_dir, params_file):
    import shutil
    data = tmp_path / "lfw-a"
    shutil.copytree(lfw_dir, data)
    victim = sorted((data / "lfw2").glob("*/*.jpg"))[3]
    victim.write_bytes(victim.read_bytes()[:200])
    out = tmp_path / "prepared"
    assert prepare.main(["--params", str(params_file), "--data", str(data), "--out", str(out),
                         "--report", str(tmp_path / "r.json")]) == 1
    assert not out.exists() and not (tmp_path / "r.json").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary leftovers
