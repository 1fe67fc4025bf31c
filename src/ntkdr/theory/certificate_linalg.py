"""Linear algebra of the certificate engine: proofs and quadrature bounds for one SPD matrix.

Three tools, each a thin layer over LAPACK (``scipy.linalg.lapack.dpotrf``, ``torch.linalg``
triangular solves) or a short Lanczos loop, plus the error analysis that turns
their output into statements:

* :func:`shifted_cholesky` -- a successful float64 Cholesky factorization of ``K - sigma I`` proves
  ``lambda_min(K) >= sigma - margin``.  If the factorization runs to completion, the computed
  factor satisfies ``R^T R = B + dB`` with ``|dB| <= gamma_{n+1} |R^T| |R|``
  (Higham, *Accuracy and Stability of Numerical Algorithms*, 2nd ed., Thm 10.3; Demmel 1989),
  ``gamma_m = m u / (1 - m u)``, ``u = 2^-53``.  Since ``|| |R^T||R| ||_2 <= ||R||_F^2`` and
  ``||R||_F^2 = trace(B + dB) <= trace(B) / (1 - gamma)``, ``B = R^T R - dB`` has
  ``lambda_min(B) >= -gamma trace(B) / (1 - gamma)``.  The rounding of ``K_ii - sigma`` adds
  ``u max_i |K_ii - sigma|``.  This is Rump's verification of positive definiteness
  (BIT 46, 2006) in its simplest form.  Assumptions: IEEE double arithmetic without underflow,
  LAPACK's Cholesky obeying the standard error model; the statement is about the *computed*
  float64 kernel matrix.
* :func:`pcg_quadrature` -- preconditioned conjugate gradients for ``K x = b`` (several right-hand
  sides, each with its own coefficients), returning for every column the Gauss lower bound and
  the Gauss-Radau upper bound on ``b^T K^-1 b`` (Golub & Meurant, *Matrices, Moments and
  Quadrature with Applications*, Princeton 2010, ch. 12; the CG recurrences of Meurant & Tichy,
  Numer. Algorithms 82, 2019).  With ``x_0 = 0`` and CG step sizes ``gamma_j``:
  ``b^T K^-1 b = sum_{j<k} gamma_j r_j^T z_j + ||x - x_k||_K^2`` and, for any
  ``0 < mu <= lambda_min(M^-1 K)``, ``||x - x_k||_K^2 <= gamma_k^(mu) r_k^T z_k`` with
  ``gamma_0^(mu) = 1/mu``, ``gamma_{k+1}^(mu) = (gamma_k^(mu) - gamma_k) /
  (mu (gamma_k^(mu) - gamma_k) + delta_{k+1})``, ``delta_{k+1} = r_{k+1}^T z_{k+1} / r_k^T z_k``.
  These are exact-arithmetic statements; the few CG steps used here (the preconditioner is a
  Cholesky factor of ``K`` or of ``K - sigma I``) keep their rounding at ``O(kappa(M^-1 K) u)``.
* :func:`residual_quadrature` -- the same interval from any approximate solution ``x`` and its
  residual: ``b^T K^-1 b = b^T x + x^T r + r^T K^-1 r`` with ``0 <= r^T K^-1 r <= ||r||^2 /
  lambda_min``, the rounding of ``r`` bounded through ``||K||_F``.  Used with the float32
  factor below, whose PCG reaches float64 residuals in a few steps.
* :func:`float32_cholesky` / :func:`cho_solve_fn` -- a float32 Cholesky factor of ``K`` (a third
  of the time of the float64 one) as the preconditioner of float64 PCG and as the inverse of
  shift-invert Lanczos; it proves nothing, the float64 products decide the numbers.
* :func:`lanczos_bottom` / :func:`lanczos_top` (from :mod:`ntkdr.theory.lanczos`) -- Ritz
  values (Lanczos with full reorthogonalization, stopped as soon as they converge) of
  ``(K - sigma I)^-1`` (shift-invert, so the bottom of the spectrum becomes its well separated
  top) and of ``K``.  Every Ritz value of the bottom is re-evaluated as the Rayleigh quotient
  ``v^T K v / v^T v`` on ``K`` itself, a proven upper bound on ``lambda_min`` up to the
  rounding of one matrix-vector product (``2 gamma_n n max |K_ij|``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import scipy.linalg

from ntkdr.theory.lanczos import LanczosNoConvergence, lanczos_bottom, lanczos_top

__all__ = [
    "UNIT_ROUNDOFF",
    "gamma",
    "CholeskyProof",
    "shifted_cholesky",
    "factor_times",
    "cho_solve_fn",
    "rayleigh_margin",
    "QuadratureResult",
    "pcg_quadrature",
    "copy_to_float32",
    "float32_cholesky",
    "matmul_fn",
    "residual_quadrature",
    "LanczosNoConvergence",
    "lanczos_bottom",
    "lanczos_top",
]

UNIT_ROUNDOFF = 2.0**-53


def gamma(m: int) -> float:
    """``gamma_m = m u / (1 - m u)`` (Higham's constant for ``m`` rounding errors)."""
    mu = m * UNIT_ROUNDOFF
    if mu >= 1:
        return math.inf
    return mu / (1.0 - mu)


@dataclass
class CholeskyProof:
    """Outcome of :func:`shifted_cholesky`.

    ``ok``: the factorization of ``K - shift I`` completed with positive pivots;
    ``lower``: then ``lambda_min(K) >= lower = shift - margin`` (proven, see the module text);
    ``factor``: the upper-triangular factor (``None`` if not ok), stored in the buffer passed.
    """

    ok: bool
    shift: float
    margin: float
    lower: float
    factor: np.ndarray | None
    info: int


# scipy's bundled OpenBLAS has 32-bit integers, and its ?potrf segfaults once the matrix has
# 2^31 entries or more (seen at n = 50000, float64).  Beyond that the factorization is blocked
# over torch (MKL, 64-bit offsets): 10% slower than LAPACK at n = 12000 (7.1 against 6.4 s, 2
# cores), so LAPACK stays below the limit.  Block 1024 was the fastest of 512 / 1024 / 2048.
_LAPACK_MAX_ENTRIES = 2**31 - 1
_BLOCK = 1024
_PANEL_ROWS = 8192  # rows per triangular solve of a panel: a 64 MiB temporary at most


def _blocked_potrf_(B: np.ndarray) -> int:
    """Right-looking blocked Cholesky ``B = L L^T`` of the C-contiguous ``B``, ``L`` written into
    its lower triangle (the upper factor ``R = L^T`` in the Fortran view, as LAPACK leaves it);
    the upper triangle of the diagonal blocks is scratch.  Same backward error bound as LAPACK
    (every entry of ``L`` is one inner product, in some order: Higham Thm 10.3 holds); returns
    LAPACK's ``info`` (the order of the first leading minor that is not positive definite)."""
    import torch

    T = torch.from_numpy(B)
    n = T.shape[0]
    for k in range(0, n, _BLOCK):
        e = min(k + _BLOCK, n)
        D = T[k:e, k:e]
        Lkk, info = torch.linalg.cholesky_ex(D)
        if int(info):
            return k + int(info)
        D.copy_(Lkk + torch.triu(D, 1))
        for a in range(e, n, _PANEL_ROWS):
            rows = T[a : min(a + _PANEL_ROWS, n), k:e]
            rows.copy_(torch.linalg.solve_triangular(Lkk.mT, rows, upper=True, left=False))
        P = T[e:, k:e]
        for j in range(e, n, _BLOCK):  # the trailing lower triangle, one block column at a time
            je = min(j + _BLOCK, n)
            T[j:, j:je].addmm_(P[j - e :], P[j - e : je - e].mT, alpha=-1)
    return 0


def _potrf_inplace(B: np.ndarray) -> int:
    """Cholesky of the symmetric C-contiguous float32 / float64 ``B`` in place (no copy).

    ``B.T`` is Fortran-contiguous and, ``B`` being symmetric, the same matrix; factoring it as
    ``upper`` (LAPACK ``?potrf``) leaves ``R`` (``R^T R = B``) in the Fortran view, i.e. ``R^T``
    in ``B``'s rows.  From 2^31 entries on: :func:`_blocked_potrf_`, the same layout.
    Returns LAPACK's ``info`` (0 on success).
    """
    if B.size > _LAPACK_MAX_ENTRIES:
        return _blocked_potrf_(B)
    potrf = scipy.linalg.lapack.dpotrf if B.dtype == np.float64 else scipy.linalg.lapack.spotrf
    view = B.T
    c, info = potrf(view, lower=0, clean=0, overwrite_a=1)
    if not np.shares_memory(c, B):  # scipy copied after all: move the result back
        view[...] = c
    return int(info)


def shifted_cholesky(K: np.ndarray, shift: float, buffer: np.ndarray) -> CholeskyProof:
    """Try the float64 Cholesky factorization of ``K - shift I`` in ``buffer`` (``K`` is kept).

    Success proves ``lambda_min(K) >= shift - margin`` (Higham Thm 10.3, module text).  The
    factor (upper, in the Fortran view of ``buffer``) is for :func:`cho_solve_fn`.
    """
    n = K.shape[0]
    if K is not buffer:  # ``K is buffer``: factor in place (the caller re-forms K if needed)
        np.copyto(buffer, K)
    if shift:
        buffer.flat[:: n + 1] -= shift
    diag = np.diagonal(buffer).copy()
    info = _potrf_inplace(buffer)
    g = gamma(n + 1)
    trace = float(np.sum(diag, dtype=np.float64)) * (1.0 + gamma(n))
    margin = g / (1.0 - g) * max(trace, 0.0) + UNIT_ROUNDOFF * float(np.max(np.abs(diag)))
    if info != 0 or not bool(np.all(np.diagonal(buffer) > 0)):
        return CholeskyProof(False, shift, margin, -math.inf, None, info)
    return CholeskyProof(True, shift, margin, shift - margin, buffer.T, 0)


def factor_times(factor: np.ndarray, v: np.ndarray) -> np.ndarray:
    """``R v`` for the upper factor ``R`` in Fortran order (BLAS ``dtrmv``; no n x n copy)."""
    import scipy.linalg.blas as blas

    return blas.dtrmv(factor, np.ascontiguousarray(v, dtype=np.float64), lower=0)


def cho_solve_fn(factor: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """``B -> (R^T R)^-1 B`` for an upper factor ``R`` in Fortran order (float32 or float64):
    solved in the factor's dtype, returned in float64.

    Two ``torch.linalg.solve_triangular`` calls on the lower triangle ``R^T`` (the C-order view
    of the buffer): measured 5-8x faster than ``scipy.linalg.cho_solve`` (LAPACK ``?potrs``) at
    n = 12000 on 2 cores (0.023 s vs 0.19 s for one float32 vector), ~7x at n = 47000.  With
    a float32 factor the rounding makes it a slightly inexact operator -- fine for a
    preconditioner (PCG) and for shift-invert Ritz vectors, whose Rayleigh quotients are then
    taken on the float64 ``K``.
    """
    import torch

    L = torch.from_numpy(factor.T)  # R^T, lower triangular, C-contiguous

    def solve(b: np.ndarray) -> np.ndarray:
        B = torch.from_numpy(np.asarray(b, dtype=factor.dtype).reshape(L.shape[0], -1))
        Y = torch.linalg.solve_triangular(L, B, upper=False)
        X = torch.linalg.solve_triangular(L.T, Y, upper=True)
        return np.asarray(X.numpy(), dtype=np.float64).reshape(np.shape(b))

    return solve


def rayleigh_margin(n: int, max_abs: float) -> float:
    """Rounding bound on a computed Rayleigh quotient ``v^T (K v) / v^T v`` of an n x n ``K``.

    ``|fl(K v) - K v| <= gamma_n |K| |v|`` and the dot product adds ``gamma_n``; with
    ``|v|^T |K| |v| <= max |K_ij| n ||v||^2`` the error is below ``2 gamma_{n+1} n max |K_ij|``.
    """
    return 2.0 * gamma(n + 1) * n * max_abs


@dataclass
class QuadratureResult:
    """Per column ``j`` of ``B``: ``x[:, j] ~ K^-1 b_j`` and ``lower[j] <= b_j^T K^-1 b_j <= upper[j]``."""

    x: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    iterations: int
    converged: bool


def pcg_quadrature(
    matvec: Callable[[np.ndarray], np.ndarray],
    precond: Callable[[np.ndarray], np.ndarray],
    B: np.ndarray,
    mu: float | None,
    *,
    rtol: float = 1e-13,
    maxiter: int = 200,
) -> QuadratureResult:
    """PCG on every column of ``B`` with Gauss (lower) / Gauss-Radau (upper) bounds on ``b^T K^-1 b``.

    ``matvec`` and ``precond`` act on (n, c) blocks.  ``mu`` is a lower bound on
    ``lambda_min(M^-1 K)`` (the Radau node); ``None`` gives no upper bound (``inf``).  Stops when
    every column has ``upper - lower <= rtol * lower`` (or, without ``mu``, when the last Gauss
    increment is below ``rtol`` of the sum), or after ``maxiter`` steps.
    """
    B = np.asarray(B, dtype=np.float64)
    if B.ndim == 1:
        B = B[:, None]
    n, c = B.shape
    x = np.zeros_like(B)
    r = B.copy()
    z = precond(r)
    p = z.copy()
    rz = np.einsum("ij,ij->j", r, z)
    lower = np.zeros(c)
    g_mu = np.full(c, (1.0 / mu) if mu else math.inf)
    upper = lower + g_mu * rz
    active = rz > 0
    it = 0
    converged = not bool(active.any())
    while not converged and it < maxiter:
        Ap = matvec(p)
        pAp = np.einsum("ij,ij->j", p, Ap)
        g = np.where(active, rz / np.where(pAp > 0, pAp, 1.0), 0.0)
        x += p * g
        r -= Ap * g
        z = precond(r)
        rz_new = np.einsum("ij,ij->j", r, z)
        incr = g * rz
        lower = lower + incr
        delta = np.where(active, rz_new / np.where(rz > 0, rz, 1.0), 0.0)
        if mu:
            den = mu * (g_mu - g) + delta
            g_mu = np.where(active & (den > 0), (g_mu - g) / np.where(den > 0, den, 1.0), 0.0)
            upper = lower + g_mu * np.maximum(rz_new, 0.0)
            done = (upper - lower) <= rtol * np.abs(lower)
        else:
            upper = np.full(c, math.inf)
            done = incr <= rtol * np.abs(lower)
        p = z + p * delta
        rz = rz_new
        active = active & ~done & (rz > 0)
        it += 1
        converged = not bool(active.any())
    if not mu:
        upper = np.full(c, math.inf)
    return QuadratureResult(x, lower, upper, it, converged)


def copy_to_float32(K: np.ndarray, buffer: np.ndarray) -> None:
    """``buffer[...] = K`` rounded to float32 (``torch`` ``copy_``: multi-threaded, measured
    ~6x faster than ``np.copyto`` at n = 12000 on 2 cores)."""
    import torch

    torch.from_numpy(buffer).copy_(torch.from_numpy(K))


def float32_cholesky(
    K: np.ndarray, buffer: np.ndarray, filled: bool = False
) -> tuple[np.ndarray | None, float]:
    """Float32 Cholesky factor of ``K + tau I`` in the float32 ``buffer`` (``K`` is kept): a
    preconditioner, never a proof.

    ``filled``: ``buffer`` already holds ``K`` in float32 (saves the first copy).  ``tau`` is
    0, or, when the float32 factorization of an ill-conditioned ``K`` breaks down, the smallest
    of ``2^-20, 2^-14, 2^-8`` times the mean diagonal that lets it finish; it changes the
    preconditioner only, not the matrix whose numbers are reported.  Returns ``(factor, tau)``
    (upper factor in the Fortran view of ``buffer``; ``(None, nan)`` if every try failed).
    A third of the time of the float64 factorization at half its memory (LAPACK ``spotrf``).
    """
    n = K.shape[0]
    scale = float(np.mean(np.diagonal(K)))
    for tau in (0.0, 2.0**-20 * scale, 2.0**-14 * scale, 2.0**-8 * scale):
        if not (filled and tau == 0.0):
            copy_to_float32(K, buffer)
        if tau:
            buffer.flat[:: n + 1] += np.float32(tau)
        info = _potrf_inplace(buffer)
        if info == 0 and bool(np.all(np.diagonal(buffer) > 0)):
            return buffer.T, tau
    return None, math.nan


# Columns up to which matmul_fn multiplies column by column with BLAS symv (one triangle read per
# column) rather than with one GEMM over the full matrix.  Measured at n = 12000 on 2 cores,
# float64: symv 21 ms per column against 38 ms for torch's mv (float32: 11 against 19 ms); two
# columns 45 against 84 ms for torch.mm; four 85 against 67 ms; BLAS symm was 4x slower still.
_SYMV_COLUMNS = 3


def matmul_fn(K: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """``V -> K V`` for an exactly symmetric ``K`` (float32 or float64; both triangles equal, as
    the kernels are): BLAS ``symv`` per column for up to ``_SYMV_COLUMNS`` columns (it reads one
    triangle: half the memory traffic of a general product), else ``torch.mm`` on the shared
    memory of ``K`` (2-3x faster than numpy's ``@`` for blocks of 4-16 columns, measured)."""
    import torch
    from scipy.linalg import blas

    Kt = torch.from_numpy(K)
    symv = blas.dsymv if K.dtype == np.float64 else blas.ssymv
    KT = K.T if K.flags.c_contiguous else None  # Fortran-ordered view: no copy for BLAS
    n = K.shape[0]

    def matvec(V: np.ndarray) -> np.ndarray:
        V2 = np.ascontiguousarray(V, dtype=K.dtype).reshape(n, -1)
        if KT is not None and V2.shape[1] <= _SYMV_COLUMNS:
            out = np.empty_like(V2)
            for j in range(V2.shape[1]):
                # lower triangle of K^T = the upper triangle of K in memory
                out[:, j] = symv(1.0, KT, V2[:, j], lower=1)
            return out.reshape(np.shape(V))
        return (Kt @ torch.from_numpy(V2)).numpy().reshape(np.shape(V))

    return matvec


def residual_quadrature(
    matvec: Callable[[np.ndarray], np.ndarray],
    X: np.ndarray,
    B: np.ndarray,
    lam_lower: float | None,
    frobenius: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(value, lower, upper)`` per column of ``B`` for ``b^T K^-1 b`` from approximate solutions
    ``X`` (any solver), proven with their residual ``r = b - K x``.

    Exactly ``b^T K^-1 b = b^T x + x^T r + r^T K^-1 r`` and ``0 <= r^T K^-1 r <= ||r||^2 /
    lambda_min``, so with a proven ``lam_lower <= lambda_min(K)`` the interval
    ``[b^T x + x^T r, b^T x + x^T r + ||r||^2 / lam_lower]`` holds; the rounding of the computed
    residual, ``|fl(r) - r| <= gamma_{n+1} (|b| + |K| |x|)`` with ``|| |K| |x| || <= ||K||_F ||x||``
    (``frobenius``: an upper bound on ``||K||_F``), and of the dot products (``gamma_n |u|^T |v|``)
    widen it.  ``lam_lower`` ``None``: the upper end is ``inf``.  The value is
    ``b^T x + x^T r`` (its error is ``r^T K^-1 r``, second order in the residual).
    """
    X = X.reshape(B.shape)
    Rm = B - matvec(X).reshape(B.shape)
    n = B.shape[0]
    g, g1 = gamma(n), gamma(n + 1)
    bx = np.einsum("ij,ij->j", B, X)
    xr = np.einsum("ij,ij->j", X, Rm)
    xnorm = np.linalg.norm(X, axis=0)
    rnorm = np.linalg.norm(Rm, axis=0)
    delta = g1 * (np.linalg.norm(B, axis=0) + frobenius * xnorm)
    dots = g * (
        np.einsum("ij,ij->j", np.abs(B), np.abs(X)) + np.einsum("ij,ij->j", np.abs(X), np.abs(Rm))
    )
    slack = xnorm * delta + dots
    value = bx + xr
    lower = value - slack
    if lam_lower is not None and lam_lower > 0:
        upper = value + slack + (rnorm + delta) ** 2 / lam_lower
    else:
        upper = np.full_like(value, math.inf)
    return value, lower, upper
