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
import torch

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
) -> dict[str, Any]:
    """Solves, bounds and the certifying factorization, given the point value ``theta``."""
    from ntkdr.theory.certificate import TIGHT_GAP, _interval, _not_pd

    msg = _not_pd(theta, lmax, n, eps, proof0.ok)
    lam = _interval(theta, -math.inf, theta_upper, False)
    comp: dict[str, dict[str, Any]] = {}
    alpha = None
    if msg is None:
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
    return _core(lam, lmax, comp, alpha, msg, details)


def _core(lam, lmax, comp, alpha, msg, details) -> dict[str, Any]:
    """The engine's per-configuration result (``top`` / ``spectrum`` are added by the caller)."""
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


def _max_abs(K: np.ndarray) -> float:
    """``max |K_ij|`` without an n x n temporary (``np.abs`` would need one: 20 GB at n = 50000)."""
    lo, hi = torch.aminmax(torch.from_numpy(K))
    return max(-float(lo), float(hi))


def _smallest_eigenvalue(K: np.ndarray) -> float:
    """LAPACK ``?syevr`` for one eigenvalue (only for kernels that are not PD: rare)."""
    return float(
        scipy.linalg.eigh(
            K, eigvals_only=True, subset_by_index=[0, 0], driver="evr", check_finite=False
        )[0]
    )


def _mixed_route(
    K: np.ndarray,
    targets: dict,
    *,
    top: int,
    eps: float,
    proven: bool,
    max_abs: float,
    clock: _Clock,
    buffers: Any = None,
) -> dict[str, Any] | None:
    """``cholesky`` on the formed ``K``: a float32 factor preconditions everything, float64
    products decide the numbers, one float64 factorization (of ``K - sigma I``) proves.

    Steps: the top of the spectrum by Lanczos on the float32 copy (``lambda_max`` re-evaluated
    as a Rayleigh quotient on ``K``); the float32 factor; PCG on every target (3-5 steps);
    ``lambda_min`` by shift-invert Lanczos with the float32 factor as the inverse, the Rayleigh
    quotient of its Ritz vector on ``K`` its value; with ``proven`` a
    float64 Cholesky of ``K - sigma I``, ``sigma = lambda (1 - 1e-5)``, proves the lower end and,
    with the residuals, the intervals on ``y^T K^-1 y`` (:func:`LA.residual_quadrature`).
    Returns ``None`` where this route cannot decide (the float32 factorization or the proof
    failed): the caller takes the float64 route.
    """
    from ntkdr.theory.certificate import TIGHT_GAP, _interval, _not_pd

    n = K.shape[0]
    details: dict[str, Any] = {"timings": clock.times, "route": "float32 preconditioner"}
    frob = float(np.linalg.norm(K)) * (1.0 + LA.gamma(n * n))
    buf32 = (
        np.empty(K.shape, np.float32)
        if buffers is None
        else buffers.get("K32", K.shape, np.float32)
    )
    LA.copy_to_float32(K, buf32)
    matvec = LA.matmul_fn(K)
    matvec32 = LA.matmul_fn(buf32)
    # tol 1e-6: the float32 copy's top eigenvalues are only within ||K32 - K||_2 ~ 2^-24 ||K||_F
    # of K's anyway (Weyl); lambda_max itself is the Rayleigh quotient on K below.  Measured at
    # n = 8000: 79 -> 62 products, the top 10 moving by 1e-9 relative, lambda_max not at all.
    vals, W = LA.lanczos_top(matvec32, n, min(top, n - 1), tol=1e-6, vectors=True)
    w = W[:, 0]
    lmax = float(w @ matvec(w) / (w @ w))  # on K itself: the float32 copy's error squared
    top_vals = [lmax, *(float(v) for v in vals[1:])]
    del matvec32
    clock.lap("lanczos_top")
    factor, tau = LA.float32_cholesky(K, buf32, filled=True)
    clock.lap("first_factorization")
    if factor is None:
        return None
    details["float32_shift"] = tau
    P = LA.cho_solve_fn(factor)
    B = np.concatenate(list(targets.values()), axis=1)
    res = LA.pcg_quadrature(matvec, P, B, None, rtol=1e-15, maxiter=60)
    details["pcg_iterations"] = res.iterations
    clock.lap("solves")
    try:  # the bottom of K is the well separated top of (R^T R)^-1
        # tol 1e-6 on the inverse: the Rayleigh quotient on K below is what is reported, its
        # error second order in the vector's (measured at n = 3000 on lowrank / sphere / mnist:
        # the same lambda_min to 1e-10 as tol 1e-8, with 20-25% fewer solves)
        _, V = LA.lanczos_bottom(P, n, 0.0, 1, tol=1e-6, v0=P(_start(n)), maxiter=600)
    except LA.LanczosNoConvergence:  # float32 solves too inexact for tol
        return None
    v = V[:, 0]
    theta = float(v @ matvec(v) / (v @ v))
    details["eigensolver"] = (
        "shift-invert Lanczos with the float32 factor, Rayleigh quotient on K (bottom); "
        "Lanczos on the float32 copy, Rayleigh quotient on K (top)"
    )
    del buf32, factor, P  # free the float32 copy before the proof's buffer: 2 n^2 at most
    if proven and buffers is not None:
        buffers.release("K32")
    clock.lap("eigenvalues")
    theta_upper = theta + LA.rayleigh_margin(n, max_abs)
    msg = _not_pd(theta, lmax, n, eps, True)
    lam = _interval(theta, -math.inf, theta_upper, False)
    lam_lower = None
    if msg is None and proven:
        trace = float(np.trace(K))
        sigma = theta * (1.0 - TIGHT_GAP) - 2 * LA.gamma(n + 1) * trace
        buf = np.empty_like(K)
        proof = LA.shifted_cholesky(K, sigma, buf)
        del buf
        details["factorizations"] = 1
        if not proof.ok:
            return None
        lam_lower = proof.lower
        lam = _interval(theta, proof.lower, theta_upper, True)
        details["lambda_min_proof"] = (
            f"Cholesky of K - {sigma:.6g} I succeeded (rounding margin {proof.margin:.2e})"
        )
    else:
        details["factorizations"] = 0
        details["lambda_min_proof"] = "none requested: lambda_min's lower end is not proven"
    clock.lap("proof")
    comp: dict[str, dict[str, Any]] = {}
    alpha = None
    if msg is None:
        # without a proof the estimate theta stands in for lambda_min: an estimated upper end
        value, lower, upper = LA.residual_quadrature(
            matvec, res.x, B, lam_lower if proven else theta, frob
        )
        j = 0
        for key, T in targets.items():
            c = T.shape[1]
            if key == "true":
                alpha = res.x[:, j : j + c]
            comp[key] = _interval(
                float(value[j : j + c].sum()),
                float(lower[j : j + c].sum()),
                float(upper[j : j + c].sum()),
                proven,
            )
            j += c
    else:
        comp = {key: _interval(math.inf, math.inf, math.inf, False) for key in targets}
    clock.lap("bounds")
    core = _core(lam, lmax, comp, alpha, msg, details)
    core.update(top=top_vals, spectrum=None)
    return core


def _start(n: int) -> np.ndarray:
    return np.random.default_rng(0).standard_normal(n)


def certify_in_memory(
    K: np.ndarray,
    targets: dict,
    method: str,
    *,
    top: int,
    eps: float,
    proven: bool = True,
    buffers: Any = None,
) -> dict[str, Any]:
    """``exact`` / ``cholesky`` on the formed ``K`` (kept).

    ``cholesky`` takes :func:`_mixed_route` (peak: ``K``, its float32 copy, then one float64
    buffer for the proof); where that route cannot decide, and for ``exact``, the float64 route:
    ``K = R^T R`` (one more n x n float64 buffer), the full ``eigh`` (``exact``) or shift-invert
    Lanczos with ``R``, and the certifying factorization of ``K - sigma I`` (always proven).
    ``proven=False`` skips the proof of the lower end of ``lambda_min`` (status ``estimate``).
    ``buffers``: a :class:`ntkdr.memory.BufferPool` for the float32 copy (kept for the next
    configuration of a grid), or ``None``.
    """
    n = K.shape[0]
    clock = _Clock()
    max_abs = _max_abs(K)
    if method == "cholesky":
        core = _mixed_route(
            K,
            targets,
            top=top,
            eps=eps,
            proven=proven,
            max_abs=max_abs,
            clock=clock,
            buffers=buffers,
        )
        if core is not None:
            return core
    details: dict[str, Any] = {"factorizations": 1, "timings": clock.times, "route": "float64"}
    spectrum = None
    buf = np.empty_like(K)
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
        top_vals = [float(v) for v in LA.lanczos_top(LA.matmul_fn(K), n, min(top, n - 1))]
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
        LA.matmul_fn(K),
        targets,
        eps,
        n,
        lambda sigma: LA.shifted_cholesky(K, sigma, buf),
        details,
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
    buffers: Any = None,
) -> dict[str, Any]:
    """``cholesky-inplace``: one n x n float64 buffer (from ``buffers``, a
    :class:`ntkdr.memory.BufferPool`, if given); ``form(buf)`` writes ``K`` into it and
    ``matvec`` gives ``K V`` without it (a few products: PCG with an exact factor converges in
    one or two steps)."""
    buf = np.empty((n, n)) if buffers is None else buffers.get("K", (n, n), np.float64)
    form(buf)
    max_abs = _max_abs(buf)
    details: dict[str, Any] = {"factorizations": 1, "kernel_formations": 1}
    top_vals = [float(v) for v in LA.lanczos_top(LA.matmul_fn(buf), n, min(top, n - 1))]
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
