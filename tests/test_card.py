"""The model card: what it says about the network and the loss comes from the checkpoint and the params."""
import pytest
import yaml

from conftest import small_params
from pipeline.card import model_card
from pipeline.model import Siamese
from pipeline.params import load_params

PAIRS = {"mode": "unrestricted", "train_pairs": 64, "train_people": 10, "val_pairs": 32, "val_people": 4,
         "test_pairs": 20, "test_people": 6, "train_val_shared_people": 0, "train_test_shared_people": 0,
         "val_test_shared_people": 0}
TRAIN = {"best_epoch": 2, "stopped_epoch": 3, "device": "a test CPU", "precision": "fp32", "torch_version": "2"}
CALIBRATION = {"threshold": 0.75, "criterion": "eer", "val_n_pairs": 32, "val_accuracy": 0.9, "val_accuracy_ci95_low": 0.8,
               "val_accuracy_ci95_high": 0.95, "val_roc_auc": 0.95, "val_eer": 0.1, "val_tar_at_far_1pct": 0.5}
TEST = {"n_pairs": 20, "accuracy": 0.85, "accuracy_ci95_low": 0.7, "accuracy_ci95_high": 0.95, "roc_auc": 0.9, "eer": 0.15,
        "tar_at_far_1pct": 0.4, "tp": 9, "fn": 1, "tn": 8, "fp": 2}


def card(tmp_path, **overrides) -> str:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(small_params(**overrides)))
    params = load_params(path)
    return model_card(params, Siamese.from_params(params).config, PAIRS, TRAIN, CALIBRATION, TEST)


@pytest.mark.parametrize("overrides, says, not_says", [
    ({"train.stem": "stride", "train.neg_weight": 1.0}, ["4x4 stride-2 first convolution", "margin 0.8."], ["weighted"]),
    ({"train.stem": "pool", "train.stage_convs": [2, 2, 2], "train.neg_weight": 2.0, "train.identity_images": "table"},
     ["different-person term weighted 2.0."], ["stride-2", "convolutions per later stage", "every image"]),
    ({"train.sampler": "identities", "train.identity_images": "all"},
     ["Identity batches drew from every image of the training people"], []),
])
def test_the_card_describes_the_network_and_loss_that_trained(tmp_path, overrides, says, not_says):
    text = card(tmp_path, **{"train.margin": 0.8, "train.pos_margin": 0.0, **overrides})
    for phrase in says:
        assert phrase in text
    for phrase in not_says:
        assert phrase not in text
    assert "Threshold 0.7500" in text and "| official test | 20 | 85.0% (70.0%-95.0%) | 0.9000 |" in text


@pytest.mark.parametrize("mining, assumed", [("auto", True), ("batch_all", True), ("pairs", False)])
def test_a_restricted_card_states_what_training_took_from_the_labels_and_what_it_assumed(tmp_path, mining, assumed):
    path = tmp_path / "params.yaml"
    sampler = "pairs" if mining == "pairs" else "identities"
    path.write_text(yaml.safe_dump(small_params(**{"pairs.mode": "restricted", "train.mining": mining, "train.sampler": sampler})))
    params = load_params(path)
    text = model_card(params, Siamese.from_params(params).config, {**PAIRS, "mode": "restricted"}, TRAIN, CALIBRATION, TEST)
    assert "their labels and what follows from them; no person names" in text
    assert ("images of classes no label joins counted as different people" in text) == assumed
    assert "Identity batches drew from every image" not in text
