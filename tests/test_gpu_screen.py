import json
import sys

import numpy as np
import pytest
import yaml

from conftest import ROOT, small_params

sys.path.insert(0, str(ROOT / "scripts"))
import gpu_screen  # noqa: E402


def test_pack_keeps_only_the_images_the_tables_use_and_unpacks_them_exactly(tmp_path, prepared, tables):
    n = gpu_screen.pack(prepared, tables, tmp_path / "bundle")
    used = {(r[0], r[1]) for t in gpu_screen.TABLES for r in gpu_screen.read_table(tables / t)} \
        | {(r[2], r[3]) for t in gpu_screen.TABLES for r in gpu_screen.read_table(tables / t)}
    assert n == len(used)
    got_prepared, got_pairs = gpu_screen.unpack(tmp_path / "bundle", tmp_path / "work")
    index = (prepared / "index.tsv").read_text().splitlines()
    images = np.load(prepared / "images.npy")
    got_index = (got_prepared / "index.tsv").read_text().splitlines()
    got = np.load(got_prepared / "images.npy")
    assert len(got_index) == n and {tuple(line.split("\t")) for line in got_index} == {(a, str(b)) for a, b in used}
    for k, line in enumerate(got_index):  # every image byte for byte, the wrap-around of uint8 deltas included
        assert np.array_equal(got[k], images[index.index(line)])
    for t in gpu_screen.TABLES:
        assert (got_pairs / t).read_text() == (tables / t).read_text()


def test_configs_are_named_overrides_read_as_yaml_with_base_first():
    configs = gpu_screen.parse_configs([["negw2", "train.neg_weight=2.0"], ["deep", "train.stage_convs=[2,2,2]", "train.lr=0.003"]])
    assert list(configs) == ["base", "negw2", "deep"]
    assert configs["deep"] == {"train.stage_convs": [2, 2, 2], "train.lr": 0.003} and configs["base"] == {}
    with pytest.raises(SystemExit, match="seed is set by --seeds"):
        gpu_screen.parse_configs([["s3", "seed=3"]])
    with pytest.raises(SystemExit, match="expected KEY=VALUE"):
        gpu_screen.parse_configs([["lr", "0.002"]])
    with pytest.raises(SystemExit, match="named twice"):
        gpu_screen.parse_configs([["a", "train.lr=1"], ["a", "train.lr=2"]])


def test_overrides_set_nested_keys_on_a_copy_and_reject_unknown_ones():
    params = small_params()
    p = gpu_screen.with_overrides(params, {"train.augment.flip": False, "train.lr": 0.01}, seed=4)
    assert p["seed"] == 4 and p["train"]["augment"]["flip"] is False and p["train"]["lr"] == 0.01
    assert params["train"]["augment"]["flip"] is True  # the original untouched
    with pytest.raises(SystemExit, match="train.lrr: no such key"):
        gpu_screen.with_overrides(params, {"train.lrr": 1}, seed=0)


def test_summary_pairs_each_config_with_base_by_seed():
    results = [{"config": c, "seed": s, "val_auc": v} for c, s, v in [
        ("base", 0, 0.960), ("base", 1, 0.970), ("base", 2, 0.950),
        ("a", 0, 0.962), ("a", 1, 0.974), ("a", 2, 0.949)]]
    lines = gpu_screen.summary(results, {"base": {}, "a": {}, "never_ran": {}})
    assert len(lines) == 3  # the header, base, a
    diffs = [0.002, 0.004, -0.001]
    se = np.std(diffs, ddof=1) / np.sqrt(3)
    assert lines[2].split()[:3] == ["a", "3", "0.96167"]
    assert f"{np.mean(diffs):+.5f} ± {se:.5f}" in lines[2] and lines[2].endswith("2/3")


def test_summary_command_reads_a_results_file(tmp_path, capsys):
    runs = [{"config": c, "seed": s, "val_auc": v} for c, s, v in [("x", 0, 0.97), ("base", 0, 0.96), ("x", 1, 0.95), ("base", 1, 0.95)]]
    (tmp_path / "r.json").write_text(json.dumps({"about": "a screen", "runs": runs}))
    assert gpu_screen.main(["summary", str(tmp_path / "r.json")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in out] == ["config", "base", "x"] and out[2].endswith("1/2")


def test_deltas_wrap_around_uint8_and_unpack_exactly(tmp_path):
    prepared, pairs = tmp_path / "prepared", tmp_path / "pairs"
    prepared.mkdir(), pairs.mkdir()
    images = np.array([[[0, 255, 0, 255], [255, 0, 1, 254]], [[7, 7, 200, 3], [0, 0, 0, 0]], [[9] * 4] * 2], np.uint8)
    np.save(prepared / "images.npy", images)
    (prepared / "index.tsv").write_text("A\t1\nA\t2\nB\t1\n")
    for t in gpu_screen.TABLES:  # the images A 1 and A 2 are used; B 1 is not
        (pairs / t).write_text("name1\ti1\tname2\ti2\tlabel\nA\t1\tA\t2\t1\n")
    assert gpu_screen.pack(prepared, pairs, tmp_path / "bundle") == 2
    got, _ = gpu_screen.unpack(tmp_path / "bundle", tmp_path / "work")
    assert np.array_equal(np.load(got / "images.npy"), images[:2])


def test_a_bad_override_value_stops_the_screen_before_any_training(tmp_path, prepared, tables):
    gpu_screen.pack(prepared, tables, tmp_path / "bundle")
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(small_params()))
    with pytest.raises(SystemExit, match=r"--config w0: .*'train.neg_weight' must be > 0"):
        gpu_screen.main(["run", "--config", "w0", "train.neg_weight=0", "--seeds", "0", "--bundle", str(tmp_path / "bundle"),
                         "--params", str(params), "--work", str(tmp_path / "work")])
    assert not list((tmp_path / "work" / "runs").glob("*.log"))


@pytest.mark.slow
def test_run_trains_every_config_and_seed_and_records_them(tmp_path, prepared, tables):
    gpu_screen.pack(prepared, tables, tmp_path / "bundle")
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(small_params(**{"train.epochs": 1})))
    results = tmp_path / "results.json"
    gpu_screen.main(["run", "--config", "negw2", "train.neg_weight=2.0", "--seeds", "0", "--workers", "2",
                     "--bundle", str(tmp_path / "bundle"), "--params", str(params), "--work", str(tmp_path / "work"),
                     "--results", str(results)])
    runs = {(r["config"], r["seed"]): r for r in json.loads(results.read_text())}
    assert set(runs) == {("base", 0), ("negw2", 0)}
    assert all(0 <= r["val_auc"] <= 1 and r["history"].startswith("epoch,") for r in runs.values())
    assert runs["negw2", 0]["overrides"] == {"train.neg_weight": 2.0}
    written = yaml.safe_load((tmp_path / "work" / "runs" / "negw2_s0.yaml").read_text())
    assert written["train"]["neg_weight"] == 2.0 and written["seed"] == 0
