"""The generalization bound (Arora et al. 2019, Thm 5.1) and the predicted GD trajectory (Arora et al. 2019, Thm 4.1) of a kernel Gram matrix.

**GD convention** (shared with :mod:`ntkdr.training` and :mod:`ntkdr.regression`): the loss is
``L = 1/2 * sum_i (y_i - u_i)^2`` -- summed, not averaged -- and one full-batch step with step size
``lr`` moves the predictions, in the linearised (NTK) regime, by
``u(t+1) - y = (I - lr H)(u(t) - y)``, with ``H`` the NTK Gram matrix ``J J^T``.  For a model that
is linear in its parameters this is an exact identity.  Dividing the loss by ``n`` is the same as
using ``lr / n`` here.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from ntkdr._numerics import ldexp_or_inf, max_exponent, times_pow2
from ntkdr.theory.spectra import (
    _DUPLICATE_HINT,
    SingularKernelWarning,
    _as_gram,
    _eigvalsh64,
    _ldexp_checked,
    _pow2_scaled,
    _singular_message,
    _zero_tol,
)
from ntkdr.validation import ArrayLike, as_labels, check_int, check_real

__all__ = ["BoundResult", "generalization_bound", "predicted_trajectory", "predicted_loss"]


# --------------------------------------------------------------------------------------------
# generalization bound (Arora et al. 2019, Thm 5.1)
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BoundResult:
    """Result of :func:`generalization_bound`.

    Attributes
    ----------
    value:      ``sqrt(2 * complexity / n)`` -- the data-dependent term of Arora et al. Thm 5.1;
                ``inf`` when ``H`` is not numerically positive definite.
    complexity: ``y^T H^-1 y`` (summed over outputs for 2-D ``y``); ``inf`` when not PD (or when it
                exceeds the float64 range although ``value`` does not, e.g. ``y ~ 1e300``).
    extra:      ``sqrt(max(log(n / (lambda0 * delta)), 0) / n)``, the confidence term (constant 1);
                ``inf`` when ``lambda0 <= 0``.
    total:      ``value + extra``.
    lambda_min, lambda_max: extreme eigenvalues of ``H`` (float64 computation).
    n, n_outputs, delta: sizes and confidence used.
    is_pd:      ``True`` iff Cholesky succeeded and ``lambda_min > n * eps(dtype) * lambda_max``.
    message:    human-readable summary (why the bound is infinite, if it is).
    """

    value: float
    complexity: float
    extra: float
    total: float
    lambda_min: float
    lambda_max: float
    n: int
    n_outputs: int
    delta: float
    is_pd: bool
    message: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _check_delta(delta: Any) -> float:
    delta = check_real(delta, "delta", positive=True)
    if delta >= 1:
        raise ValueError(f"delta must be in (0, 1), got {delta}")
    return delta


def generalization_bound(
    H: ArrayLike, y: ArrayLike, delta: float = 0.05, *, eigenvalues: Any = None
) -> BoundResult:
    """Arora et al. (ICML 2019) Thm 5.1 generalization bound, constants set to 1.

    For a 1-Lipschitz loss with values in [0, 1] and labels ``y``, with probability ``1 - delta``
    the population loss of the trained two-layer net is at most
    ``sqrt(2 y^T H^-1 y / n) + O(sqrt(log(n / (lambda0 delta)) / n))``.  ``value`` is the first
    term, ``extra`` the second with its constant set to 1, ``total`` their sum.

    ``y`` is ``(n,)`` or ``(n, c)``; for multi-output ``y`` the complexity is
    ``sum_c y_c^T H^-1 y_c`` (the bound for a vector-valued output with the per-coordinate
    network sharing ``H``).  ``y^T H^-1 y`` is computed as ``||L^-1 y||^2`` with the float64
    Cholesky factor ``H = L L^T``, and ``value`` as ``sqrt(2 / n) ||L^-1 y||`` with ``y`` scaled
    by a power of two, so it is finite whenever representable (``ValueError`` otherwise).  **No jitter is ever added**: if the Cholesky factorisation
    fails or ``lambda_min(H) <= n * eps(dtype) * lambda_max(H)``, ``H`` is reported as not
    numerically positive definite -- ``is_pd=False``, ``value = complexity = inf``, a
    :class:`SingularKernelWarning` is emitted and ``message`` gives ``lambda_min``.  (Duplicate
    or parallel inputs make ``lambda_0 = 0``.)
    """
    H64, _, dtype = _as_gram(H)
    n = H64.shape[0]
    yt = as_labels(y, n, "y").detach()
    delta = _check_delta(delta)
    Y = yt.to(device=H64.device, dtype=torch.float64)
    if Y.ndim == 1:
        Y = Y[:, None]
    n_out = Y.shape[1]

    # Callers that already hold the spectrum (e.g. for a plot) pass it to skip a second O(n^3) solve.
    if eigenvalues is None:
        Hs, e = _pow2_scaled(H64)
        ev = _ldexp_checked(torch.from_numpy(_eigvalsh64(Hs)), e, "an eigenvalue")
    else:
        ev = torch.as_tensor(eigenvalues, dtype=torch.float64).flatten()
    if ev.numel() != n:
        raise ValueError(f"eigenvalues must hold the {n} eigenvalues of H, got {ev.numel()}")
    lmin, lmax = float(ev.min()), float(ev.max())
    tol = _zero_tol(lmax, n, dtype)
    L, info = torch.linalg.cholesky_ex(H64)
    chol_ok = int(info.item()) == 0 if info.ndim == 0 else int(info.max()) == 0
    reason = _singular_message(lmin, lmax, tol)
    if reason is None and not chol_ok:
        reason = (
            f"H is not numerically positive definite: Cholesky failed (lambda_min = {lmin:.3e}, "
            f"lambda_max = {lmax:.3e}); {_DUPLICATE_HINT}"
        )
    is_pd = reason is None

    if lmin > 0:
        extra = math.sqrt(max(math.log(n / (lmin * delta)), 0.0) / n)
    else:
        extra = math.inf

    if is_pd:
        # value = sqrt(2 / n) ||L^-1 y|| with y and Z = L^-1 y scaled by powers of two (exact),
        # so that neither y^T H^-1 y nor ||Z||^2 overflows while the value is representable.
        ey = max_exponent(Y)
        Zs = torch.linalg.solve_triangular(L, times_pow2(Y, -ey), upper=False)
        ez = max_exponent(Zs)
        zn = float(torch.linalg.vector_norm(times_pow2(Zs, -ez)))
        value = ldexp_or_inf(math.sqrt(2.0 / n) * zn, ey + ez)
        if not math.isfinite(value):
            raise ValueError(
                f"the generalization bound sqrt(2 y^T H^-1 y / n) is beyond the float64 range "
                f"(max |y| = {float(Y.abs().max()):.3g}, lambda_min(H) = {lmin:.3g}); rescale y or H"
            )
        complexity = ldexp_or_inf(
            zn * zn, 2 * (ey + ez)
        )  # may exceed float64 (inf) though value does not
        total = value + extra
        message = (
            f"generalization bound sqrt(2 y^T H^-1 y / n) = {value:.4g} "
            f"(+ sqrt(log(n/(lambda0 delta))/n) = {extra:.4g}, total {total:.4g}); "
            f"lambda_min = {lmin:.3e}, n = {n}, delta = {delta}; O(.) constants set to 1"
        )
    else:
        complexity = math.inf
        value = math.inf
        total = math.inf
        message = (
            f"H is not numerically positive definite (lambda_min = {lmin:.3e}): no bound computed, "
            f"value = inf, no jitter added. {reason}"
        )
        warnings.warn(message, SingularKernelWarning, stacklevel=2)

    return BoundResult(
        value=value,
        complexity=complexity,
        extra=extra,
        total=total,
        lambda_min=lmin,
        lambda_max=lmax,
        n=n,
        n_outputs=n_out,
        delta=delta,
        is_pd=is_pd,
        message=message,
    )


# --------------------------------------------------------------------------------------------
# predicted GD trajectory (Arora et al. 2019, Thm 4.1)
# --------------------------------------------------------------------------------------------
_TRAJ_CHUNK_ELEMS = 1 << 22  # (steps chunk) x n block of powers kept below ~32 MiB (float64)


def predicted_trajectory(
    H: ArrayLike, y: ArrayLike, lr: float, steps: int, u0: ArrayLike | None = None
) -> np.ndarray:
    """Linearised-GD residual norms ``||(I - lr H)^t (y - u0)||`` for ``t = 0, ..., steps``.

    Arora et al. (ICML 2019) Thm 4.1: for a wide enough two-layer net trained by full-batch GD
    on ``L = 1/2 sum_i (y_i - u_i)^2`` (summed, not averaged) with step ``lr``, the residual
    follows ``u(t+1) - y = (I - lr H)(u(t) - y)`` up to ``eps``, ``H`` the NTK Gram matrix (for
    the dense or factorized two-layer net with only the first layer trained, ``H = H1`` of the
    -- sketched -- inputs).  With ``u0 = None`` (zero initial output, as in their analysis) this is
    their formula ``sqrt(sum_i (1 - lr lambda_i)^(2t) (v_i^T y)^2)``.

    One float64 eigendecomposition ``H = V diag(lambda) V^T``; then with
    ``w_i = sum_c (v_i^T (y_c - u0_c))^2`` (summed over outputs for ``(n, c)`` targets) the
    trajectory is ``sqrt(P @ w)`` with ``P[t, i] = ((1 - lr lambda_i)^2)^t``, evaluated in chunks
    of ``t`` (no Python loop per step).  Returns a float64 numpy array of length ``steps + 1``.
    A :class:`RuntimeWarning` is emitted when ``lr >= 2 / lambda_max`` (the linear dynamics do
    not contract along the top eigenvector; the values then grow, possibly to ``inf``).
    """
    H64, _, _ = _as_gram(H)
    n = H64.shape[0]
    yt = as_labels(y, n, "y").detach()
    lr = check_real(lr, "lr", positive=True)
    steps = check_int(steps, "steps", min_value=0)
    R = yt.to(device=H64.device, dtype=torch.float64)
    if u0 is not None:
        u = as_labels(u0, n, "u0").detach().to(device=H64.device, dtype=torch.float64)
        if u.shape != R.shape:
            raise ValueError(
                f"u0 must have the same shape as y {tuple(R.shape)}, got {tuple(u.shape)}"
            )
        R = R - u
    if R.ndim == 1:
        R = R[:, None]

    evals, V = torch.linalg.eigh(H64)
    lmax = float(evals[-1])
    if lmax > 0 and lr >= 2.0 / lmax:
        warnings.warn(
            f"lr = {lr:.4g} >= 2 / lambda_max = {2.0 / lmax:.4g}: linearised GD does not contract "
            "along the top eigenvector; the predicted residual grows",
            RuntimeWarning,
            stacklevel=2,
        )
    w = ((V.T @ R) ** 2).sum(dim=1)  # (n,)
    rho2 = (1.0 - lr * evals) ** 2  # (n,) per-step contraction of the squared residual
    # Only directions carrying residual mass matter; dropping the others shrinks the matrix.
    keep = w > 0
    w, rho2 = w[keep], rho2[keep]
    out = torch.empty(steps + 1, dtype=torch.float64, device=H64.device)
    if w.numel() == 0:
        out.zero_()
    else:
        chunk = max(1, _TRAJ_CHUNK_ELEMS // w.numel())
        t_all = torch.arange(steps + 1, dtype=torch.float64, device=H64.device)
        for start in range(0, steps + 1, chunk):
            t = t_all[start : start + chunk]
            P = torch.pow(rho2[None, :], t[:, None])  # 0**0 = 1
            out[start : start + chunk] = P @ w
    return out.sqrt().cpu().numpy()


def predicted_loss(
    H: ArrayLike, y: ArrayLike, lr: float, steps: int, u0: ArrayLike | None = None
) -> np.ndarray:
    """Predicted training loss ``1/2 ||u(t) - y||^2`` (summed loss), ``t = 0..steps``; see
    :func:`predicted_trajectory`."""
    traj = predicted_trajectory(H, y, lr, steps, u0=u0)
    return 0.5 * traj**2
