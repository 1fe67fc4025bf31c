"""The kernel side of the certificate: features in, certificates of a (kind, k, seed) grid out.

* :class:`BlockOperator` -- ``V -> K V`` for ``K = H1(F, F)`` without storing ``K``: fixed row
  blocks ``[a, b)``, each ``K(F[a:b], F) V`` computed tile by tile by
  :meth:`ntkdr.kernels.AnalyticNTK.matvec`; with ``W`` ``torch.distributed`` ranks, rank ``r`` computes
  blocks ``r, r + W, ...`` and an all-reduce of disjoint rows (one rank's value plus zeros, an
  exact sum) gives every rank the product.  The same calls on the same slices, whatever the
  number of ranks, so a distributed run reproduces the single-process numbers.
* :func:`certify_features` -- one configuration: forms ``K`` (``exact`` / ``cholesky``) or the
  operator (``matrix-free``), calls :mod:`ntkdr.theory.certificate`, adds the NTK-regression test error.
* :func:`certify_grid` -- the dense kernel and every (kind, k, seed) configuration, with
  per-configuration progress and, with ``parts_dir``, each finished configuration written
  atomically as JSON, so an interrupted run resumes where it stopped and gives the same results.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ntkdr.memory import BufferPool
from ntkdr.theory.certificate import (
    Certificate,
    certify_inplace,
    certify_matrix,
    certify_operator,
    choose_method,
)

__all__ = [
    "BlockOperator",
    "certify_features",
    "certify_grid",
    "config_id",
    "grid_jobs",
    "kernel_quantities",
    "task_error",
    "GRID_VERSION",
    "LOWER_BOUNDS",
    "lower_bound_policy",
    "PROOF_AUTO_MAX_N",
]

GRID_VERSION = 2
#: ``lower_bound`` choices of :func:`certify_grid` (``--lower-bound``).
LOWER_BOUNDS = ("auto", "proven", "none")
#: Largest n at which ``lower_bound="auto"`` proves every lambda_min (measured on 2 cores: the
#: float64 factorization costs ~0.7 s at n = 5000, 8.5 s at 12000 -- 3.6 dense kernels).
PROOF_AUTO_MAX_N = 5000
#: Rows per block of the matrix-free product (the unit of work shared among ranks).
BLOCK_ROWS = 2048


class BlockOperator:
    """``V -> K V`` for ``K = H1(F, F)`` in fixed row blocks, shared among ranks if any."""

    def __init__(self, F: torch.Tensor, block_rows: int | None = None):
        from ntkdr.kernels import AnalyticNTK, KernelOptions
        from ntkdr.training.distributed import rank, world_size

        block_rows = block_rows or BLOCK_ROWS
        self.F = F.to(torch.float64).contiguous()
        self.n = self.F.shape[0]
        self.kernel = AnalyticNTK(options=KernelOptions(dtype=torch.float64))
        self.rank, self.world = rank(), world_size()
        blocks = [(a, min(a + block_rows, self.n)) for a in range(0, self.n, block_rows)]
        self.mine = blocks[self.rank :: self.world]

    def __call__(self, V: np.ndarray) -> np.ndarray:
        from ntkdr.training.distributed import all_reduce_sum

        Vt = torch.from_numpy(np.ascontiguousarray(V, dtype=np.float64).reshape(self.n, -1))
        out = torch.zeros_like(Vt)
        for a, b in self.mine:
            out[a:b] = torch.as_tensor(self.kernel.matvec(self.F[a:b], Vt, Z=self.F))
        if self.world > 1:
            all_reduce_sum(out)
        return out.numpy().reshape(np.shape(V))


def task_error(pred: np.ndarray, Y: np.ndarray, task: str) -> float:
    """Classification error (sign for +-1, argmax for one-hot), mean squared error for regression."""
    if task == "regression":
        return float(np.mean((pred.reshape(Y.shape) - Y) ** 2))
    if Y.ndim == 1:
        return float(np.mean(np.sign(pred.reshape(-1)) != Y))
    return float(np.mean(pred.argmax(1) != Y.argmax(1)))


def certify_features(
    F: Any,
    Y: Any,
    *,
    Y_random: Any = None,
    F_test: Any = None,
    Y_test: Any = None,
    task: str = "binary",
    method: str = "auto",
    max_memory: float | None = None,
    dtype: Any = torch.float64,
    name: str = "K",
    proven: bool = True,
    buffers: BufferPool | None = None,
) -> Certificate:
    """Certificate of ``K = H1(F, F)`` (two-layer NTK, first layer trained) for targets ``Y``.

    ``F``: (n, d) features as the network sees them (sketched / normalised already);
    ``Y_random``: second targets (random labels); ``F_test`` / ``Y_test``: test split for the
    NTK-regression error; ``task``: ``"binary"`` / ``"multiclass"`` (one-hot) / ``"regression"``;
    ``method``: ``"auto"`` (:func:`ntkdr.theory.certificate.choose_method`, by size and
    ``max_memory`` bytes) or ``"exact"`` / ``"cholesky"`` / ``"matrix-free"``; ``dtype``: the
    dtype the kernel is evaluated in (the linear algebra is float64); ``proven``: see
    :func:`ntkdr.theory.certificate.certify_matrix` (``cholesky`` only); ``buffers``: a
    :class:`ntkdr.memory.BufferPool` holding ``K`` and its scratch across the calls of a grid.
    """
    from ntkdr.kernels import AnalyticNTK, KernelOptions, two_layer_ntk, two_layer_ntk_diag
    from ntkdr.training.distributed import world_size
    from ntkdr.validation import as_matrix

    Ft, _ = as_matrix(F, "F", dtype=dtype)
    n = Ft.shape[0]
    auto, reason = choose_method(n, max_memory, world_size())
    if method == "auto":
        method = auto
    else:
        reason = f"method {method!r} requested"
    eps = float(torch.finfo(Ft.dtype).eps)
    if method == "matrix-free":
        diag = np.asarray(two_layer_ntk_diag(Ft.to(torch.float64)))
        cert = certify_operator(
            BlockOperator(Ft),
            n,
            Y,
            Y_random,
            max_abs=float(np.max(np.abs(diag))),  # |K_ij| <= sqrt(K_ii K_jj): K is PSD
            eps=eps,
            name=name,
            reason=reason,
        )
    elif method == "cholesky-inplace":
        Ft64 = Ft.to(torch.float64)
        cert = certify_inplace(
            lambda buf: two_layer_ntk(Ft, out=buf),
            BlockOperator(Ft64),
            n,
            Y,
            Y_random,
            eps=eps,
            name=name,
            reason=reason,
            buffers=buffers,
        )
    else:
        t0 = time.perf_counter()
        if buffers is not None and Ft.dtype == torch.float64:
            K = buffers.get("K", (n, n), np.float64)
            two_layer_ntk(Ft, out=K)
        else:
            K = two_layer_ntk(Ft).to(torch.float64).numpy()
        t_kernel = time.perf_counter() - t0
        cert = certify_matrix(
            K,
            Y,
            Y_random,
            method=method,
            eps=eps,
            name=name,
            reason=reason,
            proven=proven,
            buffers=buffers,
        )
        del K
        cert.details.setdefault("timings", {})["kernel"] = t_kernel
        cert.seconds += t_kernel
    if F_test is not None and Y_test is not None and cert.alpha is not None:
        t0 = time.perf_counter()
        Tt, _ = as_matrix(F_test, "F_test", dtype=dtype)
        kern = AnalyticNTK(options=KernelOptions(dtype=torch.float64))
        a = torch.from_numpy(np.ascontiguousarray(cert.alpha))
        pred = np.asarray(kern.matvec(Tt.to(torch.float64), a, Z=Ft.to(torch.float64)))
        Yt = np.asarray(Y_test, dtype=np.float64)
        cert.regression_test_error = task_error(pred[:, 0] if Yt.ndim == 1 else pred, Yt, task)
        cert.seconds += time.perf_counter() - t0
    return cert


# --------------------------------------------------------------------------------------------
# the grid, with resume
# --------------------------------------------------------------------------------------------
def grid_jobs(kinds: Sequence[str], ks: Sequence[int], seeds: int) -> list[tuple[str, int, int]]:
    """The (kind, k, seed) jobs of a grid; ``pca`` is deterministic, so it gets one seed."""
    return [
        (kind, k, s) for kind in kinds for k in ks for s in range(1 if kind == "pca" else seeds)
    ]


def config_id(kind: str | None, k: int | None, seed: int | None) -> str:
    """File-name-safe id of a configuration (``dense`` for the dense kernel)."""
    return "dense" if kind is None else f"{kind}-k{k}-s{seed}"


def _fingerprint(arrays: Sequence[np.ndarray], settings: dict[str, Any]) -> str:
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(str((a.shape, a.dtype.str)).encode())
        h.update(a.tobytes())
    h.update(json.dumps(settings, sort_keys=True, default=str).encode())
    return h.hexdigest()


def _write_json_atomic(path: Path, obj: Any) -> None:
    """Temporary file, fsync, ``os.replace`` (:mod:`ntkdr.io`): a crash never leaves a torn part."""
    from ntkdr.io import write_text_atomic

    write_text_atomic(path, json.dumps(obj), fsync=True)


def _load_parts(parts: Path, fingerprint: str) -> dict[str, dict]:
    """Finished configurations recorded under ``parts`` for this fingerprint (else none)."""
    stamp = parts / "fingerprint.json"
    if not stamp.exists():
        return {}
    try:
        recorded = json.loads(stamp.read_text())
    except (OSError, ValueError):
        recorded = {}
    if recorded.get("fingerprint") != fingerprint or recorded.get("version") != GRID_VERSION:
        warnings.warn(f"{parts}: records of another data set or grid; starting over", stacklevel=3)
        for p in parts.glob("*.json"):
            with contextlib.suppress(FileNotFoundError):  # another rank may be first
                p.unlink()
        return {}
    done = {}
    for p in sorted(parts.glob("*.json")):
        if p.name == "fingerprint.json":
            continue
        try:
            done[p.stem] = json.loads(p.read_text())
        except (OSError, ValueError):  # a torn part cannot come from a crash (atomic); be safe
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
    return done


def lower_bound_policy(lower_bound: str, n: int) -> tuple[bool, str]:
    """``(proven, reason)``: whether the ``cholesky`` method proves each ``lambda_min`` (one
    float64 factorization per configuration) for ``--lower-bound`` ``lower_bound`` at ``n``."""
    if lower_bound not in LOWER_BOUNDS:
        raise ValueError(
            f"lower_bound must be one of {', '.join(map(repr, LOWER_BOUNDS))}, got {lower_bound!r}"
        )
    if lower_bound == "proven":
        return True, "proven requested: a float64 factorization of H - sigma I per kernel"
    if lower_bound == "none":
        return False, "none requested: no proof of the lower ends (intervals marked estimate)"
    if n <= PROOF_AUTO_MAX_N:
        return True, f"n = {n} <= {PROOF_AUTO_MAX_N}: proven (the proof costs about one kernel)"
    return False, (
        f"n = {n} > {PROOF_AUTO_MAX_N}: no proof of the lower ends (a float64 factorization "
        "costs several kernels each; --lower-bound proven asks for it)"
    )


def certify_grid(
    X: np.ndarray,
    Y: np.ndarray,
    *,
    Y_random: np.ndarray | None = None,
    X_test: np.ndarray | None = None,
    Y_test: np.ndarray | None = None,
    task: str = "binary",
    jobs: Sequence[tuple[str, int, int]] = (),
    make_features: Callable[[str, int, int], tuple[Any, Any]] | None = None,
    method: str = "auto",
    max_memory: float | None = None,
    dtype: Any = torch.float64,
    parts_dir: str | os.PathLike | None = None,
    settings: dict[str, Any] | None = None,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    lower_bound: str = "auto",
) -> dict[str, dict[str, Any]]:
    """Certificates of the dense kernel and of every job ``(kind, k, seed)``, keyed by
    :func:`config_id`.

    ``make_features(kind, k, seed)`` returns ``(F, F_test)`` for a job (sketched features).
    With ``parts_dir``, each finished configuration is written there atomically (temporary
    file + ``os.replace``) next to a fingerprint of the data and ``settings``; a rerun with the
    same inputs loads them instead of recomputing (the same entries as an uninterrupted run).
    ``log`` receives one line per configuration (method, reason, seconds).
    ``lower_bound``: ``"proven"`` (every ``lambda_min`` of the ``cholesky`` method certified to
    ~1e-5 relative by a float64 factorization of ``K - sigma I``), ``"none"`` (no such
    factorization: the same point values, intervals marked ``"estimate"``, about a third of the
    time) or ``"auto"`` (``proven`` while ``n <=`` :data:`PROOF_AUTO_MAX_N`, where a proof costs
    about as much as forming the kernel; ``none`` beyond).
    """
    proven, _ = lower_bound_policy(lower_bound, len(X))
    from tqdm.auto import tqdm

    from ntkdr.training.distributed import rank

    parts = Path(parts_dir) if parts_dir is not None else None
    done: dict[str, dict] = {}
    if parts is not None:
        arrays = [a for a in (X, Y, Y_random, X_test, Y_test) if a is not None]
        fp = _fingerprint(
            arrays, dict(settings or {}, jobs=list(jobs), method=method, lower_bound=lower_bound)
        )
        parts.mkdir(parents=True, exist_ok=True)
        done = _load_parts(parts, fp)
        if rank() == 0:
            _write_json_atomic(
                parts / "fingerprint.json", {"fingerprint": fp, "version": GRID_VERSION}
            )
    todo = [(None, None, None), *jobs]
    results: dict[str, dict[str, Any]] = {}
    # None: tqdm shows the bar only on a terminal
    bar = tqdm(total=len(todo), desc="certify", disable=None if progress else True, leave=False)
    buffers = BufferPool()  # K and its float32 copy, faulted in once for the whole grid
    for kind, k, s in todo:
        cid = config_id(kind, k, s)
        bar.set_postfix_str(cid)
        if cid in done:
            results[cid] = done[cid]
            if log is not None:
                log(f"{cid}: resumed from {parts}")
            bar.update()
            continue
        if kind is None:
            F, F_test = X, X_test
        else:
            assert make_features is not None
            F, F_test = make_features(kind, k, s)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            cert = certify_features(
                F,
                Y,
                Y_random=Y_random,
                F_test=F_test,
                Y_test=Y_test,
                task=task,
                method=method,
                max_memory=max_memory,
                dtype=dtype,
                name=cid,
                proven=proven,
                buffers=buffers,
            )
        for w in caught:  # re-emit (named by the configuration) outside the recording
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        entry = cert.as_dict()
        entry.update(kind=kind, k=k, seed=s, extra=_extra(cert))
        results[cid] = entry
        if parts is not None and rank() == 0:
            _write_json_atomic(parts / f"{cid}.json", entry)
        if log is not None:
            lam, bnd = cert.lambda_min, cert.bound["true"]
            log(
                f"{cid}: {cert.method}; lambda_min = {lam['value']:.6g} in "
                f"[{lam['lower']:.6g}, {lam['upper']:.6g}] ({lam['status']}); bound = "
                f"{bnd['value']:.6g} ({bnd['status']}); {cert.seconds:.1f} s"
            )
        bar.update()
    bar.close()
    return results


def _extra(cert: Certificate, delta: float = 0.05) -> float:
    """``sqrt(max(log(n / (lambda_0 delta)), 0) / n)``, the confidence term of Arora et al. Thm 5.1."""
    lam = cert.lambda_min["value"]
    if not lam > 0:
        return math.inf
    return math.sqrt(max(math.log(cert.n / (lam * delta)), 0.0) / cert.n)


def kernel_quantities(entry: dict[str, Any]) -> dict[str, Any]:
    """The main job's per-kernel fields from a grid entry (a :meth:`Certificate.as_dict` plus
    ``extra``): point values at the top level, the intervals and the method under
    ``"certificate"``."""
    bt = entry["bound"]["true"]["value"]
    out: dict[str, Any] = {
        "lambda_min": entry["lambda_min"]["value"],
        "lambda_max": entry["lambda_max"],
        "bound_true": bt,
        "bound_random": entry["bound"].get("random", {}).get("value", math.nan),
        "bound_total_true": bt + entry["extra"],
        "is_pd": entry["is_pd"],
        "pd_message": entry["pd_message"],
        "regression_test_error": entry["regression_test_error"],
        "spectrum": entry["spectrum"] if entry.get("spectrum") else entry["spectrum_top"],
        "certificate": {
            key: entry[key]
            for key in (
                "method",
                "method_reason",
                "lambda_min",
                "bound",
                "complexity",
                "details",
                "seconds",
            )
        },
    }
    if not entry["is_pd"]:
        out["regression_message"] = entry["pd_message"]
    return out
