"""benchmarks/recipes.py: recipes parse like `dvc exp run -S`, are validated, and find their records."""
import pytest

from benchmarks import recipes
from pipeline.lab import records


def test_a_recipe_is_params_yaml_with_its_overrides():
    sets = recipes.overrides("train.width=16 prepare.image_size=64  train.lr=3e-3 prepare.crop=[50,50,200,200]")
    assert sets == {"train.width": 16, "prepare.image_size": 64, "train.lr": 0.003, "prepare.crop": [50, 50, 200, 200]}
    params = recipes.recipe_params(sets)
    assert (params.train.width, params.prepare.image_size, params.train.lr) == (16, 64, 0.003)
    base = recipes.recipe_params(recipes.overrides("default"))
    assert recipes.images_per_run(base) == base.train.epochs * 2 * base.train.batch_size * (
        base.pairs.n_train_pairs // base.train.batch_size)


def test_restricted_recipes_count_the_official_pairs_left_after_validation(lfw_dir):
    params = recipes.recipe_params(recipes.overrides("pairs.mode=restricted train.epochs=2"))
    assert recipes.images_per_run(params, None) is None  # not guessed from pairs.n_train_pairs
    train = recipes.make_tables(lfw_dir, params.pairs, params.seed)[0]["train"]
    assert recipes.images_per_run(params, lfw_dir) == 2 * 2 * params.train.batch_size * max(1, len(train) // params.train.batch_size)


@pytest.mark.parametrize("recipe, message", [("train.widht=16", "train.widht: no such key"),
                                             ("train.width", "recipe 'train.width': 'train.width': expected key=value"),
                                             ("train.width=-1", "'train.width' must be > 0")])
def test_a_bad_recipe_is_one_clear_error(recipe, message, capsys):
    with pytest.raises((SystemExit, ValueError)) as e:
        recipes.recipe_params(recipes.overrides(recipe))
    assert message in str(e.value)


def test_the_recorded_accuracy_is_that_of_the_same_configuration():
    base = records.params_file()
    ran = records.TAKEN_OUT | {k: v for k, v in base.items() if k != "seed"}  # it ran with the params since taken out
    rec = {"commit": "abc1234", "params": ran | {"train.width": 16},
           "seeds": [0, 1], "metrics": {"calibrate.val_roc_auc": {"mean": 0.96, "sd": 0.001},
                                        "evaluate.accuracy": {"mean": 0.9, "sd": 0.002}}}
    found = " | 0.9600 ± 0.0010 | 0.9000 ± 0.0020 | 0, 1 (abc1234)"
    assert recipes.recorded(recipes.recipe_params(recipes.overrides("train.width=16")), [rec]) == found
    # the same value written otherwise (an int for a float key) finds the same record
    rotate = base["train.augment.max_rotate_deg"]
    assert rotate == int(rotate) and isinstance(rotate, float)
    same_rotate = f"train.width=16 train.augment.max_rotate_deg={int(rotate)}"
    assert recipes.recorded(recipes.recipe_params(recipes.overrides(same_rotate)), [rec]) == found
    assert recipes.recorded(recipes.recipe_params(recipes.overrides("train.width=20")), [rec]) == " | | | not run"
