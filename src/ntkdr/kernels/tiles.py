"""Resumable, optionally distributed, out-of-core kernel matrices: :func:`compute_kernel_to_file`.

:func:`compute_kernel_to_file` writes ``K(X, X)`` (or ``K(X, Z)``) to a ``.npy`` file tile by
tile, so the matrix never has to fit in memory, an interrupted run resumes where it stopped,
and several ranks of a ``torch.distributed`` job (launched with ``torchrun``) can share the work.

Files beside the output ``out.npy`` while a run is under way:

* ``out.npy.partial.npy`` -- the result, a memory-mapped ``.npy`` (``np.lib.format.open_memmap``);
* ``out.npy.partial.json`` (one process) or ``out.npy.partial.rank{r}.json`` (rank ``r`` of a
  distributed run) -- which row tiles are finished, the tiling and a fingerprint of the inputs
  (shape, dtype, SHA-256 of the bytes of X and Z, the kernel's parameters);
* ``out.npy.partial.lock`` -- an advisory lock held by rank 0, so two runs never share a file.

Crash safety: a tile is marked finished only after its values have been flushed (``msync``)
to the partial file, and the record itself is replaced atomically (temporary file, ``fsync``,
``os.replace``), so a crash at any point never marks an unfinished tile done.  The output path
only ever receives the complete matrix, by ``os.replace`` of the partial file; the records are
removed afterwards.  A rerun of the same command skips the finished tiles; a rerun with other
inputs, another kernel or another tiling warns (:class:`ResumeWarning`, naming the reason)
and starts over.

Tiles: rows ``[a, b)``.  For ``Z=None`` only the upper triangle is computed -- tile ``[a, b)``
evaluates ``kernel(X[a:b], X[a:b])`` (the same tensor twice, so :class:`~ntkdr.kernels.NTK`
takes its exactly symmetric path with the closed-form diagonal; the block is then mirrored
from its upper triangle for any callable) and ``kernel(X[a:b], X[b:])``, and writes the
"L"-shaped region ``rows [a, b) x cols [a, n)`` plus its transpose ``rows [b, n) x cols [a, b)``.
The regions of different tiles are disjoint, the result is exactly symmetric and about half of
the work of the full matrix is done.  With ``Z`` given, tile ``[a, b)`` is ``kernel(X[a:b], Z)``.

Reproducibility: every tile is computed by the same calls on the same slices whatever the
order, the rank that computes it or the number of restarts, so a resumed or distributed run
gives the same bytes as an uninterrupted single-process run with the same ``tile_rows``,
device, dtype and number of CPU threads (BLAS and vectorised elementwise kernels may round
differently when the thread count changes).  Different ``tile_rows`` agree to round-off.

Distributed runs: all ranks must see the output directory through one page cache (one node,
e.g. several GPUs), or a file system with coherent shared ``mmap`` writes.  Rank 0 creates the
partial file, every rank maps it ``r+`` and computes tiles ``r, r + W, r + 2W, ...`` of those not
yet finished, and rank 0 renames the result once every rank reports success (``all_reduce``
of a status flag, which works on gloo and NCCL).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import os
import time
from collections.abc import Callable
from contextlib import nullcontext
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ntkdr.io import fsync_dir, make_output_dir
from ntkdr.kernels.engine import mirror_upper_, scratch_bytes
from ntkdr.kernels.operator import AnalyticNTK
from ntkdr.kernels.tilefiles import (
    FORMAT,
    VERSION,
    ResumeWarning,
    _bits_to_hex,
    _load_plan,
    _lock,
    _paths,
    _setup,
    _unlock,
    _write_record,
    partial_paths,
)
from ntkdr.memory import check_max_memory, working_budget
from ntkdr.training.collectives import agree_on_ints, all_ranks_succeed
from ntkdr.validation import ArrayLike, as_matrix, check_int, check_same_d

__all__ = ["ResumeWarning", "compute_kernel_to_file", "partial_paths", "choose_tile_rows"]

logger = logging.getLogger(__name__)

# Default tiling when tile_rows is not given: about 32 tiles (fine-grained enough to resume
# and to spread over ranks) but never fewer than 128 rows, so each GEMM stays efficient.
_TARGET_TILES = 32
_MIN_DEFAULT_ROWS = 128


# --------------------------------------------------------------------------------------
# Kernel identity and input fingerprint
# --------------------------------------------------------------------------------------


def _callable_identity(fn: Any) -> str:
    if isinstance(fn, partial):
        kw = ", ".join(f"{k}={v!r}" for k, v in sorted(fn.keywords.items()))
        return f"partial({_callable_identity(fn.func)}, args={fn.args!r}, {kw})"
    if isinstance(fn, AnalyticNTK):
        return repr(fn)  # dataclass repr: every parameter, options included
    mod = getattr(fn, "__module__", None) or type(fn).__module__
    qual = getattr(fn, "__qualname__", None)
    if qual is not None:
        return f"{mod}.{qual}"
    text = repr(fn)
    # a default object repr carries a memory address, which differs between runs
    return f"{type(fn).__module__}.{type(fn).__qualname__}" if " at 0x" in text else text


def _resolve_kernel(kernel: Any, kernel_id: Any) -> tuple[Callable, str]:
    if kernel is None:
        kernel = AnalyticNTK()
    if not callable(kernel):
        raise ValueError(
            f"kernel must be an ntkdr.kernels.NTK or a callable (Xa, Xb) -> matrix, got {type(kernel).__name__}"
        )
    if kernel_id is not None and not isinstance(kernel_id, str):
        raise ValueError(f"kernel_id must be a string, got {type(kernel_id).__name__}")
    return kernel, kernel_id if kernel_id is not None else _callable_identity(kernel)


def _sha256(t: torch.Tensor) -> str:
    arr = t.detach().cpu().contiguous().numpy()
    return hashlib.sha256(arr.data.cast("B")).hexdigest()


# --------------------------------------------------------------------------------------
# Memory budget
# --------------------------------------------------------------------------------------


def _row_bytes(m: int, item: int) -> int:
    # the tile returned by the kernel plus one transient copy (device transfer / dtype cast /
    # the transposed write into the file)
    return 2 * m * item


def _fixed_bytes(m: int, item: int) -> int:
    # the analytic kernels' elementwise scratch, as the kernel engine sizes it
    return scratch_bytes(m, item)


def choose_tile_rows(n: int, m: int, itemsize: int, max_memory: float | None = None) -> int:
    """Rows per tile for an ``n x m`` result with ``itemsize``-byte entries.

    The largest tile that fits ``max_memory`` (bytes; default
    :data:`ntkdr.memory.DEFAULT_MAX_MEMORY`), capped at about ``n / 32`` rows (at least 128)
    so that an interrupted run loses little work and ranks share tiles evenly.
    """
    n = check_int(n, "n", min_value=1)
    m = check_int(m, "m", min_value=1)
    fit = _rows_that_fit(m, itemsize, max_memory)
    return max(1, min(n, fit, max(_MIN_DEFAULT_ROWS, -(-n // _TARGET_TILES))))


def _rows_that_fit(m: int, item: int, max_memory: float | None) -> int:
    budget = working_budget(max_memory)
    need_one = _fixed_bytes(m, item) + _row_bytes(m, item)
    if budget < need_one:
        raise ValueError(
            f"max_memory = {budget:.4g} bytes is too small: one row tile of {m} columns needs "
            f"{need_one:.4g} bytes ({need_one / 2**20:.3g} MiB) including the kernel's working set; "
            "raise max_memory"
        )
    return int((budget - _fixed_bytes(m, item)) // _row_bytes(m, item))


# --------------------------------------------------------------------------------------
# Records
# --------------------------------------------------------------------------------------


# --------------------------------------------------------------------------------------
# Distributed helpers (no-ops in one process)
# --------------------------------------------------------------------------------------


def _step(world_size: int, fn: Callable[[], Any], what: str) -> Any:
    return all_ranks_succeed(world_size, fn, what, "compute_kernel_to_file")


def _dist_context(rank: Any, world_size: Any) -> tuple[int, int]:
    import torch.distributed as dist

    if rank is not None:
        rank = check_int(rank, "rank", min_value=0)
    if world_size is not None:
        world_size = check_int(world_size, "world_size", min_value=1)
    if dist.is_available() and dist.is_initialized():
        r, w = dist.get_rank(), dist.get_world_size()
        if (rank is not None and rank != r) or (world_size is not None and world_size != w):
            raise ValueError(
                f"rank / world_size ({rank}, {world_size}) disagree with the initialised "
                f"torch.distributed process group ({r}, {w})"
            )
        return r, w
    if (world_size or 1) > 1 or (rank or 0) > 0:
        raise ValueError(
            f"rank = {rank}, world_size = {world_size} need an initialised torch.distributed "
            "process group (launch with torchrun and call torch.distributed.init_process_group)"
        )
    return 0, 1


# --------------------------------------------------------------------------------------
# Setup (rank 0): resume or start over
# --------------------------------------------------------------------------------------


# --------------------------------------------------------------------------------------
# Tiles
# --------------------------------------------------------------------------------------


def _as_tile(res: Any, shape: tuple[int, int], dtype: torch.dtype) -> torch.Tensor:
    if not isinstance(res, (torch.Tensor, np.ndarray)):
        raise ValueError(f"kernel must return a tensor or numpy array, got {type(res).__name__}")
    t = torch.as_tensor(res)
    if tuple(t.shape) != shape:
        raise ValueError(f"kernel returned shape {tuple(t.shape)} for a tile of shape {shape}")
    return t.detach().to(device="cpu", dtype=dtype)


def _compute_tile(kernel, Xt, Zt, symmetric: bool, a: int, b: int, mm: np.ndarray, dtype) -> None:
    rows, n = b - a, Xt.shape[0]
    Xa = Xt[a:b]
    if not symmetric:
        mm[a:b] = _as_tile(kernel(Xa, Zt), (rows, Zt.shape[0]), dtype).numpy()
        return
    # Passing the same tensor twice lets the analytic kernels take their symmetric path; the
    # copy is ours to mirror in place (the kernel may hand back memory it keeps, e.g. a view).
    D = _as_tile(kernel(Xa, Xa), (rows, rows), dtype).clone(memory_format=torch.contiguous_format)
    mirror_upper_(D)
    mm[a:b, a:b] = D.numpy()
    if b < n:
        R = _as_tile(kernel(Xa, Xt[b:]), (rows, n - b), dtype).numpy()
        mm[a:b, b:] = R
        mm[b:, a:b] = R.T


# --------------------------------------------------------------------------------------
# Public entry point
# --------------------------------------------------------------------------------------


def compute_kernel_to_file(
    X: ArrayLike,
    out_path: str | os.PathLike,
    kernel: Any = None,
    *,
    Z: ArrayLike | None = None,
    tile_rows: int | None = None,
    max_memory: float | None = None,
    dtype: Any = None,
    device: Any = None,
    progress: bool = False,
    rank: int | None = None,
    world_size: int | None = None,
    kernel_id: str | None = None,
) -> Path:
    """Compute ``kernel(X, X)`` (``Z=None``; symmetric) or ``kernel(X, Z)`` into the ``.npy`` file ``out_path``.

    Parameters
    ----------
    X, Z : arrays or tensors (n, d) and (n', d); validated (finite, 2-D, non-empty) and cast to
        ``dtype`` (default: X's float dtype, integer -> float32; Z follows X) on ``device``
        (default: X's device).  The output file has this dtype.
    kernel : an :class:`ntkdr.kernels.NTK` (default ``AnalyticNTK()``, the two-layer H1) or any
        callable ``kernel(Xa, Xb)`` returning a tensor / array of shape (len(Xa), len(Xb)).
        It receives tensors of the validated dtype and device.  With ``Z=None`` the kernel is
        taken to be symmetric: only the upper triangle is evaluated and mirrored.
    tile_rows : rows per tile.  Default: from ``max_memory`` (see :func:`choose_tile_rows`);
        a resumed run keeps the tiling it found on disk.
    max_memory : bytes for one tile and the kernel's working set (X itself not counted).
    progress : show a progress bar (rank 0).
    rank, world_size : checked against the initialised ``torch.distributed`` group (that is
        where they come from by default); ``world_size > 1`` requires one.
    kernel_id : identity of the kernel in the resume fingerprint.  Default: the NTK's
        parameters, or the callable's qualified name (with a ``functools.partial``'s
        arguments) -- pass a string when a closure's parameters must be told apart.

    Returns the absolute path of the finished file.  See the module docstring for the files
    kept while running, crash safety and reproducibility (bit-for-bit equal to an
    uninterrupted single-process run with the same ``tile_rows``, device, dtype and threads).
    """
    kernel, kid = _resolve_kernel(kernel, kernel_id)
    paths = _paths(out_path)
    if tile_rows is not None:
        tile_rows = check_int(tile_rows, "tile_rows", min_value=1)
    max_memory = check_max_memory(max_memory)
    if (
        isinstance(kernel, AnalyticNTK)
        and max_memory is not None
        and kernel.options.max_memory is None
    ):
        # the kernel object budgets its own scratch and tile from the same number
        opts = dataclasses.replace(kernel.options, max_memory=max_memory)
        kernel = dataclasses.replace(kernel, options=opts)
    if not isinstance(progress, bool):
        raise ValueError(f"progress must be True or False, got {progress!r}")
    Xt, _ = as_matrix(X, "X", dtype=dtype, device=device)
    symmetric = Z is None or Z is X
    if Z is None or symmetric:
        Zt = Xt
    else:
        Zt, _ = as_matrix(Z, "Z", dtype=Xt.dtype, device=Xt.device)
        check_same_d(Xt, Zt)
    r, W = _dist_context(rank, world_size)
    make_output_dir(paths.out.parent)

    n, m = Xt.shape[0], Zt.shape[0]
    tdtype = Xt.dtype
    np_dtype = np.dtype(str(tdtype).replace("torch.", ""))
    item = np_dtype.itemsize
    fit_rows = _rows_that_fit(m, item, max_memory)
    if tile_rows is not None and max_memory is not None and tile_rows > fit_rows:
        raise ValueError(
            f"tile_rows = {tile_rows} does not fit max_memory = {max_memory:.4g} bytes "
            f"(at most {fit_rows} rows of {m} columns do)"
        )
    default_rows = tile_rows if tile_rows is not None else choose_tile_rows(n, m, item, max_memory)
    inputs = {
        "shape": [n, m, Xt.shape[1]],
        "dtype": np_dtype.name,
        "symmetric": symmetric,
        "kernel": kid,
        "x_sha256": _sha256(Xt),
        "z_sha256": None if symmetric else _sha256(Zt),
    }

    lock_fd: list[int | None] = [None]

    def setup() -> None:
        if r == 0:
            lock_fd[0] = _lock(paths)
            _setup(paths, inputs, tile_rows, fit_rows, (n, m), np_dtype)

    try:
        _step(W, setup, "preparing the partial file")
        t, done = _step(W, lambda: _load_plan(paths, default_rows, n), "reading the records")
        n_tiles = done.size
        agree_on_ints(W, [t, n_tiles, int(done.sum())], "the tiling and the finished tiles")
        remaining = np.flatnonzero(~done).tolist()
        mine = remaining[r::W]
        if done.any() and r == 0:
            logger.info(
                "resuming %s: %d of %d tiles already done", paths.out, int(done.sum()), n_tiles
            )
        _step(
            W,
            lambda: _compute_tiles(
                kernel, Xt, Zt, symmetric, paths, inputs, t, done, mine, r, W, tdtype, progress
            ),
            "computing tiles",
        )

        def finish() -> None:
            if r == 0:
                _, final = _load_plan(paths, t, n)
                if not final.all():
                    missing = np.flatnonzero(~final)[:10].tolist()
                    raise RuntimeError(
                        f"tiles {missing} are not marked finished; rerun to complete them"
                    )
                os.replace(paths.partial, paths.out)
                fsync_dir(paths.out.parent)
                for p in paths.records(with_tmp=True):
                    p.unlink()

        _step(W, finish, "renaming the finished file")
    finally:
        if lock_fd[0] is not None:
            _unlock(lock_fd[0])
            with contextlib.suppress(FileNotFoundError):
                paths.lock.unlink()
    return paths.out


def _compute_tiles(
    kernel, Xt, Zt, symmetric, paths, inputs, t, done, mine, r, W, tdtype, progress
) -> None:
    n = Xt.shape[0]
    done = done.copy()  # this rank's record: the finished tiles it started from plus its own
    record = paths.record(r, W)
    mm = np.lib.format.open_memmap(paths.partial, mode="r+")
    bar: Any = nullcontext()
    if progress and r == 0:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(mine), desc="kernel tiles", unit="tile", leave=False, disable=None)
    try:
        with bar, torch.no_grad():
            for i in mine:
                a, b = i * t, min((i + 1) * t, n)
                _compute_tile(kernel, Xt, Zt, symmetric, a, b, mm, tdtype)
                mm.flush()  # the values are on disk before the record says so
                done[i] = True
                _write_record(
                    record,
                    {
                        "format": FORMAT,
                        "version": VERSION,
                        "inputs": inputs,
                        "tile_rows": t,
                        "n_tiles": int(done.size),
                        "n_done": int(done.sum()),
                        "done": _bits_to_hex(done),
                        "rank": r,
                        "world_size": W,
                        "updated": time.time(),
                    },
                )
                if progress and r == 0:
                    bar.update(1)
    finally:
        mm.flush()
        del mm
