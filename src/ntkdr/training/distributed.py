r"""Small helpers around ``torch.distributed`` for data-parallel training, CG and tiled kernels.

Launch with ``torchrun --nproc_per_node=N -m ntkdr train ...`` (or call
:func:`torch.distributed.init_process_group` yourself and then :func:`ntkdr.train.fit`).
Backends: gloo for CPU tensors, NCCL for CUDA tensors.  No cluster code of our own: process
groups, rendezvous and collectives are all ``torch.distributed``.

**Sharding convention.** Example ``i`` of ``n`` belongs to rank ``r`` of ``W`` when
``start(r) <= i < start(r + 1)`` with ``start(r) = floor(r n / W)`` (contiguous, deterministic,
shard sizes differ by at most one, a rank may get an empty shard when ``n < W``).  Since the
training loss is the *sum* ``1/2 sum_i (y_i - f(x_i))^2`` (Du et al. 2019; Arora et al. 2019),
summing the per-shard gradients over ranks (:func:`all_reduce_sum`) gives the full-batch
gradient of the single-process run, up to floating-point round-off.

Every helper is a no-op (or the trivial answer) when no process group is initialised, so code
written for ``torchrun`` also runs as a single process.
"""

from __future__ import annotations

import datetime
import os
from typing import Any

import torch
import torch.distributed as dist

from ntkdr.validation import check_choice, check_int, resolve_device

__all__ = [
    "BACKENDS",
    "init_from_env",
    "is_distributed",
    "rank",
    "world_size",
    "shard_indices",
    "shard_slice",
    "all_reduce_sum",
    "broadcast_object",
    "barrier",
    "cleanup",
]

BACKENDS = ("gloo", "nccl")
# Collective timeout when the caller gives none: long enough for a slow rank to finish an
# n x n eigensolve on rank 0, short enough that a dead peer fails the job instead of hanging it.
DEFAULT_TIMEOUT_S = 1800.0


def init_from_env(
    backend: str | None = None, device: Any = None, timeout: float | None = None
) -> tuple[int, int]:
    """Initialise the default process group from torchrun's environment; return ``(rank, world)``.

    Does nothing (and returns ``(0, 1)``, or the existing group's rank / size) when the
    variables ``RANK`` and ``WORLD_SIZE`` are not both set or when a group already exists.
    ``backend=None`` picks NCCL when ``device`` is CUDA (or, with ``device=None``, when CUDA is
    available) and gloo otherwise; with CUDA the process binds to GPU ``LOCAL_RANK``.
    ``timeout`` (seconds) bounds every collective, so a crashed peer is an error, not a hang.
    """
    if backend is not None:
        backend = check_choice(backend, "backend", BACKENDS)
    dev = resolve_device(device)
    if timeout is not None:
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
            raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
    if is_distributed():
        return rank(), world_size()
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return 0, 1
    try:
        r, w = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    except ValueError:
        raise ValueError(
            f"RANK / WORLD_SIZE must be integers, got {os.environ['RANK']!r} / {os.environ['WORLD_SIZE']!r}"
        ) from None
    if not 0 <= r < w:
        raise ValueError(f"RANK = {r} is not in [0, WORLD_SIZE = {w})")
    cuda = dev.type == "cuda" if dev is not None else torch.cuda.is_available()
    if backend is None:
        backend = "nccl" if cuda else "gloo"
    if backend == "nccl":
        if not torch.cuda.is_available():
            raise ValueError("backend 'nccl' needs CUDA; use backend 'gloo' on CPU")
        # one GPU per process: collectives of this rank run on its own device
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", r % torch.cuda.device_count())))
    secs = DEFAULT_TIMEOUT_S if timeout is None else float(timeout)
    dist.init_process_group(
        backend=backend, rank=r, world_size=w, timeout=datetime.timedelta(seconds=secs)
    )
    return r, w


def is_distributed() -> bool:
    """True when a default ``torch.distributed`` process group is initialised."""
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """This process's rank in the default group (0 without one)."""
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    """Number of processes in the default group (1 without one)."""
    return dist.get_world_size() if is_distributed() else 1


def _check_shard_args(n: int, rank_: int, world: int) -> tuple[int, int, int]:
    n = check_int(n, "n", min_value=0)
    world = check_int(world, "world", min_value=1)
    rank_ = check_int(rank_, "rank", min_value=0, max_value=world - 1)
    return n, rank_, world


def shard_indices(n: int, rank: int, world: int) -> range:
    """Indices ``range(floor(rank n / world), floor((rank + 1) n / world))`` of ``rank``'s shard.

    The shards of ranks ``0..world-1`` are contiguous, disjoint, cover ``0..n-1`` in order and
    differ in size by at most one."""
    n, rank, world = _check_shard_args(n, rank, world)
    return range(rank * n // world, (rank + 1) * n // world)


def shard_slice(n: int, rank: int, world: int) -> slice:
    """:func:`shard_indices` as a ``slice`` (indexing a tensor with it gives a view, no copy)."""
    r = shard_indices(n, rank, world)
    return slice(r.start, r.stop)


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum ``t`` over all ranks, in place; returns ``t`` (unchanged without a process group)."""
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"all_reduce_sum needs a torch.Tensor, got {type(t).__name__}")
    if is_distributed() and world_size() > 1:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """``obj`` of rank ``src`` on every rank (picklable objects; identity without a group)."""
    if not (is_distributed() and world_size() > 1):
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def barrier() -> None:
    """Wait for all ranks (no-op without a process group)."""
    if is_distributed() and world_size() > 1:
        dist.barrier()


def cleanup() -> None:
    """Destroy the default process group if one is initialised."""
    if is_distributed():
        dist.destroy_process_group()
