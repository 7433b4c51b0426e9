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
    ({"train.neg_weight": 1.0}, ["4x4 stride-2 first convolution", "[1, 1, 1] conv3x3 blocks", "margin 0.8."], ["weighted"]),
    ({"train.stage_convs": [2, 2, 2], "train.neg_weight": 2.0}, ["[2, 2, 2] conv3x3", "different-person term weighted 2.0."],
     []),
])
def test_the_card_describes_the_network_and_loss_that_trained(tmp_path, overrides, says, not_says):
    text = card(tmp_path, **{"train.margin": 0.8, "train.pos_margin": 0.0, "train.stage_convs": [1, 1, 1], **overrides})
    for phrase in says:
        assert phrase in text
    for phrase in not_says:
        assert phrase not in text
    assert "Threshold 0.7500" in text and "| official test | 20 | 85.0% (70.0%-95.0%) | 0.9000 |" in text


@pytest.mark.parametrize("mode, category", [("unrestricted", "unrestricted, label-free outside data"),
                                            ("restricted", "image-restricted, label-free outside data")])
def test_the_card_names_the_lfw_category_and_the_outside_data(tmp_path, mode, category):
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(small_params(**{"pairs.mode": mode})))
    params = load_params(path)
    text = model_card(params, Siamese.from_params(params).config, {**PAIRS, "mode": mode}, TRAIN, CALIBRATION, TEST)
    assert f"LFW category: **{category}**" in text
    assert "commercial face aligner" in text and "no outside data" not in text
    assert ("what their labels imply" in text) == (mode == "restricted")
    assert ("by name" in text) == (mode == "unrestricted")


def test_the_card_shows_one_shot_identification_where_the_metrics_hold_it(tmp_path):
    ident = {"id_people": 6, "id_probes": 9, "id_rank1": 0.5, "id_rank5": 0.9, "id_5way": 0.8,
             "id_dir_at_far_1pct": 0.25}
    text = model_card(load_params(_params(tmp_path)), Siamese(32, 8, 16, [1, 1, 1]).config, PAIRS, TRAIN,
                      CALIBRATION, {**TEST, **ident})
    assert "## One-shot identification" in text and "6 test people" in text
    assert "| all-way rank-1 | all-way rank-5 | 5-way | DIR @ FAR 1% (open set) |" in text
    assert "| 50.0% | 90.0% | 80.0% | 25.0% |" in text
    assert "One-shot identification" not in card(tmp_path)  # a run without the figures: no section


def _params(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(small_params()))
    return path
