"""The champion alias moves on validation AUC, and only between versions measured on the same validation pairs."""
import logging
from types import SimpleNamespace

import pytest

from pipeline.record import registry, tracking
from pipeline.record.registry import val_pairs_key


@pytest.fixture
def client(tmp_path):
    from mlflow.tracking import MlflowClient

    c = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    c.create_registered_model("faceverify")
    (tmp_path / "m").mkdir()
    c.new_version = lambda: str(c.create_model_version("faceverify", str(tmp_path / "m")).version)
    return c


def typed(seed: int, pairs: dict):
    """The parts of pipeline.params.Params that val_pairs_key reads."""
    return SimpleNamespace(seed=seed, pairs=SimpleNamespace(**{"protocol": "view1", "fold": 1, "split_seed": 0, **pairs}))


def champion(client) -> str:
    return str(client.get_model_version_by_alias("faceverify", "champion").version)


def test_the_alias_moves_only_to_a_better_auc_on_the_same_pairs(client, caplog):
    a = val_pairs_key(typed(0, {"mode": "unrestricted", "n_val_pairs": 20000}))
    b = val_pairs_key(typed(0, {"mode": "unrestricted", "n_val_pairs": 20000, "split_seed": 1}))
    assert a != b and "pairs.split_seed=0" in a and "pairs.n_val_pairs=20000" in a
    v1, v2, v3, v4 = (client.new_version() for _ in range(4))
    assert registry.promote(client, "faceverify", v1, 0.90, a) and champion(client) == v1
    with caplog.at_level(logging.WARNING, logger="pipeline.record.registry"):
        # higher, but on other validation pairs (another split): they do not compare
        assert not registry.promote(client, "faceverify", v2, 0.99, b)
    assert champion(client) == v1 and "do not compare" in caplog.text and f"'champion', '{v2}'" in caplog.text
    assert not registry.promote(client, "faceverify", v3, 0.89, a) and champion(client) == v1  # lower, same pairs
    assert registry.promote(client, "faceverify", v4, 0.91, a) and champion(client) == v4  # higher, same pairs
    tags = client.get_model_version("faceverify", v2).tags
    assert tags["val_pairs"] == b and float(tags["val_roc_auc"]) == 0.99


def test_a_champion_registered_before_the_tag_compares_on_auc_alone(client):
    v1, v2 = client.new_version(), client.new_version()
    assert registry.promote(client, "faceverify", v1, 0.90)  # no key: as versions were registered before
    assert registry.promote(client, "faceverify", v2, 0.95, "seed=0 pairs.mode=unrestricted") and champion(client) == v2


def test_restricted_mode_keys_only_the_params_it_reads():
    pairs = {"val_fraction": 0.15, "n_train_pairs": 36000, "n_val_pairs": 20000}
    restricted = [val_pairs_key(typed(0, {**pairs, "mode": "restricted", "n_val_pairs": n})) for n in (2000, 20000)]
    assert restricted[0] == restricted[1] == "pairs.mode=restricted pairs.split_seed=0 pairs.val_fraction=0.15 pairs.split=components"



def test_every_seed_and_training_draw_validates_on_the_same_pairs():
    """`seed` and n_train_pairs draw only the training pairs (pipeline.stages.pairs), so they leave the key alone."""
    pairs = {"mode": "unrestricted", "val_fraction": 0.15, "n_val_pairs": 20000}
    keys = {val_pairs_key(typed(seed, {**pairs, "n_train_pairs": n})) for seed in (0, 1, 2) for n in (2000, 36000)}
    assert keys == {"pairs.mode=unrestricted pairs.n_val_pairs=20000 pairs.split_seed=0 pairs.val_fraction=0.15"}
