"""pipeline/lab/fusion.py: two View 2 configurations' fold models fused, read from a DVC cache."""
import json
import shutil
import subprocess

import numpy as np
import pytest
import torch

from pipeline.data import load_images, load_pairs
from pipeline.embedding import pair_distances
from pipeline.lab import fusion, view2
from pipeline.model import Siamese, load_checkpoint
from pipeline.tta import TTA


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
    """An untrained tiny checkpoint with the mirror view."""
    torch.manual_seed(seed)
    model = Siamese(in_size=32, width=4, embedding_dim=8, stage_convs=[2, 2, 2])
    torch.save({"config": model.config, "state_dict": model.state_dict(), "tta_flip": True}, path)
    return path


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


PARAMS = {"pairs.mode": "restricted", "calibrate.criterion": "eer", "calibrate.target_far": 0.01}


def outputs(prepared, pairs, model) -> dict:
    """{output path: file} of one fold experiment, as fusion.FILES names them."""
    return {"models/model.pt": model, **{f"data/prepared/{f}": prepared / f for f in ("images.npy", "index.tsv")},
            **{f"data/pairs/{f}": pairs / f for f in ("val.tsv", "test.tsv")}}


def lock(prepared_md5: str) -> str:
    """A dvc.lock whose prepare stage wrote data/prepared with this md5."""
    return f"schema: '2.0'\nstages:\n  prepare:\n    outs:\n    - path: data/prepared\n      md5: {prepared_md5}\n"


def fake_git(stored: dict, prepared_md5: dict):
    """git as fusion calls it: the experiments' refs, and each experiment commit's dvc.lock."""
    def git(*args):
        if args[0] == "show":
            return lock(prepared_md5[args[1].split(":")[0].rsplit("/", 1)[-1]])
        assert args[0] == "for-each-ref"
        return "".join(f"refs/exps/ab/{'c' * 38}/{n}\n" for n in stored)
    return git


@pytest.fixture
def two_configs(tmp_path, monkeypatch):
    """Configurations A and B of one fold each and their experiments' outputs, as DVC would hand them out.
    The test pairs are not the validation pairs, and B's prepared images are not A's (another crop, say)."""
    prepared, pairs = write_set(tmp_path)
    rows = (pairs / "test.tsv").read_text().splitlines(keepends=True)
    (pairs / "test.tsv").write_text(rows[0] + "".join(rows[1:][::-1][:12]))
    other = tmp_path / "prepared-b"
    shutil.copytree(prepared, other)
    np.save(other / "images.npy", 255 - np.load(prepared / "images.npy"))
    stored = {name: outputs(images, pairs, write_model(tmp_path / f"{name}.pt", seed))
              for name, seed, images in (("exp-a", 0, prepared), ("exp-b", 1, other))}

    monkeypatch.setattr(fusion, "git", fake_git(stored, {"exp-a": "aaa.dir", "exp-b": "bbb.dir"}))
    monkeypatch.setattr(fusion, "open_output", lambda path, rev: open(stored[rev.rsplit("/", 1)[-1]][path], "rb"))
    recs = [{"commit": c, "params": PARAMS, "overrides": {"seed": s},
             "folds": {"3": {"name": n, "metrics": {"val AUC": 0.5, "test acc": 0.5}}}}
            for c, s, n in (("pipeA", 0, "exp-a"), ("pipeB", 1, "exp-b"))]
    return recs, [prepared, other], pairs, [tmp_path / "exp-a.pt", tmp_path / "exp-b.pt"]


def test_open_output_reads_an_experiment_commit_through_dvc(tmp_path, monkeypatch):
    """The one call into DVC: an output at a commit other than the workspace's, from the DVC cache."""
    def sh(*cmd):
        subprocess.run(cmd, cwd=tmp_path, check=True, capture_output=True)
    sh("git", "init", "-q")
    sh("git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "--allow-empty", "-m", "base")
    sh("dvc", "init", "-q")
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "model.pt").write_bytes(b"fold model")
    sh("dvc", "add", "-q", "models/model.pt")
    (tmp_path / "dvc.lock").write_text(lock("0123.dir"))
    sh("git", "add", "-A")
    sh("git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "exp")
    sh("git", "update-ref", f"refs/exps/ab/{'c' * 38}/exp-x", "HEAD")
    (tmp_path / "models" / "model.pt").write_bytes(b"the workspace's")
    monkeypatch.setattr(fusion, "ROOT", tmp_path)
    monkeypatch.setattr(fusion, "git", lambda *a: subprocess.run(["git", *a], cwd=tmp_path, capture_output=True, text=True,
                                                                 check=True).stdout)  # as records.git runs it
    with fusion.open_output("models/model.pt", fusion.exp_ref("exp-x")) as f:
        assert f.read() == b"fold model"
    with pytest.raises(SystemExit, match="experiment exp-x: data/prepared/images.npy is not in the DVC cache"):
        fusion.fold_files("exp-x", tmp_path, {})  # the other outputs a fold needs are absent here
    sh("git", "update-ref", f"refs/exps/ab/{'c' * 38}/exp-y", "HEAD~1")
    with pytest.raises(SystemExit, match="experiment exp-y: its dvc.lock names no data/prepared output"):
        fusion.fold_files("exp-y", tmp_path, {})


def test_a_prepared_set_two_experiments_locked_alike_is_read_once(two_configs, monkeypatch):
    recs, *_ = two_configs
    stored = {"exp-a": None, "exp-b": None}
    monkeypatch.setattr(fusion, "git", fake_git(stored, {"exp-a": "same.dir", "exp-b": "same.dir"}))
    opened, read = fusion.open_output, []
    monkeypatch.setattr(fusion, "open_output", lambda path, rev: read.append((path, rev[-5:])) or opened(path, rev))
    fusion.fuse(*recs, log=lambda line: None)
    assert [r for r in read if r[0].startswith("data/prepared/")] == [
        ("data/prepared/images.npy", "exp-a"), ("data/prepared/index.tsv", "exp-a")]
    assert ("models/model.pt", "exp-b") in read and ("data/pairs/val.tsv", "exp-b") in read


def test_fusing_a_network_with_itself_scores_as_the_network_alone(tmp_path):
    prepared, pairs = write_set(tmp_path)
    images, rows = load_images(prepared)
    val, test = (load_pairs(pairs / f"{s}.tsv", rows) for s in ("val", "test"))
    model, ckpt = load_checkpoint(write_model(tmp_path / "m.pt"))
    d = [pair_distances(model, images, s, TTA.of(ckpt)) for s in (val, test)]
    alone = fusion.scored(d[0], val, d[1], test, "eer", 0.01)
    assert fusion.fuse_fold([tuple(d), tuple(d)], val, test, "eer", 0.01) == pytest.approx(alone)


def test_each_fold_is_fused_from_the_models_and_pairs_its_experiments_locked(two_configs):
    recs, prepared, pairs, models = two_configs
    lines = []
    rec = fusion.fuse(*recs, log=lines.append)
    single, alone = [], []
    for path, images_dir in zip(models, prepared):  # each network on its own experiment's images
        images, rows = load_images(images_dir)
        val, test = (load_pairs(pairs / f"{s}.tsv", rows) for s in ("val", "test"))
        model, ckpt = load_checkpoint(path)
        single.append(tuple(pair_distances(model, images, s, TTA.of(ckpt)) for s in (val, test)))
        alone.append(fusion.scored(*single[-1][:1], val, single[-1][1], test, "eer", 0.01))
    expected = fusion.fuse_fold(single, val, test, "eer", 0.01)
    got = rec["folds"]["3"]
    assert got["names"] == ["exp-a", "exp-b"]
    assert {k: got["metrics"][k] for k in expected} == pytest.approx(expected)
    assert got["alone"]["A"] == pytest.approx(alone[0]) and got["alone"]["B"] == pytest.approx(alone[1])
    assert got["metrics"]["val AUC B"] == pytest.approx(alone[1]["val AUC"])
    assert rec["summary"]["test acc"]["mean"] == pytest.approx(expected["test acc"])
    assert rec["a"] == {"commit": "pipeA", "overrides": {"seed": 0}} and rec["mode"] == "restricted"
    # each network recomputed beside its record: the recorded 0.5 is not what the cache's model gives here
    assert len(lines) == 3 and lines[0].startswith("fold 3 A (exp-a): validation AUC")
    assert "recorded 0.5" in lines[0] and "WARNING: val AUC" in lines[0] and "not as recorded" in lines[0]
    assert lines[2].startswith("fold 3 fused:")


def test_the_test_figures_stay_out_of_the_printout_until_asked_for(two_configs):
    recs, *_ = two_configs
    lines = []
    rec = fusion.fuse(*recs, log=lines.append, show_test=False)
    assert lines and not any("test" in line for line in lines)
    assert "test acc" in rec["folds"]["3"]["metrics"]  # computed, for --write
    text = "\n".join(fusion.comparison(rec, ("val AUC",)))
    assert "| 3 | pipeA | fused |" in text and "val AUC, B - A: 1 paired fold(s)" in text and "test" not in text


def test_folds_validated_on_other_pairs_are_refused(two_configs, tmp_path, monkeypatch):
    recs, prepared, pairs, _ = two_configs
    other = tmp_path / "other-val.tsv"
    other.write_text((pairs / "val.tsv").read_text().replace("\t0\n", "\t1\n", 1))
    opened = fusion.open_output
    monkeypatch.setattr(fusion, "open_output", lambda path, rev: open(other, "rb")
                        if path == "data/pairs/val.tsv" and rev.endswith("/exp-b") else opened(path, rev))
    with pytest.raises(SystemExit, match="fold 3: experiments exp-a and exp-b have different val.tsv"):
        fusion.fuse(*recs)


def test_a_model_missing_from_the_cache_names_its_experiment(two_configs, monkeypatch):
    recs, *_ = two_configs
    opened = fusion.open_output

    def without_b_model(path, rev):
        if path == "models/model.pt" and rev.endswith("/exp-b"):
            raise FileNotFoundError(path)
        return opened(path, rev)
    monkeypatch.setattr(fusion, "open_output", without_b_model)
    with pytest.raises(SystemExit, match="experiment exp-b: models/model.pt is not in the DVC cache"):
        fusion.fuse(*recs)


def test_configurations_with_other_thresholds_are_refused(two_configs):
    recs, *_ = two_configs
    recs[1] = {**recs[1], "params": {**PARAMS, "calibrate.criterion": "accuracy"}}
    with pytest.raises(SystemExit, match="choose their thresholds differently"):
        fusion.fuse(*recs)


def test_the_fusion_section_of_view2_md_gives_its_reproduce_command(two_configs):
    recs, *_ = two_configs
    both = {"pairs.mode": "restricted", "train.stage_convs": [1, 2, 1]}
    recs[0]["overrides"], recs[1]["overrides"] = dict(both), {**both, "seed": 1}
    rec = fusion.fuse(*recs, log=lambda line: None)
    text = view2.view2_md([], [rec])
    assert "## restricted, two networks fused: A, pipeline of commit pipeA" in text
    assert ("`python -m pipeline.lab fuse pipeA pipeB -S pairs.mode=restricted -S 'train.stage_convs=[1,2,1]' "
            "--b-set seed=1 --write`") in text
    row = next(line for line in text.splitlines() if line.startswith("| 3 |"))
    assert row.count("|") == len(view2.FUSION_COLUMNS) + 2 and f"{rec['folds']['3']['metrics']['test acc']:.4f}" in row


def test_a_second_write_replaces_the_same_fusion(two_configs, tmp_path, monkeypatch):
    monkeypatch.setattr(view2, "FUSIONS", tmp_path / "fusion.json")
    recs, *_ = two_configs
    rec = fusion.fuse(*recs, log=lambda line: None)
    fusion.store(rec)
    assert len(fusion.store(json.loads(json.dumps(rec)))) == 1
    assert np.isclose(view2.load_fusions()[0]["summary"]["test acc"]["mean"], rec["summary"]["test acc"]["mean"])


def test_a_fusion_is_one_mlflow_run_with_both_configurations_as_params(two_configs, tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    client = MlflowClient(uri)
    exp_id = client.create_experiment("faceverify")
    recs, *_ = two_configs
    rec = fusion.fuse(*recs, log=lambda line: None)
    view2.log_mlflow([view2.fusion_run(rec)])
    view2.log_mlflow([view2.fusion_run(rec)])  # written again: the same run, updated
    runs = client.search_runs([exp_id], "tags.kind = 'view2' and tags.fusion = '2'")
    assert len(runs) == 1 and runs[0].info.run_name == "view2-restricted-pipeA+pipeB"
    assert runs[0].data.params["fusion.a.commit"] == "pipeA" and runs[0].data.params["fusion.b.seed"] == "1"
    tags = runs[0].data.tags  # two commits, and no git_commit that would name a commit to check out
    assert tags["git_commit_a"] == "pipeA" and tags["git_commit_b"] == "pipeB" and "git_commit" not in tags
    assert runs[0].data.metrics["view2.test_acc_mean"] == pytest.approx(rec["summary"]["test acc"]["mean"])


def test_fuse_names_its_configurations_as_view2_paired_does_and_writes_them(two_configs, tmp_path, monkeypatch, capsys):
    from pipeline.lab.__main__ import main as lab
    recs, *_ = two_configs
    (tmp_path / "view2.json").write_text(json.dumps([{**r, "summary": view2.fold_summary(r["folds"], view2.METRICS)}
                                                     for r in recs]))
    for name, file in (("DATA", "view2.json"), ("FUSIONS", "view2_fusion.json"), ("OUT", "VIEW2.md")):
        monkeypatch.setattr(view2, name, tmp_path / file)
    with pytest.raises(SystemExit, match="A and B are the same configuration"):
        lab(["fuse", "pipeA", "pipeA", "-S", "seed=0"])
    assert lab(["fuse", "pipeA", "pipeB", "--a-set", "seed=0", "--b-set", "seed=1"]) == 0
    assert "(test figures: --test)" in capsys.readouterr().out and not (tmp_path / "view2_fusion.json").exists()
    assert lab(["fuse", "pipeA", "pipeB", "--a-set", "seed=0", "--b-set", "seed=1", "--write", "--no-mlflow"]) == 0
    assert len(view2.load_fusions()) == 1 and "two networks fused" in (tmp_path / "VIEW2.md").read_text()
