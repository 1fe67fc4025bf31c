"""The tiling machinery of the analytic kernels: the plan protocol, ``_run`` / ``_prepare`` / ``_finish`` and mirroring.

A kernel is described by a *plan* (:class:`KernelPlan`): per-row statistics, the in-place
elementwise transform of a GEMM block and the closed-form diagonal.  :func:`_run` evaluates a
plan tile by tile under a memory budget (:mod:`ntkdr.memory`), writing into fresh tensors, into
user targets (``out=``, e.g. an ``np.memmap``) or into a sink (matrix-free products).  The
organisation (Falkon-style, Meanti et al. 2020) is described in :mod:`ntkdr.kernels.relu`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np
import torch

from ntkdr._numerics import MIRROR_BLOCK as _MIRROR_BLOCK
from ntkdr._numerics import mirror_upper_
from ntkdr.kernels.fused import backend
from ntkdr.memory import check_max_memory, empty_large, working_budget
from ntkdr.validation import as_matrix, check_int, check_same_d, to_output

_GIB = float(2**30)
# Elements per elementwise block on CPU, per thread (at least 2^17 in all): large enough to
# amortise per-op overhead and thread start-up, small enough that each thread's share of the
# block and of the two scratch buffers stays in its L2 cache.
_CPU_BLOCK = 1 << 16
# On accelerators blocking buys nothing but launch overhead: use big blocks.
_GPU_BLOCK = 1 << 24
# Rows per symmetric tile: the upper-triangle GEMM saves (1 - 1/n_tiles)/2 of the flops.
_SYM_TILE = 512
# Rows per GEMM when writing a general (X, Z) result in place.
_GEN_TILE = 2048
# Scratch buffers of every plan (two blocks of the elementwise working set).
N_SCRATCH = 2


class KernelPlan(Protocol):
    """What :func:`_run` needs of a kernel: its outputs, scratch, row statistics and blocks.

    A plan may also define ``fused(outs, sx, sz) -> bool``: the whole elementwise transform of
    a tile in one compiled pass (:mod:`ntkdr.kernels.fused`), used with the numba backend;
    ``False`` means it did nothing and ``block`` runs instead.
    """

    n_out: int  # number of results (1, or 2 for (ntk, nngp))
    gemm_index: int  # which result receives the GEMM X Z^T
    n_scratch: int  # scratch blocks used by ``block``

    def stats(self, X: torch.Tensor) -> list[torch.Tensor]: ...

    def check(self, sx: list[torch.Tensor], sz: list[torch.Tensor], dtype: torch.dtype) -> None: ...

    def diag(self, sx: list[torch.Tensor]) -> list[torch.Tensor]: ...

    def block(
        self,
        outs: list[torch.Tensor],
        sx: list[torch.Tensor],
        sz: list[torch.Tensor],
        scratch: list[torch.Tensor],
    ) -> None: ...


def _block_elems(device: torch.device) -> int:
    """Elements of one elementwise block before the budget caps it."""
    if device.type == "cpu":
        return max(2 * _CPU_BLOCK, _CPU_BLOCK * torch.get_num_threads())
    return _GPU_BLOCK


def scratch_bytes(m: int, itemsize: int, device: Any = "cpu", n_scratch: int = N_SCRATCH) -> int:
    """Bytes of the elementwise scratch a kernel call with ``m`` result columns allocates
    when its budget does not cap it: ``n_scratch`` blocks of ``max(m, block)`` elements."""
    return n_scratch * max(m, _block_elems(torch.device(device))) * itemsize


# --------------------------------------------------------------------------------------
# Validation helpers
# --------------------------------------------------------------------------------------


def _prepare(X: Any, Z: Any, dtype: Any, device: Any):
    """Validate X (and Z); return ``(X, Z, symmetric, x_was_numpy)`` as tensors."""
    Xt, x_np = as_matrix(X, "X", dtype=dtype, device=device)
    if Z is None or Z is X:
        return Xt, Xt, True, x_np
    Zt, _ = as_matrix(Z, "Z", dtype=dtype, device=device)
    check_same_d(Xt, Zt)
    if Zt.device != Xt.device:
        raise ValueError(
            f"X and Z are on different devices ({Xt.device} and {Zt.device}); "
            "move one of them or pass device="
        )
    if Xt.dtype != Zt.dtype:  # only possible with dtype=None: promote to the wider one
        wide = torch.promote_types(Xt.dtype, Zt.dtype)
        Xt, Zt = Xt.to(wide), Zt.to(wide)
    return Xt, Zt, False, x_np


def _check_tile(tile: Any) -> int | None:
    return None if tile is None else check_int(tile, "tile", min_value=1)


def _check_max_memory(max_memory: Any) -> float | None:
    return check_max_memory(max_memory)


def _as_target(obj: Any, name: str, shape: tuple[int, int]) -> torch.Tensor:
    """A writable tensor sharing memory with ``obj`` (tensor, ndarray or np.memmap)."""
    if isinstance(obj, torch.Tensor):
        t = obj
    elif isinstance(obj, np.ndarray):
        if not obj.flags.writeable:
            raise ValueError(f"{name} is a read-only array; pass a writable array or np.memmap")
        if obj.dtype not in (np.float32, np.float64):
            raise ValueError(f"{name} must have dtype float32 or float64, got {obj.dtype}")
        t = torch.from_numpy(obj)
    else:
        raise ValueError(
            f"{name} must be a torch.Tensor, numpy array or np.memmap, got {type(obj).__name__}"
        )
    if t.dtype not in (torch.float32, torch.float64):
        raise ValueError(f"{name} must have dtype float32 or float64, got {t.dtype}")
    if tuple(t.shape) != shape:
        raise ValueError(f"{name} must have shape {shape}, got {tuple(t.shape)}")
    if t.requires_grad:
        raise ValueError(f"{name} must not require grad")
    return t


def _gib(nbytes: float) -> str:
    return f"{nbytes / _GIB:.3g} GiB"


# --------------------------------------------------------------------------------------
# The tiled engine
# --------------------------------------------------------------------------------------


def _mirror_strip(dst: torch.Tensor, src: torch.Tensor) -> None:
    """``dst = src.T`` in cache-friendly column blocks (dst is (r, t), src is (t, r))."""
    r = dst.shape[0]
    s = _MIRROR_BLOCK
    for j in range(0, r, s):
        dst[j : j + s].copy_(src[:, j : j + s].T)


def _run(
    plan: KernelPlan,
    Xt: torch.Tensor,
    Zt: torch.Tensor,
    symmetric: bool,
    outs: Sequence[Any] | None,
    tile: int | None,
    max_memory: float | None,
    sink: Callable[[int, int, list[torch.Tensor]], None] | None = None,
) -> list[torch.Tensor]:
    """Compute all outputs of ``plan`` tile by tile.

    ``outs``: user targets (one per output, ``None`` entries are allocated).  With ``sink``
    nothing is stored: every finished tile ``[a, b)`` (all columns) is passed to
    ``sink(a, b, tiles)`` instead (matrix-free products).
    """
    n, m = Xt.shape[0], Zt.shape[0]
    dt, dev = Xt.dtype, Xt.device
    item = Xt.element_size()
    n_out = plan.n_out
    budget = working_budget(max_memory)
    one_result = n * m * item

    sx = plan.stats(Xt)
    sz = sx if Zt is Xt else plan.stats(Zt)
    plan.check(sx, sz, dt)  # before allocating anything: the kernel must be representable

    targets: list[torch.Tensor] = []
    if sink is None:
        outs = list(outs) if outs is not None else [None] * n_out
        n_alloc = sum(o is None for o in outs)
        if max_memory is not None and n_alloc and n_alloc * one_result > max_memory:
            raise ValueError(
                f"the kernel result needs {_gib(n_alloc * one_result)} ({n} x {m}"
                f"{' x ' + str(n_alloc) if n_alloc > 1 else ''}, {str(dt).replace('torch.', '')}), "
                f"more than max_memory = {_gib(max_memory)}; compute it in tiles into out= "
                "(e.g. an np.memmap on disk) or raise max_memory"
            )
        for i, o in enumerate(outs):
            if o is None:
                targets.append(empty_large((n, m), dt, dev))
            else:
                name = "out" if n_out == 1 else f"out[{i}]"
                targets.append(_as_target(o, name, (n, m)))
        if max_memory is not None:
            budget = max(budget - n_alloc * one_result, 0.0)
        direct = all(t.device == dev and t.dtype == dt for t in targets)
        symmetric_mode = symmetric
    else:
        direct = False
        symmetric_mode = False  # matrix-free: full rows, nothing to mirror

    # Elementwise block (in elements; at least one row) and its scratch buffers, bounded by
    # the budget; what is left of the budget sizes the tile buffers when they are needed.
    block = max(m, min(_block_elems(dev), int(budget // (plan.n_scratch * item))))
    if direct:
        t = tile if tile is not None else (_SYM_TILE if symmetric_mode else _GEN_TILE)
        t = min(t, n)
    else:
        per_row = n_out * m * item
        t = max(1, min(n, int((budget - plan.n_scratch * block * item) // per_row)))
        if tile is not None:
            t = min(t, tile)
    scratch_elems = min(block, t * m)
    scratch = [torch.empty(scratch_elems, dtype=dt, device=dev) for _ in range(plan.n_scratch)]
    bufs = [torch.empty((t, m), dtype=dt, device=dev) for _ in range(n_out)] if not direct else []

    # one compiled pass per tile where the plan has one and the backend is numba (CPU)
    fused = getattr(plan, "fused", None) if backend(dev) == "numba" else None

    # Z is X: the diagonal gets the closed form at theta = 0 (exact, free of sqrt(eps) noise)
    diag = plan.diag(sx) if symmetric else None

    for a in range(0, n, t):
        b = min(a + t, n)
        rows = b - a
        c0 = a if symmetric_mode else 0
        ncols = m - c0
        if direct:
            dsts = [tg[a:b, c0:] for tg in targets]
        else:
            dsts = [buf[:rows, :ncols] for buf in bufs]
        torch.matmul(Xt[a:b], Zt[c0:].T, out=dsts[plan.gemm_index])
        szc = [s[c0:] for s in sz]
        if not (fused is not None and fused(dsts, [s[a:b] for s in sx], szc)):
            step = max(1, block // ncols)
            for r0 in range(0, rows, step):
                r1 = min(r0 + step, rows)
                k = (r1 - r0) * ncols
                scr = [s[:k].view(r1 - r0, ncols) for s in scratch]
                plan.block([d[r0:r1] for d in dsts], [s[a + r0 : a + r1] for s in sx], szc, scr)
        if diag is not None:
            for i, d in enumerate(dsts):
                d[:, a - c0 : b - c0].diagonal().copy_(diag[i][a:b])
        if sink is not None:
            sink(a, b, dsts)
            continue
        if symmetric_mode:
            for d in dsts:
                mirror_upper_(d[:, :rows])
        if not direct:
            for tg, d in zip(targets, dsts):
                tg[a:b, c0:].copy_(d)
        if symmetric_mode and b < n:
            for tg, d in zip(targets, dsts):
                _mirror_strip(tg[b:, a:b], d[:, rows:])
    return targets


def _finish(targets: list[torch.Tensor], outs: Sequence[Any] | None, x_np: bool) -> list[Any]:
    """Return the user's ``out`` objects where given, else tensors / arrays per input kind."""
    res = []
    for i, t in enumerate(targets):
        o = None if outs is None else outs[i]
        res.append(o if o is not None else to_output(t, x_np))
    return res
