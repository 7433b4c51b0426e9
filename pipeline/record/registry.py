"""The model registry: register the evaluated model and move the champion alias on validation AUC.

Record keeping only: nothing here changes a stage's outputs, so no stage lists it as a DVC dependency.
"""
from __future__ import annotations

import logging
from pathlib import Path

from pipeline.record import tracking
from pipeline.params import Params

log = logging.getLogger("pipeline.record.registry")

# pairs.* params that do not move the validation pairs: restricted mode splits the official pairs, and
# unrestricted mode draws its training pairs from another random stream than its validation pairs
NOT_VALIDATION = ("n_train_pairs",)
RESTRICTED_UNREAD = ("n_val_pairs",)


def val_pairs_key(params: Params) -> str:
    """What the validation pairs are drawn from: every `pairs.*` param that moves them (`pairs.split_seed`,
    not `seed`: all seeds of a configuration validate on the same pairs). Validation AUCs compare only
    under the same key. Keys of models trained before `pairs.split_seed` existed start with `seed=`
    and never equal a key of today's."""
    pairs = vars(params.pairs)
    unread = (*NOT_VALIDATION, *(RESTRICTED_UNREAD if params.pairs.mode == "restricted" else ()))
    if params.pairs.protocol == "view1":  # View 1 reads no fold
        unread = (*unread, "protocol", "fold")
    # restricted validation pairs are whole components of the pair graph (they were name-based before)
    split = ["pairs.split=components"] if params.pairs.mode == "restricted" else []
    return " ".join([f"pairs.{k}={v}" for k, v in sorted(pairs.items()) if k not in unread] + split)


def is_view2_fold(val_pairs: str) -> bool:
    """Whether val_pairs_key names a View 2 fold: its model scores one fold, not the product's test."""
    return "pairs.protocol=view2" in val_pairs.split()


def promote(client, name: str, version: str, val_auc: float, val_pairs: str = "", alias: str = "champion") -> bool:
    """Point `alias` at `version` if it beats the current holder on validation AUC (never on test).

    `val_pairs` names the validation pairs the AUC was measured on (val_pairs_key): AUCs on
    different pairs (other `pairs.*`) do not compare, so a version measured on other
    pairs than the holder's leaves the alias where it is. A holder without the tag compares on AUC alone."""
    try:
        current = client.get_model_version_by_alias(name, alias)
        best = float(current.tags.get("val_roc_auc", "-inf"))
        held_on = current.tags.get("val_pairs", "")
    except Exception:  # noqa: BLE001 - no holder yet
        current, best, held_on = None, float("-inf"), ""
    client.set_model_version_tag(name, version, "val_roc_auc", str(val_auc))
    if val_pairs:
        client.set_model_version_tag(name, version, "val_pairs", val_pairs)
    if current is not None and held_on and val_pairs and held_on != val_pairs:
        log.warning("model %s version %s stays unaliased: its validation AUC %.4f is on other pairs (%s) than %s's "
                    "version %s (%s), so they do not compare; to move %s by hand: MlflowClient()"
                    ".set_registered_model_alias(%r, %r, %r)", name, version, val_auc, val_pairs, alias,
                    current.version, held_on, alias, name, alias, version)
        return False
    if val_auc > best:
        client.set_registered_model_alias(name, alias, version)
        log.info("model %s version %s is the new %s (validation AUC %.4f > %.4f)", name, version, alias, val_auc, best)
        return True
    log.info("model %s version %s stays unaliased: validation AUC %.4f <= %s's %.4f", name, version, val_auc, alias, best)
    return False


def register(rec: tracking.Recorder, model: Path, threshold: Path, example: tuple[Path, Path], val_auc: float,
             val_pairs: str) -> None:
    """Log the pyfunc model in this stage's run, register it, and move the champion alias on validation AUC
    (only against a champion measured on the same validation pairs). A View 2 fold's model is logged in
    its run only: ten per configuration would crowd the registry, and none is a candidate champion."""
    if not rec.active:
        return
    from pipeline.serve import serving

    if is_view2_fold(val_pairs):
        def log_only(client):
            with rec.mlflow.start_run(run_id=rec.child_id):
                serving.log_model(model, threshold, example, None)
            log.info("View 2 fold model logged in run %s, not registered", rec.child_id)
        rec.call(log_only, retries=0)
        return

    def log_and_promote(client):
        with tracking.store_lock():  # parallel experiments: one new version number and one alias move at a time
            with rec.mlflow.start_run(run_id=rec.child_id):
                info = serving.log_model(model, threshold, example, tracking.REGISTERED_MODEL)
            version = str(info.registered_model_version)
            promote(client, tracking.REGISTERED_MODEL, version, val_auc, val_pairs)
        rec.tags({"registered_model": f"{tracking.REGISTERED_MODEL}/{version}"}, parent_too=True)

    rec.call(log_and_promote, retries=0)  # a retry would register the model twice
