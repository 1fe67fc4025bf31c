"""NTK regression: the infinite-width predictor of a wide ReLU network (SPEC section 2).

Three layers, each usable on its own:

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
    ``n x n`` matrix does not fit the memory budget (SPEC section 8).
  - :func:`kernel_operator` / :func:`kernel_cg_fit` -- the matrix-free operator
    ``v -> (K(X, X) + ridge I) v`` computed tile by tile under the kernel's memory budget
    and, under ``torch.distributed`` (``torchrun``), split by rows over the ranks: rank ``r``
    computes the rows :func:`ntkdr.distributed.shard_indices` of ``K v`` and an all-reduce
    assembles the product, so every rank runs the same CG iterations and holds the same
    solution (that of one process, to round-off).

* **scikit-learn estimators** :class:`NTKRegressor` and :class:`NTKClassifier`
  (optionally sketched inputs, two-layer or deep fully connected ReLU NTK, ridge or
  GD-time predictor, dense Cholesky or matrix-free CG solver).

Time convention (SPEC section 2)
--------------------------------
``t`` counts gradient-descent steps of step size ``lr`` on the *summed* squared loss
``L = 1/2 sum_i (f(x_i) - y_i)^2`` (not the mean).  In function space the kernel model
then evolves as ``u <- u - lr H (u - y)``.  Two variants are offered:

* ``variant="continuous"`` (default): gradient flow evaluated at time ``lr * t``,
  ``u_t = y - exp(-lr t H) (y - u_0)``; valid for any real ``t >= 0``.  This is the
  formula of SPEC section 2 and of Lee et al. (2019), eq. (9)-(10).
* ``variant="discrete"``: exactly ``t`` (integer) discrete GD steps,
  ``u_t = y - (I - lr H)^t (y - u_0)``, i.e. ``exp(-lr t lambda)`` is replaced by
  ``(1 - lr lambda)^t`` in every eigen-direction.  It matches the training loop of
  ``ntkdr.train`` step by step in the infinite-width limit and diverges when
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

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from numbers import Real
from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.preprocessing import LabelBinarizer
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from .validation import (
    as_labels,
    as_matrix,
    check_choice,
    check_int,
    check_k,
    check_real,
    resolve_device,
    resolve_dtype,
    to_output,
)

__all__ = [
    "CGResult",
    "kernel_operator",
    "kernel_cg_fit",
    "kernel_ridge_fit",
    "kernel_predict",
    "gd_time_coef",
    "gd_time_predict",
    "conjugate_gradient",
    "NTKRegressor",
    "NTKClassifier",
]

_SKETCH_KINDS = ("gaussian", "sparse", "srht", "pca", "identity")
_SOLVERS = ("auto", "cholesky", "cg")
_VARIANTS = ("continuous", "discrete")


# --------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------
def _square(H: Any, name: str = "H") -> tuple[torch.Tensor, bool]:
    Ht, was_numpy = as_matrix(H, name)
    if Ht.shape[0] != Ht.shape[1]:
        raise ValueError(f"{name} must be square (n, n), got shape {tuple(Ht.shape)}")
    return Ht, was_numpy


def _check_symmetric(H: torch.Tensor, name: str = "H", block: int = 2048) -> None:
    """Raise unless ``H`` is symmetric up to ``1e-4 * max|H|`` (blockwise, O(block n) memory).

    The tolerance is loose on purpose: a float32 kernel promoted to float64 carries
    float32 round-off; the check is there to catch a non-kernel (e.g. ``H(X, Z)``) passed
    by mistake, since the Cholesky factorization reads only one triangle.
    """
    n = H.shape[0]
    scale = max(abs(float(H.max())), abs(float(H.min()))) if n else 0.0  # no n x n temporary
    tol = 1e-4 * max(scale, float(torch.finfo(H.dtype).tiny))
    for s in range(0, n, block):
        diff = (H[s : s + block, :] - H[:, s : s + block].T).abs().max()
        if float(diff) > tol:
            raise ValueError(
                f"{name} must be a symmetric kernel matrix; max |{name} - {name}^T| = {float(diff):.3g} "
                f"exceeds the tolerance {tol:.3g}"
            )


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
def kernel_ridge_fit(H: Any, y: Any, ridge: float = 0.0) -> Any:
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
    _check_symmetric(Ht)
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


def kernel_predict(H_test_train: Any, alpha: Any) -> Any:
    """``H(x*, X) @ alpha`` with shape checks; follows ``H_test_train``'s kind and dtype."""
    K, was_numpy = as_matrix(H_test_train, "H_test_train", allow_empty=True)
    a = as_labels(alpha, K.shape[1], "alpha").to(device=K.device, dtype=K.dtype)
    return to_output(K @ a, was_numpy)


def gd_time_coef(
    H_train: Any,
    y: Any,
    lr: float,
    t: Any,
    u0: Any = None,
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
    _check_symmetric(Ht, "H_train")
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
    H_train: Any,
    H_test_train: Any,
    y: Any,
    lr: float,
    t: Any,
    u0: Any = None,
    f0: Any = None,
    *,
    variant: str = "continuous",
) -> Any:
    """Predictions of the kernel model after gradient descent for time ``t`` (SPEC section 2).

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


@dataclass
class CGResult:
    """Result of :func:`conjugate_gradient`.

    ``x`` has the shape of ``b``; ``residual`` is the true relative residual
    ``||b - A x|| / ||b||`` per column (recomputed with one extra operator application);
    ``history`` the largest recursive relative residual after each iteration;
    ``world_size`` the number of ranks that shared the work (1 for a single process).
    """

    x: Any
    n_iter: int
    residual: np.ndarray
    converged: bool
    history: list[float] = field(default_factory=list)
    world_size: int = 1


def _resolve_distributed(distributed: Any) -> bool:
    """``distributed`` (None / True / False) -> whether to run in lock step over the default group.

    ``None``: yes when a ``torch.distributed`` group with more than one rank is initialised.
    """
    from . import distributed as D

    if distributed is not None and not isinstance(distributed, (bool, np.bool_)):
        raise ValueError(f"distributed must be None, True or False, got {distributed!r}")
    if distributed and not D.is_distributed():
        raise ValueError(
            "distributed=True needs an initialised torch.distributed process group (launch with "
            "torchrun and call ntkdr.distributed.init_from_env, or torch.distributed.init_process_group)"
        )
    if distributed is None:
        return D.is_distributed() and D.world_size() > 1
    return bool(distributed) and D.world_size() > 1


def _all_reduce_max(t: torch.Tensor) -> torch.Tensor:
    """Element-wise maximum of ``t`` over the ranks, in place (called in distributed mode only)."""
    torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
    return t


def _check_same_on_ranks(t: torch.Tensor, name: str) -> None:
    """Raise on every rank unless ``t`` is the same on all ranks (distributed mode only).

    Compares a fingerprint (shape, sum, sum of squares and a row-weighted sum, in float64)
    by an all-reduced max of ``(f, -f)``: equal inputs give equal fingerprints bit for bit,
    so any difference means the ranks were given different data (a silent mix otherwise).
    """
    t64 = t.detach().to(torch.float64).reshape(t.shape[0], -1)
    w = torch.arange(1, t64.shape[0] + 1, dtype=torch.float64, device=t64.device)
    f = torch.stack(
        [
            torch.tensor(float(t64.numel()), dtype=torch.float64, device=t64.device),
            t64.sum(),
            (t64 * t64).sum(),
            (t64.sum(dim=1) * w).sum(),
        ]
    )
    both = _all_reduce_max(torch.cat([f, -f]))
    if not torch.equal(both[:4], -both[4:]):
        raise ValueError(
            f"distributed CG: {name} differs between ranks; pass the same full {name} on every rank "
            "(each rank computes its own rows of the kernel product from the full data)"
        )


def conjugate_gradient(
    matvec: Callable[[torch.Tensor], torch.Tensor],
    b: Any,
    *,
    x0: Any = None,
    tol: float = 1e-6,
    max_iter: int | None = None,
    preconditioner: Any = None,
    callback: Callable[[int, np.ndarray], Any] | None = None,
    progress: bool = False,
    distributed: bool | None = None,
) -> CGResult:
    """Solve ``A x = b`` for symmetric positive definite ``A`` given only ``v -> A v``.

    Built for NTK regression with a matrix-free kernel, ``A = K(X, X) + ridge I``
    (e.g. :func:`kernel_operator`, or ``lambda v: ntk.matvec(X, v) + ridge * v``), when
    the ``n x n`` matrix does not fit the memory budget: memory is O(n c) besides what
    ``matvec`` uses.

    Several right-hand sides (``b`` of shape ``(n, c)``) are solved together: every
    iteration makes one operator call on an ``(n, c)`` block (which amortises the
    kernel tiles over the columns); each column runs its own CG recurrence and is frozen
    once converged.

    Parameters
    ----------
    matvec : callable mapping an ``(n, c)`` torch tensor (``b``'s dtype and device) to ``A @ v``.
    b : (n,) or (n, c) array or tensor.
    x0 : optional initial guess, shape of ``b``.
    tol : relative residual ``||b - A x|| / ||b|| <= tol`` per column.
    max_iter : iteration cap (default ``n``); a ``ConvergenceWarning`` is issued if hit.
    preconditioner : ``None``, a vector ``d`` (Jacobi: ``M^-1 r = r / d``, e.g. the
        kernel diagonal plus ridge) or a callable ``r -> M^-1 r``.
    callback : called as ``callback(iteration, relative_residuals)`` after each iteration.
    progress : show a tqdm progress bar with the iteration and the relative residual
        (on rank 0 only in distributed mode).
    distributed : ``None`` (default: on when a ``torch.distributed`` group with more than
        one rank is initialised), ``True`` or ``False``.  In distributed mode every rank
        runs the same iterations in lock step: ``b`` (and ``x0``) must be the same on all
        ranks (checked), ``matvec`` must return the same full product on every rank (a
        collective operator such as :func:`kernel_operator`, which computes this rank's
        rows and all-reduces; a purely local full product is also correct, just not
        shared), and the residual norms are all-reduced (max) so that all ranks stop at
        the same iteration even if round-off ever differed.

    Raises
    ------
    ValueError
        If ``p^T A p <= 0`` is met (the operator is not positive definite; increase the ridge).
    """
    was_numpy = not isinstance(b, torch.Tensor)
    bt = torch.as_tensor(np.asarray(b)) if was_numpy else b
    if bt.ndim not in (1, 2) or bt.shape[0] == 0:
        raise ValueError(f"b must be a non-empty (n,) or (n, c) array, got shape {tuple(bt.shape)}")
    if not bt.is_floating_point():
        bt = bt.to(torch.float64)
    if not bool(torch.isfinite(bt).all()):
        raise ValueError("b contains NaN or Inf")
    tol = check_real(tol, "tol", positive=True)
    if not isinstance(progress, (bool, np.bool_)):
        raise ValueError(f"progress must be True or False, got {progress!r}")
    use_dist = _resolve_distributed(distributed)
    n = bt.shape[0]
    max_iter = n if max_iter is None else check_int(max_iter, "max_iter", min_value=1)
    B, squeeze = _as_2d_targets(bt)
    world = 1
    if use_dist:
        from . import distributed as D

        world = D.world_size()
        _check_same_on_ranks(B, "b")
        progress = progress and D.rank() == 0

    def A(v: torch.Tensor) -> torch.Tensor:
        out = matvec(v)
        out = torch.as_tensor(out).to(device=v.device, dtype=v.dtype)
        return out.reshape(v.shape)

    def rel_norm(R: torch.Tensor) -> torch.Tensor:
        r = R.norm(dim=0) / bsafe
        return _all_reduce_max(r) if use_dist else r

    if preconditioner is None:
        Minv = lambda r: r  # noqa: E731
    elif callable(preconditioner):
        Minv = lambda r: torch.as_tensor(preconditioner(r)).to(r).reshape(r.shape)  # noqa: E731
    else:
        dv = torch.as_tensor(
            np.asarray(preconditioner)
            if not isinstance(preconditioner, torch.Tensor)
            else preconditioner
        )
        dv = dv.to(B).reshape(-1)
        if dv.shape[0] != n or not bool((dv > 0).all()):
            raise ValueError(f"preconditioner must be a positive vector of length n = {n}")
        inv = (1.0 / dv)[:, None]
        Minv = lambda r: r * inv  # noqa: E731

    bnorm = B.norm(dim=0)
    bsafe = torch.where(bnorm > 0, bnorm, torch.ones_like(bnorm))
    if x0 is None:
        X = torch.zeros_like(B)
        R = B.clone()
    else:
        X = (
            torch.as_tensor(np.asarray(x0) if not isinstance(x0, torch.Tensor) else x0)
            .to(B)
            .reshape(B.shape)
            .clone()
        )
        if use_dist:
            _check_same_on_ranks(X, "x0")
        R = B - A(X)
    res = rel_norm(R)
    done = res <= tol
    history: list[float] = []
    Z = Minv(R)
    P = Z.clone()
    rz = (R * Z).sum(dim=0)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(
            total=max_iter,
            desc=f"CG ({world} rank{'s' if world > 1 else ''})",
            unit="it",
            leave=False,
        )
    it = 0
    try:
        while it < max_iter and not bool(done.all()):
            it += 1
            AP = A(P)
            pAp = (P * AP).sum(dim=0)
            active = ~done
            if bool((pAp[active] <= 0).any()):
                raise ValueError(
                    f"the operator is not positive definite (p^T A p <= 0 at CG iteration {it}); "
                    "increase the ridge"
                )
            alpha = torch.where(
                active, rz / torch.where(active, pAp, torch.ones_like(pAp)), torch.zeros_like(rz)
            )
            X += alpha * P
            R -= alpha * AP
            res = rel_norm(R)
            done = done | (res <= tol)
            history.append(float(res[active].max()))
            if callback is not None:
                callback(it, res.detach().cpu().numpy())
            if bar is not None:
                bar.update(1)
                bar.set_postfix(iteration=it, residual=f"{history[-1]:.2e}")
            Z = Minv(R)
            rz_new = (R * Z).sum(dim=0)
            beta = torch.where(
                done, torch.zeros_like(rz), rz_new / torch.where(rz != 0, rz, torch.ones_like(rz))
            )
            P = Z + beta * P
            rz = rz_new
    finally:
        if bar is not None:
            bar.close()
    true_res = rel_norm(B - A(X)).detach().cpu().numpy()
    converged = bool(done.all())
    if not converged:
        warnings.warn(
            f"conjugate gradient did not converge in {it} iterations: relative residual "
            f"{float(true_res.max()):.3g} > tol = {tol:g}; raise max_iter or the ridge",
            ConvergenceWarning,
            stacklevel=2,
        )
    if squeeze:
        X = X[:, 0]
    return CGResult(
        x=to_output(X, was_numpy),
        n_iter=it,
        residual=true_res,
        converged=converged,
        history=history,
        world_size=world,
    )


class _KernelOperator:
    """``v -> (K(X, X) + ridge I) v`` without the ``n x n`` matrix (see :func:`kernel_operator`)."""

    def __init__(self, kernel: Any, X: torch.Tensor, ridge: float, use_dist: bool):
        from . import distributed as D

        self.kernel, self.X, self.ridge = kernel, X, ridge
        self.rows = D.shard_slice(X.shape[0], D.rank(), D.world_size()) if use_dist else None
        self.n_calls = 0

    def __call__(self, v: torch.Tensor) -> torch.Tensor:
        from . import distributed as D

        self.n_calls += 1
        vk = v.to(device=self.X.device, dtype=self.X.dtype)
        if self.rows is None:
            Kv = torch.as_tensor(self.kernel.matvec(self.X, vk)).to(v)
        else:
            # this rank's rows of K v (tile by tile), zeros elsewhere; the all-reduced sum is
            # K v exactly: every entry is one rank's value plus zeros
            Kv = torch.zeros_like(v)
            if self.rows.stop > self.rows.start:
                Kv[self.rows] = torch.as_tensor(
                    self.kernel.matvec(self.X[self.rows], vk, Z=self.X)
                ).to(v)
            D.all_reduce_sum(Kv)
        if self.ridge:
            Kv += self.ridge * v
        return Kv


def _check_kernel(kernel: Any) -> None:
    if not (callable(getattr(kernel, "matvec", None)) and callable(getattr(kernel, "diag", None))):
        raise ValueError(
            "kernel must be a kernel object with matvec(X, v, Z=None) and diag(X) methods "
            f"(e.g. ntkdr.kernels.NTK), got {type(kernel).__name__}"
        )


def kernel_operator(kernel: Any, X: Any, *, ridge: float = 0.0, distributed: bool | None = None):
    """The matrix-free operator ``v -> (K(X, X) + ridge I) v`` for :func:`conjugate_gradient`.

    ``kernel`` is an :class:`ntkdr.kernels.NTK` (any object with ``matvec(X, v, Z=None)`` and
    ``diag(X)``); its ``options`` (``max_memory``, ``tile``, ``dtype``, ``device``) bound the
    tiles: ``K`` is produced a tile of rows at a time and multiplied into ``v`` at once, so the
    ``n x n`` matrix never exists (SPEC section 8).  ``v`` is cast to the kernel's dtype for the
    product; the result has ``v``'s dtype (the CG recurrences may run in float64 over a float32
    kernel).

    ``distributed`` (``None``: on when a group with more than one rank is initialised): rank
    ``r`` of ``W`` computes only the rows :func:`ntkdr.distributed.shard_indices` ``(n, r, W)``
    of ``K v`` (``K(X[shard], X) v``), puts them in an ``(n, c)`` zero block and the blocks are
    summed by :func:`ntkdr.distributed.all_reduce_sum`: every rank gets the same full product
    at ``1/W`` of the kernel work.  It is a collective call: all ranks must call it together
    with the same ``v`` (as :func:`conjugate_gradient` does in distributed mode).
    """
    _check_kernel(kernel)
    Xt, _ = as_matrix(X, "X")
    ridge = check_real(ridge, "ridge", min_value=0.0)
    return _KernelOperator(kernel, Xt, ridge, _resolve_distributed(distributed))


def _kernel_cg(
    kernel: Any,
    Xt: torch.Tensor,
    Y: torch.Tensor,
    ridge: float,
    *,
    tol: float,
    max_iter: int | None,
    distributed: bool | None,
    x0: Any = None,
    callback: Callable | None = None,
    progress: bool = False,
) -> CGResult:
    """Jacobi-preconditioned CG on ``(K(X, X) + ridge I) alpha = Y`` in float64 (``Y`` float64)."""
    use_dist = _resolve_distributed(distributed)
    if use_dist:  # named checks here; conjugate_gradient checks b again (cheap, O(n c))
        _check_same_on_ranks(Xt, "X")
        _check_same_on_ranks(Y, "y")
    op = _KernelOperator(kernel, Xt, ridge, use_dist)
    diag = torch.as_tensor(kernel.diag(Xt)).to(Y) + ridge  # O(n): closed form at theta = 0
    pre = diag if bool((diag > 0).all()) else None  # zero rows with ridge 0: no Jacobi scaling
    return conjugate_gradient(
        op,
        Y,
        x0=x0,
        tol=tol,
        max_iter=max_iter,
        preconditioner=pre,
        callback=callback,
        progress=progress,
        distributed=use_dist,
    )


def kernel_cg_fit(
    kernel: Any,
    X: Any,
    y: Any,
    ridge: float,
    *,
    tol: float | None = None,
    max_iter: int | None = None,
    x0: Any = None,
    callback: Callable[[int, np.ndarray], Any] | None = None,
    progress: bool = False,
    distributed: bool | None = None,
) -> CGResult:
    """Dual coefficients ``alpha = (K(X, X) + ridge I)^-1 y`` by matrix-free CG (SPEC section 8).

    The large-``n`` counterpart of :func:`kernel_ridge_fit`: Jacobi-preconditioned
    :func:`conjugate_gradient` (recurrences in float64) on :func:`kernel_operator`, so memory
    is the kernel's tile budget (``kernel.options.max_memory``) plus ``O(n (d + c))``; the
    ``n x n`` matrix is never formed.  Each iteration costs one pass over all ``n^2`` kernel
    entries (split over the ranks in distributed mode), so the run time is about
    ``n_iter * n^2 / W`` kernel evaluations: a larger ``ridge`` (relative to the kernel
    scale, e.g. the diagonal ``1/2`` of ``H1`` on unit rows) means fewer iterations.

    Parameters
    ----------
    kernel : :class:`ntkdr.kernels.NTK` (or any object with ``matvec`` and ``diag``).
    X : (n, d) training inputs; y : (n,) or (n, c) targets.
    ridge : float >= 0, absolute, added to the diagonal.
    tol : relative residual tolerance (default 1e-6 for a float64 ``X``, 1e-4 for float32).
    max_iter, x0, callback, progress, distributed : as in :func:`conjugate_gradient`; in
        distributed mode ``X`` and ``y`` must be the full data on every rank (checked) and
        every rank returns the same ``alpha``.

    Returns
    -------
    :class:`CGResult` whose ``x`` has ``y``'s shape and ``X``'s dtype (numpy if ``X`` was numpy).
    """
    _check_kernel(kernel)
    Xt, was_numpy = as_matrix(X, "X")
    n = Xt.shape[0]
    yt = as_labels(y, n, "y")
    ridge = check_real(ridge, "ridge", min_value=0.0)
    if tol is None:
        tol = 1e-6 if Xt.dtype == torch.float64 else 1e-4
    tol = check_real(tol, "tol", positive=True)
    Y, squeeze = _as_2d_targets(yt.to(device=Xt.device, dtype=torch.float64))
    if x0 is not None:
        x0 = as_labels(x0, n, "x0").to(device=Xt.device, dtype=torch.float64).reshape(Y.shape)
    res = _kernel_cg(
        kernel,
        Xt,
        Y,
        ridge,
        tol=tol,
        max_iter=max_iter,
        distributed=distributed,
        x0=x0,
        callback=callback,
        progress=progress,
    )
    x = res.x[:, 0] if squeeze else res.x
    res.x = to_output(x.to(Xt.dtype), was_numpy)
    return res


# --------------------------------------------------------------------------------------
# scikit-learn estimators
# --------------------------------------------------------------------------------------
def _parse_memory(value: Any, name: str = "max_memory") -> int | None:
    """``None`` (no budget), a positive number of bytes, or a string like ``"2GB"`` / ``"512MiB"``."""
    if value is None:
        return None
    if isinstance(value, str):
        s = value.strip().upper().replace(" ", "")
        units = {
            "KIB": 2**10,
            "MIB": 2**20,
            "GIB": 2**30,
            "TIB": 2**40,
            "KB": 10**3,
            "MB": 10**6,
            "GB": 10**9,
            "TB": 10**12,
            "B": 1,
        }
        for u, mult in units.items():
            if s.endswith(u):
                try:
                    num = float(s[: -len(u)])
                except ValueError:
                    break
                if num > 0 and math.isfinite(num):
                    return int(num * mult)
                break
        raise ValueError(
            f"{name} must be a positive number of bytes or a size like '2GB', got {value!r}"
        )
    if (
        isinstance(value, bool)
        or not isinstance(value, Real)
        or not (float(value) > 0)
        or not math.isfinite(float(value))
    ):
        raise ValueError(
            f"{name} must be a positive number of bytes or a size like '2GB', got {value!r}"
        )
    return int(value)


class _NTKBase(BaseEstimator):
    """Shared fit / decision code of :class:`NTKRegressor` and :class:`NTKClassifier`."""

    def __init__(
        self,
        sketch=None,
        k=None,
        depth=None,
        layers="first",
        ridge=1e-3,
        t=None,
        lr=None,
        normalize=True,
        solver="auto",
        cg_tol=None,
        cg_max_iter=None,
        max_memory=None,
        kernel_params=None,
        seed=0,
        dtype="float64",
        device=None,
        distributed=None,
    ):
        self.sketch = sketch
        self.k = k
        self.depth = depth
        self.layers = layers
        self.ridge = ridge
        self.t = t
        self.lr = lr
        self.normalize = normalize
        self.solver = solver
        self.cg_tol = cg_tol
        self.cg_max_iter = cg_max_iter
        self.max_memory = max_memory
        self.kernel_params = kernel_params
        self.seed = seed
        self.dtype = dtype
        self.device = device
        self.distributed = distributed

    # ---- parameter validation (in fit, per scikit-learn rules) ----
    def _check_params(self, n_features: int) -> dict:
        p: dict[str, Any] = {}
        sk = self.sketch
        if sk is None or (isinstance(sk, str) and sk == "none"):
            p["sketch"] = None
        else:
            if not isinstance(sk, str):
                raise ValueError(
                    f"sketch must be None or one of {', '.join(map(repr, _SKETCH_KINDS))}, got {sk!r}"
                )
            p["sketch"] = check_choice(sk, "sketch", _SKETCH_KINDS)
        if p["sketch"] is None:
            p["k"] = (
                None  # k is ignored by the dense model (so a grid over `sketch` may keep k fixed)
            )
        elif p["sketch"] == "identity":
            p["k"] = n_features if self.k is None else check_k(self.k, n_features)
            if p["k"] != n_features:
                raise ValueError(
                    f"k must equal d = {n_features} for sketch='identity', got {self.k}"
                )
        else:
            if self.k is None:
                raise ValueError(
                    f"k is required with sketch={p['sketch']!r} (target dimension, 1 <= k <= d)"
                )
            p["k"] = check_k(self.k, n_features)
        p["depth"] = None if self.depth is None else check_int(self.depth, "depth", min_value=1)
        p["layers"] = check_choice(self.layers, "layers", ("first", "both"))
        p["ridge"] = check_real(self.ridge, "ridge", min_value=0.0)
        if self.t is None:
            p["t"] = None
        else:
            p["t"] = check_real(self.t, "t", min_value=0.0)
        p["lr"] = None if self.lr is None else check_real(self.lr, "lr", positive=True)
        if not isinstance(self.normalize, (bool, np.bool_)):
            raise ValueError(f"normalize must be True or False, got {self.normalize!r}")
        p["normalize"] = bool(self.normalize)
        p["solver"] = check_choice(self.solver, "solver", _SOLVERS)
        if p["t"] is not None and p["solver"] == "cg":
            raise ValueError(
                "t (the GD-time predictor) needs an eigendecomposition of the n x n kernel; "
                "use solver='auto' or 'cholesky', or t=None for the ridge solution by CG"
            )
        p["dtype"] = resolve_dtype(self.dtype)
        if p["dtype"] is None:
            raise ValueError("dtype must be 'float32' or 'float64', got None")
        p["cg_tol"] = (
            (1e-6 if p["dtype"] == torch.float64 else 1e-4)
            if self.cg_tol is None
            else check_real(self.cg_tol, "cg_tol", positive=True)
        )
        p["cg_max_iter"] = (
            None
            if self.cg_max_iter is None
            else check_int(self.cg_max_iter, "cg_max_iter", min_value=1)
        )
        p["max_memory"] = _parse_memory(self.max_memory)
        kp = {} if self.kernel_params is None else self.kernel_params
        if not isinstance(kp, dict):
            raise ValueError(f"kernel_params must be a dict or None, got {kp!r}")
        allowed = ("kappa",) if p["depth"] is None else ("w_std", "b_std", "w_out")
        bad = sorted(set(kp) - set(allowed))
        if bad:
            kind = (
                "the two-layer NTK (depth=None)"
                if p["depth"] is None
                else "the deep FC NTK (depth >= 1)"
            )
            raise ValueError(
                f"unknown kernel_params {bad} for {kind}; expected keys among {list(allowed)}"
            )
        p["kernel_params"] = {
            key: check_real(v, f"kernel_params[{key!r}]") for key, v in kp.items()
        }
        p["seed"] = check_int(self.seed, "seed", min_value=0)
        p["device"] = resolve_device(self.device) or torch.device("cpu")
        if self.distributed is not None and not isinstance(self.distributed, (bool, np.bool_)):
            raise ValueError(f"distributed must be None, True or False, got {self.distributed!r}")
        p["distributed"] = None if self.distributed is None else bool(self.distributed)
        return p

    # ---- features and kernel ----
    @staticmethod
    def _normalize_rows(X: torch.Tensor, name: str) -> torch.Tensor:
        norms = X.norm(dim=1, keepdim=True)
        zero = (norms[:, 0] == 0).nonzero().flatten()
        if zero.numel():
            # A bias-free ReLU network is positively homogeneous, f(c x) = c f(x), so f(0) = 0
            # and the NTK of the zero vector with anything is 0: keep such rows at zero.
            warnings.warn(
                f"{name} has zero-norm rows (indices {zero[:5].tolist()}"
                f"{' ...' if zero.numel() > 5 else ''}); they cannot be normalised and are kept as "
                "zero vectors (kernel 0 with every input)",
                UserWarning,
                stacklevel=4,
            )
        return X / torch.where(norms > 0, norms, torch.ones_like(norms))

    def _features(self, X: np.ndarray, p: dict, *, fit: bool) -> torch.Tensor:
        Xt = torch.tensor(
            np.asarray(X), dtype=p["dtype"], device=p["device"]
        )  # a copy: read-only input is fine
        if p["normalize"]:
            Xt = self._normalize_rows(Xt, "X")
        if p["sketch"] is not None:
            if fit:
                from .sketches import make_sketch

                sk = make_sketch(p["sketch"], Xt.shape[1], p["k"], seed=p["seed"])
                sk.fit(Xt)
                self.sketch_ = sk
            Xt = torch.as_tensor(self.sketch_(Xt)).to(device=p["device"], dtype=p["dtype"])
            if p["normalize"]:
                Xt = self._normalize_rows(Xt, "the sketched X")
        return Xt

    def _kernel(self, p: dict):
        from .kernels import NTK, KernelOptions

        opts = KernelOptions(max_memory=p["max_memory"], dtype=p["dtype"], device=p["device"])
        if p["depth"] is None:
            return NTK(kind="two_layer", layers=p["layers"], options=opts, **p["kernel_params"])
        return NTK(kind="fc", depth=p["depth"], options=opts, **p["kernel_params"])

    # ---- fit / decision ----
    def _fit_targets(self, X: np.ndarray, Y: np.ndarray) -> None:
        """Fit the dual coefficients for 2-D targets ``Y`` (n, c)."""
        p = self._check_params(X.shape[1])
        Xf = self._features(X, p, fit=True)
        kern = self._kernel(p)
        n = Xf.shape[0]
        Yt = torch.as_tensor(np.asarray(Y, dtype=np.float64)).to(p["device"])
        itemsize = torch.finfo(p["dtype"]).bits // 8
        dense_bytes = (
            n * n * (itemsize + 16)
        )  # kernel + float64 copy + Cholesky factor / eigenvectors
        budget = p["max_memory"]
        fits = budget is None or dense_bytes <= budget
        solver = p["solver"]
        if solver == "auto":
            solver = "cholesky" if (fits or p["t"] is not None) else "cg"
        if solver == "cholesky" and not fits:
            raise ValueError(
                f"the dense solve needs about {dense_bytes / 2**20:.1f} MiB for n = {n} "
                f"(n x n kernel, float64 copy and factor), over max_memory = {budget / 2**20:.1f} MiB; "
                "use solver='cg' (matrix-free, needs t=None) or raise max_memory"
            )
        self.cg_n_iter_ = None
        self.cg_residual_ = None
        self.lr_ = None
        if solver == "cholesky":
            H = kern(Xf)
            if p["t"] is None:
                coef = kernel_ridge_fit(H, Yt, ridge=p["ridge"])
            else:  # one eigendecomposition serves lr = 1 / lambda_max and the predictor
                _check_symmetric(H)
                lam, V = torch.linalg.eigh(H.to(torch.float64))
                lr = p["lr"]
                if lr is None:
                    lr = 1.0 / float(lam[-1]) if float(lam[-1]) > 0 else 1.0
                ts = torch.tensor([p["t"]], dtype=torch.float64, device=lam.device)
                G = _gd_filter(lam, lr, ts, "continuous")[0]
                coef = V @ (G[:, None] * (V.T @ Yt))
                self.lr_ = lr
            del H
        else:
            max_iter = p["cg_max_iter"] or max(n, 100)
            res = _kernel_cg(
                kern,
                Xf,
                Yt.to(torch.float64),
                p["ridge"],
                tol=p["cg_tol"],
                max_iter=max_iter,
                distributed=p["distributed"],
            )
            coef = res.x
            self.cg_n_iter_ = res.n_iter
            self.cg_residual_ = float(np.max(res.residual))
        self.solver_ = solver
        self._fit_spec = p  # predict uses the kernel / features the model was fitted with
        self.X_fit_ = Xf.detach().cpu().numpy()
        self.dual_coef_ = torch.as_tensor(coef).to(torch.float64).cpu().numpy()

    def _decision(self, X: Any) -> np.ndarray:
        check_is_fitted(self, "dual_coef_")
        X = validate_data(self, X, reset=False, dtype=[np.float64, np.float32])
        p = self._fit_spec
        Xf = self._features(X, p, fit=False)
        kern = self._kernel(p)
        Xtr = torch.as_tensor(self.X_fit_).to(device=p["device"], dtype=p["dtype"])
        coef = torch.as_tensor(self.dual_coef_).to(device=p["device"], dtype=p["dtype"])
        out = kern.matvec(Xf, coef, Z=Xtr)
        return out.detach().cpu().numpy()


class NTKRegressor(RegressorMixin, _NTKBase):
    """Kernel regression with the infinite-width NTK of a ReLU network, optionally on sketched inputs.

    ``predict(X*) = H(X*, X) @ dual_coef_`` with ``H`` the NTK of the (sketched,
    normalised) inputs and ``dual_coef_ = (H + ridge I)^-1 y`` (``t=None``) or the
    GD-time coefficients (``t`` given).

    Parameters
    ----------
    sketch : None, "none", "gaussian", "sparse", "srht", "pca" or "identity"
        Dimension-reduction map ``S`` applied to the (normalised) inputs before the
        kernel: the infinite-width limit of the factorized network ``W = U S``.
        ``None`` / ``"none"``: the dense NTK.  The sketch is fitted on the training
        inputs (``"pca"`` uses them; the random kinds only draw ``S`` from ``seed``).
    k : int, required with a sketch
        Target dimension, ``1 <= k <= n_features``; ignored when ``sketch`` is None.
    depth : None or int >= 1
        ``None``: the two-layer NTK of SPEC section 2 (``H1`` or ``H1 + H2``, see
        ``layers``).  An int: the deep fully connected ReLU NTK with ``depth`` hidden
        layers (neural-tangents' parameterization; ``kernel_params`` may set
        ``w_std``, ``b_std``, ``w_out``).
    layers : "first" or "both"
        Two-layer NTK only: train the first layer (``H1``) or both layers (``H1 + H2``).
    ridge : float >= 0, default 1e-3
        Absolute ridge added to the kernel diagonal (not scaled by n or the trace).
        With normalised inputs the diagonal of ``H1`` is 1/2, so 1e-3 is a small
        regulariser that keeps the solve well posed for duplicate inputs.
        ``ridge=0`` is the ridge-less interpolant and fails loudly if ``H`` is singular.
        Ignored when ``t`` is set.
    t : None or float >= 0
        ``None``: ridge solution.  A number: the GD-time predictor after ``t`` steps of
        (continuous-time) gradient descent with step ``lr`` on
        ``1/2 sum_i (f(x_i) - y_i)^2`` from zero outputs (see :func:`gd_time_predict`).
    lr : None or float > 0
        Step size for ``t``; ``None`` uses ``1 / lambda_max(H)`` (stored as ``lr_``).
    normalize : bool, default True
        Scale every input row (and every sketched row) to unit norm, as the analysis
        assumes.  Zero rows are kept at zero (the NTK of a zero input is 0) with a warning.
    solver : "auto", "cholesky" or "cg"
        ``"cholesky"``: dense ``n x n`` kernel, float64 Cholesky (eigh for ``t``).
        ``"cg"``: matrix-free Jacobi-preconditioned CG with tiled kernel-vector
        products (memory O(n * tile)); ridge solution only.  ``"auto"``: Cholesky when
        the dense solve (about ``n^2 (itemsize + 16)`` bytes) fits ``max_memory``, else CG.
    cg_tol, cg_max_iter : CG relative residual tolerance (default 1e-6 for float64,
        1e-4 for float32) and iteration cap (default ``max(n, 100)``); a
        ``ConvergenceWarning`` is issued when the cap is hit.
    max_memory : None, bytes or a size string ("2GB")
        Memory budget for the kernel tiles and the solver choice; ``None`` = unlimited.
    kernel_params : dict or None
        Extra kernel parameters: ``{"kappa": ...}`` for the two-layer NTK,
        ``{"w_std", "b_std", "w_out"}`` for the deep one.
    seed : int
        Seed of the random sketch.
    dtype : "float64" or "float32"
        Precision of the features and kernel; the linear solves run in float64.
    device : None, "cpu" or "cuda[:i]"
        Torch device for kernel computations (``None`` = cpu).  Inputs and outputs are numpy.
    distributed : None, True or False
        CG solver only: split the kernel-vector products by rows over the ranks of the
        default ``torch.distributed`` group (:func:`kernel_operator`); every rank must call
        ``fit`` with the same data and ends with the same ``dual_coef_``.  ``None``: on when a
        group with more than one rank is initialised (e.g. under ``torchrun``).

    Attributes
    ----------
    X_fit_ : (n, k or d) training features after normalisation / sketching.
    dual_coef_ : (n,) or (n, c) dual coefficients.
    sketch_ : fitted sketch (only when ``sketch`` is set).
    solver_ : solver used ("cholesky" or "cg").
    cg_n_iter_, cg_residual_ : CG iterations and final relative residual (None for Cholesky).
    lr_ : step size used by the GD-time predictor (None when ``t`` is None).
    n_features_in_, feature_names_in_ : as in scikit-learn.
    """

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        tags.target_tags.single_output = True
        return tags

    def fit(self, X, y):
        """Fit on ``X`` (n, d) and targets ``y`` (n,) or (n, c)."""
        X, y = validate_data(
            self, X, y, dtype=[np.float64, np.float32], multi_output=True, y_numeric=True
        )
        y = np.asarray(y, dtype=np.float64)
        self._fit_targets(X, y.reshape(len(y), -1))
        if y.ndim == 1:
            self.dual_coef_ = self.dual_coef_[:, 0]
        return self

    def predict(self, X):
        """``H(X, X_train) @ dual_coef_``: shape (n*,) or (n*, c) like the training targets."""
        return self._decision(X)


class NTKClassifier(ClassifierMixin, _NTKBase):
    """Classification by NTK regression on {-1, +1}-coded targets.

    Labels of any kind are encoded with ``LabelBinarizer(neg_label=-1, pos_label=1)``:
    two classes give one ``+-1`` target (``+1`` = ``classes_[1]``); ``C > 2`` classes
    give ``C`` one-vs-rest ``+-1`` targets (one-hot coded as +1 / -1).  ``predict``
    returns the original labels: the sign of the decision for two classes, the argmax
    for more.  Parameters and attributes as in :class:`NTKRegressor`, plus ``classes_``.
    """

    def fit(self, X, y):
        """Fit on ``X`` (n, d) and labels ``y`` (n,) of any kind (at least two classes)."""
        X, y = validate_data(self, X, y, dtype=[np.float64, np.float32])
        check_classification_targets(y)
        lb = LabelBinarizer(neg_label=-1, pos_label=1)
        Y = lb.fit_transform(y)
        if len(lb.classes_) < 2:
            raise ValueError(
                f"NTKClassifier needs samples of at least 2 classes; got only one class ({lb.classes_[0]!r})"
            )
        self.classes_ = lb.classes_
        self._fit_targets(X, np.asarray(Y, dtype=np.float64))
        return self

    def decision_function(self, X):
        """Scores: (n*,) for two classes (positive -> ``classes_[1]``), (n*, C) otherwise."""
        check_is_fitted(self, "dual_coef_")
        out = self._decision(X)
        return out[:, 0] if len(self.classes_) == 2 else out

    def predict(self, X):
        """Original labels: sign of the score (two classes) or argmax (more)."""
        scores = self.decision_function(X)
        if scores.ndim == 1:
            return self.classes_[(scores > 0).astype(int)]
        return self.classes_[np.argmax(scores, axis=1)]
