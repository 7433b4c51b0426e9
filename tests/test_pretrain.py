"""pipeline/pretrain.py: label-free pretraining (VICReg) before the pairs."""
import numpy as np
import pytest
import torch
import yaml

from conftest import small_params
from pipeline import pretrain
from pipeline.data import load_images, load_pairs
from pipeline.model import Siamese
from pipeline.params import load_params
from pipeline.stages import train


def test_vicreg_loss_is_zero_for_identical_spread_out_uncorrelated_views():
    # 4 rows of ±2 in a 2-level design: every column has spread above 1 and the columns are uncorrelated
    z = torch.tensor([[2.0, 2.0], [2.0, -2.0], [-2.0, 2.0], [-2.0, -2.0]])
    assert pretrain.vicreg_loss(z, z.clone()).item() == pytest.approx(0.0, abs=1e-6)


def test_vicreg_loss_penalises_each_of_its_three_terms():
    z = torch.tensor([[2.0, 2.0], [2.0, -2.0], [-2.0, 2.0], [-2.0, -2.0]])
    apart = pretrain.vicreg_loss(z, z + 1.0, weights=(1.0, 0.0, 0.0)).item()
    assert apart == pytest.approx(1.0)  # the mean squared difference of the two views
    collapsed = torch.zeros(4, 2)
    assert pretrain.vicreg_loss(collapsed, collapsed, weights=(0.0, 1.0, 0.0)).item() == pytest.approx(1 - 0.01, abs=1e-4)
    correlated = torch.tensor([[2.0, 2.0], [2.0, 2.0], [-2.0, -2.0], [-2.0, -2.0]])
    assert pretrain.vicreg_loss(correlated, correlated, weights=(0.0, 0.0, 1.0)).item() > 0
    assert pretrain.vicreg_loss(z, z, weights=(0.0, 0.0, 1.0)).item() == pytest.approx(0.0, abs=1e-6)


def test_views_are_seeded_and_cut_out_a_patch_of_the_image_mean(monkeypatch):
    x = torch.rand(3, 1, 20, 20) * 255
    a = pretrain.views(x, torch.Generator().manual_seed(1))
    assert a.shape == x.shape and torch.equal(a, pretrain.views(x, torch.Generator().manual_seed(1)))
    assert not torch.equal(a, pretrain.views(x, torch.Generator().manual_seed(2)))
    monkeypatch.setattr(pretrain, "augment", lambda x, gen, **kw: x)  # the cut-out alone
    flat = torch.full((2, 1, 20, 20), 100.0)
    flat[:, :, :10] = 200.0  # mean 150: the patch is the only place that value appears
    patch = pretrain.views(flat, torch.Generator().manual_seed(0)) == 150.0
    side = round(pretrain.ERASE_SIDE * 20)
    assert [int(m.sum()) for m in patch] == [side * side] * 2


def test_pretraining_changes_the_network_alike_for_a_seed_and_lowers_its_loss(prepared, tables):
    images, rows = load_images(prepared)
    tr = load_pairs(tables / "train.tsv", rows)
    runs = []
    for _ in range(2):
        torch.manual_seed(0)
        model = Siamese(32, 8, 16, [1, 1, 1])
        before = {k: v.clone() for k, v in model.state_dict().items()}
        losses = pretrain.pretrain(model, images, tr.images()[0], 6, 16, 0.003, 0.0005, 0, torch.device("cpu"))
        runs.append((model.state_dict(), losses))
    (weights, losses), (again, _) = runs
    assert losses[-1] < losses[0]
    assert any(not torch.equal(weights[k], before[k]) for k in before)
    assert all(torch.equal(weights[k], again[k]) for k in weights)


def test_a_pretrained_training_starts_from_the_pretrained_network(tmp_path, prepared, tables, monkeypatch):
    """train.pretrain_epochs runs pretraining on the training images before the first epoch; 0 runs none."""
    images, rows = load_images(prepared)
    tr, val = load_pairs(tables / "train.tsv", rows), load_pairs(tables / "val.tsv", rows)
    calls = []

    def spy(model, imgs, image_rows, epochs, *args):
        calls.append((sorted(image_rows.tolist()), epochs))
        return [0.0] * epochs
    monkeypatch.setattr(train, "pretrain", spy)
    for epochs in (0, 3):
        path = tmp_path / f"params-{epochs}.yaml"
        path.write_text(yaml.safe_dump(small_params(**{"train.epochs": 1, "train.pretrain_epochs": epochs})))
        train.fit(images, tr, val, load_params(path))
    assert calls == [(sorted(set(tr.idx1.tolist()) | set(tr.idx2.tolist())), 3)]


def test_a_negative_pretrain_epochs_is_refused(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(small_params(**{"train.pretrain_epochs": -1})))
    with pytest.raises(Exception, match="pretrain_epochs"):
        load_params(path)


def test_too_few_images_to_pretrain_on_is_a_clear_error():
    with pytest.raises(ValueError, match="at least 2 training images"):
        pretrain.pretrain(Siamese(32, 8, 16, [1, 1, 1]), torch.zeros(1, 1, 32, 32, dtype=torch.uint8), np.array([0]),
                          1, 4, 0.003, 0.0, 0, torch.device("cpu"))
