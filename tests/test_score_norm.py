import importlib.util

import numpy as np

from conftest import ROOT
from test_tta_views import write_model, write_set

spec = importlib.util.spec_from_file_location("score_norm", ROOT / "scripts" / "score_norm.py")
score_norm = importlib.util.module_from_spec(spec)
spec.loader.exec_module(score_norm)


def unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_s_norm_matches_its_formula_and_top_k_keeps_the_nearest():
    rng = np.random.default_rng(0)
    a, b, cohort = unit(rng.normal(size=(4, 6))), unit(rng.normal(size=(4, 6))), unit(rng.normal(size=(30, 6)))
    d = np.linalg.norm(a - b, axis=1)
    to = lambda x: np.linalg.norm(x[:, None] - cohort[None], axis=2)  # noqa: E731
    expect = 0.5 * ((d - to(a).mean(1)) / to(a).std(1) + (d - to(b).mean(1)) / to(b).std(1))
    assert np.allclose(score_norm.s_norm(a, b, cohort), expect)
    near = lambda x: np.sort(to(x), axis=1)[:, :5]  # noqa: E731
    expect5 = 0.5 * ((d - near(a).mean(1)) / near(a).std(1) + (d - near(b).mean(1)) / near(b).std(1))
    assert np.allclose(score_norm.s_norm(a, b, cohort, top=5), expect5)
    assert np.allclose(score_norm.s_norm(a, b, cohort, top=30), expect)


def test_prints_raw_and_each_cohort_size(tmp_path, capsys):
    prepared, pairs = write_set(tmp_path)
    (pairs / "train.tsv").write_text((pairs / "val.tsv").read_text())
    write_model(tmp_path / "m.pt")
    assert score_norm.main([str(tmp_path / "m.pt"), "--top", "0", "3", "--prepared", str(prepared),
                            "--pairs", str(pairs)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 3 and "raw distances: validation AUC" in out[0]
    assert "cohort all 8" in out[1] and "cohort 3 nearest of 8" in out[2]
    assert all("test accuracy" in line for line in out)
