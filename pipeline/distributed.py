"""Training under torchrun: the rank and world size, and the gathering of embeddings across processes.

Every process draws the same global batch and augmentation and embeds its own share; for batch-all
mining the embeddings are gathered so that each process sees every pair of the global batch, as a
single process does. Batch norm normalises over each process's share, so the result agrees with a
single process closely, not bit for bit.
"""
from __future__ import annotations

import os

import torch
import torch.distributed as dist


def world() -> tuple[int, int]:
    """(rank, world size): (0, 1) unless running under torchrun with an initialised process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def launched() -> bool:
    """Started by torchrun with more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init() -> None:
    """Join torchrun's process group (gloo on the CPU, NCCL on GPUs)."""
    if not dist.is_initialized():
        dist.init_process_group("cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo")


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def local_device(device: torch.device) -> torch.device:
    """This process's GPU under torchrun; the device unchanged otherwise."""
    if device.type == "cuda" and world()[1] > 1:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
    return device


class GatherRows(torch.autograd.Function):
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


class Embedder(torch.nn.Module):
    """The model's `embed` as `forward`, so DistributedDataParallel syncs its gradients."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.embed(x)


def wrap(model: torch.nn.Module, device: torch.device):
    """The DDP-wrapped embedder of `model` under torchrun, else None (the model's own `embed` serves)."""
    if world()[1] == 1:
        return None
    return torch.nn.parallel.DistributedDataParallel(Embedder(model), device_ids=[device] if device.type == "cuda" else None)


def shares(n: int, size: int) -> list[slice]:
    """The contiguous, equal shares of a batch of n pairs that the ranks embed."""
    return [slice(r * n // size, (r + 1) * n // size) for r in range(size)]


def reduce_sum(flag: torch.Tensor) -> torch.Tensor:
    """`flag` summed over the ranks (a non-finite value on any rank makes it non-finite everywhere)."""
    if world()[1] > 1:
        dist.all_reduce(flag)
    return flag


def mean_over_ranks(value: float, device: torch.device) -> float:
    if world()[1] == 1:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.item() / world()[1]


def sync_buffers(model: torch.nn.Module) -> None:
    """Rank 0's batch-norm statistics on every rank."""
    if world()[1] > 1:
        for buf in model.buffers():
            dist.broadcast(buf, 0)


def from_rank0(fn):
    """fn() computed on rank 0 and broadcast to every rank (fn() itself with one process)."""
    if world()[1] == 1:
        return fn()
    found = [fn() if world()[0] == 0 else None]
    dist.broadcast_object_list(found, 0)
    return found[0]
