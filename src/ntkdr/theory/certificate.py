"""The certificate engine: per configuration, what the NTK guarantees need, with error bars.

For a feature matrix ``F`` (the dense inputs ``X`` or sketched inputs ``S X``, rows ``f_i``) the
two-layer NTK Gram matrix ``K = H1(F, F)`` (Du et al., ICLR 2019; Arora et al., ICML 2019)
decides the guarantees: ``lambda_0 = lambda_min(K)`` (Du et al. Thm 4.1) and the data-dependent
term ``sqrt(2 y^T K^-1 y / n)`` of Arora et al. Thm 5.1, for the true and for random labels.
:func:`certify_matrix` (a formed ``K``) and :func:`certify_operator` (only products ``K V``)
return, as a :class:`Certificate`: ``lambda_min``, ``lambda_max``, the top of the
spectrum, ``y^T K^-1 y`` and both bounds, the NTK-regression test error (``K(F_test, F) K^-1 y``),
each point value with an interval and a status -- ``"certified"`` where a proof backs the
interval, ``"estimate"`` where none does.

Methods (:func:`choose_method` picks one by size and memory; ``method=`` forces one):

``exact`` (small ``n``)
    Full eigenvalue decomposition (LAPACK ``?syevr``): every eigenvalue, to backward-stable
    accuracy; ``y^T K^-1 y`` by Cholesky.  The intervals come from the same proofs as below.
``cholesky`` (``K`` fits in memory twice)
    ``K`` is formed once (float64) and copied to float32; Lanczos on the copy gives the top of
    the spectrum, a float32 Cholesky factor of the copy (a third of the float64 time) is the
    preconditioner of float64 PCG for ``K^-1 y`` (3-5 steps to float64 residuals) and the
    inverse of shift-invert Lanczos for the bottom eigenvector (the smallest eigenvalues of
    ``K`` are the largest of ``K^-1``, relative gaps amplified).  Every reported number
    is a float64 quantity of ``K`` itself: ``lambda_min`` and ``lambda_max`` are Rayleigh
    quotients of the Ritz vectors on ``K`` (the former an upper bound, Courant-Fischer),
    ``y^T K^-1 y`` is ``y^T x + x^T r`` with the residual ``r = y - K x``.  One float64
    factorization, of ``K - sigma I`` with ``sigma = lambda (1 - 1e-5)``, proves
    ``lambda_min(K) >= sigma - margin``
    (:func:`ntkdr.theory.certificate_linalg.shifted_cholesky`), so ``lambda_min`` is certified to a
    relative width of about 1e-5, and with it ``y^T K^-1 y`` to within ``||r||^2 / lambda_min``
    (:func:`ntkdr.theory.certificate_linalg.residual_quadrature`).  ``proven=False`` skips that
    factorization (intervals marked ``"estimate"``).  Where the float32 factorization or the
    proof fails, the float64 route takes over: ``K = R^T R`` in float64, shift-invert Lanczos
    with ``R``, the certifying factorization, and the Gauss / Gauss-Radau rules of the PCG
    (Golub & Meurant 2010), the Radau node being the proven lower bound of the preconditioned
    spectrum.
``cholesky-inplace`` (``K`` fits once, not twice)
    The same proofs with one n x n buffer: the top of the spectrum first, then ``K`` is
    factored in its own storage; products with ``K`` (a few PCG steps) come from tiles, and
    ``K`` is formed a second time for the certifying factorization
    (:mod:`ntkdr.theory.certificate_dense`).  This is what lets n = 50,000 run in 24 GiB.
``matrix-free`` (``K`` does not fit)
    Only products ``K V`` (recomputed tile by tile, possibly over ``torch.distributed`` ranks by
    the caller).  LOBPCG (Knyazev, SIAM J. Sci. Comput. 23, 2001) with a randomized Nystrom
    preconditioner gives ``lambda_min`` and ``lambda_max``, preconditioned CG the solves with
    the Gauss lower bound.  Nothing proves a lower bound on ``lambda_min`` here, so
    ``lambda_min`` and the upper ends of the bounds are reported as ``"estimate"``.

Measured on this project's data (n = 12,000, d = 784, 2 cores): the float64 factorization
costs 8.5 s, 3.6 times the dense kernel; the float32 one 2.5-3.1 s; every other step (top and
bottom Lanczos, PCG) about a second together.  Sharing work across the grid does not pay: with
the dense kernel's factor as the preconditioner of a sketched kernel of the same points,
``kappa(H^-1 H~)`` is 36 (k = 256) to 1.5e4 (k = 16) on MNIST (n = 3000), so PCG / LOBPCG with
it cost more than a float32 factorization of ``H~``.

Accuracy: the methods agree with full ``eigh`` / Cholesky values to ~1e-8 relative or better
for ``lambda_min`` and ~1e-14 for the bounds (tests at n = 2000-3000); the recommended k decided on them is
the exact path's.  A kernel that is not numerically positive definite (``lambda_min <= n eps
lambda_max`` or Cholesky failure; duplicate or parallel inputs) gives ``is_pd=False``, infinite
bounds and a warning (:class:`ntkdr.theory.SingularKernelWarning`); nothing raises.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ntkdr.theory.spectra import SingularKernelWarning

__all__ = [
    "METHODS",
    "ASSUMPTIONS",
    "Certificate",
    "choose_method",
    "memory_needed",
    "certify_matrix",
    "certify_operator",
    "certify_inplace",
]

METHODS = ("exact", "cholesky", "cholesky-inplace", "matrix-free")
#: Largest n for which the full eigendecomposition is the default: it costs under a second
#: there and gives the whole spectrum for the report's plot (measured on 2 cores: above ~1000
#: points the Lanczos + Cholesky route is several times faster and the spectrum is cut to its
#: top :data:`TOP` values).
EXACT_MAX_N = 1000
#: Relative gap below the Ritz value at which the certifying Cholesky is tried.
TIGHT_GAP = 1e-5
#: Number of top eigenvalues reported by the iterative methods.
TOP = 10
#: Relative widening of the quadrature intervals for the rounding of the CG recurrences.
ROUNDING_SLACK = 1e-12

ASSUMPTIONS = (
    "intervals are about the computed float64 kernel matrix (the rounding of the kernel "
    "evaluation itself, ~1e-8 relative per entry for nearly parallel rows, is not included); "
    "lambda_min lower bounds come from a successful float64 Cholesky factorization of "
    "K - sigma I under the standard IEEE rounding model (Higham Thm 10.3); upper bounds on "
    "lambda_min are Rayleigh quotients (Courant-Fischer) with their rounding added; "
    "y^T K^-1 y intervals are y^T x + x^T r + [0, ||r||^2 / lambda_min] for the residual r of "
    "a float64 solution x, the rounding of r bounded through ||K||_F (method cholesky), or "
    "Gauss / Gauss-Radau quadrature rules of preconditioned CG (Golub & Meurant 2010), "
    "exact-arithmetic statements widened by 1e-12 relative for rounding (the float64 route, "
    "cholesky-inplace); a float32 Cholesky factor, where used, only preconditions"
)


def _interval(value: float, lower: float, upper: float, certified: bool) -> dict[str, Any]:
    return {
        "value": float(value),
        "lower": float(lower),
        "upper": float(upper),
        "status": "certified" if certified else "estimate",
    }


@dataclass
class Certificate:
    """Kernel-side quantities of one configuration (see the module text for the methods).

    Each interval entry is a dict ``{value, lower, upper, status}``; ``status`` is
    ``"certified"`` when a proof backs ``[lower, upper]`` and ``"estimate"`` otherwise.
    ``complexity`` maps ``"true"`` / ``"random"`` to intervals on ``y^T K^-1 y``; ``bound`` maps
    them to intervals on ``sqrt(2 y^T K^-1 y / n)`` (Arora et al. 2019 Thm 5.1, constants 1).
    """

    method: str
    method_reason: str
    n: int
    lambda_min: dict[str, Any]
    lambda_max: float
    spectrum_top: list[float]
    complexity: dict[str, dict[str, Any]]
    bound: dict[str, dict[str, Any]]
    regression_test_error: float
    is_pd: bool
    pd_message: str | None
    seconds: float
    details: dict[str, Any] = field(default_factory=dict)
    assumptions: str = ASSUMPTIONS
    spectrum: list[float] | None = None
    alpha: np.ndarray | None = field(default=None, repr=False)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready dict (``alpha``, the solution ``K^-1 Y``, left out)."""
        out = asdict(self)
        out.pop("alpha")
        return out


# --------------------------------------------------------------------------------------------
# choosing the method
# --------------------------------------------------------------------------------------------
def memory_needed(n: int, method: str, n_rhs: int = 2, tile_bytes: int | None = None) -> int:
    """Bytes the method keeps alive for an ``n``-point configuration (float64); ``tile_bytes``:
    the kernel tiles of the products over tiles (default: two blocks of up to 2048 rows, at most
    64 MiB)."""
    if tile_bytes is None:
        tile_bytes = min(64 * 2**20, 2 * 8 * n * min(n, 2048))
    vectors = 8 * n * (4 * n_rhs + 2 * TOP + 24)
    if method == "exact":
        return 8 * n * n * 3 + vectors  # K, the eigh workspace copy, the factor buffer
    if method == "cholesky":
        return 8 * n * n * 2 + vectors  # K and the factor buffer
    if method == "cholesky-inplace":
        return 8 * n * n + vectors + tile_bytes  # one buffer, K or its factor
    return vectors + 8 * n * 4 * 400 + tile_bytes  # Nystrom preconditioner of rank 400


def choose_method(n: int, max_memory: float | None = None, world_size: int = 1) -> tuple[str, str]:
    """``(method, reason)`` for ``n`` points within ``max_memory`` bytes (default: available RAM).

    ``ValueError`` (one line) when not even the matrix-free method fits.
    """
    from ntkdr.memory import available_memory, format_bytes

    budget = float(max_memory) if max_memory is not None else float(available_memory())
    if world_size > 1:
        return "matrix-free", f"{world_size} ranks: row shards of K v over torch.distributed"
    if n <= EXACT_MAX_N and memory_needed(n, "exact") <= budget:
        return (
            "exact",
            f"n = {n} <= {EXACT_MAX_N}: a full eigendecomposition (under a second, whole spectrum)",
        )
    need = memory_needed(n, "cholesky")
    if need <= budget:
        return "cholesky", (
            f"n = {n}: K and one Cholesky factor ({format_bytes(need)}) fit in "
            f"{format_bytes(budget)}; Lanczos + Cholesky proofs"
        )
    need1 = memory_needed(n, "cholesky-inplace")
    if need1 <= budget:
        return "cholesky-inplace", (
            f"n = {n}: K ({format_bytes(8 * n * n)}) fits once, not twice, in "
            f"{format_bytes(budget)}; factored in place, products with K over tiles"
        )
    free = memory_needed(n, "matrix-free")
    if free <= budget:
        return "matrix-free", (
            f"n = {n}: K ({format_bytes(8 * n * n)}) does not fit in {format_bytes(budget)}; "
            "matrix-free tiles, no proof of a lower bound"
        )
    raise ValueError(
        f"the certificate for n = {n} needs at least {format_bytes(free)} (matrix-free), but the "
        f"budget is {format_bytes(budget)}; raise --max-memory or lower --n-train"
    )


# --------------------------------------------------------------------------------------------
# the engine
# --------------------------------------------------------------------------------------------
def _as_targets(Y: Any, n: int, name: str) -> np.ndarray:
    A = np.asarray(Y, dtype=np.float64)
    if A.ndim == 1:
        A = A[:, None]
    if A.ndim != 2 or A.shape[0] != n:
        raise ValueError(f"{name} must have {n} rows, got shape {np.shape(Y)}")
    if not np.all(np.isfinite(A)):
        raise ValueError(f"{name} contains NaN or Inf")
    # Multi-output bound reported per class and averaged: sum_c y_c^T K^-1 y_c / c.
    return A if A.shape[1] == 1 else A / math.sqrt(A.shape[1])


def _finish(core: dict, targets: dict, n: int, method: str, reason: str, name: str, t0: float):
    comp, bound = {}, {}
    s = math.sqrt(2.0 / n)
    for key, c in core["complexity"].items():
        comp[key] = c
        bound[key] = _interval(
            s * math.sqrt(c["value"]),
            s * math.sqrt(max(c["lower"], 0.0)),
            s * math.sqrt(c["upper"]),
            c["status"] == "certified",
        )
    msg = core["pd_message"]
    if msg:
        warnings.warn(f"{name}: {msg}", SingularKernelWarning, stacklevel=3)
    cert = Certificate(
        method=method,
        method_reason=reason,
        n=n,
        lambda_min=core["lambda_min"],
        lambda_max=core["lambda_max"],
        spectrum_top=core["top"],
        complexity=comp,
        bound=bound,
        regression_test_error=math.nan,
        is_pd=core["is_pd"],
        pd_message=msg,
        seconds=time.perf_counter() - t0,
        details=dict(core["details"], n_outputs=targets["true"].shape[1]),
        spectrum=core.get("spectrum"),
    )
    cert.alpha = core["alpha"]
    return cert


def _targets(Y: Any, Y_random: Any, n: int) -> dict[str, np.ndarray]:
    targets = {"true": _as_targets(Y, n, "Y")}
    if Y_random is not None:
        targets["random"] = _as_targets(Y_random, n, "Y_random")
    return targets


def certify_matrix(
    K: np.ndarray,
    Y: Any,
    Y_random: Any = None,
    *,
    method: str = "auto",
    eps: float = float(np.finfo(np.float64).eps),
    top: int = TOP,
    name: str = "K",
    reason: str | None = None,
    proven: bool = True,
    buffers: Any = None,
) -> Certificate:
    """Certificate of the symmetric float64 kernel matrix ``K`` (n x n, kept unchanged).

    ``Y``: (n,) or (n, c) targets; ``Y_random``: optional second targets (random labels);
    ``method``: ``"exact"``, ``"cholesky"`` or ``"auto"`` (by size, :data:`EXACT_MAX_N`);
    ``eps``: machine epsilon of the dtype ``K`` was computed in (numerical positive
    definiteness is ``lambda_min > n eps lambda_max``); ``name`` labels the warning of a
    kernel that is not numerically PD.  One more n x n float64 buffer is allocated.
    ``Certificate.alpha`` holds ``K^-1 Y`` (``None`` when not PD) for predictions.
    ``proven=False`` (``cholesky`` only) skips the float64 factorization that proves the lower
    end of ``lambda_min`` and the intervals of ``y^T K^-1 y``: same point values, status
    ``"estimate"``, about a third of the work.  ``buffers``: a :class:`ntkdr.memory.BufferPool`
    whose n x n scratch is reused across calls (a grid), or ``None``.
    """
    t0 = time.perf_counter()
    K = np.ascontiguousarray(np.asarray(K, dtype=np.float64))
    if K.ndim != 2 or K.shape[0] != K.shape[1] or K.shape[0] < 2:
        raise ValueError(f"K must be a square matrix with n >= 2, got shape {K.shape}")
    n = K.shape[0]
    targets = _targets(Y, Y_random, n)
    if method == "auto":
        method = "exact" if n <= EXACT_MAX_N else "cholesky"
    if method not in ("exact", "cholesky"):
        raise ValueError(f"certify_matrix: method must be 'exact' or 'cholesky', got {method!r}")
    from ntkdr.theory.certificate_dense import certify_in_memory

    core = certify_in_memory(K, targets, method, top=top, eps=eps, proven=proven, buffers=buffers)
    return _finish(core, targets, n, method, reason or f"method {method!r}", name, t0)


def certify_inplace(
    form: Any,
    matvec: Any,
    n: int,
    Y: Any,
    Y_random: Any = None,
    *,
    eps: float = float(np.finfo(np.float64).eps),
    top: int = TOP,
    name: str = "K",
    reason: str | None = None,
    buffers: Any = None,
) -> Certificate:
    """Certificate with one n x n float64 buffer: ``form(buf)`` writes ``K`` into ``buf`` (called
    twice: ``K`` is factored in place), ``matvec`` maps an (n, c) block ``V`` to ``K V`` without
    the buffer (used for a few PCG steps).  Same proofs as ``cholesky``.  ``buffers``: a
    :class:`ntkdr.memory.BufferPool` to take that buffer from (kept for a grid's next call)."""
    from ntkdr.theory.certificate_dense import certify_inplace as core_inplace

    t0 = time.perf_counter()
    targets = _targets(Y, Y_random, n)
    core = core_inplace(form, matvec, n, targets, top=top, eps=eps, buffers=buffers)
    return _finish(core, targets, n, "cholesky-inplace", reason or "cholesky-inplace", name, t0)


def certify_operator(
    matvec: Any,
    n: int,
    Y: Any,
    Y_random: Any = None,
    *,
    max_abs: float,
    eps: float = float(np.finfo(np.float64).eps),
    top: int = TOP,
    name: str = "K",
    reason: str | None = None,
) -> Certificate:
    """Matrix-free certificate: ``matvec`` maps an (n, c) float64 block ``V`` to ``K V``.

    ``max_abs`` bounds ``|K_ij|`` (for the rounding margin of Rayleigh quotients; for a
    positive semi-definite kernel ``max_i K_ii``).  Every process of a distributed run calls
    this with the same (bit-identical) ``matvec`` results and gets the same certificate.
    """
    from ntkdr.theory.certificate_free import certify_matrix_free

    t0 = time.perf_counter()
    targets = _targets(Y, Y_random, n)
    core = certify_matrix_free(matvec, n, targets, max_abs=max_abs, top=top, eps=eps)
    return _finish(core, targets, n, "matrix-free", reason or "matrix-free", name, t0)


def _not_pd(lmin: float, lmax: float, n: int, eps: float, chol_ok: bool) -> str | None:
    tol = n * eps * abs(lmax)
    hint = (
        "duplicate or parallel inputs make lambda_0 = 0 (see ntkdr.validation.find_parallel_rows)"
    )
    if lmin <= 0:
        return f"singular or indefinite: lambda_min = {lmin:.3e} <= 0 (lambda_max = {lmax:.3e}); {hint}"
    if lmin <= tol:
        return (
            f"numerically singular: lambda_min = {lmin:.3e} <= n * eps * lambda_max = {tol:.3e}; "
            f"{hint}"
        )
    if not chol_ok:
        return (
            f"not numerically positive definite: Cholesky failed (lambda_min = {lmin:.3e}); {hint}"
        )
    return None
