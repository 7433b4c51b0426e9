import copy
import math

import pytest
import torch
import yaml

from conftest import small_params
from pipeline.model import (Siamese, batch_all_contrastive_loss, contrastive_loss, cross_contrastive_loss, euclidean,
                            euclidean_matrix, load_checkpoint)
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


def test_cross_batch_loss_hand_computed():
    e = torch.tensor([[0.0, 0.0], [0.0, 1.2]])
    ids = torch.tensor([0, 1])
    mem = torch.tensor([[0.6, 0.0], [0.0, 0.3], [3.0, 0.0]])
    mem_ids = torch.tensor([0, 2, 3])
    # positive: e0-m0 d=0.6 (0.2 past pos_margin 0.4); negatives inside margin 1: e0-m1 d=0.3, e1-m1 d=0.9;
    # e1-m0 d=sqrt(1.8) and both pairs with m2 are outside it
    expected = (0.2 ** 2 + ((1 - 0.3) ** 2 + (1 - 0.9) ** 2) / 2) / 2
    assert cross_contrastive_loss(e, ids, mem, mem_ids, margin=1.0, pos_margin=0.4).item() == pytest.approx(expected, abs=1e-5)


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
    mem, mem_ids = torch.tensor([[0.0, 0.3]]), torch.tensor([3])
    for w in (0.5, 3.0):  # the batch's one positive (0,1) d=0.6 and one active negative (0,2) d=0.8, as above
        assert batch_all_contrastive_loss(e, ids, margin=1.0, neg_weight=w).item() == \
            pytest.approx((0.6 ** 2 + w * (1 - 0.8) ** 2) / 2, abs=1e-5)
        # no positive against the memory: only the negatives inside the margin, weighted
        unweighted = cross_contrastive_loss(e, ids, mem, mem_ids, margin=1.0).item()
        assert cross_contrastive_loss(e, ids, mem, mem_ids, margin=1.0, neg_weight=w).item() == \
            pytest.approx(w * unweighted, abs=1e-6)


def model(**kw):
    torch.manual_seed(0)
    return Siamese("compact", **{"in_size": 32, "width": 8, "embedding_dim": 16, **kw}).eval()


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


def test_koch2015_builds_at_105_and_refuses_small_inputs():
    m = Siamese("koch2015", in_size=105, embedding_dim=32).eval()
    with torch.no_grad():
        assert m.embed(torch.zeros(2, 1, 105, 105)).shape == (2, 32)
    convs = [l for l in m.features if isinstance(l, torch.nn.Conv2d)]
    assert [(c.out_channels, c.kernel_size[0]) for c in convs] == [(64, 10), (128, 7), (128, 4), (256, 4)]
    with pytest.raises(ValueError, match="needs a larger input"):
        Siamese("koch2015", in_size=32)


@pytest.mark.parametrize("arch, size", [("compact", 32), ("koch2015", 105)])
def test_pooling_before_relu_trains_exactly_as_pooling_after_it(arch, size):
    """Each max-pool sits between its BN and ReLU; the textbook order conv-BN-ReLU-pool gives the same
    embeddings and the same gradients bit for bit in training (max and ReLU commute, and each value gets
    its window's gradient or zero either way), and the same state dict keys, so older checkpoints load."""
    torch.manual_seed(0)
    m = Siamese(arch, in_size=size, width=8, embedding_dim=16).train()
    layers = list(m.features)
    pools = [k for k, l in enumerate(layers) if isinstance(l, torch.nn.MaxPool2d)]
    assert pools and all(isinstance(layers[k - 1], torch.nn.BatchNorm2d) and isinstance(layers[k + 1], torch.nn.ReLU)
                         for k in pools)
    textbook = copy.deepcopy(m)
    for k in pools:
        layers[k], layers[k + 1] = layers[k + 1], layers[k]
    textbook.features = torch.nn.Sequential(*[copy.deepcopy(l) for l in layers])
    assert list(textbook.state_dict()) == list(m.state_dict())
    x = torch.randint(0, 256, (8, 1, size, size), dtype=torch.uint8)
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


def test_pool_first_is_the_same_function_where_batch_norm_scales_are_positive():
    """Max-pooling commutes with an increasing per-channel map: with every BN scale > 0 the two layer
    orders compute the same embedding in eval mode; a negative scale is where they differ."""
    plain, early = model(), model(pool_first=True)
    assert early.config["pool_first"] is True and "pool_first" not in plain.config  # old checkpoints unchanged
    for m in plain.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
    # the same tensors in the same order; only the layer indices in the state dict differ
    early.load_state_dict(dict(zip(early.state_dict(), plain.state_dict().values())))
    x = torch.randint(0, 256, (4, 1, 32, 32), dtype=torch.uint8)
    with torch.no_grad():
        assert torch.allclose(early.embed(x), plain.embed(x), atol=1e-5)
        for m in plain.features:  # negative scales: max-pooling after the BN takes the other extreme
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.neg_()
        early.load_state_dict(dict(zip(early.state_dict(), plain.state_dict().values())))
        assert (early.embed(x) - plain.embed(x)).abs().max() > 0.05
    pools = [k for k, m in enumerate(early.features) if isinstance(m, torch.nn.MaxPool2d)]
    assert all(isinstance(early.features[k - 1], torch.nn.Conv2d) and isinstance(early.features[k + 1], torch.nn.BatchNorm2d)
               for k in pools) and len(pools) == 4
    with pytest.raises(ValueError, match="compact"):
        Siamese("koch2015", in_size=105, pool_first=True)


def test_stride_stem_runs_nothing_at_full_resolution():
    """stem "stride": the first stage is one 4x4 conv of stride 2, BN, ReLU (no max-pool), and every
    later layer sees the same sizes as in the default network, for even and odd inputs."""
    for size in (32, 33, 80):
        plain, strided = model(in_size=size), model(in_size=size, stem="stride")
        assert strided.config["stem"] == "stride" and "stem" not in plain.config  # old checkpoints unchanged
        first = list(strided.features)[:3]
        assert [type(m) for m in first] == [torch.nn.Conv2d, torch.nn.BatchNorm2d, torch.nn.ReLU]
        assert first[0].kernel_size == (4, 4) and first[0].stride == (2, 2)
        assert sum(isinstance(m, torch.nn.MaxPool2d) for m in strided.features) == 3
        x = torch.randint(0, 256, (2, 1, size, size), dtype=torch.uint8).float()
        assert strided.features[0](x).shape[-1] == size // 2
        assert strided.features(x).shape == plain.features(x).shape
        assert strided.embed(x).shape == (2, 16)
    with pytest.raises(ValueError, match="compact"):
        Siamese("koch2015", in_size=105, stem="stride")
    with pytest.raises(ValueError, match="unknown stem 'conv'"):
        model(stem="conv")


def test_stage_convs_sets_the_convolutions_of_each_later_stage():
    """stage_convs [1, 1, 3]: one conv3x3 in the second and third stages, three in the fourth, the
    channels and output sizes as in the default [2, 2, 2]; old checkpoints (no key) rebuild as [2, 2, 2]."""
    plain, custom = model(stem="stride"), model(stem="stride", stage_convs=[1, 1, 3])
    assert "stage_convs" not in plain.config and custom.config["stage_convs"] == [1, 1, 3]

    def convs(m):
        return [(c.in_channels, c.out_channels) for c in m.features if isinstance(c, torch.nn.Conv2d)]
    assert convs(plain) == [(1, 8), (8, 16), (16, 16), (16, 32), (32, 32), (32, 64), (64, 64)]
    assert convs(custom) == [(1, 8), (8, 16), (16, 32), (32, 64), (64, 64), (64, 64)]
    x = torch.randint(0, 256, (2, 1, 32, 32), dtype=torch.uint8).float()
    assert custom.features(x).shape == plain.features(x).shape
    assert Siamese(**custom.config).config == custom.config
    with pytest.raises(ValueError, match="compact"):
        Siamese("koch2015", in_size=105, stage_convs=[1, 2, 2])
    for bad in ([0, 2, 2], [2, 2]):
        with pytest.raises(ValueError, match="three numbers >= 1"):
            model(stage_convs=bad)
    # the default builds the layers of before the option, in their order (the state dict's keys)
    assert [type(m).__name__ for m in plain.features] == ["Conv2d", "BatchNorm2d", "ReLU"] + 3 * (
        ["Conv2d", "BatchNorm2d", "ReLU", "Conv2d", "BatchNorm2d", "MaxPool2d", "ReLU"])


def test_from_params_builds_the_model_that_params_yaml_describes(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(small_params(**{"prepare.image_size": 48, "train.width": 6, "train.embedding_dim": 24,
                                                   "train.normalize": False, "train.dropout": 0.1,
                                                   "train.pool_first": True, "train.stem": "stride",
                                                   "train.stage_convs": [1, 2, 3]})))
    m = Siamese.from_params(load_params(path))
    assert m.config == dict(arch="compact", in_size=48, width=6, embedding_dim=24, normalize=False, dropout=0.1,
                            pool_first=True, stem="stride", stage_convs=[1, 2, 3])
    assert m.head[-1].out_features == 24 and m.embed(torch.zeros(2, 1, 48, 48)).shape == (2, 24)


def test_checkpoint_rebuilds_model_from_its_own_config(tmp_path):
    m = model(normalize=False)
    path = tmp_path / "m.pt"
    torch.save({"config": m.config, "state_dict": m.state_dict()}, path)
    m2, ckpt = load_checkpoint(path)
    x = torch.randint(0, 256, (2, 1, 32, 32), dtype=torch.uint8)
    with torch.no_grad():
        assert torch.allclose(m.embed(x), m2.embed(x), atol=1e-5)
    conv = next(c for c in m2.features if isinstance(c, torch.nn.Conv2d) and c.in_channels > 1)
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)  # the fast layout for inference
    assert ckpt["config"]["normalize"] is False and not math.isnan(m2(x, x).sum().item())


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
