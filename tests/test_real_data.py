"""The data stages on the real LFW-a archive, where this machine has it (../shared/data/lfw-a.tar.gz)."""
import json

import numpy as np
import pytest
import yaml

from conftest import REAL_ARCHIVE, ROOT
from pipeline import lfw
from pipeline.stages import download, pairs, prepare
from pipeline.params import load_params

pytestmark = pytest.mark.skipif(not REAL_ARCHIVE.exists(), reason=f"real archive not found at {REAL_ARCHIVE}")
SHA256 = "sha256:cabbf05a7271ee95a8f519b6e851b2e110e399a330159a870aae1623957fa74d"


def test_download_pairs_prepare_on_real_lfw_a(tmp_path):
    p = load_params(ROOT / "params.yaml")
    data = tmp_path / "data" / "lfw-a"
    report = download.build_dataset(data, p.download, download.Source(str(REAL_ARCHIVE), SHA256, lfw.PROTOCOL_MD5, 5, 0))
    assert report["images"] == 13233 and report["people"] == 5749
    assert report["train_pairs"] == 2200 and report["test_pairs"] == 1000
    assert report["train_people"] == 4038 and report["test_people"] == 1711
    assert report["train_test_shared_people"] == 0 and report["sha256sums_checked"] == 13240

    for mode in ("restricted", "unrestricted"):
        raw = yaml.safe_load((ROOT / "params.yaml").read_text())
        raw["pairs"]["mode"] = mode
        (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
        assert pairs.main(["--params", str(tmp_path / "params.yaml"), "--data", str(data),
                           "--out", str(tmp_path / mode), "--report", str(tmp_path / f"{mode}.json")]) == 0
        r = json.loads((tmp_path / f"{mode}.json").read_text())
        assert r["test_pairs"] == 1000 and r["test_same"] == 500
        assert r["train_test_shared_people"] == r["val_test_shared_people"] == r["train_val_shared_images"] == 0
        if mode == "restricted":  # every official pair, split by components; names no label links may cross
            assert r["train_pairs"] + r["val_pairs"] == 2200
            share = raw["pairs"]["val_fraction"] * 1100  # of each label's 1,100 pairs, whatever params.yaml holds
            assert abs(r["val_same"] - share) <= 2 and abs(r["val_pairs"] - r["val_same"] - share) <= 2
        else:
            assert r["train_val_shared_people"] == 0

    assert prepare.main(["--params", str(ROOT / "params.yaml"), "--data", str(data), "--out", str(tmp_path / "prep"),
                         "--report", str(tmp_path / "prep.json")]) == 0
    images = np.load(tmp_path / "prep" / "images.npy", mmap_mode="r")
    assert images.shape == (13233, p.prepare.image_size, p.prepare.image_size)
