import importlib.util
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from conftest import ROOT, small_params
from pipeline.data import load_images, load_pairs
from pipeline.pairs import identities
from pipeline.params import load_params
from pipeline.tables import write_table
from test_tta_views import write_model

spec = importlib.util.spec_from_file_location("nested_val", ROOT / "scripts" / "nested_val.py")
nested_val = importlib.util.module_from_spec(spec)
spec.loader.exec_module(nested_val)


def experiment(tmp_path: Path, name: str, seed: int, **pairs) -> SimpleNamespace:
    """What nested_val reads of an experiment: its name, its params and a model (untrained, 32x32)."""
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(small_params(**{f"pairs.{k}": v for k, v in pairs.items()})))
    exp = SimpleNamespace(name=name, params=load_params(path), model=write_model(tmp_path / f"{name}.pt", seed))
    exp.tables = lambda data: nested_val.Experiment.tables(exp, data)
    return exp


def load_pairs_of(rows_table, rows, tmp_path):
    write_table(tmp_path / "expected.tsv", rows_table)
    return load_pairs(tmp_path / "expected.tsv", rows)


def test_both_models_are_scored_on_the_nested_validation_pairs(lfw_dir, prepared, tmp_path, monkeypatch):
    images, rows = load_images(prepared)
    a, b = experiment(tmp_path, "a", 0), experiment(tmp_path, "b", 1, val_keep=0.5)
    a_auc, b_auc = nested_val.compare(a, b, lfw_dir, images, rows, tmp_path, a.params.prepare)
    assert 0 <= a_auc <= 1 and 0 <= b_auc <= 1 and a_auc != b_auc
    same = nested_val.compare(a, experiment(tmp_path, "a2", 0, val_keep=0.5), lfw_dir, images, rows, tmp_path,
                              a.params.prepare)
    assert same[0] == pytest.approx(same[1])  # the same weights on the same pairs
    scored = []
    monkeypatch.setattr(nested_val, "auc", lambda model, images, val: scored.append((model, val)) or 0.5)
    nested_val.compare(a, b, lfw_dir, images, rows, tmp_path, a.params.prepare)
    b_val = load_pairs_of(b.tables(lfw_dir)["val"], rows, tmp_path)
    assert [m for m, _ in scored] == [a.model, b.model]
    for _, val in scored:  # both on B's validation pairs, whose people are some of those A held out
        assert (val.idx1 == b_val.idx1).all() and (val.idx2 == b_val.idx2).all() and (val.label == b_val.label).all()
    assert identities(b.tables(lfw_dir)["val"]) < identities(a.tables(lfw_dir)["val"])


def test_a_model_of_other_prepared_images_is_refused(lfw_dir, prepared, tmp_path):
    images, rows = load_images(prepared)
    a, b = experiment(tmp_path, "a", 0), experiment(tmp_path, "b", 1, val_keep=0.5)
    other = type(a.params.prepare)(crop=a.params.prepare.crop, image_size=48)
    with pytest.raises(SystemExit, match="a: trained on images prepared with"):
        nested_val.compare(a, b, lfw_dir, images, rows, tmp_path, other)


def test_pairs_that_are_not_nested_are_refused(lfw_dir, prepared, tmp_path):
    images, rows = load_images(prepared)
    a = experiment(tmp_path, "a", 0)
    with pytest.raises(SystemExit, match="needs pairs.val_keep < 1"):
        nested_val.compare(a, experiment(tmp_path, "b", 1), lfw_dir, images, rows, tmp_path, a.params.prepare)
    with pytest.raises(SystemExit, match="of B's validation people are trained on"):  # other held-out people
        nested_val.compare(a, experiment(tmp_path, "c", 1, val_keep=0.5, split_seed=3), lfw_dir, images, rows, tmp_path,
                           a.params.prepare)


def test_an_unknown_experiment_is_named(tmp_path):
    with pytest.raises(SystemExit, match="experiment 'no-such-exp-here': no refs"):
        nested_val.Experiment("no-such-exp-here", tmp_path)


def test_an_older_experiments_params_read_in_todays_keys():
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    del raw["pairs"]["val_keep"]
    raw["train"]["ema"] = 0.0  # a param taken out since, where it was off
    raw["train"]["lr"] = 0.002
    params = nested_val.todays_params(raw, "old")
    assert params["pairs"]["val_keep"] == 1.0 and "ema" not in params["train"] and params["train"]["lr"] == 0.002
    assert params.keys() == raw.keys() and params["train"]["stage_convs"] == raw["train"]["stage_convs"]
    raw["train"]["ema"] = 0.995
    with pytest.raises(SystemExit, match="params of a code taken out since: {'train.ema': 0.995}"):
        nested_val.todays_params(raw, "old")
