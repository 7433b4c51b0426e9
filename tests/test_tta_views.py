import importlib.util

import numpy as np
import torch

from conftest import ROOT
from pipeline.model import Siamese

spec = importlib.util.spec_from_file_location("tta_views", ROOT / "scripts" / "tta_views.py")
tta_views = importlib.util.module_from_spec(spec)
spec.loader.exec_module(tta_views)


def write_set(tmp_path):
    """A tiny prepared set (8 random 32x32 images of 4 people) and its validation and test tables."""
    rng = np.random.default_rng(0)
    prepared, pairs = tmp_path / "prepared", tmp_path / "pairs"
    prepared.mkdir(), pairs.mkdir()
    np.save(prepared / "images.npy", rng.integers(0, 256, (8, 32, 32), dtype=np.uint8))
    (prepared / "index.tsv").write_text("".join(f"P{k // 2}\t{k % 2 + 1}\n" for k in range(8)))
    table = "name1\ti1\tname2\ti2\tlabel\n" + "".join(
        f"P{a}\t1\tP{b}\t2\t{int(a == b)}\n" for a in range(4) for b in range(4))
    for name in ("val.tsv", "test.tsv"):
        (pairs / name).write_text(table)
    return prepared, pairs


def write_model(path, seed: int = 0):
    """An untrained tiny checkpoint with the mirror view, for the scripts that score checkpoints."""
    torch.manual_seed(seed)
    model = Siamese(in_size=32, width=4, embedding_dim=8, stage_convs=[2, 2, 2])
    torch.save({"config": model.config, "state_dict": model.state_dict(), "tta_flip": True}, path)
    return path


def test_prints_one_line_per_model_and_shift(tmp_path, capsys):
    """On a tiny synthetic set: every model and shift scored, the deltas against the first shift."""
    prepared, pairs = write_set(tmp_path)
    write_model(tmp_path / "m.pt")
    assert tta_views.main([str(tmp_path / "m.pt"), "--shifts", "0", "2", "--prepared", str(prepared),
                           "--pairs", str(pairs)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2
    assert "shift 0 (2 views)" in out[0] and "+0.0000 against shift 0" in out[0]
    assert "shift 2 (4 views)" in out[1] and "validation AUC" in out[1] and "test accuracy" in out[1]
