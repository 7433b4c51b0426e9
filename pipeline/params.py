"""Typed, validated access to params.yaml: one frozen dataclass per section.

An unknown key (a typo), a missing key, a wrong type or an impossible value fails at once with
one error that names the file and the dotted key. Numbers that `dvc exp run -S` writes as
strings PyYAML does not read as floats (`1e-06`, see treeverse/dvc#5971) are accepted as floats.
"""
from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml


class ParamsError(ValueError):
    """A params.yaml problem; the message names the file and the key."""


@dataclass(frozen=True)
class DownloadParams:
    url: str
    checksum: str  # "<algo>:<hex>" of the archive at `url`, or "" where unknown
    protocol_url: str  # base URL of the official LFW protocol files, used when the archive lacks them

    def check(self) -> dict[str, str]:
        errors = {}
        if self.checksum and self.checksum.split(":")[0] not in ("md5", "sha1", "sha256"):
            errors["checksum"] = "must be '<md5|sha1|sha256>:<hex>' or empty"
        return errors


@dataclass(frozen=True)
class PairsParams:
    mode: Literal["restricted", "unrestricted"]
    val_fraction: float  # share of the training identities held out for validation
    n_train_pairs: int  # unrestricted mode: balanced pairs drawn from the training identities
    n_val_pairs: int  # unrestricted mode: balanced pairs drawn from the validation identities
    protocol: Literal["view1", "view2"]  # view1: test on pairsDevTest; view2: test on fold `fold` of pairs.txt
    fold: int  # view2: the fold scored (1-10), trained without; view1 reads it not
    split_seed: int  # draws the validation side (held-out identities and their pairs); `seed` draws the rest

    def check(self) -> dict[str, str]:
        errors = {}
        if not 1 <= self.fold <= 10:
            errors["fold"] = "must be in 1..10 (View 2's folds)"
        if self.split_seed < 0:
            errors["split_seed"] = "must be >= 0"
        if not 0 < self.val_fraction < 1:
            errors["val_fraction"] = "must be in (0, 1)"
        if self.n_train_pairs < 2 or self.n_train_pairs % 2:
            errors["n_train_pairs"] = "must be an even number >= 2"
        if self.n_val_pairs < 2 or self.n_val_pairs % 2:
            errors["n_val_pairs"] = "must be an even number >= 2"
        return errors


@dataclass(frozen=True)
class PrepareParams:
    crop: list[int]  # [left, top, right, bottom] in the 250x250 LFW-a image
    # side of the square network input, pixels. Not "size": DVC leaves keys named size or nfiles out
    # of its run-cache key, so a change of such a param would restore the outputs of the old value.
    image_size: int

    def check(self) -> dict[str, str]:
        errors = {}
        if len(self.crop) != 4 or not (0 <= self.crop[0] < self.crop[2] <= 250 and 0 <= self.crop[1] < self.crop[3] <= 250):
            errors["crop"] = "must be [left, top, right, bottom] with 0 <= left < right <= 250, 0 <= top < bottom <= 250"
        if not 16 <= self.image_size <= 250:
            errors["image_size"] = "must be in [16, 250]"
        return errors


@dataclass(frozen=True)
class AugmentParams:
    flip: bool
    max_rotate_deg: float
    max_shift: float  # fraction of the image side
    max_scale: float  # relative zoom, e.g. 0.1 for 0.9x..1.1x

    def check(self) -> dict[str, str]:
        return {key: "must be >= 0" for key in ("max_rotate_deg", "max_shift", "max_scale") if getattr(self, key) < 0}


@dataclass(frozen=True)
class TrainParams:
    width: int  # channels of the first stage; doubles at each of the three after it
    stage_convs: list[int]  # conv3x3-BN-ReLU blocks in each of the three stages after the first
    embedding_dim: int
    margin: float  # different-person pairs closer than this are pushed apart
    pos_margin: float  # same-person pairs farther than this are pulled together (0: all the way)
    neg_weight: float  # weight of the different-person term against the same-person term (1: the two alike)
    optimizer: Literal["adam", "sgd"]
    lr: float
    momentum: float  # sgd only
    weight_decay: float
    batch_size: int  # pairs per step
    epochs: int
    warmup_epochs: int  # linear warm-up of the learning rate, then cosine annealing
    patience: int  # early stopping: epochs without a better validation AUC
    # identities: K images per identity (PxK), every pair of them whose relation is known scored (batch-all);
    # pairs: batches of the table's pairs, each scoring its own labelled pairs
    sampler: Literal["pairs", "identities"]
    per_identity: int  # sampler identities: images of each identity in a batch (K)
    augment: AugmentParams
    tta_flip: bool  # embed an image as the mean of it and its mirror image
    tta_shift: int  # > 0: embed an image as the mean of it moved by (+s, +s) and (-s, -s) pixels (pipeline.tta.TTA)
    precision: Literal["auto", "bf16", "fp32"]
    device: Literal["auto", "cpu", "cuda"]

    def check(self) -> dict[str, str]:
        errors = {}
        positive = ("width", "embedding_dim", "margin", "neg_weight", "lr", "batch_size", "epochs", "patience")
        for key in positive:
            if getattr(self, key) <= 0:
                errors[key] = "must be > 0"
        for key in ("momentum", "weight_decay", "warmup_epochs", "tta_shift"):
            if getattr(self, key) < 0:
                errors[key] = "must be >= 0"
        if self.momentum >= 1:
            errors["momentum"] = "must be < 1"
        if not 0 <= self.pos_margin < self.margin:
            errors["pos_margin"] = "must be in [0, train.margin)"
        if self.per_identity < 2 or self.per_identity > 2 * self.batch_size:
            errors["per_identity"] = "must be in [2, 2 * train.batch_size] (a batch holds 2 * batch_size images)"
        if len(self.stage_convs) != 3 or min(self.stage_convs, default=0) < 1:
            errors["stage_convs"] = "must be three numbers >= 1 (the stages after the first)"
        return errors


@dataclass(frozen=True)
class CalibrateParams:
    criterion: Literal["accuracy", "eer", "far"]
    target_far: float  # criterion "far": the largest false-accept rate allowed on validation

    def check(self) -> dict[str, str]:
        return {} if 0 < self.target_far < 1 else {"target_far": "must be in (0, 1)"}


@dataclass(frozen=True)
class Params:
    seed: int
    download: DownloadParams
    pairs: PairsParams
    prepare: PrepareParams
    train: TrainParams
    calibrate: CalibrateParams

    def check(self) -> dict[str, str]:
        if self.seed < 0:
            return {"seed": "must be >= 0"}
        return {}


def _coerce(value: Any, tp: Any, key: str, file: str) -> Any:
    """Return `value` as type `tp`, or raise ParamsError naming `key`."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ParamsError(f"{file}: '{key}' must be a mapping, got {value!r}")
        return _build(tp, value, key, file)
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise ParamsError(f"{file}: '{key}' must be one of {list(typing.get_args(tp))}, got {value!r}")
        return value
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise ParamsError(f"{file}: '{key}' must be a list, got {value!r}")
        return [_coerce(v, item_tp, f"{key}[{i}]", file) for i, v in enumerate(value)]
    if tp is bool:
        if not isinstance(value, bool):
            raise ParamsError(f"{file}: '{key}' must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ParamsError(f"{file}: '{key}' must be an integer, got {value!r}")
        return value
    if tp is float:
        number = value
        if isinstance(value, str):
            try:
                number = float(value)  # '1e-06' as written by `dvc exp run -S`
            except ValueError:
                pass
        if isinstance(number, bool) or not isinstance(number, (int, float)):
            raise ParamsError(f"{file}: '{key}' must be a number, got {value!r}")
        if not math.isfinite(number):
            raise ParamsError(f"{file}: '{key}' must be a finite number, got {value!r}")
        return float(number)
    if tp is str:
        if not isinstance(value, str):
            raise ParamsError(f"{file}: '{key}' must be a string, got {value!r}")
        return value
    raise TypeError(f"unsupported params type {tp!r} for {key}")


RENAMED = {"prepare.size": "prepare.image_size"}  # old key -> new key, named in the error
# keys taken out of params.yaml: the error names the commit that still has them (docs/DECISIONS.md)
REMOVED = {**{f"{section}.{key}": "ea681be" for section, keys in {
    "download": ("verify_protocol_md5", "timeout_s", "retries"), "pairs": ("val_keep",),
    "train": ("arch", "pool_first", "stem", "normalize", "dropout", "memory", "identity_fraction", "identity_images",
              "identity_weight", "schedule", "min_delta", "threads"),
    "train.augment": ("max_contrast", "max_brightness", "erase")}.items() for key in keys},
    "train.mining": "0463ca7", "train.pretrain_epochs": "a029d45"}


def _build(cls: type, section: dict, prefix: str, file: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    dotted = (lambda k: f"{prefix}.{k}") if prefix else (lambda k: k)
    unknown = [k for k in section if k not in names]
    if unknown:
        key = dotted(unknown[0])
        hint = (f"; renamed '{RENAMED[key]}'" if key in RENAMED else
                f"; taken out (commit {REMOVED[key]} has it, docs/DECISIONS.md)" if key in REMOVED else "")
        raise ParamsError(f"{file}: unknown key '{key}' (expected one of: {', '.join(names)}){hint}")
    missing = [k for k in names if k not in section]
    if missing:
        raise ParamsError(f"{file}: missing key '{dotted(missing[0])}'")
    obj = cls(**{k: _coerce(section[k], hints[k], dotted(k), file) for k in names})
    errors = obj.check()
    if errors:
        key, why = next(iter(errors.items()))
        value = obj
        for part in key.split("."):
            value = getattr(value, part)
        raise ParamsError(f"{file}: '{dotted(key)}' {why}, got {value!r}")
    return obj


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate the whole params file."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ParamsError(f"{path}: no such file") from None
    except yaml.YAMLError as e:
        raise ParamsError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(raw, dict):
        raise ParamsError(f"{path}: must hold a mapping of sections")
    return _build(Params, raw, "", str(path))


def set_dotted(raw: dict, key: str, value: Any, source: str = "params.yaml") -> None:
    """Set `key` ("train.lr") in a raw params mapping in place; a key the mapping lacks is an error naming it."""
    *path, leaf = key.split(".")
    node: Any = raw
    for part in path:
        node = node.get(part) if isinstance(node, dict) else None
    if not isinstance(node, dict) or leaf not in node:
        raise ParamsError(f"{key}: no such key in {source}")
    node[leaf] = value


def flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    """{'train.lr': 0.001, ...}: the dotted names of params.yaml, for MLflow."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        key = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(value):
            out.update(flatten(value, key + "."))
        else:
            out[key] = value
    return out


