"""Stage `train`: fit the Siamese network with contrastive loss, early-stopped on validation AUC.

Reads:  PREPARED/images.npy + index.tsv; PAIRS/train.tsv, PAIRS/val.tsv; params `seed`, `pairs.mode`,
        `prepare.*`, `train.*`.
Writes: MODEL (models/model.pt): the best weights with the model's constructor arguments and its
        preprocessing, so later stages rebuild it from this file alone; METRICS (metrics/train.json);
        PLOT (plots/train.csv): per-epoch train loss, validation loss, validation AUC, learning rate.

A resumable state is written atomically after every epoch (RESUME, models/resume.pt); started
again with the same inputs after a kill, training resumes there and ends with the same result.

Distributed: `torchrun --nproc_per_node N -m pipeline.train` trains with DistributedDataParallel
(gloo on the CPU, NCCL on GPUs) on the same params. `train.batch_size` stays the global batch: every
process draws the same batch and augmentation and embeds its 1/N share; for batch-all mining the
embeddings are gathered so that each process sees every pair of the global batch, as a single
process does. Batch norm normalises over each process's share, so the result agrees with a single
process closely, not bit for bit. Rank 0 validates, writes the outputs and records to MLflow.
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import io
import logging
import math
import sys
import time
import os
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from sklearn.metrics import roc_auc_score
from tqdm import tqdm

from pipeline import files, tracking
from pipeline.data import IdentitySampler, PairSet, augment, load_images, load_pairs
from pipeline.metrics import choose_threshold
from pipeline.model import Siamese, batch_all_contrastive_loss, contrastive_loss, embed_all, euclidean
from pipeline.params import Params, TrainParams, flatten, load_params

log = logging.getLogger("pipeline.train")


class TrainingError(RuntimeError):
    pass


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise TrainingError("train.device is 'cuda' but no CUDA device is available")
    return torch.device(name)


def world() -> tuple[int, int]:
    """(rank, world size): (0, 1) unless running under torchrun with an initialised process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class _GatherRows(torch.autograd.Function):
    """All ranks' (n, D) rows, concatenated in rank order; the gradient of a rank's own rows is the sum
    over ranks (each rank computes the same loss), which DDP's averaging then brings back to one loss's."""

    @staticmethod
    def forward(ctx, x):
        rank, size = world()
        parts = [torch.empty_like(x) for _ in range(size)]
        dist.all_gather(parts, x.contiguous())
        ctx.rank, ctx.n = rank, x.shape[0]
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad):
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        return grad[ctx.rank * ctx.n:(ctx.rank + 1) * ctx.n]


class _Embedder(torch.nn.Module):
    """The model's `embed` as `forward`, so DistributedDataParallel syncs its gradients."""

    def __init__(self, model: Siamese):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.embed(x)


def autocast_dtype(device: torch.device, precision: str) -> torch.dtype | None:
    """bf16 autocast where the hardware runs it natively ('auto'), else fp32 (None)."""
    if precision == "fp32":
        return None
    if device.type == "cuda":
        supported = torch.cuda.is_bf16_supported()
    else:
        supported = bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    if precision == "bf16" and not supported:
        log.warning("bf16 is not supported natively on %s; training in fp32", device)
    return torch.bfloat16 if supported else None


def lr_factor(step: int, steps_per_epoch: int, p: TrainParams) -> float:
    """Learning-rate multiplier at an optimiser step: linear warm-up, then the schedule."""
    total = p.epochs * steps_per_epoch
    warm = p.warmup_epochs * steps_per_epoch
    if step < warm:
        return (step + 1) / warm
    if p.schedule == "constant":
        return 1.0
    t = (step - warm) / max(1, total - warm)
    if p.schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * min(1.0, t)))
    return max(0.0, 1 - t) ** 2 if t > 0 else 1.0  # onecycle's annealing half after the warm-up


def make_optimizer(model: torch.nn.Module, p: TrainParams) -> torch.optim.Optimizer:
    decay = [q for n, q in model.named_parameters() if q.ndim > 1]  # no weight decay on BN and biases
    rest = [q for n, q in model.named_parameters() if q.ndim <= 1]
    groups = [{"params": decay, "weight_decay": p.weight_decay}, {"params": rest, "weight_decay": 0.0}]
    if p.optimizer == "adam":
        return torch.optim.AdamW(groups, lr=p.lr)
    return torch.optim.SGD(groups, lr=p.lr, momentum=p.momentum, nesterov=True)


def pair_distances(model: Siamese, images: torch.Tensor, pairs: PairSet, tta_flip: bool,
                   dtype: torch.dtype | None) -> np.ndarray:
    """Distances (P,) of a pair set, each distinct image embedded once."""
    rows, inverse = np.unique(np.concatenate([pairs.idx1, pairs.idx2]), return_inverse=True)
    emb = embed_all(model, images[torch.from_numpy(rows)], tta_flip, autocast_dtype=dtype)
    n = len(pairs.idx1)
    a, b = torch.from_numpy(inverse[:n]), torch.from_numpy(inverse[n:])
    return euclidean(emb[a], emb[b]).numpy()


def validate(model: Siamese, images: torch.Tensor, val: PairSet, p: TrainParams, dtype) -> dict:
    d = pair_distances(model, images, val, p.tta_flip, dtype)
    loss = contrastive_loss(torch.from_numpy(d), torch.from_numpy(val.label), p.margin, p.pos_margin).item()
    t = choose_threshold(d, val.label)
    return {"val_loss": loss, "val_auc": float(roc_auc_score(val.label, -d)),
            "val_accuracy": float(((d <= t) == val.label.astype(bool)).mean())}


def train_epoch(model, opt, sched, images, train: PairSet, p: TrainParams, mining: str, seed: int, epoch: int,
                device, dtype, embed=None) -> float:
    """One pass over the training pairs in a seeded order with seeded augmentation; mean loss.

    `embed` (default `model.embed`) is the DDP-wrapped embedder when distributed: then every rank
    draws the same global batch and augmentation, and embeds its own share of the pairs."""
    model.train()
    rank, size = world()
    embed = embed or model.embed
    gen = torch.Generator().manual_seed(seed * 100_003 + epoch)
    torch.manual_seed(seed * 100_003 + epoch)  # dropout
    order = torch.randperm(len(train.label), generator=gen).numpy()
    n_batches = len(order) // p.batch_size or 1
    sampler = IdentitySampler(train, 2 * p.batch_size, p.per_identity, p.identity_fraction) \
        if p.sampler == "identities" else None
    total, seen = 0.0, 0
    bar = tqdm(range(n_batches), desc=f"epoch {epoch}", unit="batch", leave=False, disable=True if rank else None)
    for k in bar:
        b = order[k * p.batch_size:(k + 1) * p.batch_size]
        if sampler:  # a flat batch of images; rank r embeds every size-th image from the r-th, so each rank's
            # share holds part of every identity group and of the uniform images (batch norm sees alike shares)
            batch_rows, batch_ids = sampler.batch(gen)
            x = augment(images[torch.from_numpy(batch_rows)].float(), gen, **vars(p.augment))[rank::size]
            ids = torch.from_numpy(np.concatenate([batch_ids[r::size] for r in range(size)])).to(device)
        else:
            rows = torch.from_numpy(np.concatenate([train.idx1[b], train.idx2[b]]))
            x = augment(images[rows].float(), gen, **vars(p.augment))  # (2B, 1, H, W), the same on every rank
            mine = _shares(len(b), size)[rank]  # this rank's pairs
            if size > 1:
                x = torch.cat([x[:len(b)][mine], x[len(b):][mine]])
            # the ids of every rank's share in rank order (one process: the whole batch)
            ids = torch.from_numpy(np.concatenate([np.concatenate([train.id1[b][part], train.id2[b][part]])
                                                   for part in _shares(len(b), size)])).to(device)
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            emb = embed(x.to(device))
        if mining == "batch_all":
            if size > 1:
                emb = _GatherRows.apply(emb)
            loss = batch_all_contrastive_loss(emb, ids, p.margin, p.pos_margin)
        else:  # each rank's mean over its pairs; DDP averages the gradients over the ranks' equal shares
            e1, e2 = emb.chunk(2)
            loss = contrastive_loss(euclidean(e1, e2), torch.from_numpy(train.label[b][mine]).to(device), p.margin,
                                    p.pos_margin)
        check = loss.detach().clone()
        if size > 1:  # a non-finite loss on any rank stops every rank
            dist.all_reduce(check)
        if not torch.isfinite(check):
            raise TrainingError(f"epoch {epoch}, batch {k}: the loss is {check.item()}; stopping (lower train.lr?). "
                                "The last good checkpoint is kept.")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        total += loss.item() * len(b)
        seen += len(b)
        bar.set_postfix(loss=f"{total / seen:.4f}")
    if size > 1:  # the mean over the ranks' losses
        mean = torch.tensor([total / seen], dtype=torch.float64, device=device)
        dist.all_reduce(mean)
        return mean.item() / size
    return total / seen


def _shares(n: int, size: int) -> list[slice]:
    """The contiguous, equal shares of a batch of n pairs that the ranks embed."""
    return [slice(r * n // size, (r + 1) * n // size) for r in range(size)]


def fingerprint(*parts: bytes) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(hashlib.sha256(part).digest())
    return h.hexdigest()


def fit(images: torch.Tensor, train: PairSet, val: PairSet, params: Params, resume_path: Path | None = None,
        key: str = "", on_epoch=None) -> tuple[Siamese, list[dict], dict]:
    """Train from scratch (or resume) and return (best model, per-epoch history, summary)."""
    p = params.train
    mining = "batch_all" if p.mining == "auto" else p.mining
    rank, size = world()
    device = resolve_device(p.device)
    if device.type == "cuda" and size > 1:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
    if p.batch_size % size:
        raise ValueError(f"train.batch_size {p.batch_size} must divide among {size} processes")
    dtype = autocast_dtype(device, p.precision)
    torch.manual_seed(params.seed)
    model = Siamese.from_params(params)
    model = model.to(device, memory_format=torch.channels_last)
    embed = None
    if size > 1:  # the same initial weights everywhere (seeded, and DDP broadcasts rank 0's)
        embed = torch.nn.parallel.DistributedDataParallel(_Embedder(model), device_ids=[device] if device.type == "cuda" else None)
    opt = make_optimizer(model, p)
    steps_per_epoch = len(train.label) // p.batch_size or 1
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, steps_per_epoch, p))
    state = {"epoch": 0, "history": [], "best": None, "best_auc": -1.0, "bad_epochs": 0}
    if resume_path is not None and resume_path.exists():
        saved = torch.load(resume_path, map_location=device, weights_only=True)
        if saved.get("key") == key:
            model.load_state_dict(saved["model"]); opt.load_state_dict(saved["opt"]); sched.load_state_dict(saved["sched"])
            state = saved["state"]
            log.info("resuming after epoch %d from %s", state["epoch"], resume_path)
        else:
            log.info("ignoring %s: it belongs to other inputs or params", resume_path)
    images_dev = images.to(device) if device.type == "cuda" else images
    log.info("training %s on %s (%s), %d train / %d val pairs, mining=%s%s", p.arch, device,
             "bf16" if dtype else "fp32", len(train.label), len(val.label), mining,
             f", {size} processes" if size > 1 else "")
    while state["epoch"] < p.epochs and state["bad_epochs"] < p.patience:
        epoch = state["epoch"] + 1
        t0 = time.perf_counter()
        train_loss = train_epoch(model, opt, sched, images_dev, train, p, mining, params.seed, epoch, device, dtype, embed)
        seconds = time.perf_counter() - t0
        if size > 1:  # rank 0's batch-norm statistics everywhere, then rank 0's validation decides for all
            for buf in model.buffers():
                dist.broadcast(buf, 0)
            found = [validate(model, images_dev, val, p, dtype) if rank == 0 else None]
            dist.broadcast_object_list(found, 0)
            scores = found[0]
        else:
            scores = validate(model, images_dev, val, p, dtype)
        row = {"epoch": epoch, "train_loss": train_loss, **scores, "lr": opt.param_groups[0]["lr"]}
        state["history"].append(row)
        if row["val_auc"] > state["best_auc"] + p.min_delta:
            state.update(best_auc=row["val_auc"], bad_epochs=0, best={"epoch": epoch, **row},
                         best_weights={k: v.detach().clone() for k, v in model.state_dict().items()})
        else:
            state["bad_epochs"] += 1
        state["epoch"] = epoch
        log.info("epoch %d/%d  train_loss %.4f  val_loss %.4f  val_auc %.4f  val_acc %.4f  (%.1fs, %.0f img/s)",
                 epoch, p.epochs, train_loss, row["val_loss"], row["val_auc"], row["val_accuracy"], seconds,
                 2 * steps_per_epoch * p.batch_size / seconds)
        if on_epoch:
            on_epoch(row, seconds)
        if resume_path is not None and rank == 0:
            save({"key": key, "model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
                  "state": state}, resume_path)
    model.load_state_dict(state["best_weights"])
    summary = {"best_epoch": state["best"]["epoch"], "stopped_epoch": state["epoch"],
               "early_stopped": state["epoch"] < p.epochs, "mining": mining,
               **{f"best_{k}": state["best"][k] for k in ("val_auc", "val_loss", "val_accuracy", "train_loss")}}
    return model.cpu(), state["history"], summary


def checkpoint(model: Siamese, params: Params) -> dict:
    """Everything needed to rebuild and use the model, from this dict alone."""
    return {"config": model.config, "state_dict": model.state_dict(),
            "preprocess": {"crop": list(params.prepare.crop), "size": params.prepare.image_size},
            "tta_flip": params.train.tta_flip, "margin": params.train.margin}


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--prepared", type=Path, default=Path("data/prepared"))
    parser.add_argument("--pairs", type=Path, default=Path("data/pairs"))
    parser.add_argument("--model", type=Path, default=Path("models/model.pt"))
    parser.add_argument("--metrics", type=Path, default=Path("metrics/train.json"))
    parser.add_argument("--plot", type=Path, default=Path("plots/train.csv"))
    parser.add_argument("--resume", type=Path, default=Path("models/resume.pt"))
    args = parser.parse_args(argv)
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1  # started by torchrun
    if distributed and not dist.is_initialized():
        dist.init_process_group("cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo")
    rank = world()[0]
    tracking.setup_logging(logging.INFO if rank == 0 else logging.WARNING)
    try:
        if rank:  # one record and one set of outputs: rank 0's
            return _main(args, tracking.Recorder("train"))
        with tracking.stage_run("train", args.params) as rec:
            return _main(args, rec)
    finally:
        if distributed:
            dist.destroy_process_group()


def _main(args, rec: tracking.Recorder) -> int:
    try:
        params = load_params(args.params)
        rec.params({"seed": params.seed, "pairs.mode": params.pairs.mode, **flatten(params.prepare, "prepare."),
                    **flatten(params.train, "train.")})
        if params.train.threads:
            torch.set_num_threads(params.train.threads)
        images, rows = load_images(args.prepared)
        # restricted: in-batch identities from the pair labels only, never from the names
        train = load_pairs(args.pairs / "train.tsv", rows, names=params.pairs.mode == "unrestricted")
        val = load_pairs(args.pairs / "val.tsv", rows)
        key = fingerprint(repr(params.seed).encode(), repr(params.pairs).encode(), repr(params.prepare).encode(),
                          repr(params.train).encode(), (args.pairs / "train.tsv").read_bytes(),
                          (args.pairs / "val.tsv").read_bytes(), images.numpy().tobytes())
        n_images = 2 * (len(train.label) // params.train.batch_size or 1) * params.train.batch_size

        def on_epoch(row: dict, seconds: float) -> None:
            rec.metrics({**row, "epoch_seconds": seconds, "train_images_per_s": n_images / seconds}, step=row["epoch"])

        t0 = time.perf_counter()
        model, history, summary = fit(images, train, val, params, args.resume, key, on_epoch)
    except (ValueError, TrainingError, OSError) as e:
        log.error("%s", e)
        rec.fail()
        return 1
    if world()[0]:
        return 0
    save(checkpoint(model, params), args.model)
    write_history(args.plot, history)
    tracking.write_metrics(args.metrics, summary, rec)
    rec.metrics({"train_seconds": time.perf_counter() - t0})
    rec.tags({"model_sha256": files.digest(args.model), "mining": summary["mining"]})
    rec.artifact(args.plot)
    args.resume.unlink(missing_ok=True)
    log.info("best epoch %d: val_auc %.4f; model saved to %s", summary["best_epoch"], summary["best_val_auc"], args.model)
    return 0


if __name__ == "__main__":
    sys.exit(main())
