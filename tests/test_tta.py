"""Test-time views: the same views from NumPy and PyTorch, in the same order, and what they average."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pipeline.model import Siamese, embed_all
from pipeline.tta import TTA, shift


def test_shift_moves_the_content_and_repeats_the_edges():
    x = np.arange(12).reshape(3, 4)
    assert shift(x, 1).tolist() == [[0, 0, 1, 2], [0, 0, 1, 2], [4, 4, 5, 6]]
    assert shift(x, -1).tolist() == [[5, 6, 7, 7], [9, 10, 11, 11], [9, 10, 11, 11]]
    assert shift(x, 0).tolist() == x.tolist()
    assert torch.equal(shift(torch.from_numpy(x), 1), torch.from_numpy(shift(x, 1)))


@pytest.mark.parametrize("tta, count", [(TTA(), 1), (TTA(True), 2), (TTA(False, 2), 2), (TTA(True, 2), 4)])
def test_views_are_the_same_from_numpy_and_pytorch(tta, count):
    x = np.random.default_rng(0).integers(0, 256, (3, 1, 9, 7), dtype=np.uint8)
    from_numpy, from_torch = tta.views(x), tta.views(torch.from_numpy(x))
    assert tta.count == len(from_numpy) == len(from_torch) == count
    for a, b in zip(from_numpy, from_torch):
        assert np.array_equal(a, b.numpy())
    if tta.shift:  # the first view moves down and right; with the mirror, each moved view is followed by its mirror
        assert np.array_equal(from_numpy[0], shift(x, 2))
        assert np.array_equal(from_numpy[-1], shift(x, -2)[..., ::-1] if tta.flip else shift(x, -2))


def test_a_checkpoint_without_a_shift_reads_as_shift_zero():
    assert TTA.of({"tta_flip": True}) == TTA(True, 0)
    assert TTA.of({"tta_flip": False, "tta_shift": 3}) == TTA(False, 3)


def test_embed_all_averages_the_views_and_renormalises():
    torch.manual_seed(0)
    model = Siamese(in_size=32, width=4, embedding_dim=8, stage_convs=[2, 2, 2]).eval()
    x = torch.randint(0, 256, (5, 1, 32, 32), dtype=torch.uint8)
    tta = TTA(True, 2)
    with torch.no_grad():
        expected = F.normalize(sum(model.embed(v) for v in (shift(x, 2), shift(x, 2).flip(-1), shift(x, -2),
                                                           shift(x, -2).flip(-1))), dim=1)
        assert torch.allclose(embed_all(model, x, tta, batch_size=2), expected, atol=1e-6)
        # the mirror alone: the embedding of the image and of its mirror image, as before shifts existed
        plain = F.normalize(model.embed(x) + model.embed(x.flip(-1)), dim=1)
        assert torch.allclose(embed_all(model, x, TTA(True)), plain, atol=1e-6)
        assert not torch.allclose(embed_all(model, x, tta), plain, atol=1e-3)
