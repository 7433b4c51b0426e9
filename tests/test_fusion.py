import importlib.util

import numpy as np

from conftest import ROOT
from test_tta_views import write_model, write_set

spec = importlib.util.spec_from_file_location("fusion", ROOT / "scripts" / "fusion.py")
fusion = importlib.util.module_from_spec(spec)
spec.loader.exec_module(fusion)


def test_fused_distance_is_the_distance_of_the_concatenated_scaled_embeddings():
    rng = np.random.default_rng(0)
    a = [rng.normal(size=(5, 8)) for _ in range(3)]
    b = [rng.normal(size=(5, 8)) for _ in range(3)]
    a = [x / np.linalg.norm(x, axis=1, keepdims=True) for x in a]
    b = [x / np.linalg.norm(x, axis=1, keepdims=True) for x in b]
    squared = [np.sum((x - y) ** 2, axis=1) for x, y in zip(a, b)]
    concat = np.linalg.norm(np.hstack(a) - np.hstack(b), axis=1) / np.sqrt(3)
    assert np.allclose(fusion.fused(squared), concat)
    assert np.allclose(fusion.fused([squared[0], squared[0]]), np.sqrt(squared[0]))


def test_prints_each_model_and_each_fusion(tmp_path, capsys):
    prepared, pairs = write_set(tmp_path)
    paths = [write_model(tmp_path / f"m{seed}.pt", seed) for seed in (0, 1)]
    assert fusion.main([*map(str, paths), "--prepared", str(prepared), "--pairs", str(pairs)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 3
    assert out[0].startswith(f"{paths[0]}: validation AUC") and out[1].startswith(f"{paths[1]}: validation AUC")
    assert out[2].startswith(f"{paths[0]} + {paths[1]}: validation AUC") and "against its models' mean" in out[2]
    assert all("test accuracy" in line for line in out)
