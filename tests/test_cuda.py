"""On a CUDA machine: `train.device: auto` trains on the GPU in bf16 with no change. Skipped elsewhere."""
import logging

import pytest
import torch
import yaml

from conftest import small_params
from pipeline.stages import train
from pipeline.data import augment, load_images, load_pairs
from pipeline.params import load_params

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")


def test_augment_on_the_gpu_matches_the_cpu():
    x = torch.rand(8, 1, 32, 32) * 255
    kw = dict(flip=True, max_rotate_deg=10, max_shift=0.05, max_scale=0.1, max_contrast=0.2, max_brightness=0.1,
              erase=0.5)
    cpu = augment(x, torch.Generator().manual_seed(3), **kw)
    gpu = augment(x.cuda(), torch.Generator().manual_seed(3), **kw)
    assert gpu.is_cuda and torch.allclose(gpu.cpu(), cpu, atol=1e-3)


def test_device_auto_trains_on_the_gpu_in_bf16(tmp_path, prepared, tables, caplog):
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(small_params(**{"train.epochs": 6, "train.patience": 6, "train.device": "auto"})))
    params = load_params(path)
    images, rows = load_images(prepared)
    tr, val = load_pairs(tables / "train.tsv", rows), load_pairs(tables / "val.tsv", rows)
    with caplog.at_level(logging.INFO, logger="pipeline.stages.train"):
        model, history, summary = train.fit(images, tr, val, params)
    started = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("training "))
    assert " on cuda (bf16)" in started
    assert next(model.parameters()).device.type == "cpu"  # handed back for saving, as on the CPU
    assert summary["best_val_auc"] > 0.8
