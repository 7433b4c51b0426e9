"""benchmarks/recipes.py: recipes parse like `dvc exp run -S`, are validated, and find their records."""
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import recipes  # noqa: E402


def test_a_recipe_is_params_yaml_with_its_overrides():
    sets = recipes.overrides("train.width=16, prepare.image_size=64,train.ema=0.99")
    assert sets == {"train.width": 16, "prepare.image_size": 64, "train.ema": 0.99}
    params = recipes.recipe_params(sets)
    assert (params.train.width, params.prepare.image_size, params.train.ema) == (16, 64, 0.99)
    base = recipes.recipe_params(recipes.overrides("default"))
    assert recipes.images_per_run(base) == base.train.epochs * 2 * base.train.batch_size * (
        base.pairs.n_train_pairs // base.train.batch_size)


@pytest.mark.parametrize("recipe, message", [("train.widht=16", "train.widht: no such key"),
                                             ("train.width", "is not key=value"),
                                             ("train.width=-1", "'train.width' must be > 0")])
def test_a_bad_recipe_is_one_clear_error(recipe, message, capsys):
    with pytest.raises((SystemExit, ValueError)) as e:
        recipes.recipe_params(recipes.overrides(recipe))
    assert message in str(e.value)


def test_the_recorded_accuracy_is_that_of_the_same_configuration():
    base = recipes.et.params_file()
    rec = {"commit": "abc1234", "params": {k: v for k, v in base.items() if k != "seed"} | {"train.width": 16},
           "seeds": [0, 1], "metrics": {"calibrate.val_roc_auc": {"mean": 0.96, "sd": 0.001},
                                        "evaluate.accuracy": {"mean": 0.9, "sd": 0.002}}}
    assert recipes.recorded({"train.width": 16}, [rec]) == " | 0.9600 ± 0.0010 | 0.9000 ± 0.0020 | 0, 1 (abc1234)"
    assert recipes.recorded({"train.width": 20}, [rec]) == " | | not run"
