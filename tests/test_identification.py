"""One-shot identification against hand-worked galleries: ranks with ties, N-way trials, the open set."""
import numpy as np
import pytest

from pipeline import identification as ident


def test_the_gallery_holds_one_image_of_each_person_and_the_rest_are_probes():
    people = np.array([2, 0, 0, 1, 2, 2, 3])  # person 1 and 3 have one image each
    gallery, probes = ident.split_gallery(people, np.random.default_rng(0))
    assert people[gallery].tolist() == [0, 1, 2, 3]  # one each, in person order
    assert sorted(gallery.tolist() + probes.tolist()) == list(range(7))
    assert sorted(people[probes].tolist()) == [0, 2, 2]  # a person with one image gives no probe
    again, _ = ident.split_gallery(people, np.random.default_rng(0))
    assert np.array_equal(gallery, again)  # seeded


def test_a_tie_with_another_person_counts_against_the_probe():
    dist = np.array([[0.1, 0.5, 0.3],
                     [0.4, 0.4, 0.9],    # its own column 1 ties with column 0: rank 2
                     [0.7, 0.6, 0.2]])   # own column 0, two nearer: rank 3
    ranks = ident.ranks(dist, np.array([0, 1, 0]))
    assert ranks.tolist() == [1, 2, 3]
    assert ident.cmc(ranks, 3).tolist() == pytest.approx([1 / 3, 2 / 3, 1.0])
    assert ident.ranks(np.zeros((2, 4)), np.array([0, 3])).tolist() == [4, 4]  # a constant embedding: last


def test_n_way_counts_a_hit_only_where_the_own_person_is_strictly_nearest():
    dist = np.array([[0.2, 0.1, 0.5, 0.6]])  # own column 0; column 1 is nearer, the others farther
    rng = np.random.default_rng(0)
    # 2-way: one other person, column 1 in a third of the draws
    assert ident.n_way(dist, np.array([0]), 2, rng, draws=30_000) == pytest.approx(2 / 3, abs=0.01)
    assert ident.n_way(dist, np.array([0]), 4, rng, draws=100) == 0.0  # every other person: column 1 always there
    assert ident.n_way(np.array([[0.2, 0.2]]), np.array([0]), 2, rng, draws=100) == 0.0  # a tie is a miss
    assert ident.n_way(np.array([[0.6, 0.1, 0.5]]), np.array([1]), 3, rng, draws=100) == 1.0
    with pytest.raises(ValueError, match="5-way identification needs 5 people with a gallery image; there are 4"):
        ident.n_way(dist, np.array([0]), 5, rng)


def test_the_open_set_rate_counts_genuine_probes_identified_within_the_impostors_threshold():
    # four people on a line; gallery images at 0, 10, 20, 30; probes of each person near their own
    emb = np.array([[0.0], [10.0], [20.0], [30.0], [0.5], [10.5], [25.0], [31.0], [19.0]])
    people = np.array([0, 1, 2, 3, 0, 1, 2, 3, 2])
    gallery, probes = np.arange(4), np.arange(4, 9)
    dist = ident.distances(emb, emb[gallery])
    rng = np.random.default_rng(0)
    enrolled = np.zeros(4, dtype=bool)  # every person has a probe: two of the four, as open_set_dir draws them
    enrolled[np.random.default_rng(0).choice(np.arange(4), size=2, replace=False)] = True
    rate = ident.open_set_dir(dist, people, probes, rng, far=0.01)  # gallery column k is person k
    # by hand: impostors are every image of the two people not enrolled; none may be accepted at 1% of
    # a handful, so the threshold is the nearest impostor's distance; a genuine probe counts where its
    # nearest enrolled person is its own and strictly nearer than that
    imp = [min(abs(emb[i, 0] - emb[g, 0]) for g in np.flatnonzero(enrolled)) for i in range(9) if not enrolled[people[i]]]
    genuine = [i for i in range(4, 9) if enrolled[people[i]]]
    hits = [i for i in genuine
            if np.flatnonzero(enrolled)[np.argmin([abs(emb[i, 0] - emb[g, 0]) for g in np.flatnonzero(enrolled)])] == people[i]
            and min(abs(emb[i, 0] - emb[g, 0]) for g in np.flatnonzero(enrolled)) < min(imp)]
    assert rate == pytest.approx(len(hits) / len(genuine))


def test_the_open_set_enrols_someone_with_a_second_photo_and_leaves_someone_out():
    """Four people, two with one photo: any draw enrols one with a probe and leaves an impostor."""
    people = np.array([0, 0, 1, 2, 2, 3])
    gallery, probes = np.array([0, 2, 3, 5]), np.array([1, 4])
    emb = people[:, None] * 10.0
    for seed in range(20):
        cols = np.array([0, 0, 1, 2, 2, 3])  # each image's gallery column: gallery = rows 0, 2, 3, 5
        rate = ident.open_set_dir(ident.distances(emb, emb[gallery]), cols, probes, np.random.default_rng(seed))
        assert rate == 1.0  # the enrolled one with a probe is found, within every impostor's distance
    with pytest.raises(ValueError, match="needs 2 people, one with a second image"):
        ident.open_set_dir(np.zeros((2, 1)), np.array([0, 0]), np.array([1]), np.random.default_rng(0))


def test_identification_of_well_separated_people_is_perfect_and_leaves_out_n_above_the_people():
    rng = np.random.default_rng(1)
    people = np.repeat(np.arange(6), 3)
    emb = people[:, None] * 10.0 + rng.normal(0, 0.1, (18, 4))
    figures, curve = ident.identification(emb, people, ways=(5, 20))
    assert figures["id_people"] == 6 and figures["id_probes"] == 12
    assert figures["id_rank1"] == figures["id_rank5"] == figures["id_5way"] == 1.0
    assert "id_20way" not in figures  # 20 > 6 people: left out, not an error
    assert curve.tolist() == [1.0] * 6 and figures["id_dir_at_far_1pct"] == 1.0
    shuffled, _ = ident.identification(rng.normal(0, 1, (18, 4)), people, ways=(5,))
    assert shuffled["id_rank1"] < 0.6  # random embeddings: near chance (1/6)
    with pytest.raises(ValueError, match="needs a person with two or more images"):
        ident.identification(emb[:6], np.arange(6))
