"""Stage `train`: fit the Siamese network with contrastive loss, early-stopped on validation AUC.

Reads:  PREPARED/images.npy + index.tsv; PAIRS/train.tsv, PAIRS/val.tsv; params `seed`, `pairs.mode`,
        `prepare.*`, `train.*`.
Writes: MODEL (models/model.pt): the best weights with the model's constructor arguments and its
        preprocessing, so later stages rebuild it from this file alone; METRICS (metrics/train.json),
        with the CPU, precision and torch version that trained the model; PLOT (plots/train.csv):
        per-epoch train loss, validation loss, validation AUC, learning rate.

A resumable state is written atomically after every epoch (RESUME, models/resume.pt); started
again with the same inputs after a kill, training resumes there and ends with the same result.
`torchrun --nproc_per_node N -m pipeline.stages.train` trains with DistributedDataParallel on the same
params (pipeline/distributed.py); rank 0 validates, writes the outputs and records to MLflow.
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import io
import logging
import math
import platform
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from tqdm import tqdm

from pipeline import distributed, files
from pipeline.record import runner
from pipeline.data import IdentitySampler, PairSet, augment, load_images, load_pairs
from pipeline.embedding import TrainingError, autocast_dtype, resolve_device, validation_scores
from pipeline.model import Siamese, batch_all_contrastive_loss, contrastive_loss, euclidean
from pipeline.tta import TTA
from pipeline.params import Params, TrainParams, flatten, load_params

log = logging.getLogger("pipeline.stages.train")
MIN_DELTA = 0.001  # a validation AUC this much above the best so far counts as better (early stopping)


def lr_factor(step: int, steps_per_epoch: int, p: TrainParams) -> float:
    """Learning-rate multiplier at an optimiser step: linear warm-up, then cosine annealing to 0."""
    total = p.epochs * steps_per_epoch
    warm = p.warmup_epochs * steps_per_epoch
    if step < warm:
        return (step + 1) / warm
    t = (step - warm) / max(1, total - warm)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, t)))


def make_optimizer(model: torch.nn.Module, p: TrainParams) -> torch.optim.Optimizer:
    decay = [q for n, q in model.named_parameters() if q.ndim > 1]  # no weight decay on BN and biases
    rest = [q for n, q in model.named_parameters() if q.ndim <= 1]
    groups = [{"params": decay, "weight_decay": p.weight_decay}, {"params": rest, "weight_decay": 0.0}]
    if p.optimizer == "adam":
        return torch.optim.AdamW(groups, lr=p.lr)
    return torch.optim.SGD(groups, lr=p.lr, momentum=p.momentum, nesterov=True)


def validate(model: Siamese, images: torch.Tensor, val: PairSet, p: TrainParams) -> dict:
    """The epoch's validation row: loss, AUC and best-threshold accuracy (embedding.validation_scores)."""
    d, s = validation_scores(model, images, val, TTA(p.tta_flip, p.tta_shift))
    loss = contrastive_loss(torch.from_numpy(d), torch.from_numpy(val.label), p.margin, p.pos_margin).item()
    return {"val_loss": loss, "val_auc": s["val_roc_auc"], "val_accuracy": s["val_accuracy"]}


def batches(train: PairSet, p: TrainParams, gen: torch.Generator, images: torch.Tensor):
    """Each step's augmented images of this process's share (B', 1, H, W), then an identity batch's identities
    in rank order and None, or None and a pair batch's labels (this share's).

    Rank r of N embeds every N-th image from the r-th of an identity batch (so each share holds part of
    every identity group), or the r-th contiguous share of a pair batch; every rank draws the whole batch."""
    rank, size = distributed.world()
    order = torch.randperm(len(train.label), generator=gen).numpy()
    sampler = IdentitySampler(train, 2 * p.batch_size, p.per_identity) if p.sampler == "identities" else None
    for k in range(len(order) // p.batch_size or 1):
        b = order[k * p.batch_size:(k + 1) * p.batch_size]
        if sampler:
            rows, ids = sampler.batch(gen)
            x = augment(images[torch.from_numpy(rows)].float(), gen, **vars(p.augment))[rank::size]
            yield x, np.concatenate([ids[r::size] for r in range(size)]), None
        else:
            rows = torch.from_numpy(np.concatenate([train.idx1[b], train.idx2[b]]))
            x = augment(images[rows].float(), gen, **vars(p.augment))  # (2B, 1, H, W), the same on every rank
            mine = distributed.shares(len(b), size)[rank]
            if size > 1:
                x = torch.cat([x[:len(b)][mine], x[len(b):][mine]])
            yield x, None, train.label[b][mine]


@dataclass(frozen=True)
class Epoch:
    """What one training epoch reads: the model and its optimiser, the images and pairs, the params."""
    model: Siamese
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LRScheduler
    images: torch.Tensor
    train: PairSet
    p: TrainParams
    seed: int
    device: torch.device
    dtype: torch.dtype | None  # the autocast dtype; None: fp32
    embed: Callable[[torch.Tensor], torch.Tensor] | None = None  # the DDP-wrapped embedder under torchrun; None: model.embed


@dataclass
class TrainState:
    """Where training stands after an epoch; saved in the resume file as a plain dict."""
    epoch: int = 0
    history: list[dict] = field(default_factory=list)
    best: dict | None = None  # the best epoch's validation row
    best_auc: float = -1.0
    bad_epochs: int = 0  # epochs since the best, for early stopping
    best_weights: dict | None = None

    def improve(self, row: dict, model: Siamese) -> None:
        """Count the epoch's validation row: a new best (by MIN_DELTA at least) keeps a copy of the weights."""
        self.history.append(row)
        if row["val_auc"] > self.best_auc + MIN_DELTA:
            self.best_auc, self.bad_epochs, self.best = row["val_auc"], 0, dict(row)
            self.best_weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            self.bad_epochs += 1
        self.epoch = row["epoch"]


def train_epoch(ctx: Epoch, epoch: int) -> float:
    """One pass over the training pairs in a seeded order with seeded augmentation; mean loss.

    Identity batches are scored batch-all: every two images of a batch that are the same person, or known
    to be different people (`PairSet.different`: in restricted mode only what the pair labels imply); pair
    batches score their own labelled pairs."""
    model, train, p, device, dtype = ctx.model, ctx.train, ctx.p, ctx.device, ctx.dtype
    model.train()
    embed = ctx.embed or model.embed
    gen = torch.Generator().manual_seed(ctx.seed * 100_003 + epoch)
    torch.manual_seed(ctx.seed * 100_003 + epoch)
    n_batches = len(train.label) // p.batch_size or 1
    progress = runner.Progress(f"epoch {epoch}", 2 * n_batches * p.batch_size, "images")
    total, seen = 0.0, 0
    bar = tqdm(total=n_batches, desc=f"epoch {epoch}", unit="batch", leave=False,
               disable=True if distributed.world()[0] else None)
    for k, (x, ids, labels) in enumerate(batches(train, p, gen, ctx.images)):
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            emb = embed(x.to(device))
        if ids is not None:  # an identity batch
            if distributed.world()[1] > 1:
                emb = distributed.GatherRows.apply(emb)
            different = None if train.links is None else torch.from_numpy(train.different(ids)).to(device)
            loss = batch_all_contrastive_loss(emb, torch.from_numpy(ids).to(device), p.margin, p.pos_margin,
                                              p.neg_weight, different)
        else:  # each rank's mean over its pairs; DDP averages the gradients over the ranks' equal shares
            e1, e2 = emb.chunk(2)
            loss = contrastive_loss(euclidean(e1, e2), torch.from_numpy(labels).to(device), p.margin, p.pos_margin,
                                    p.neg_weight)
        check = distributed.reduce_sum(loss.detach().clone())  # a non-finite loss on any rank stops every rank
        if not torch.isfinite(check):
            raise TrainingError(f"epoch {epoch}, batch {k}: the loss is {check.item()}; stopping (lower train.lr?). "
                                "The last good checkpoint is kept.")
        ctx.opt.zero_grad(set_to_none=True)
        loss.backward()
        ctx.opt.step()
        ctx.sched.step()
        total += loss.item() * p.batch_size
        seen += p.batch_size
        bar.update()
        bar.set_postfix(loss=f"{total / seen:.4f}")
        progress.update(2 * seen, loss=f"{total / seen:.4f}")
    bar.close()
    return distributed.mean_over_ranks(total / seen, device)


def fingerprint(*parts: bytes) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(hashlib.sha256(part).digest())
    return h.hexdigest()


def fit(images: torch.Tensor, train: PairSet, val: PairSet, params: Params, resume_path: Path | None = None,
        key: str = "", on_epoch=None) -> tuple[Siamese, list[dict], dict]:
    """Train from scratch (or resume) and return (best model, per-epoch history, summary)."""
    p = params.train
    mining = "batch_all" if p.sampler == "identities" else "pairs"
    rank, size = distributed.world()
    device = distributed.local_device(resolve_device(p.device))
    if p.batch_size % size:
        raise ValueError(f"train.batch_size {p.batch_size} must divide among {size} processes")
    dtype = autocast_dtype(device, p.precision)
    torch.manual_seed(params.seed)
    model = Siamese.from_params(params).to(device, memory_format=torch.channels_last)
    embed = distributed.wrap(model, device)  # the same initial weights everywhere (seeded; DDP broadcasts rank 0's)
    opt = make_optimizer(model, p)
    steps_per_epoch = len(train.label) // p.batch_size or 1
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, steps_per_epoch, p))
    state = TrainState()
    if resume_path is not None and resume_path.exists():
        saved = torch.load(resume_path, map_location=device, weights_only=True)
        if saved.get("key") == key:
            model.load_state_dict(saved["model"]); opt.load_state_dict(saved["opt"]); sched.load_state_dict(saved["sched"])
            state = TrainState(**saved["state"])
            log.info("resuming after epoch %d from %s", state.epoch, resume_path)
        else:
            log.info("ignoring %s: it belongs to other inputs or params", resume_path)
    images_dev = images.to(device) if device.type == "cuda" else images
    log.info("training on %s (%s), %d train / %d val pairs, mining=%s%s", device,
             "bf16" if dtype else "fp32", len(train.label), len(val.label), mining,
             f", {size} processes" if size > 1 else "")
    ctx = Epoch(model, opt, sched, images_dev, train, p, params.seed, device, dtype, embed)
    while state.epoch < p.epochs and state.bad_epochs < p.patience:
        epoch = state.epoch + 1
        t0 = time.perf_counter()
        train_loss = train_epoch(ctx, epoch)
        seconds = time.perf_counter() - t0
        distributed.sync_buffers(model)  # rank 0's batch-norm statistics; its validation decides for all
        row = {"epoch": epoch, "train_loss": train_loss, **distributed.from_rank0(lambda: validate(model, images_dev, val, p)),
               "lr": opt.param_groups[0]["lr"]}
        state.improve(row, model)
        log.info("epoch %d/%d  train_loss %.4f  val_loss %.4f  val_auc %.4f  val_acc %.4f  (%.1fs, %.0f img/s)",
                 epoch, p.epochs, train_loss, row["val_loss"], row["val_auc"], row["val_accuracy"], seconds,
                 2 * steps_per_epoch * p.batch_size / seconds)
        if on_epoch:
            on_epoch(row, seconds)
        if resume_path is not None and rank == 0:
            save({"key": key, "model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
                  "state": asdict(state)}, resume_path)
    model.load_state_dict(state.best_weights)
    summary = {"best_epoch": state.best["epoch"], "stopped_epoch": state.epoch,
               "early_stopped": state.epoch < p.epochs, "mining": mining,
               **{f"best_{k}": state.best[k] for k in ("val_auc", "val_loss", "val_accuracy", "train_loss")},
               **trained_on(device, dtype)}
    return model.cpu(), state.history, summary


def trained_on(device: torch.device, dtype) -> dict:
    """What trained the model: the model changes with the CPU class and the precision."""
    return {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_model(),
            "precision": "bf16" if dtype else "fp32", "torch_version": torch.__version__}


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def checkpoint(model: Siamese, params: Params) -> dict:
    """Everything needed to rebuild and use the model, from this dict alone."""
    return {"config": model.config, "state_dict": model.state_dict(),
            "preprocess": {"crop": list(params.prepare.crop), "size": params.prepare.image_size},
            "tta_flip": params.train.tta_flip, "tta_shift": params.train.tta_shift, "margin": params.train.margin}


def save(obj: dict, path: Path) -> None:
    """torch.save, atomically, through a file handle: the zip's inner folder is then always "archive",
    so the same weights give the same bytes and DVC the same hash (a path names it after the temporary file)."""
    with files.atomic_path(path) as tmp, open(tmp, "wb") as f:
        torch.save(obj, f)


def write_history(path: Path, history: list[dict]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(history[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(history)
    files.write_text(path, buf.getvalue())


def parser() -> argparse.ArgumentParser:
    return runner.parser(__doc__, "prepared", "pairs", "model", "metrics", "plot", "resume")


def main(argv: list[str] | None = None) -> int:
    if distributed.launched():
        distributed.init()
    rank = distributed.world()[0]
    try:  # one record and one set of outputs: rank 0's
        return runner.main("train", parser(), run, argv, record=rank == 0,
                           level=logging.INFO if rank == 0 else logging.WARNING)
    finally:
        distributed.shutdown()


def run(args, rec) -> None:
    params = load_params(args.params)
    rec.params({"seed": params.seed, "pairs.mode": params.pairs.mode, **flatten(params.prepare, "prepare."),
                **flatten(params.train, "train.")})
    images, rows = load_images(args.prepared)
    # restricted: in-batch identities and their relations from the pair labels only, never from the names,
    # and only the pairs' images; unrestricted: identity batches draw from every image of the training people
    unrestricted = params.pairs.mode == "unrestricted"
    train = load_pairs(args.pairs / "train.tsv", rows, by_name=unrestricted, every_image=unrestricted)
    val = load_pairs(args.pairs / "val.tsv", rows)
    key = fingerprint(repr(params.seed).encode(), repr(params.pairs).encode(), repr(params.prepare).encode(),
                      repr(params.train).encode(), (args.pairs / "train.tsv").read_bytes(),
                      (args.pairs / "val.tsv").read_bytes(), images.numpy().tobytes())
    n_images = 2 * (len(train.label) // params.train.batch_size or 1) * params.train.batch_size

    def on_epoch(row: dict, seconds: float) -> None:
        rec.metrics({**row, "epoch_seconds": seconds, "train_images_per_s": n_images / seconds}, step=row["epoch"])

    t0 = time.perf_counter()
    model, history, summary = fit(images, train, val, params, args.resume, key, on_epoch)
    if distributed.world()[0]:
        return
    save(checkpoint(model, params), args.model)
    write_history(args.plot, history)
    files.write_metrics(args.metrics, summary, rec)
    rec.metrics({"train_seconds": time.perf_counter() - t0})
    rec.tags({"model_sha256": files.digest(args.model), "mining": summary["mining"], "device": summary["device"]})
    rec.artifact(args.plot)
    args.resume.unlink(missing_ok=True)
    log.info("best epoch %d: val_auc %.4f; model saved to %s", summary["best_epoch"], summary["best_val_auc"], args.model)


if __name__ == "__main__":
    sys.exit(main())
