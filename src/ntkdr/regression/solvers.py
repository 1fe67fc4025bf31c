"""Closed-form NTK regression on kernel matrices: the Cholesky ridge solve and the GD-time predictor (one eigendecomposition).

NTK regression is the infinite-width predictor of a wide ReLU network (Jacot et al. 2018;
Arora et al. 2019).  The package :mod:`ntkdr.regression` has

three layers, each usable on its own:

* **Functional core** on precomputed kernel matrices (numpy arrays or torch tensors;
  results follow the kind of the kernel argument):

  - :func:`kernel_ridge_fit` -- ``alpha = (H + ridge I)^-1 y`` by a float64 Cholesky
    solve; ``f(x*) = H(x*, X) alpha``.  No silent jitter: if the matrix is not
    numerically positive definite a ``ValueError`` says so.
  - :func:`gd_time_predict` / :func:`gd_time_coef` -- the predictor of a network
    trained by gradient descent for time ``t`` in the NTK (lazy-training) regime
    (Jacot et al. 2018; Lee et al. 2019; Arora et al. 2019),
    ``f_t(x*) = f_0(x*) + H(x*, X) H^-1 (I - exp(-lr t H)) (y - u_0)``, computed from
    one eigendecomposition of ``H`` and never inverting it.
  - :func:`conjugate_gradient` -- (block, Jacobi-preconditioned) CG for
    ``(K + ridge I) alpha = b`` with a matrix-free operator, for kernels whose
    ``n x n`` matrix does not fit the memory budget (:mod:`ntkdr.regression.cg`).
  - :func:`kernel_operator` / :func:`kernel_cg_fit` -- the matrix-free operator
    ``v -> (K(X, X) + ridge I) v`` computed tile by tile under the kernel's memory budget
    and, under ``torch.distributed`` (``torchrun``), split by rows over the ranks: rank ``r``
    computes the rows :func:`ntkdr.training.distributed.shard_indices` of ``K v`` and an all-reduce
    assembles the product, so every rank runs the same CG iterations and holds the same
    solution (that of one process, to round-off).

* **scikit-learn estimators** (:mod:`ntkdr.regression.estimators`) :class:`NTKRegressor` and :class:`NTKClassifier`
  (optionally sketched inputs, two-layer or deep fully connected ReLU NTK, ridge or
  GD-time predictor, dense Cholesky or matrix-free CG solver).

Time convention
---------------
``t`` counts gradient-descent steps of step size ``lr`` on the *summed* squared loss
``L = 1/2 sum_i (f(x_i) - y_i)^2`` (not the mean).  In function space the kernel model
then evolves as ``u <- u - lr H (u - y)``.  Two variants are offered:

* ``variant="continuous"`` (default): gradient flow evaluated at time ``lr * t``,
  ``u_t = y - exp(-lr t H) (y - u_0)``; valid for any real ``t >= 0``.  This is the
  formula of Lee et al. (2019), eq. (9)-(10).
* ``variant="discrete"``: exactly ``t`` (integer) discrete GD steps,
  ``u_t = y - (I - lr H)^t (y - u_0)``, i.e. ``exp(-lr t lambda)`` is replaced by
  ``(1 - lr lambda)^t`` in every eigen-direction.  It matches the training loop of
  ``ntkdr.training`` step by step in the infinite-width limit and diverges when
  ``lr * lambda_max(H) > 2``.

Test predictions are ``f_t(x*) = f_0(x*) + H(x*, X) c_t`` with the dual coefficients
``c_t = V g_t(Lambda) V^T (y - u_0)``, ``H = V Lambda V^T`` and the spectral filter
``g_t(lambda) = (1 - exp(-lr t lambda)) / lambda`` (continuous) or
``(1 - (1 - lr lambda)^t) / lambda`` (discrete).  Both filters tend to ``lr * t`` as
``lambda -> 0`` and are evaluated with ``expm1`` / ``log1p`` so that tiny (or exactly
zero) eigenvalues cause neither cancellation nor division by zero.  Hence a singular
``H`` (duplicate inputs) is fine here, unlike for the ridge-less solve.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch

from ntkdr.validation import (
    ArrayLike,
    as_labels,
    as_matrix,
    check_choice,
    check_real,
    check_symmetric,
    to_output,
)

__all__ = ["kernel_ridge_fit", "kernel_predict", "gd_time_coef", "gd_time_predict"]

_VARIANTS = ("continuous", "discrete")


# --------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------
def _square(H: Any, name: str = "H") -> tuple[torch.Tensor, bool]:
    Ht, was_numpy = as_matrix(H, name)
    if Ht.shape[0] != Ht.shape[1]:
        raise ValueError(f"{name} must be square (n, n), got shape {tuple(Ht.shape)}")
    return Ht, was_numpy


def _as_2d_targets(y: torch.Tensor) -> tuple[torch.Tensor, bool]:
    return (y[:, None], True) if y.ndim == 1 else (y, False)


def _times(t: Any, variant: str) -> tuple[torch.Tensor, bool]:
    """Validate ``t`` (scalar or 1-D) and return ``(float64 tensor of times, was_scalar)``."""
    if isinstance(t, torch.Tensor):
        arr = t.detach().cpu().numpy()
    else:
        try:
            arr = np.asarray(t)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"t must be a number or a 1-D array of numbers: {exc}") from exc
    if arr.dtype == np.bool_ or arr.dtype == object or not np.issubdtype(arr.dtype, np.number):
        raise ValueError(f"t must be a number or a 1-D array of numbers, got {t!r}")
    if np.iscomplexobj(arr) or arr.ndim > 1:
        raise ValueError(f"t must be a real number or a 1-D array, got shape {arr.shape}")
    scalar = arr.ndim == 0
    arr = np.atleast_1d(arr).astype(np.float64)
    if arr.size == 0:
        raise ValueError("t is empty")
    if not np.all(np.isfinite(arr)):
        raise ValueError("t must be finite")
    if np.any(arr < 0):
        raise ValueError(f"t must be >= 0, got {arr.min()}")
    if variant == "discrete" and np.any(arr != np.round(arr)):
        raise ValueError("t must be a whole number of steps for variant='discrete'")
    return torch.from_numpy(arr), scalar


def _gd_filter(lam: torch.Tensor, lr: float, ts: torch.Tensor, variant: str) -> torch.Tensor:
    """Spectral filter ``g_t(lambda)`` (``(T, n)``) of the GD-time predictor, stable as lambda -> 0."""
    lam = lam[None, :]
    t = ts.to(lam)[:, None]
    if variant == "continuous":
        # g = (1 - exp(-lr t lam)) / lam = lr t * phi(x), x = lr t lam, phi(x) = -expm1(-x) / x, phi(0) = 1
        x = lr * t * lam
        safe = torch.where(x == 0, torch.ones_like(x), x)
        phi = torch.where(x == 0, torch.ones_like(x), -torch.expm1(-safe) / safe)
        return lr * t * phi
    # discrete: g = (1 - (1 - x)^t) / lam, x = lr lam.  Small |x|: -expm1(t log1p(-x)) / x * lr
    # (exact limit lr * t at x = 0); otherwise the direct power is free of cancellation.
    x = (lr * lam).expand_as(t * lam)
    small = x.abs() < 0.5
    xs = torch.where(small & (x != 0), x, torch.ones_like(x))
    g_small = torch.where(
        x == 0, lr * t * torch.ones_like(x), -torch.expm1(t * torch.log1p(-xs)) / xs * lr
    )
    lam_b = lam.expand_as(x)
    lam_l = torch.where(small, torch.ones_like(lam_b), lam_b)
    g_large = (1.0 - torch.pow(1.0 - torch.where(small, torch.zeros_like(x), x), t)) / lam_l
    return torch.where(small, g_small, g_large)


# --------------------------------------------------------------------------------------
# functional core
# --------------------------------------------------------------------------------------
def kernel_ridge_fit(H: ArrayLike, y: ArrayLike, ridge: float = 0.0) -> Any:
    """Dual coefficients ``alpha = (H + ridge I)^-1 y`` by a Cholesky solve in float64.

    Parameters
    ----------
    H : (n, n) array or tensor
        Symmetric positive semi-definite kernel matrix of the training inputs.
    y : (n,) or (n, c) array or tensor
        Targets.
    ridge : float >= 0
        Absolute ridge added to the diagonal (not scaled by ``n`` or the trace).

    Returns
    -------
    alpha : same shape as ``y``, in ``H``'s dtype, numpy if ``H`` was numpy.
        Predictions are ``H(x*, X) @ alpha`` (:func:`kernel_predict`).

    Raises
    ------
    ValueError
        If ``H + ridge I`` is not numerically positive definite.  No jitter is added
        silently: with ``ridge == 0`` the message asks for ``ridge > 0`` (a singular
        ``H`` arises e.g. from duplicate or parallel inputs).  Also if ``alpha`` is not
        representable in ``H``'s dtype (overflow for ``H`` tiny against ``y``).
    """
    Ht, was_numpy = _square(H, "H")
    ridge = check_real(ridge, "ridge", min_value=0.0)
    n = Ht.shape[0]
    yt = as_labels(y, n, "y")
    check_symmetric(Ht)
    y2, squeeze = _as_2d_targets(yt.to(device=Ht.device, dtype=torch.float64))
    A = Ht.to(torch.float64, copy=True)
    if ridge:
        A.diagonal().add_(ridge)
    info = torch.empty((), dtype=torch.int32, device=A.device)
    L, info = torch.linalg.cholesky_ex(A, out=(A, info))  # factor in place: one float64 n x n copy
    if int(info) == 0:
        # A singular matrix (e.g. duplicate inputs) may factor with a round-off-sized pivot, or
        # not, depending on the CPU's BLAS: a squared pivot <= n eps max pivot^2 (which implies
        # lambda_min <= n eps lambda_max, theory's "numerically zero") counts as a failure.
        p2 = L.diagonal().square()
        if float(p2.min()) <= n * float(torch.finfo(torch.float64).eps) * float(p2.max()):
            info = p2.argmin() + 1
    if int(info) != 0:
        if ridge == 0:
            raise ValueError(
                f"H is not numerically positive definite (Cholesky failed at leading minor {int(info)} "
                f"of {n}), so the ridge-less solve H^-1 y does not exist; set ridge > 0 "
                "(duplicate or parallel inputs make H singular)"
            )
        raise ValueError(
            f"H + ridge * I is not numerically positive definite with ridge = {ridge:g} (Cholesky "
            f"failed at leading minor {int(info)} of {n}); increase ridge or check that H is a PSD kernel"
        )
    alpha = torch.cholesky_solve(y2, L)
    if squeeze:
        alpha = alpha[:, 0]
    alpha = alpha.to(Ht.dtype)
    if not bool(torch.isfinite(alpha).all()):
        # H tiny against y (e.g. 1e-300 vs 1e300), or a float64 solution beyond H's dtype range
        raise ValueError(
            f"the solution alpha = (H + ridge I)^-1 y overflows {str(Ht.dtype).replace('torch.', '')} "
            f"(max |y| = {float(y2.abs().max()):.3g}, max |H| = {float(Ht.abs().max()):.3g}, "
            f"ridge = {ridge:g}); rescale H or y, or increase ridge"
        )
    return to_output(alpha, was_numpy)


def kernel_predict(H_test_train: ArrayLike, alpha: ArrayLike) -> Any:
    """``H(x*, X) @ alpha`` with shape checks; follows ``H_test_train``'s kind and dtype."""
    K, was_numpy = as_matrix(H_test_train, "H_test_train", allow_empty=True)
    a = as_labels(alpha, K.shape[1], "alpha").to(device=K.device, dtype=K.dtype)
    return to_output(K @ a, was_numpy)


def gd_time_coef(
    H_train: ArrayLike,
    y: ArrayLike,
    lr: float,
    t: Any,
    u0: ArrayLike | None = None,
    *,
    variant: str = "continuous",
) -> Any:
    """Dual coefficients ``c_t = H^-1 (I - exp(-lr t H)) (y - u0)`` of the GD-time predictor.

    One float64 eigendecomposition of ``H_train``; ``f_t(x*) = f_0(x*) + H(x*, X) @ c_t``.
    ``t`` scalar -> shape of ``y``; ``t`` array of ``T`` times -> ``(T,) + y.shape``.
    See the module docstring for the time convention and the two variants.
    """
    Ht, was_numpy = _square(H_train, "H_train")
    lam, V, r0, ts, scalar, squeeze, lr = _gd_setup(Ht, y, lr, t, u0, variant)
    G = _gd_filter(lam, lr, ts, variant)  # (T, n)
    coef = V @ (G[:, :, None] * (V.T @ r0)[None])  # (T, n, c)
    coef = _gd_shape(coef, scalar, squeeze)
    return to_output(coef.to(Ht.dtype), was_numpy)


def _gd_setup(Ht, y, lr, t, u0, variant):
    variant = check_choice(variant, "variant", _VARIANTS)
    lr = check_real(lr, "lr", positive=True)
    ts, scalar = _times(t, variant)
    n = Ht.shape[0]
    yt = as_labels(y, n, "y")
    check_symmetric(Ht, "H_train")
    y2, squeeze = _as_2d_targets(yt.to(device=Ht.device, dtype=torch.float64))
    r0 = y2
    if u0 is not None:
        u = as_labels(u0, n, "u0").to(device=Ht.device, dtype=torch.float64)
        u = u[:, None] if u.ndim == 1 else u
        if u.shape != y2.shape:
            raise ValueError(
                f"u0 must have the shape of y, got {tuple(u.shape)} and {tuple(y2.shape)}"
            )
        r0 = y2 - u
    lam, V = torch.linalg.eigh(Ht.to(torch.float64))
    if variant == "discrete" and lr * float(lam[-1]) > 2:
        warnings.warn(
            f"lr * lambda_max(H) = {lr * float(lam[-1]):.3g} > 2: discrete gradient descent diverges",
            RuntimeWarning,
            stacklevel=3,
        )
    return lam, V, r0, ts.to(Ht.device), scalar, squeeze, lr


def _gd_shape(out: torch.Tensor, scalar: bool, squeeze: bool) -> torch.Tensor:
    if squeeze:
        out = out[..., 0]
    if scalar:
        out = out[0]
    return out


def gd_time_predict(
    H_train: ArrayLike,
    H_test_train: ArrayLike,
    y: ArrayLike,
    lr: float,
    t: Any,
    u0: ArrayLike | None = None,
    f0: ArrayLike | None = None,
    *,
    variant: str = "continuous",
) -> Any:
    """Predictions of the kernel model after gradient descent for time ``t`` (Lee et al. 2019).

    ``f_t(x*) = f_0(x*) + H(x*, X) H^-1 (I - exp(-lr t H)) (y - u_0)`` via one float64
    eigendecomposition ``H = V Lambda V^T`` (no matrix inverse; see the module docstring).

    Parameters
    ----------
    H_train : (n, n) kernel of the training inputs.
    H_test_train : (n*, n) kernel between test and training inputs, or ``None`` for the
        training predictions ``u_t = u_0 + (I - exp(-lr t H)) (y - u_0)``.
    y : (n,) or (n, c) targets.
    lr : step size ``eta > 0``; ``t`` counts steps on ``1/2 sum_i (f(x_i) - y_i)^2``.
    t : number or 1-D array of ``T`` times (``>= 0``; whole numbers for ``"discrete"``).
    u0, f0 : initial outputs on the training / test inputs (default 0, the symmetric
        initialisation of the NTK analyses).  ``f0`` is ignored when ``H_test_train`` is None.
    variant : ``"continuous"`` (gradient flow, ``exp(-lr t H)``) or ``"discrete"``
        (``(I - lr H)^t``, exactly ``t`` GD steps).

    Returns
    -------
    ``(n*,)`` / ``(n*, c)`` for scalar ``t``; ``(T, n*)`` / ``(T, n*, c)`` for an array of times.
    Numpy if ``H_train`` was numpy, in ``H_train``'s dtype.
    """
    Ht, was_numpy = _square(H_train, "H_train")
    lam, V, r0, ts, scalar, squeeze, lr = _gd_setup(Ht, y, lr, t, u0, variant)
    G = _gd_filter(lam, lr, ts, variant)  # (T, n)
    Vr = V.T @ r0  # (n, c)
    if H_test_train is None:
        out = V @ ((lam[None, :] * G)[:, :, None] * Vr[None])  # (T, n, c)
        if u0 is not None:
            u = as_labels(u0, Ht.shape[0], "u0").to(device=Ht.device, dtype=torch.float64)
            out = out + (u[:, None] if u.ndim == 1 else u)[None]
    else:
        K, _ = as_matrix(H_test_train, "H_test_train", allow_empty=True)
        if K.shape[1] != Ht.shape[0]:
            raise ValueError(
                f"H_test_train must have n = {Ht.shape[0]} columns (one per training input), "
                f"got shape {tuple(K.shape)}"
            )
        B = K.to(device=Ht.device, dtype=torch.float64) @ V  # (n*, n)
        out = B @ (G[:, :, None] * Vr[None])  # (T, n*, c)
        if f0 is not None:
            f = as_labels(f0, K.shape[0], "f0").to(device=Ht.device, dtype=torch.float64)
            f = f[:, None] if f.ndim == 1 else f
            if f.shape[1] != r0.shape[1]:
                raise ValueError(f"f0 must have {r0.shape[1]} output column(s), got {f.shape[1]}")
            out = out + f[None]
    out = _gd_shape(out, scalar, squeeze)
    return to_output(out.to(Ht.dtype), was_numpy)
