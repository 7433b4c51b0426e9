import copy
import math

import pytest
import torch
import yaml

from conftest import small_params
from pipeline.model import (Siamese, batch_all_contrastive_loss, contrastive_loss, euclidean, euclidean_matrix,
                            load_checkpoint)
from pipeline.params import load_params


@pytest.mark.parametrize("d, same, expected", [
    (0.3, 1, 0.3 ** 2 / 2),          # same pair: pulled in, whatever the margin
    (1.5, 1, 1.5 ** 2 / 2),
    (0.3, 0, (1.0 - 0.3) ** 2 / 2),  # different pair inside the margin: pushed out
    (1.5, 0, 0.0),                   # different pair beyond the margin: no loss
])
def test_contrastive_loss_hand_computed(d, same, expected):
    assert contrastive_loss(torch.tensor([d]), torch.tensor([same]), margin=1.0).item() == pytest.approx(expected)


def test_contrastive_loss_averages_pairs():
    loss = contrastive_loss(torch.tensor([0.3, 0.3]), torch.tensor([1, 0]), margin=1.0)
    assert loss.item() == pytest.approx((0.09 / 2 + 0.49 / 2) / 2)


def test_positive_margin_leaves_close_same_pairs_alone():
    d, same = torch.tensor([0.2, 0.5, 0.5]), torch.tensor([1, 1, 0])
    loss = contrastive_loss(d, same, margin=1.0, pos_margin=0.3)
    assert loss.item() == pytest.approx((0 + 0.2 ** 2 + 0.5 ** 2) / 2 / 3)
    e = torch.tensor([[0.0, 0.0], [0.2, 0.0], [0.0, 0.5], [0.0, 0.9]])
    ids = torch.tensor([0, 0, 1, 1])
    # positives (0,1) d=0.2 -> 0, (2,3) d=0.4 -> 0.1; negatives in margin: d(0,2)=0.5, d(1,2)=sqrt(.29), d(0,3)=0.9, d(1,3)=sqrt(.85)
    neg = [0.5, 0.29 ** 0.5, 0.9, 0.85 ** 0.5]
    expected = ((0 + 0.1 ** 2) / 2 + sum((1 - x) ** 2 for x in neg) / 4) / 2
    assert batch_all_contrastive_loss(e, ids, margin=1.0, pos_margin=0.3).item() == pytest.approx(expected, abs=1e-5)


def test_batch_all_loss_hand_computed():
    e = torch.tensor([[0.0, 0.0], [0.6, 0.0], [0.0, 0.8], [3.0, 0.0]])
    ids = torch.tensor([0, 0, 1, 2])
    # positives: (0,1) d=0.6. negatives inside margin 1: (0,2) d=0.8, (1,2) d=1.0 -> not inside; others far
    expected = (0.6 ** 2 + (1 - 0.8) ** 2) / 2
    assert batch_all_contrastive_loss(e, ids, margin=1.0).item() == pytest.approx(expected, abs=1e-5)


def test_batch_all_loss_scores_only_pairs_known_to_differ():
    """`different` marks the pairs known to be different people; a pair neither the same nor known to
    differ (two label classes no label relates) adds nothing, however close."""
    e = torch.tensor([[0.0, 0.0], [0.6, 0.0], [0.0, 0.8], [0.0, 0.1]])
    ids = torch.tensor([0, 0, 1, 2])
    different = torch.zeros(4, 4, dtype=torch.bool)
    different[0, 2] = different[2, 0] = True  # only (0, 2) d=0.8; (0, 3) d=0.1 is unknown
    expected = (0.6 ** 2 + (1 - 0.8) ** 2) / 2
    assert batch_all_contrastive_loss(e, ids, margin=1.0, different=different).item() == pytest.approx(expected, abs=1e-5)
    everything = batch_all_contrastive_loss(e, ids, margin=1.0).item()
    assert everything > expected + 0.1  # by default (3, 0), (3, 1), (3, 2) push too


def test_distance_matrix_holds_every_row_pair_distance():
    torch.manual_seed(0)
    a, b = torch.randn(5, 8), torch.randn(3, 8)
    d = euclidean_matrix(a, b)
    assert d.shape == (5, 3)
    assert torch.allclose(d, euclidean(a.repeat_interleave(3, 0), b.repeat(5, 1)).view(5, 3), atol=1e-5)
    assert torch.equal(euclidean_matrix(a), euclidean_matrix(a, a))  # b defaults to a


def test_distance_matrix_of_one_batch_keeps_the_gradient_of_the_one_square_sum_formula():
    torch.manual_seed(0)
    e = torch.randn(64, 16)
    sq = e.pow(2).sum(1)
    reference = (sq[:, None] + sq[None, :] - 2 * e @ e.T).clamp_min(1e-12).sqrt()
    x = e.clone().requires_grad_()
    w = torch.rand(64, 64)
    (euclidean_matrix(x) * w).sum().backward()
    y = e.clone().requires_grad_()
    sq_y = y.pow(2).sum(1)
    ((sq_y[:, None] + sq_y[None, :] - 2 * y @ y.T).clamp_min(1e-12).sqrt() * w).sum().backward()
    assert torch.equal(euclidean_matrix(e), reference) and torch.equal(x.grad, y.grad)


def test_negative_weight_scales_the_different_person_term_alone():
    d, same = torch.tensor([0.6, 0.3, 1.5]), torch.tensor([1, 0, 0])
    pos, neg = 0.2 ** 2, (1 - 0.3) ** 2  # pos_margin 0.4; the pair at 1.5 is beyond the margin
    assert contrastive_loss(d, same, margin=1.0, pos_margin=0.4, neg_weight=2.0).item() == \
        pytest.approx((pos + 2 * neg) / 2 / 3)
    e = torch.tensor([[0.0, 0.0], [0.6, 0.0], [0.0, 0.8], [3.0, 0.0]])
    ids = torch.tensor([0, 0, 1, 2])
    for w in (0.5, 3.0):  # the batch's one positive (0,1) d=0.6 and one active negative (0,2) d=0.8, as above
        assert batch_all_contrastive_loss(e, ids, margin=1.0, neg_weight=w).item() == \
            pytest.approx((0.6 ** 2 + w * (1 - 0.8) ** 2) / 2, abs=1e-5)


def model(**kw):
    torch.manual_seed(0)
    return Siamese(**{"in_size": 32, "width": 8, "embedding_dim": 16, "stage_convs": [2, 2, 2], **kw}).eval()


def test_distance_is_symmetric_and_zero_on_itself():
    m = model()
    a = torch.randint(0, 256, (4, 1, 32, 32), dtype=torch.uint8)
    b = torch.randint(0, 256, (4, 1, 32, 32), dtype=torch.uint8)
    with torch.no_grad():
        assert torch.allclose(m(a, b), m(b, a), atol=1e-6)
        assert torch.allclose(m(a, a), torch.zeros(4), atol=1e-4)
        assert (m(a, b) > 0).all()


def test_both_branches_share_weights():
    m = model()
    # one backbone: the parameters appear once, and a gradient through either input reaches them
    names = [n for n, _ in m.named_parameters()]
    assert len(names) == len(set(names)) and not any("branch" in n for n in names)
    a = torch.randint(0, 256, (2, 1, 32, 32), dtype=torch.uint8)
    m.train()
    m(a, a.flip(-1)).sum().backward()
    first = m.features[0].weight
    assert first.grad is not None and first.grad.abs().sum() > 0


def test_normalised_embeddings_have_unit_length():
    with torch.no_grad():
        e = model().embed(torch.randint(0, 256, (3, 1, 32, 32), dtype=torch.uint8))
    assert torch.allclose(e.norm(dim=1), torch.ones(3), atol=1e-5)
    assert torch.allclose(euclidean(e, -e), torch.full((3,), 2.0), atol=1e-5)


def test_pooling_before_relu_trains_exactly_as_pooling_after_it():
    """Each max-pool sits between its BN and ReLU; the textbook order conv-BN-ReLU-pool gives the same
    embeddings and the same gradients bit for bit in training (max and ReLU commute, and each value gets
    its window's gradient or zero either way), and the same state dict keys."""
    m = model().train()
    layers = list(m.features)
    pools = [k for k, l in enumerate(layers) if isinstance(l, torch.nn.MaxPool2d)]
    assert pools and all(isinstance(layers[k - 1], torch.nn.BatchNorm2d) and isinstance(layers[k + 1], torch.nn.ReLU)
                         for k in pools)
    textbook = copy.deepcopy(m)
    for k in pools:
        layers[k], layers[k + 1] = layers[k + 1], layers[k]
    textbook.features = torch.nn.Sequential(*[copy.deepcopy(l) for l in layers])
    assert list(textbook.state_dict()) == list(m.state_dict())
    x = torch.randint(0, 256, (8, 1, 32, 32), dtype=torch.uint8)
    ids = torch.arange(8) // 2
    outputs = []
    for net in (m, textbook):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            e = net.embed(x)
        batch_all_contrastive_loss(e, ids, 1.0, 0.4).backward()
        outputs.append((e.detach(), [q.grad for q in net.parameters()], [b.clone() for b in net.buffers()]))
    (e1, g1, b1), (e2, g2, b2) = outputs
    assert torch.equal(e1, e2) and all(torch.equal(a, b) for a, b in zip(g1 + b1, g2 + b2))
    assert any(g.abs().sum() > 0 for g in g1)


def test_the_first_stage_is_one_strided_convolution_and_nothing_runs_at_full_resolution():
    for size in (32, 33, 80):
        m = model(in_size=size)
        first = list(m.features)[:3]
        assert [type(l) for l in first] == [torch.nn.Conv2d, torch.nn.BatchNorm2d, torch.nn.ReLU]
        assert first[0].kernel_size == (4, 4) and first[0].stride == (2, 2)
        assert sum(isinstance(l, torch.nn.MaxPool2d) for l in m.features) == 3
        x = torch.randint(0, 256, (2, 1, size, size), dtype=torch.uint8).float()
        assert m.features[0](x).shape[-1] == size // 2
        assert m.embed(x).shape == (2, 16)
    with pytest.raises(ValueError, match="at least 16x16"):
        model(in_size=12)


def test_stage_convs_sets_the_convolutions_of_each_later_stage():
    """stage_convs [1, 1, 3]: one conv3x3 in the second and third stages, three in the fourth."""
    plain, custom = model(), model(stage_convs=[1, 1, 3])
    assert custom.config["stage_convs"] == [1, 1, 3]

    def convs(m):
        return [(c.in_channels, c.out_channels) for c in m.features if isinstance(c, torch.nn.Conv2d)]
    assert convs(plain) == [(1, 8), (8, 16), (16, 16), (16, 32), (32, 32), (32, 64), (64, 64)]
    assert convs(custom) == [(1, 8), (8, 16), (16, 32), (32, 64), (64, 64), (64, 64)]
    x = torch.randint(0, 256, (2, 1, 32, 32), dtype=torch.uint8).float()
    assert custom.features(x).shape == plain.features(x).shape
    assert Siamese(**custom.config).config == custom.config
    for bad in ([0, 2, 2], [2, 2]):
        with pytest.raises(ValueError, match="three numbers >= 1"):
            model(stage_convs=bad)
    assert [type(m).__name__ for m in plain.features] == ["Conv2d", "BatchNorm2d", "ReLU"] + 3 * (
        ["Conv2d", "BatchNorm2d", "ReLU", "Conv2d", "BatchNorm2d", "MaxPool2d", "ReLU"])


def test_from_params_builds_the_model_that_params_yaml_describes(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(small_params(**{"prepare.image_size": 48, "train.width": 6, "train.embedding_dim": 24,
                                                   "train.stage_convs": [1, 2, 3]})))
    m = Siamese.from_params(load_params(path))
    assert m.config == dict(in_size=48, width=6, embedding_dim=24, stage_convs=[1, 2, 3])
    assert m.head[-1].out_features == 24 and m.embed(torch.zeros(2, 1, 48, 48)).shape == (2, 24)


def test_checkpoint_rebuilds_model_from_its_own_config(tmp_path):
    m = model()
    path = tmp_path / "m.pt"
    torch.save({"config": m.config, "state_dict": m.state_dict()}, path)
    m2, ckpt = load_checkpoint(path)
    x = torch.randint(0, 256, (2, 1, 32, 32), dtype=torch.uint8)
    with torch.no_grad():
        assert torch.allclose(m.embed(x), m2.embed(x), atol=1e-5)
    conv = next(c for c in m2.features if isinstance(c, torch.nn.Conv2d) and c.in_channels > 1)
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)  # the fast layout for inference
    assert ckpt["config"] == m.config and not math.isnan(m2(x, x).sum().item())


def test_a_checkpoint_of_the_fixed_architecture_in_the_older_config_form_loads(tmp_path):
    """Checkpoints that still name arch, normalize, dropout, stem (and a head behind a dropout) load
    where they describe today's network; any other value is an error naming the setting."""
    m = model()
    old_config = {"arch": "compact", "normalize": True, "dropout": 0.0, "stem": "stride", **m.config}
    old_state = {k.replace("head.1.", "head.2."): v for k, v in m.state_dict().items()}
    torch.save({"config": old_config, "state_dict": old_state}, tmp_path / "old.pt")
    m2, _ = load_checkpoint(tmp_path / "old.pt")
    x = torch.randint(0, 256, (2, 1, 32, 32), dtype=torch.uint8)
    with torch.no_grad():
        assert torch.allclose(m.embed(x), m2.embed(x), atol=1e-5)
    for key, value in (("arch", "koch2015"), ("normalize", False), ("dropout", 0.1), ("stem", "pool")):
        torch.save({"config": {**old_config, key: value}, "state_dict": old_state}, tmp_path / "other.pt")
        with pytest.raises(ValueError, match=f"{key}="):
            load_checkpoint(tmp_path / "other.pt")


class Evil:
    def __reduce__(self):
        import os
        return (os.system, ("touch PWNED",))


def test_untrusted_checkpoint_cannot_run_code(tmp_path, monkeypatch):
    import pickle
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pt"
    torch.save({"config": {}, "state_dict": Evil()}, path, pickle_protocol=pickle.HIGHEST_PROTOCOL)
    with pytest.raises(pickle.UnpicklingError):
        load_checkpoint(path)
    assert not (tmp_path / "PWNED").exists()
