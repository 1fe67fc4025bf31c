"""Matrix-free certificate: only products ``K V`` (for example recomputed tile by tile).

Used by :func:`ntkdr.theory.certificate.certify_operator` when ``K`` does not fit in memory.  The
caller supplies ``V -> K V`` (:class:`ntkdr.experiment.certify.BlockOperator` computes it in fixed row
blocks, shared among ``torch.distributed`` ranks); every iteration here is deterministic, so
bit-identical products give bit-identical certificates on every rank.

Eigenvalues: LOBPCG (Knyazev, SIAM J. Sci. Comput. 23(2), 2001; ``scipy.sparse.linalg.lobpcg``)
for the top of the spectrum, and for the bottom with a randomized Nystrom preconditioner
(Frangella, Tropp & Udell 2023) built from one block product.  Solves: preconditioned CG with
the Gauss lower bound on ``y^T K^-1 y`` (Golub & Meurant 2010).  The LOBPCG Ritz value is an
upper bound on ``lambda_min`` (Courant-Fischer) up to rounding; without a factorization nothing
proves a lower bound, nor a Gauss-Radau node, so ``lambda_min`` and the upper ends of the
bounds are reported as estimates.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import scipy.sparse.linalg as sla

from ntkdr.theory import certificate_linalg as LA

__all__ = ["nystrom_preconditioner", "certify_matrix_free"]

#: Iteration caps (each LOBPCG / CG step costs one pass over the kernel).
LOBPCG_MAXITER = 300
CG_MAXITER = 3000
#: Rank of the Nystrom preconditioner (one kernel pass with this many right-hand sides).
NYSTROM_RANK = 400


def nystrom_preconditioner(A: Callable[[np.ndarray], np.ndarray], n: int, rank: int, seed: int = 3):
    """Randomized Nystrom preconditioner ``P^-1`` of ``K`` (Frangella, Tropp & Udell, SIAM J.
    Matrix Anal. Appl. 44, 2023): ``K ~ U diag(s) U^T`` from one block product ``K Omega``;
    ``P^-1 = s_l U diag(1/s) U^T + (I - U U^T)`` flattens the top ``l`` eigenvalues onto the
    ``l``-th, so ``kappa(P^-1 K) ~ lambda_l / lambda_min``.  Returns ``(P^-1 as a function of an
    (n, c) block, s)``.
    """
    import scipy.linalg

    Omega = np.linalg.qr(np.random.default_rng(seed).standard_normal((n, rank)))[0]
    Y = A(Omega)
    nu = math.sqrt(n) * np.finfo(np.float64).eps * float(np.linalg.norm(Y, 2))
    Y += nu * Omega
    C = scipy.linalg.cholesky(Omega.T @ Y, lower=False)
    Bm = scipy.linalg.solve_triangular(C, Y.T, trans="T", lower=False).T
    U, sv, _ = np.linalg.svd(Bm, full_matrices=False)
    s = np.maximum(sv**2 - nu, 0.0)
    keep = s > 0
    U, s = U[:, keep], s[keep]
    s_l = float(s[-1])

    def apply(R: np.ndarray) -> np.ndarray:
        R2 = R.reshape(n, -1)
        W = U.T @ R2
        out = R2 - U @ W + U @ ((s_l / s)[:, None] * W)
        return out.reshape(R.shape)

    return apply, s


def _lobpcg(op, n: int, count: int, largest: bool, seed: int, precond=None):
    count = max(1, min(count, n // 3))
    X0 = np.random.default_rng(seed).standard_normal((n, count))
    M = None
    if precond is not None:
        M = sla.LinearOperator((n, n), matvec=precond, matmat=precond, dtype=np.float64)
    vals, vecs, hist = sla.lobpcg(
        op,
        X0,
        M=M,
        largest=largest,
        tol=1e-8,
        maxiter=LOBPCG_MAXITER,
        retResidualNormsHistory=True,
    )
    order = np.argsort(-vals if largest else vals)
    return vals[order], vecs[:, order], len(hist)


class _Counted:
    """``V -> K V`` with a call counter (each call is one pass over the kernel)."""

    def __init__(self, matvec: Callable[[np.ndarray], np.ndarray], n: int):
        self.matvec, self.n, self.calls = matvec, n, 0

    def __call__(self, V: np.ndarray) -> np.ndarray:
        self.calls += 1
        V = np.asarray(V, dtype=np.float64)
        out = np.asarray(self.matvec(np.ascontiguousarray(V.reshape(self.n, -1))), dtype=np.float64)
        return out.reshape(V.shape)


def certify_matrix_free(
    matvec: Callable[[np.ndarray], np.ndarray],
    n: int,
    targets: dict,
    *,
    max_abs: float,
    top: int,
    eps: float,
) -> dict[str, Any]:
    """The matrix-free method of :func:`ntkdr.theory.certificate.certify_operator` (its core dict)."""
    from ntkdr.theory.certificate import _interval, _not_pd

    A = _Counted(matvec, n)
    op = sla.LinearOperator((n, n), matvec=A, matmat=A, rmatvec=A, dtype=np.float64)
    top_vals, _, it_top = _lobpcg(op, n, top, True, 1)
    lmax = float(top_vals[0])
    precond, _ = nystrom_preconditioner(A, n, min(NYSTROM_RANK, n // 2))
    bottom, vecs, it_bot = _lobpcg(op, n, 4, False, 2, precond)
    v = vecs[:, 0]
    theta = float(v @ A(v) / (v @ v))
    upper = theta + LA.rayleigh_margin(n, max_abs)
    details: dict[str, Any] = {
        "eigensolver": "LOBPCG (bottom and top), matrix-free row blocks",
        "lobpcg_iterations": [it_bot, it_top],
        "bottom_ritz": [float(x) for x in bottom],
    }
    msg = _not_pd(theta, lmax, n, eps, True)
    comp: dict[str, dict[str, Any]] = {}
    alpha = None
    if msg is None:
        B = np.concatenate(list(targets.values()), axis=1)
        # Radau node for the preconditioned operator: lambda_min(P^-1 K) is not known either;
        # the Gauss lower bound is what CG proves (exact arithmetic).
        res = LA.pcg_quadrature(A, precond, B, None, rtol=1e-14, maxiter=CG_MAXITER)
        details["cg_iterations"] = res.iterations
        details["cg_converged"] = res.converged
        j = 0
        for key, T in targets.items():
            c = T.shape[1]
            lo, up = float(res.lower[j : j + c].sum()), float(res.upper[j : j + c].sum())
            if key == "true":
                alpha = res.x[:, j : j + c]
            comp[key] = _interval(lo, lo, up, False)
            j += c
    else:
        for key in targets:
            comp[key] = _interval(math.inf, math.inf, math.inf, False)
    details["kernel_passes"] = A.calls
    return {
        "lambda_min": _interval(theta, -math.inf, upper, False),
        "lambda_max": lmax,
        "top": [float(x) for x in top_vals],
        "complexity": comp,
        "alpha": alpha,
        "is_pd": msg is None,
        "pd_message": msg,
        "details": details,
    }
