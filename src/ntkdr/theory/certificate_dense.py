"""Factorization-based certificate cores: ``exact``, ``cholesky`` and ``cholesky-inplace``.

All three factor ``K = R^T R`` once (LAPACK ``dpotrf``), take ``lambda_min`` from a full
eigendecomposition (``exact``) or from shift-invert Lanczos on ``K^-1`` (the others), solve
with PCG preconditioned by the factor (one or two steps; Gauss / Gauss-Radau bounds,
Golub & Meurant 2010), and prove ``lambda_min(K) >= sigma - margin`` with a second
factorization, of ``K - sigma I`` just below the Ritz value (Higham Thm 10.3; see
:mod:`ntkdr.theory.certificate_linalg`).  Memory: ``exact`` / ``cholesky`` keep ``K`` and one factor
buffer (two n x n float64 matrices); ``cholesky-inplace`` keeps one: it factors ``K`` in its own
storage, takes products with ``K`` from a caller-supplied matrix-free operator and re-forms ``K``
for the second factorization.  In place, the Rayleigh quotient uses ``v^T K v <= ||R v||^2 +
margin ||v||^2`` (``K = R^T R - dB``), still a proven upper bound.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import scipy.linalg

from ntkdr.theory import certificate_linalg as LA

__all__ = ["certify_in_memory", "certify_inplace"]


def _radau_node(proof0: LA.CholeskyProof, lower_lmin: float | None) -> float | None:
    """A proven lower bound on the spectrum of ``M^-1 K`` for ``M = R^T R = K - s I + dB``.

    With ``||dB|| <= m`` (the proof's margin) and a unit ``v``:
    ``v^T K v / v^T M v = v^T K v / (v^T K v - s + v^T dB v)``, at least 1 when ``s >= m`` and
    at least ``1 / (1 + (m - s) / lambda_min(K))`` otherwise; ``lower_lmin`` (a proven lower bound
    on ``lambda_min(K)``, or ``None``: no node) turns the latter into a number.
    """
    s, m = proof0.shift, proof0.margin
    if s >= m:
        return 1.0
    if lower_lmin is None or lower_lmin <= 0:
        return None
    return 1.0 / (1.0 + (m - s) / lower_lmin)


def _quadrature(matvec, solve, targets, mu):
    """PCG with the factor ``M`` as preconditioner on every target column, Gauss / Radau bounds
    (``mu``: the Radau node, a proven lower bound on the spectrum of ``M^-1 K``, or ``None``)."""
    from ntkdr.theory.certificate import ROUNDING_SLACK, _interval

    B = np.concatenate(list(targets.values()), axis=1)
    res = LA.pcg_quadrature(matvec, solve, B, mu)
    out: dict[str, Any] = {}
    j = 0
    alpha = None
    for key, T in targets.items():
        c = T.shape[1]
        lo, up = float(res.lower[j : j + c].sum()), float(res.upper[j : j + c].sum())
        if key == "true":
            alpha = res.x[:, j : j + c]
        certified = mu is not None and res.converged
        # the value is the Gauss rule (the CG iterate's y^T x_k) of the converged iteration
        out[key] = _interval(lo, lo * (1 - ROUNDING_SLACK), up * (1 + ROUNDING_SLACK), certified)
        j += c
    return out, alpha, res.iterations


def _prove(
    theta: float,
    theta_upper: float,
    lmax: float,
    proof0: LA.CholeskyProof,
    matvec: Callable,
    targets: dict,
    eps: float,
    n: int,
    refactor: Callable[[float], LA.CholeskyProof],
    details: dict[str, Any],
    tighten: bool = True,
) -> dict[str, Any]:
    """Solves, bounds and the certifying factorization, given the point value ``theta``.

    ``tighten=False`` keeps the first factorization's proof when it was of a shifted matrix
    (``lambda_min >= shift - margin``, proven but loose) and skips the second factorization.
    """
    from ntkdr.theory.certificate import TIGHT_GAP, _interval, _not_pd

    msg = _not_pd(theta, lmax, n, eps, proof0.ok)
    lam = _interval(theta, -math.inf, theta_upper, False)
    comp: dict[str, dict[str, Any]] = {}
    alpha = None
    if msg is None and not tighten and proof0.lower > 0:
        solve = LA.cho_solve_fn(proof0.factor)
        comp, alpha, its = _quadrature(matvec, solve, targets, _radau_node(proof0, proof0.lower))
        lam = _interval(theta, proof0.lower, theta_upper, True)
        details["lambda_min_proof"] = (
            f"Cholesky of K - {proof0.shift:.6g} I succeeded (rounding margin "
            f"{proof0.margin:.2e}); not tightened"
        )
        details["pcg_iterations"] = its
    elif msg is None:
        solve = LA.cho_solve_fn(proof0.factor)
        sigma = theta * (1.0 - TIGHT_GAP) - 2 * proof0.margin
        # the quadrature needs the first factor: run it before the buffer is reused
        node = _radau_node(proof0, max(sigma - proof0.margin, 0.0))
        comp, alpha, its = _quadrature(matvec, solve, targets, node)
        proof1 = refactor(sigma) if sigma > 0 else None
        details["factorizations"] += 1 if proof1 is not None else 0
        if proof1 is not None and proof1.ok:
            lam = _interval(theta, proof1.lower, theta_upper, True)
            details["lambda_min_proof"] = (
                f"Cholesky of K - {sigma:.6g} I succeeded (rounding margin {proof1.margin:.2e})"
            )
        else:
            details["lambda_min_proof"] = (
                "none: Cholesky of K - sigma I failed below the Ritz value (a smaller eigenvalue "
                "was missed?); the lower end is the positivity proof only"
            )
            lam = _interval(theta, proof0.lower, theta_upper, False)
            for c in comp.values():
                c["status"] = "estimate"
        details["pcg_iterations"] = its
    else:
        for key in targets:
            comp[key] = _interval(math.inf, math.inf, math.inf, False)
        if proof0.ok:
            lam = _interval(theta, proof0.lower, theta_upper, True)
    return {
        "lambda_min": lam,
        "lambda_max": lmax,
        "complexity": comp,
        "alpha": alpha,
        "is_pd": msg is None,
        "pd_message": msg,
        "details": details,
    }


class _Clock:
    """Seconds per phase (``details["timings"]``), for the benchmark's breakdown."""

    def __init__(self) -> None:
        import time

        self._now = time.perf_counter
        self._t = self._now()
        self.times: dict[str, float] = {}

    def lap(self, name: str) -> None:
        t = self._now()
        self.times[name] = self.times.get(name, 0.0) + (t - self._t)
        self._t = t


def _smallest_eigenvalue(K: np.ndarray) -> float:
    """LAPACK ``?syevr`` for one eigenvalue (only for kernels that are not PD: rare)."""
    return float(
        scipy.linalg.eigh(
            K, eigvals_only=True, subset_by_index=[0, 0], driver="evr", check_finite=False
        )[0]
    )


def certify_in_memory(
    K: np.ndarray,
    targets: dict,
    method: str,
    *,
    top: int,
    eps: float,
    shift: float | None = None,
    tighten: bool = True,
) -> dict[str, Any]:
    """``exact`` / ``cholesky`` on the formed ``K`` (kept): one more n x n float64 buffer.

    ``shift`` (``cholesky`` only): factor ``K - shift I`` first (a guess below ``lambda_min``,
    e.g. half the value of a similar kernel); on success that factor preconditions the solves
    and the shift-invert Lanczos and proves ``lambda_min >= shift - margin``; on failure the
    unshifted route is taken.  ``tighten``: add the certifying factorization just below the
    Ritz value (always done when the first factorization is unshifted).
    """
    n = K.shape[0]
    clock = _Clock()
    max_abs = float(np.max(np.abs(K)))
    details: dict[str, Any] = {"factorizations": 1, "timings": clock.times}
    spectrum = None
    buf = np.empty_like(K)
    proof0 = None
    if shift is not None and shift > 0 and method == "cholesky":
        proof0 = LA.shifted_cholesky(K, shift, buf)
        details["first_shift"] = shift
        if not proof0.ok:  # the guess was above lambda_min: start over unshifted
            details["factorizations"] += 1
            details["first_shift_failed"] = True
            proof0 = None
    if proof0 is None:
        proof0 = LA.shifted_cholesky(K, 0.0, buf)
    clock.lap("first_factorization")
    solve = LA.cho_solve_fn(proof0.factor) if proof0.ok else None
    if method == "exact":
        ev = scipy.linalg.eigh(K, eigvals_only=True, driver="evr", check_finite=False)
        spectrum = [float(v) for v in ev[::-1]]
        theta, lmax = float(ev[0]), float(ev[-1])
        top_vals = spectrum[: min(top, n)]
        theta_upper = math.inf
        if solve is not None and n > 8:  # a Ritz vector's Rayleigh quotient: the proven upper end
            _, V = LA.lanczos_bottom(solve, n, 0.0, 1)
            v = V[:, 0]
            theta_upper = float(v @ (K @ v) / (v @ v)) + LA.rayleigh_margin(n, max_abs)
        details["eigensolver"] = "LAPACK syevr (all eigenvalues)"
    else:
        top_vals = [float(v) for v in LA.lanczos_top(K.__matmul__, n, min(top, n - 1))]
        lmax = top_vals[0]
        clock.lap("lanczos_top")
        if solve is not None:
            vals, V = LA.lanczos_bottom(solve, n, proof0.shift, 1)
            v = V[:, 0]
            theta = float(v @ (K @ v) / (v @ v))
        else:
            theta = _smallest_eigenvalue(K)
        theta_upper = theta + LA.rayleigh_margin(n, max_abs)
        details["eigensolver"] = "shift-invert Lanczos on K^-1 (bottom), Lanczos on K (top)"
    clock.lap("eigenvalues")
    core = _prove(
        theta,
        theta_upper,
        lmax,
        proof0,
        K.__matmul__,
        targets,
        eps,
        n,
        lambda sigma: LA.shifted_cholesky(K, sigma, buf),
        details,
        tighten or proof0.shift <= 0,
    )
    clock.lap("solves_and_proof")
    core.update(top=top_vals, spectrum=spectrum)
    return core


def certify_inplace(
    form: Callable[[np.ndarray], None],
    matvec: Callable[[np.ndarray], np.ndarray],
    n: int,
    targets: dict,
    *,
    top: int,
    eps: float,
) -> dict[str, Any]:
    """``cholesky-inplace``: one n x n float64 buffer; ``form(buf)`` writes ``K`` into it and
    ``matvec`` gives ``K V`` without it (a few products: PCG with an exact factor converges in
    one or two steps)."""
    buf = np.empty((n, n), dtype=np.float64)
    form(buf)
    max_abs = float(np.max(np.abs(buf)))
    details: dict[str, Any] = {"factorizations": 1, "kernel_formations": 1}
    top_vals = [float(v) for v in LA.lanczos_top(buf.__matmul__, n, min(top, n - 1))]
    lmax = top_vals[0]
    proof0 = LA.shifted_cholesky(buf, 0.0, buf)  # K is gone from here on
    if proof0.ok:
        _, V = LA.lanczos_bottom(LA.cho_solve_fn(proof0.factor), n, 0.0, 1)
        v = V[:, 0]
        Rv = LA.factor_times(proof0.factor, v)
        theta = float(Rv @ Rv / (v @ v))
        # v^T K v = ||R v||^2 - v^T dB v: the margin bounds |v^T dB v| / ||v||^2
        theta_upper = theta + proof0.margin + LA.rayleigh_margin(n, max_abs)
    else:
        form(buf)
        details["kernel_formations"] += 1
        theta = _smallest_eigenvalue(buf)
        theta_upper = theta + LA.rayleigh_margin(n, max_abs)
    details["eigensolver"] = (
        "Lanczos on K (top), then K factored in place; shift-invert Lanczos on K^-1 (bottom)"
    )

    def refactor(sigma: float) -> LA.CholeskyProof:
        form(buf)
        details["kernel_formations"] += 1
        buf.flat[:: n + 1] -= sigma
        proof = LA.shifted_cholesky(buf, 0.0, buf)
        # the margin is about the matrix factored, K - sigma I: shift the conclusion back
        return LA.CholeskyProof(
            proof.ok, sigma, proof.margin, sigma - proof.margin, proof.factor, proof.info
        )

    core = _prove(theta, theta_upper, lmax, proof0, matvec, targets, eps, n, refactor, details)
    core.update(top=top_vals, spectrum=None)
    return core
