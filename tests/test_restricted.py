"""Restricted mode (LFW's image-restricted protocol) learns from the pair labels alone, never from names."""
from pathlib import Path

import numpy as np
import yaml

from conftest import run_stage, small_params
from pipeline import data, pairs, train
from pipeline.tables import read_table, write_table


def label_components(rows: list[tuple]) -> dict[tuple[str, int], tuple[str, int]]:
    """{image: root}: images joined by "same" labels (and their transitive closure), computed here on its own."""
    parent = {}

    def find(x):
        parent.setdefault(x, x)
        while parent[x] != x:
            x = parent[x]
        return x

    for n1, i1, n2, i2, y in rows:
        a, b = find((n1, i1)), find((n2, i2))
        if y and a != b:
            parent[a] = b
    return {x: find(x) for x in list(parent)}


def write(tmp_path: Path, rows) -> tuple[Path, dict]:
    table = tmp_path / "t.tsv"
    write_table(table, rows)
    keys = sorted({(r[0], r[1]) for r in rows} | {(r[2], r[3]) for r in rows})
    return table, {k: n for n, k in enumerate(keys)}


def ids_by_image(pair_set, index: dict) -> dict:
    image = {row: key for key, row in index.items()}
    return {image[r]: i for r, i in zip(np.concatenate([pair_set.idx1, pair_set.idx2]).tolist(),
                                         np.concatenate([pair_set.id1, pair_set.id2]).tolist())}


def test_a_shared_name_without_a_chain_of_same_labels_is_two_identities(tmp_path):
    rows = [("A", 1, "A", 2, 1), ("A", 3, "B", 1, 0)]  # A 3 shares A's name, but no label links it to A 1 or A 2
    table, index = write(tmp_path, rows)
    restricted = ids_by_image(data.load_pairs(table, index, by_name=False), index)
    assert restricted[("A", 1)] == restricted[("A", 2)]
    assert restricted[("A", 3)] != restricted[("A", 1)]
    unrestricted = ids_by_image(data.load_pairs(table, index, by_name=True), index)
    assert unrestricted[("A", 3)] == unrestricted[("A", 1)]  # the names may be used there


def test_a_chain_of_same_pairs_is_one_identity(tmp_path):
    rows = [("A", 1, "A", 2, 1), ("A", 2, "A", 4, 1), ("A", 4, "C", 1, 0), ("C", 1, "C", 2, 1)]
    table, index = write(tmp_path, rows)
    ids = ids_by_image(data.load_pairs(table, index, by_name=False), index)
    assert ids[("A", 1)] == ids[("A", 2)] == ids[("A", 4)]
    assert ids[("C", 1)] == ids[("C", 2)] != ids[("A", 1)]


def test_restricted_training_forms_no_in_batch_positive_the_labels_do_not_imply(tmp_path, lfw_dir, prepared, monkeypatch):
    tables = run_stage(pairs, lfw_dir, tmp_path, "pairs", **{"pairs.mode": "restricted", "pairs.val_fraction": 0.2})
    linked = label_components(read_table(tables / "train.tsv"))
    names = {n for (n, _) in linked}
    assert len(names) < len(set(linked.values())), "the data should hold names that the labels split"
    index = {k: (line.split("\t")[0], int(line.split("\t")[1]))
             for k, line in enumerate((prepared / "index.tsv").read_text().splitlines())}
    seen_sets, positives, batch_rows = [], [], []
    real_load, real_batch, real_loss = train.load_pairs, data.IdentitySampler.batch, train.batch_all_contrastive_loss

    def load_pairs(table, rows, **kwargs):
        seen_sets.append(real_load(table, rows, **kwargs))
        return seen_sets[-1]

    def sampler_batch(self, gen):
        r, i = real_batch(self, gen)
        batch_rows[:] = [index[x] for x in r.tolist()]
        return r, i

    def loss(emb, ids, *args):  # every in-batch pair of equal ids is a positive of the loss
        same = ids.tolist()
        positives.extend((batch_rows[a], batch_rows[b]) for a in range(len(same)) for b in range(a + 1, len(same))
                         if same[a] == same[b])
        return real_loss(emb, ids, *args)

    monkeypatch.setattr(train, "load_pairs", load_pairs)
    monkeypatch.setattr(data.IdentitySampler, "batch", sampler_batch)
    monkeypatch.setattr(train, "batch_all_contrastive_loss", loss)
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(small_params(**{"pairs.mode": "restricted", "pairs.val_fraction": 0.2,
                                                     "train.sampler": "identities", "train.epochs": 1,
                                                     "train.identity_images": "all"})))
    out = tmp_path / "out"
    assert train.main(["--params", str(params), "--prepared", str(prepared), "--pairs", str(tables),
                       "--model", str(out / "model.pt"), "--metrics", str(out / "train.json"),
                       "--plot", str(out / "train.csv"), "--resume", str(out / "resume.pt")]) == 0
    assert positives, "no in-batch positive at all: the test saw nothing"
    unimplied = [(a, b) for a, b in positives if a != b and linked[a] != linked[b]]
    assert not unimplied, f"{len(unimplied)} in-batch positives that no label implies, e.g. {unimplied[0]}"
    assert seen_sets[0].pool is None  # identity_images "all" is unrestricted only: batches hold the pairs' images
    # the training identities themselves (what the pairs sampler batches): one per label component, not per name
    by_image = ids_by_image(seen_sets[0], {key: row for row, key in index.items()})
    assert all((by_image[a] == by_image[b]) == (linked[a] == linked[b]) for a in by_image for b in by_image)
