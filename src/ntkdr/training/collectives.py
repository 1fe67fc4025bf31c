"""Collectives over the default process group: "do all ranks agree", "did any rank fail", and ``fit``'s :class:`_Comm`.

:func:`ranks_agree` and :func:`all_ranks_succeed` are the one copy of these two checks for
training, the distributed CG solver and the out-of-core kernel files.  :class:`_Comm` wraps the default ``torch.distributed`` process group for ``fit``: this rank's
shard of the rows, float64 all-reduced scalars, one-collective gradient sums, row gathers,
the parameter broadcast guard, the same-data check and run-on-rank-0 calls whose errors reach
every rank.  The process-group plumbing itself is :mod:`ntkdr.training.distributed`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ntkdr.training import distributed as D

__all__ = ["ranks_agree", "all_ranks_succeed", "flag_device"]


def flag_device() -> torch.device:
    """Where small control tensors live: the current CUDA device under NCCL, else the CPU."""
    if torch.distributed.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def ranks_agree(values: torch.Tensor) -> bool:
    """Whether every rank holds the same 1-D ``values`` (one all-reduced max of ``(v, -v)``).

    Call on every rank, in distributed mode only.  Equal inputs compare equal bit for bit."""
    v = values.reshape(-1)
    both = torch.cat([v, -v])
    torch.distributed.all_reduce(both, op=torch.distributed.ReduceOp.MAX)
    k = v.numel()
    return torch.equal(both[:k], -both[k:])


def agree_on_ints(world_size: int, values: list[int], what: str) -> None:
    """Raise ``RuntimeError`` unless every rank holds the same integers (no-op in one process)."""
    if world_size == 1:
        return
    if not ranks_agree(torch.tensor(values, dtype=torch.int64, device=flag_device())):
        raise RuntimeError(f"ranks disagree on {what}: {values} here")


def all_ranks_succeed(world_size: int, fn: Callable[[], Any], what: str, who: str) -> Any:
    """Run ``fn`` on this rank, then agree across ranks that every rank succeeded.

    Every rank calls the same sequence of steps, so the collectives always pair up; a failure
    anywhere raises on every rank (the failing one re-raises its own exception, the others a
    ``RuntimeError`` saying that another rank failed while ``what``).
    """
    err: BaseException | None = None
    res = None
    try:
        res = fn()
    except BaseException as exc:
        err = exc
    if world_size > 1:
        flag = torch.tensor([0 if err is None else 1], dtype=torch.int32, device=flag_device())
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        if err is None and int(flag.item()):
            raise RuntimeError(f"{who}: another rank failed while {what}")
    if err is not None:
        raise err
    return res


class _Comm:
    """Collectives of one data-parallel :func:`fit` over the default process group.

    Scalars (losses, counts) travel as float64 whatever the model dtype, so integer counts
    stay exact and per-shard partial sums lose nothing before they are added."""

    def __init__(self, device: torch.device) -> None:
        self.rank, self.world = D.rank(), D.world_size()
        backend = str(torch.distributed.get_backend())
        if backend == "nccl" and device.type != "cuda":
            raise ValueError(
                f"the process group uses NCCL but the model is on {device}; use gloo for CPU models"
            )
        self.device = device

    def shard(self, n: int) -> slice:
        return D.shard_slice(n, self.rank, self.world)

    def scalars(self, *values: float) -> list[float]:
        t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=self.device)
        D.all_reduce_sum(t)
        return t.tolist()

    def any(self, flag: bool) -> bool:
        return self.scalars(1.0 if flag else 0.0)[0] > 0

    def sum_grads(self, params: list[torch.Tensor]) -> None:
        """All-reduce the ``.grad`` of ``params`` in place (one collective)."""
        grads = [p.grad for p in params]
        if len(grads) == 1:
            D.all_reduce_sum(grads[0])
            return
        flat = D.all_reduce_sum(torch.cat([g.reshape(-1) for g in grads]))
        off = 0
        for g in grads:
            g.copy_(flat[off : off + g.numel()].view_as(g))
            off += g.numel()

    def gather_rows(self, local: torch.Tensor, n: int, sl: slice) -> torch.Tensor:
        """The ``(n, ...)`` tensor whose rows ``sl`` are ``local`` on each rank (exact: the
        other ranks contribute zeros to the sum)."""
        out = torch.zeros((n,) + tuple(local.shape[1:]), dtype=local.dtype, device=local.device)
        out[sl] = local
        return D.all_reduce_sum(out)

    def broadcast_params(self, model: nn.Module) -> None:
        """Rank 0's parameters and buffers on every rank (a guard: inits are seeded alike)."""
        with torch.no_grad():
            for t in model.state_dict().values():
                if isinstance(t, torch.Tensor):
                    torch.distributed.broadcast(t, src=0)

    def check_same(self, fingerprint: str) -> None:
        """Raise (on every rank) unless all ranks passed the same data (same ``fingerprint``)."""
        h = int(hashlib.sha256(fingerprint.encode()).hexdigest()[:15], 16)
        if not ranks_agree(torch.tensor([h], dtype=torch.int64, device=self.device)):
            raise ValueError(
                "distributed fit: X / y differ between ranks; pass the same full training set on "
                "every rank (fit shards it itself)"
            )

    def root_call(self, fn: Callable[[], tuple[Any, Any]]) -> tuple[Any, Any]:
        """Run ``fn() -> (public, private)`` on rank 0 only; every rank gets ``public``, rank 0
        also ``private`` (others None).  An exception on rank 0 is raised on every rank."""
        public = private = None
        err = None
        if self.rank == 0:
            try:
                public, private = fn()
            except Exception as exc:  # re-raised below, after the other ranks have heard of it
                err = exc
        box = D.broadcast_object(
            ("err", type(err).__name__, str(err)) if err is not None else ("ok", public)
        )
        if err is not None:
            raise err
        if box[0] == "err":
            cls = ValueError if box[1] == "ValueError" else RuntimeError
            raise cls(f"rank 0 failed: {box[2]}")
        return box[1], private
