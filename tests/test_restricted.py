"""Restricted mode (LFW's image-restricted protocol) learns from the pair labels alone, never from names."""
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from conftest import run_stage, small_params
from pipeline import data
from pipeline.stages import pairs, train
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


def test_two_label_classes_differ_only_where_a_labelled_different_pair_joins_them(tmp_path):
    """A ~ B (same), B vs C (different), D vs E (different): A and C are implied different (A's class is
    B's), A and D are not: no label relates them, so nothing may treat them as different people."""
    rows = [("A", 1, "B", 1, 1), ("B", 1, "C", 1, 0), ("D", 1, "E", 1, 0)]
    table, index = write(tmp_path, rows)
    restricted = data.load_pairs(table, index, by_name=False)
    ids = ids_by_image(restricted, index)
    batch = np.array([ids[("A", 1)], ids[("C", 1)], ids[("D", 1)], ids[("E", 1)], ids[("B", 1)]])
    different = restricted.different(batch)
    assert different[0, 1] and different[1, 0] and different[1, 4]  # A-C (through B), B-C (labelled)
    assert different[2, 3]  # D-E (labelled)
    assert not different[0, 2] and not different[0, 3] and not different[1, 2]  # unlinked: unknown
    assert not different[0, 4] and not different.diagonal().any()  # the same class is never "different"
    by_name = data.load_pairs(table, index, by_name=True)
    assert by_name.links is None and (by_name.different(batch) == (batch[:, None] != batch[None, :])).all()


@pytest.mark.parametrize("sampler", ["identities", "pairs"])
def test_restricted_training_forms_only_pairs_the_labels_imply(tmp_path, lfw_dir, prepared, monkeypatch, sampler):
    """Every in-batch positive is a chain of same labels; every in-batch negative joins two label classes
    that a labelled different pair joins. The synthetic table holds names the labels split and classes no
    label relates, so an unlinked negative would be formed if the rule were broken."""
    tables = run_stage(pairs, lfw_dir, tmp_path, "pairs", **{"pairs.mode": "restricted", "pairs.val_fraction": 0.2})
    train_rows = read_table(tables / "train.tsv")
    linked = label_components(train_rows)
    names = {n for (n, _) in linked}
    assert len(names) < len(set(linked.values())), "the data should hold names that the labels split"
    implied = {frozenset((linked[(n1, i1)], linked[(n2, i2)])) for n1, i1, n2, i2, y in train_rows if not y}
    index = {k: (line.split("\t")[0], int(line.split("\t")[1]))
             for k, line in enumerate((prepared / "index.tsv").read_text().splitlines())}
    seen_sets, positives, negatives, batch_rows, scored = [], [], [], [], {"batch_all": 0, "pairs": []}
    real_load, real_batch, real_loss = train.load_pairs, data.IdentitySampler.batch, train.batch_all_contrastive_loss
    real_batches, real_pair_loss = train.batches, train.contrastive_loss

    def load_pairs(table, rows, **kwargs):
        seen_sets.append(real_load(table, rows, **kwargs))
        return seen_sets[-1]

    def sampler_batch(self, gen):
        r, i = real_batch(self, gen)
        batch_rows[:] = [index[x] for x in r.tolist()]
        return r, i

    def loss(emb, ids, margin, pos_margin, neg_weight, different=None):
        scored["batch_all"] += 1
        same = ids.tolist()
        diff = different.tolist() if different is not None else None
        for a in range(len(same)):
            for b in range(a + 1, len(same)):
                if same[a] == same[b]:
                    positives.append((batch_rows[a], batch_rows[b]))
                elif diff is None or diff[a][b]:
                    negatives.append((batch_rows[a], batch_rows[b]))
        return real_loss(emb, ids, margin, pos_margin, neg_weight, different)

    def pair_loss(distance, same, margin, pos_margin, neg_weight=1.0):  # a pair batch: first images, then second
        if distance.requires_grad:  # training's; the validation loss scores the validation pairs
            half = len(batch_rows) // 2
            for a, b, y in zip(batch_rows[:half], batch_rows[half:], same.tolist()):
                (positives if y else negatives).append((a, b))
                scored["pairs"].append((a, b, y))
        return real_pair_loss(distance, same, margin, pos_margin, neg_weight)

    monkeypatch.setattr(train, "load_pairs", load_pairs)
    monkeypatch.setattr(data.IdentitySampler, "batch", sampler_batch)
    monkeypatch.setattr(train, "batch_all_contrastive_loss", loss)
    monkeypatch.setattr(train, "contrastive_loss", pair_loss)
    if sampler == "pairs":  # the rows of a pair batch: its first images, then its second images, in the order
        def rows_of(tr, p, gen, images):  # that `batches` draws first from its generator
            order = torch.randperm(len(tr.label), generator=torch.Generator().manual_seed(gen.initial_seed())).numpy()
            for k, item in enumerate(real_batches(tr, p, gen, images)):
                b = order[k * p.batch_size:(k + 1) * p.batch_size]
                batch_rows[:] = [index[x] for x in np.concatenate([tr.idx1[b], tr.idx2[b]]).tolist()]
                yield item
        monkeypatch.setattr(train, "batches", rows_of)
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(small_params(**{"pairs.mode": "restricted", "pairs.val_fraction": 0.2,
                                                     "train.sampler": sampler,
                                                     "train.epochs": 2})))
    out = tmp_path / "out"
    assert train.main(["--params", str(params), "--prepared", str(prepared), "--pairs", str(tables),
                       "--model", str(out / "model.pt"), "--metrics", str(out / "train.json"),
                       "--plot", str(out / "train.csv"), "--resume", str(out / "resume.pt")]) == 0
    assert positives, "no in-batch positive at all: the test saw nothing"
    # a batch of pairs holds its labelled different pairs; identity batches of linked classes are rare
    assert negatives or sampler == "identities", "no in-batch negative at all: the test saw nothing"
    unimplied = [(a, b) for a, b in positives if a != b and linked[a] != linked[b]]
    assert not unimplied, f"{len(unimplied)} in-batch positives that no label implies, e.g. {unimplied[0]}"
    unlinked = [(a, b) for a, b in negatives if frozenset((linked[a], linked[b])) not in implied]
    assert not unlinked, f"{len(unlinked)} in-batch negatives that no label implies, e.g. {unlinked[0]}"
    assert seen_sets[0].pool is None  # restricted: batches hold the pairs' images alone
    if sampler == "pairs":  # a pair batch scores exactly its labelled pairs, never batch-all
        labelled = {((n1, i1), (n2, i2), y) for n1, i1, n2, i2, y in train_rows}
        assert scored["batch_all"] == 0 and scored["pairs"] and set(scored["pairs"]) <= labelled
    else:
        assert scored["batch_all"] and not scored["pairs"]
    # the training identities themselves: one per label component, not per name
    by_image = ids_by_image(seen_sets[0], {key: row for row, key in index.items()})
    assert all((by_image[a] == by_image[b]) == (linked[a] == linked[b]) for a in by_image for b in by_image)
