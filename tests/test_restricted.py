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

    def loss(emb, ids, *args, **kwargs):  # every in-batch pair of equal ids is a positive of the loss
        same = ids.tolist()
        positives.extend((batch_rows[a], batch_rows[b]) for a in range(len(same)) for b in range(a + 1, len(same))
                         if same[a] == same[b])
        return real_loss(emb, ids, *args, **kwargs)

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


def test_labelled_negatives_batch_linked_classes_and_mine_only_the_differences_the_labels_give(tmp_path, lfw_dir,
                                                                                            prepared, monkeypatch):
    tables = run_stage(pairs, lfw_dir, tmp_path, "pairs", **{"pairs.mode": "restricted", "pairs.val_fraction": 0.2})
    rows = read_table(tables / "train.tsv")
    linked = label_components(rows)
    told_apart = {frozenset((linked[(n1, i1)], linked[(n2, i2)])) for n1, i1, n2, i2, y in rows if not y}
    index = {k: (line.split("\t")[0], int(line.split("\t")[1]))
             for k, line in enumerate((prepared / "index.tsv").read_text().splitlines())}
    negatives, batches, batch_rows = [], [], []
    real_batch, real_loss = data.IdentitySampler.batch, train.batch_all_contrastive_loss

    def sampler_batch(self, gen):
        r, i = real_batch(self, gen)
        batch_rows[:] = [index[x] for x in r.tolist()]
        batches.append(list(batch_rows))
        return r, i

    def loss(emb, ids, *args, different):  # the pairs the loss takes as different people
        same = ids.tolist()
        negatives.extend((batch_rows[a], batch_rows[b]) for a in range(len(same)) for b in range(a + 1, len(same))
                         if same[a] != same[b] and different[a, b])
        return real_loss(emb, ids, *args, different=different)

    monkeypatch.setattr(data.IdentitySampler, "batch", sampler_batch)
    monkeypatch.setattr(train, "batch_all_contrastive_loss", loss)
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(small_params(**{"pairs.mode": "restricted", "pairs.val_fraction": 0.2,
                                                     "train.sampler": "identities", "train.epochs": 1,
                                                     "train.per_identity": 2, "train.negatives": "labelled"})))
    out = tmp_path / "out"
    assert train.main(["--params", str(params), "--prepared", str(prepared), "--pairs", str(tables),
                       "--model", str(out / "model.pt"), "--metrics", str(out / "train.json"),
                       "--plot", str(out / "train.csv"), "--resume", str(out / "resume.pt")]) == 0
    assert negatives, "no in-batch negative at all: the test saw nothing"
    unlabelled = [(a, b) for a, b in negatives if frozenset((linked[a], linked[b])) not in told_apart]
    assert not unlabelled, f"{len(unlabelled)} in-batch negatives that no label gives, e.g. {unlabelled[0]}"
    for batch in batches:  # labelled links for the negatives, and classes of two images or more for the positives
        classes = {linked[x] for x in batch}
        assert any(frozenset((c, o)) in told_apart for c in classes for o in classes)
        assert any(len({x for x in batch if linked[x] == c}) >= 2 for c in classes)


def test_a_labelled_batch_holds_half_its_classes_as_linked_pairs_and_half_with_positives():
    import torch
    # images 0-23: classes of three images (0-2, 3-5, ..., 21-23) from same pairs; images 24-31 singletons,
    # told apart in pairs (24, 25), (26, 27), ... by different pairs
    same = [(3 * c, 3 * c + j) for c in range(8) for j in (1, 2)]
    diff = [(24 + 2 * k, 25 + 2 * k) for k in range(4)]
    idx1, idx2 = (np.array([p[i] for p in same + diff]) for i in (0, 1))
    label = np.array([1] * len(same) + [0] * len(diff))
    pair_set = data.PairSet(idx1, idx2, label, *data.label_identities(idx1, idx2, label))
    sampler = data.IdentitySampler(pair_set, batch_images=64, per_identity=4, identity_fraction=1.0, labelled=True)
    assert (sampler.p, sampler.n_links, sampler.n_fill) == (4, 2, 32)  # 8 groups at most: 4 of them, 2 links
    gen = torch.Generator().manual_seed(0)
    for _ in range(4):
        rows, ids = sampler.batch(gen)
        grouped = sorted({r // 3 for r in rows.tolist()[:16]})
        assert len(grouped) == 4 and max(grouped) < 8  # four classes of three images, four images each
        linked = set(rows.tolist()[16:32])  # both singletons of two different pairs, each repeated
        assert len(linked) == 4 and min(linked) >= 24
        assert all({2 * (a // 2), 2 * (a // 2) + 1} <= linked for a in linked)
