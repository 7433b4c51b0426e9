import copy
import re

import pytest
import yaml

from conftest import ROOT, committed, small_params
from pipeline.params import ParamsError, flatten, load_params, set_dotted


def write_text(path, text):
    path.write_text(text)
    return path


def write(tmp_path, params):
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def test_real_params_load_and_flatten_to_dotted_names():
    flat = flatten(load_params(ROOT / "params.yaml"))
    assert "train.lr" in flat and "train.augment.flip" in flat and "seed" in flat


def test_float_written_as_string_by_dvc_exp_run_is_accepted(tmp_path):
    # `dvc exp run -S train.lr=1e-6` writes 1e-06, which PyYAML reads as a string
    path = tmp_path / "params.yaml"
    text, n = re.subn(r"(?m)^(\s+)lr: .*$", r"\1lr: 1e-06", write(tmp_path, small_params()).read_text())
    assert n == 1 and isinstance(yaml.safe_load(text)["train"]["lr"], str)  # the case this test is about
    path.write_text(text)
    assert load_params(path).train.lr == pytest.approx(1e-6)


@pytest.mark.parametrize("key, value, message", [
    ("train.lrr", 0.1, r"unknown key 'train.lrr'"),
    ("train.lr", "fast", r"'train.lr' must be a number, got 'fast'"),
    ("train.lr", float("inf"), r"'train.lr' must be a finite number, got inf"),  # YAML .inf
    ("train.neg_weight", float("nan"), r"'train.neg_weight' must be a finite number, got nan"),  # nan passes the > 0 check
    ("train.margin", "nan", r"'train.margin' must be a finite number, got 'nan'"),  # as `dvc exp run -S` writes it
    ("train.batch_size", 0, r"'train.batch_size' must be > 0, got 0"),
    ("train.batch_size", 1.5, r"'train.batch_size' must be an integer"),
    ("train.margin", -1.0, r"'train.margin' must be > 0, got -1.0"),
    ("train.pos_margin", 1.0, r"'train.pos_margin' must be in \[0, train.margin\), got 1.0"),
    ("train.neg_weight", 0.0, r"'train.neg_weight' must be > 0, got 0.0"),
    ("train.optimizer", "rmsprop", r"'train.optimizer' must be one of \['adam', 'sgd'\]"),
    ("train.augment.flip", "yes", r"'train.augment.flip' must be true or false"),
    ("pairs.val_fraction", 1.0, r"'pairs.val_fraction' must be in \(0, 1\), got 1.0"),
    ("pairs.val_fraction", 0, r"'pairs.val_fraction' must be in \(0, 1\)"),
    ("prepare.crop", [10, 10, 5, 50], r"'prepare.crop' must be \[left, top, right, bottom\]"),
    ("download.checksum", "crc32:abc", r"'download.checksum' must be"),
    ("train.per_identity", 1, r"'train.per_identity' must be in \[2, 2 \* train.batch_size\]"),
    ("train.sampler", "people", r"'train.sampler' must be one of \['pairs', 'identities'\]"),
    ("train.augment.max_scale", -0.1, r"'train.augment.max_scale' must be >= 0, got -0.1"),
])
def test_bad_params_name_the_key(tmp_path, key, value, message):
    p = small_params()
    node = p
    *path, last = key.split(".")
    for part in path:
        node = node[part]
    node[last] = value
    with pytest.raises(ParamsError, match=message) as err:
        load_params(write(tmp_path, p))
    assert str(tmp_path / "params.yaml") in str(err.value)


def test_a_key_taken_out_names_the_commit_that_has_it(tmp_path):
    p = small_params()
    p["train"]["dropout"] = 0.1
    with pytest.raises(ParamsError, match=r"unknown key 'train.dropout' .*; taken out \(commit ea681be has it"):
        load_params(write(tmp_path, p))


def test_params_yaml_is_short_and_every_key_has_a_reader_and_a_comment(tmp_path):
    """The committed params.yaml: at most 40 keys, each read somewhere in pipeline/ (as `.key`, "key", or a
    parameter `key:` that a section's fields are passed to), each with a comment on its line."""
    text = committed("params.yaml")
    keys = flatten(load_params(write_text(tmp_path / "params.yaml", text)))
    assert len(keys) <= 40, len(keys)
    code = "\n".join(p.read_text() for p in (ROOT / "pipeline").rglob("*.py") if p.name != "params.py")
    for key in keys:
        leaf = key.rsplit(".", 1)[-1]
        assert re.search(rf"\.{leaf}\b|[\"']{leaf}[\"']|\b{leaf}: ", code), f"{key}: nothing in pipeline/ reads it"
        line = next(l for l in text.splitlines() if re.match(rf"\s*{leaf}:", l))
        assert "#" in line, f"params.yaml: {key} has no comment"


def test_renamed_key_names_its_new_name(tmp_path):
    p = small_params()
    p["prepare"]["size"] = p["prepare"].pop("image_size")
    with pytest.raises(ParamsError, match=r"unknown key 'prepare.size' .*; renamed 'prepare.image_size'"):
        load_params(write(tmp_path, p))


def test_no_param_is_named_like_a_key_the_dvc_run_cache_ignores():
    # DVC hashes a stage's params for its run cache with the keys "size" and "nfiles" filtered out at
    # every depth, so a change of such a param alone restores the outputs of its old value (seen with
    # `prepare.size`: an 80-pixel experiment got the 64-pixel images and model)
    from dvc.utils import dict_sha256
    from dvc_data.hashfile.meta import Meta

    ignored = {Meta.PARAM_SIZE, Meta.PARAM_NFILES}
    assert dict_sha256({"prepare": {"size": 64}}, exclude=list(ignored)) == \
        dict_sha256({"prepare": {"size": 80}}, exclude=list(ignored))  # still true of this DVC, or drop the test
    keys = set(flatten(load_params(ROOT / "params.yaml")))
    assert not [k for k in keys if set(k.split(".")) & ignored], keys


def test_missing_key(tmp_path):
    p = small_params()
    del p["train"]["margin"]
    with pytest.raises(ParamsError, match=r"missing key 'train.margin'"):
        load_params(write(tmp_path, p))


def test_unreadable_params_file(tmp_path):
    with pytest.raises(ParamsError, match="no such file"):
        load_params(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed")
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_params(bad)


@pytest.mark.parametrize("value, message", [
    ([2, 2], "must be three numbers >= 1"), ([2, 0, 2], "must be three numbers >= 1"),
    (2, "must be a list, got 2")])
def test_stage_convs_is_three_counts_of_at_least_one(tmp_path, value, message):
    with pytest.raises(ParamsError, match=rf"'train.stage_convs(\[\d\])?' {message}"):
        load_params(write(tmp_path, small_params(**{"train.stage_convs": value})))


def test_the_taken_out_mining_key_names_the_commit_that_has_it(tmp_path):
    p = small_params()
    p["train"]["mining"] = "pairs"  # the sampler decides the loss now
    with pytest.raises(ParamsError, match=r"unknown key 'train.mining' .*taken out \(commit 0463ca7 has it"):
        load_params(write(tmp_path, p))


def test_tta_shift_is_a_count_of_pixels(tmp_path):
    assert load_params(write(tmp_path, small_params(**{"train.tta_shift": 2}))).train.tta_shift == 2
    with pytest.raises(ParamsError, match=r"'train.tta_shift' must be >= 0"):
        load_params(write(tmp_path, small_params(**{"train.tta_shift": -1})))


def test_set_dotted_sets_a_nested_key_and_names_an_unknown_one():
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    set_dotted(raw, "train.augment.max_shift", 0.1)
    set_dotted(raw, "seed", 7)
    assert raw["train"]["augment"]["max_shift"] == 0.1 and raw["seed"] == 7
    before = copy.deepcopy(raw)
    for key in ("train.lrr", "train.lr.x", "nosection.lr"):
        with pytest.raises(ParamsError, match=re.escape(f"{key}: no such key in params.yaml")):
            set_dotted(raw, key, 1)
    assert raw == before  # a failed set leaves the mapping as it was
