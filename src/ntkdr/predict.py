"""Closed-form predictors of infinitely wide networks, in neural-tangents' conventions.

Given a precomputed kernel -- the NTK for gradient-descent training, the NNGP for Bayesian
inference -- of the training inputs and of test inputs against them, these functions return
the outputs of the kernel (linearized) model, as ``neural_tangents.predict`` does (Novak et
al., ICLR 2020), with the same names, signatures, time convention and return conventions, so
that code written for neural-tangents runs on numpy arrays or torch tensors:

* :func:`gradient_descent_mse` -- continuous-time gradient descent (gradient flow) on the
  mean squared error, whose solution in the infinite-width limit is linear in the kernel
  (Jacot et al., NeurIPS 2018; Lee et al., NeurIPS 2019, "Wide neural networks of any depth
  evolve as linear models under gradient descent", eq. 9-10; Arora et al., NeurIPS 2019).
* :func:`gp_inference` -- the posterior mean and covariance of the Gaussian process whose
  prior covariance is the given kernel (Lee et al., ICLR 2018; Novak et al., ICLR 2020).

Numerics.  Everything is solved in float64 from ONE symmetric eigendecomposition
``k_train_train + reg I = V diag(lam) V^T`` computed when the predictor is built and reused by
every call (neural-tangents factorizes lazily on the first call, and runs a separate Cholesky
for infinite time).  Negative eigenvalues -- round-off of a positive semi-definite kernel --
are clipped to 0 as neural-tangents does, and a ``RuntimeWarning`` says how many there were and
the most negative value.  Solves ``K^-1 b`` take one step of iterative refinement with the
same factors, which makes them as accurate as a Cholesky solve on ill-conditioned kernels (an
eigendecomposition alone loses about a factor 10 at condition number 1e10).  Where an inverse
is needed (``t=None``, ``t=inf`` on the test set, and :func:`gp_inference`) a numerically
singular matrix, ``lam_min <= n * eps * lam_max``, is a ``ValueError`` that asks for
``diag_reg > 0``; nothing is added to the diagonal silently and no NaN is returned.  Finite
times need no inverse and work for singular kernels.

Inputs may be numpy arrays, nested lists or torch tensors; outputs are numpy if
``k_train_train`` was not a tensor, else tensors on its device, in ``k_train_train``'s dtype
(float32 or float64; integers become float32).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from numbers import Real
from typing import Any, NamedTuple

import numpy as np
import torch

from ntkdr.validation import as_labels, as_matrix, check_real, to_output

__all__ = ["Gaussian", "gradient_descent_mse", "gp_inference"]

_EPS64 = float(np.finfo(np.float64).eps)


class Gaussian(NamedTuple):
    """Posterior ``(mean, covariance)``; unpacks as a pair, like neural-tangents' ``Gaussian``."""

    mean: Any
    covariance: Any


# --------------------------------------------------------------------------------------
# input checks
# --------------------------------------------------------------------------------------
def _shape(x: Any, name: str) -> tuple[int, ...]:
    if isinstance(x, torch.Tensor):
        return tuple(x.shape)
    try:
        return tuple(np.shape(x))
    except ValueError as exc:  # ragged nested lists
        raise ValueError(f"{name} must be a numeric array: {exc}") from exc


def _kernel(
    k: Any, name: str, *, rows: int | None = None, cols: int | None = None, square: bool = False
) -> tuple[torch.Tensor, bool]:
    """A 2-D kernel matrix as a tensor (in its own dtype), with exact shape messages."""
    shape = _shape(k, name)
    if len(shape) != 2:
        raise ValueError(f"{name} must be a 2-D kernel matrix, got shape {shape}")
    if square and shape[0] != shape[1]:
        raise ValueError(f"{name} must be square (n, n), got shape {shape}")
    if cols is not None and shape[1] != cols:
        raise ValueError(
            f"{name} must have {cols} columns (one per training input), got shape {shape}"
        )
    if rows is not None and shape != (rows, rows):
        raise ValueError(
            f"{name} must have shape ({rows}, {rows}) to match k_test_train, got shape {shape}"
        )
    return as_matrix(k, name, allow_empty=not square)


def _targets(y: Any, n: int) -> tuple[torch.Tensor, bool]:
    """``y_train`` as a float64 ``(n, c)`` tensor and whether it was 1-D."""
    shape = _shape(y, "y_train")
    if len(shape) in (1, 2) and shape[0] != n:
        raise ValueError(
            f"y_train must have {n} rows (one per row of k_train_train), got shape {shape}"
        )
    yt = as_labels(y, n, "y_train").to(torch.float64)
    return (yt[:, None], True) if yt.ndim == 1 else (yt, False)


def _initial(fx: Any, name: str, shape: tuple[int, ...], device: torch.device) -> Any:
    """``None``, a float (a scalar initial output), or a float64 tensor of ``shape``."""
    if fx is None:
        return None
    if isinstance(fx, Real) and not isinstance(fx, bool):
        if not np.isfinite(float(fx)):
            raise ValueError(f"{name} contains NaN or Inf")
        return float(fx)
    got = _shape(fx, name)
    if got == ():
        return _initial(float(fx), name, shape, device)
    if got != shape:
        raise ValueError(f"{name} must be a number or an array of shape {shape}, got shape {got}")
    t = fx if isinstance(fx, torch.Tensor) else torch.from_numpy(np.asarray(fx, dtype=np.float64))
    t = t.to(device=device, dtype=torch.float64)
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} contains NaN or Inf")
    return t


def _times(t: Any) -> np.ndarray:
    """Validate ``t``: a number or an array of any shape, ``>= 0`` (``inf`` allowed), not NaN."""
    arr = t.detach().cpu().numpy() if isinstance(t, torch.Tensor) else np.asarray(t)
    if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.number):
        raise ValueError(f"t must be None, a number or an array of numbers, got {t!r}")
    if np.iscomplexobj(arr):
        raise ValueError(f"t must be real, got complex dtype {arr.dtype}")
    arr = arr.astype(np.float64)
    if np.isnan(arr).any():
        raise ValueError("t must not be NaN")
    if arr.size and arr.min() < 0:
        raise ValueError(f"t must be >= 0, got {arr.min():g}")
    return arr


# --------------------------------------------------------------------------------------
# the shared eigendecomposition
# --------------------------------------------------------------------------------------
class _Spectrum:
    """``k_train_train + reg I = V diag(lam) V^T`` in float64, negative ``lam`` clipped to 0."""

    def __init__(self, K: torch.Tensor, diag_reg: float, absolute: bool) -> None:
        A = K.to(torch.float64)
        n = A.shape[0]
        scale = float(A.abs().max())
        asym = float((A - A.T).abs().max())
        if asym > 1e-4 * scale:
            raise ValueError(
                f"k_train_train must be symmetric: max |K - K^T| = {asym:.3g} exceeds "
                f"1e-4 * max |K| = {1e-4 * scale:.3g}"
            )
        A = (A + A.T) / 2
        # neural-tangents: diag_reg relative to the mean diagonal, trace(K) / n
        self.reg = diag_reg if absolute else diag_reg * float(A.diagonal().sum()) / n
        lam, self.V = torch.linalg.eigh(A)
        lam = lam + self.reg
        neg = lam < 0
        if bool(neg.any()):
            warnings.warn(
                f"k_train_train + diag_reg * I has {int(neg.sum())} negative eigenvalue(s), "
                f"the most negative {float(lam[0]):.3g} (largest eigenvalue "
                f"{float(lam[-1]):.3g}); clipped to 0 as neural-tangents does (round-off of a "
                "positive semi-definite kernel; if they are not small against the largest, "
                "the kernel is not PSD)",
                RuntimeWarning,
                stacklevel=3,
            )
        self.lam = lam.clamp_min(0.0)
        self.A = A
        self.n = n
        self.tol = n * _EPS64 * float(self.lam[-1])
        self.diag_reg = diag_reg

    def check_invertible(self) -> None:
        lam_min, lam_max = float(self.lam[0]), float(self.lam[-1])
        if lam_max > 0 and lam_min > self.tol:
            return
        what = "k_train_train" if self.reg == 0 else "k_train_train + diag_reg * I"
        fix = (
            "set diag_reg > 0 (duplicate or parallel inputs make a kernel singular)"
            if self.diag_reg == 0
            else f"increase diag_reg (now {self.diag_reg:g}, {self.reg:.3g} on the diagonal)"
        )
        raise ValueError(
            f"{what} is numerically singular (smallest eigenvalue {lam_min:.3g} <= n * eps * "
            f"largest = {self.tol:.3g}), so the infinite-time / posterior solve "
            f"(k_train_train + diag_reg * I)^-1 y does not exist; {fix}"
        )

    def inverse_apply(self, B: torch.Tensor, refine: int = 1) -> torch.Tensor:
        """``(k + reg I)^-1 B`` as ``V diag(1 / lam) V^T B`` plus ``refine`` steps of iterative
        refinement (residual in float64 with the same factors), which brings the error of an
        ill-conditioned solve down to that of a backward-stable (Cholesky) solve.  Call
        :meth:`check_invertible` first."""
        X = self.V @ ((self.V.T @ B) / self.lam[:, None])
        for _ in range(refine):
            R = B - (self.A @ X + self.reg * X)
            X = X + self.V @ ((self.V.T @ R) / self.lam[:, None])
        return X


def _factory_args(
    k_train_train: Any, y_train: Any, diag_reg: Any, diag_reg_absolute_scale: Any
) -> tuple[torch.Tensor, bool, torch.Tensor, bool, float, bool]:
    K, was_numpy = _kernel(k_train_train, "k_train_train", square=True)
    y, squeeze = _targets(y_train, K.shape[0])
    diag_reg = check_real(diag_reg, "diag_reg", min_value=0.0)
    if not isinstance(diag_reg_absolute_scale, (bool, np.bool_)):
        raise ValueError(
            f"diag_reg_absolute_scale must be True or False, got {diag_reg_absolute_scale!r}"
        )
    return K, was_numpy, y.to(K.device), squeeze, diag_reg, bool(diag_reg_absolute_scale)


# --------------------------------------------------------------------------------------
# gradient descent on the MSE
# --------------------------------------------------------------------------------------
def gradient_descent_mse(
    k_train_train: Any,
    y_train: Any,
    learning_rate: float = 1.0,
    diag_reg: float = 0.0,
    diag_reg_absolute_scale: bool = False,
) -> Callable[..., Any]:
    r"""Outputs under gradient flow on the MSE, as ``nt.predict.gradient_descent_mse``.

    Convention (neural-tangents'; Lee et al., NeurIPS 2019, eq. 9-10).  With ``N = y_train.size``
    (all entries, ``n * outputs``), ``K = k_train_train + reg I`` and the loss
    ``L(f) = 1 / (2 N) * sum_ij (f_ij - y_ij)^2`` (half the mean squared error), gradient flow at
    rate ``learning_rate`` moves the outputs as
    ``df_train/dt = -(learning_rate / N) K (f_train - y)``,
    ``df_test/dt = -(learning_rate / N) k_test_train (f_train - y)``, so that

        f_train(t) = f_train(0) + (exp(-learning_rate t K / N) - I) (f_train(0) - y)
        f_test(t)  = f_test(0)
                     + k_test_train K^-1 (exp(-learning_rate t K / N) - I) (f_train(0) - y)

    i.e. every eigen-direction ``lam`` of ``K`` decays as ``exp(-learning_rate * t * lam / N)``.
    ``t`` is continuous and only ``learning_rate * t`` matters.  ``reg = diag_reg * trace(k) / n``
    (neural-tangents' relative regularizer), or ``diag_reg`` if ``diag_reg_absolute_scale``.

    Time mapping to ntkdr's gradient descent (``ntkdr.train.fit``, ``ntkdr.regression``), whose
    steps of size ``eta`` descend the SUMMED loss ``1/2 sum_ij (y_ij - f_ij)^2``, i.e.
    ``f <- f - eta K (f - y)``: flow on the mean loss for time ``t`` at rate ``learning_rate``
    equals flow on the summed loss for time ``learning_rate * t / N``, which is
    ``ntkdr.regression.gd_time_predict(..., lr=eta, t=learning_rate * t / (N * eta))``.  ``k``
    discrete steps of size ``eta`` approximate this flow at ``t = k`` with
    ``learning_rate = eta * N`` when ``eta * lambda_max(K) << 1`` (per direction ``(1 - eta lam)^k``
    against ``exp(-eta lam k)``).

    Args:
      k_train_train: ``(n, n)`` symmetric PSD kernel of the training inputs.
      y_train: ``(n, outputs)`` targets (or ``(n,)``, then outputs are 1-D as well).  The
        kernel acts on the first axis; outputs share it (neural-tangents' default
        ``trace_axes=(-1,)``).
      learning_rate: ``> 0``.
      diag_reg: ``>= 0``, relative to ``trace(k_train_train) / n`` unless
        ``diag_reg_absolute_scale``.

    Returns:
      ``predict_fn(t=None, fx_train_0=0., fx_test_0=None, k_test_train=None)``:

      * ``t``: ``None`` (infinite time: ``f_train = y_train`` and
        ``f_test = f_test(0) + k_test_train K^-1 (y - f_train(0))``), a number, or an array of
        times of any shape (``>= 0``, ``inf`` allowed), which become leading axes of the outputs.
      * ``fx_train_0`` / ``fx_test_0``: initial outputs on the training / test inputs, a number
        or an array of shape ``y_train.shape`` / ``(n_test,) + y_train.shape[1:]``; ``None``
        means "do not predict there" (``fx_train_0=None`` then counts as 0 in the test
        predictions, as in neural-tangents).
      * ``k_test_train``: ``(n_test, n)``, needed when ``fx_test_0`` is given (ignored otherwise).

      It returns ``(fx_train_t, fx_test_t)`` when both initial outputs are given, else the one
      array asked for -- exactly as neural-tangents.

    Differences from neural-tangents 0.6.5: kernels are 2-D matrices (no ``trace_axes``,
    no ``Kernel`` objects); ``t`` must not be negative or NaN; ``t=None`` reuses the
    eigendecomposition instead of a Cholesky factorization and raises ``ValueError`` for a
    numerically singular ``K`` instead of returning NaN; an exactly zero eigenvalue leaves
    its direction fixed (neural-tangents computes ``0/0``), like a clipped negative one.
    """
    K, was_numpy, y, squeeze, diag_reg, absolute = _factory_args(
        k_train_train, y_train, diag_reg, diag_reg_absolute_scale
    )
    learning_rate = check_real(learning_rate, "learning_rate", positive=True)
    spec = _Spectrum(K, diag_reg, absolute)
    n, c = y.shape
    size = y.numel()
    dev, dtype = K.device, K.dtype
    out_tail = (n,) if squeeze else (n, c)

    def finish(v: torch.Tensor) -> Any:
        return to_output((v[..., 0] if squeeze else v).to(dtype), was_numpy)

    def predict_fn(
        t: Any = None,
        fx_train_0: Any = 0.0,
        fx_test_0: Any = None,
        k_test_train: Any = None,
    ) -> Any:
        if fx_train_0 is None and fx_test_0 is None:
            raise ValueError(
                "both fx_train_0 and fx_test_0 are None, so there is nothing to predict"
            )
        if fx_test_0 is not None and k_test_train is None:
            raise ValueError("to predict on the test set (fx_test_0 given), pass k_test_train")
        f0 = _initial(fx_train_0, "fx_train_0", out_tail, dev)
        KT = None
        if fx_test_0 is not None:
            KT, _ = _kernel(k_test_train, "k_test_train", cols=n)
            KT = KT.to(device=dev, dtype=torch.float64)
            test_shape = (KT.shape[0],) if squeeze else (KT.shape[0], c)
            g0 = _initial(fx_test_0, "fx_test_0", test_shape, dev)
            g0 = g0[..., None] if squeeze and isinstance(g0, torch.Tensor) else g0
        f0 = f0[..., None] if squeeze and isinstance(f0, torch.Tensor) else f0
        r0 = -y if f0 is None else f0 - y  # (n, c) or broadcastable

        if t is None:
            train = test = None
            if f0 is not None:
                train = y.clone()
            if KT is not None:
                spec.check_invertible()
                test = g0 - KT @ spec.inverse_apply(r0)
        else:
            ts = _times(t)
            tshape = ts.shape
            s = torch.from_numpy(ts.reshape(-1, 1)).to(dev) * (learning_rate / size)  # (T, 1)
            pos = spec.lam > 0
            x = torch.where(pos, spec.lam, 0.0) * torch.where(pos, s, 0.0)  # no 0 * inf
            e = torch.where(pos, torch.expm1(-x), 0.0)  # (T, n): exp(-s lam) - 1
            R = spec.V.T @ r0  # (n, c)
            train = test = None
            if f0 is not None:
                train = f0 + spec.V @ (e[:, :, None] * R)  # (T, n, c)
                train = train.reshape(tshape + (n, c))
            if KT is not None:
                if bool(torch.isinf(s).any()):
                    spec.check_invertible()
                h = e / torch.where(pos, spec.lam, 1.0)  # (exp(-s lam) - 1) / lam
                test = g0 + (KT @ spec.V) @ (h[:, :, None] * R)
                test = test.reshape(tshape + (KT.shape[0], c))
        if train is not None and test is not None:
            return finish(train), finish(test)
        return finish(train if test is None else test)

    return predict_fn


# --------------------------------------------------------------------------------------
# Gaussian-process inference
# --------------------------------------------------------------------------------------
def gp_inference(
    k_train_train: Any,
    y_train: Any,
    diag_reg: float = 0.0,
    diag_reg_absolute_scale: bool = False,
) -> Callable[..., Any]:
    r"""Posterior of the Gaussian process with prior covariance ``k`` (``nt.predict.gp_inference``).

    With ``K = k_train_train + reg I`` (``reg = diag_reg * trace(k_train_train) / n``, or
    ``diag_reg`` if ``diag_reg_absolute_scale``, as in neural-tangents):

        mean       = k_test_train K^-1 y_train
        covariance = k_test_test - k_test_train K^-1 k_test_train^T

    For the NNGP this is the exact posterior of an infinitely wide Bayesian network (Lee et al.,
    ICLR 2018); for the NTK the mean is the infinite-time limit of gradient flow
    (:func:`gradient_descent_mse` with ``t=None``, Lee et al., NeurIPS 2019; Arora et al.,
    NeurIPS 2019), and the pair is the "NTKGP" posterior.  ``K^-1`` is applied through one float64
    eigendecomposition computed here (plus one step of iterative refinement); the covariance is
    symmetrized exactly.

    Args:
      k_train_train: ``(n, n)`` symmetric PSD kernel of the training inputs.
      y_train: ``(n, outputs)`` or ``(n,)`` targets; outputs share the kernel.
      diag_reg: ``>= 0``, relative unless ``diag_reg_absolute_scale``.

    Returns:
      ``predict_fn(k_test_train, k_test_test=None)``: the posterior mean, shape
      ``(n_test,) + y_train.shape[1:]``, or ``Gaussian(mean, covariance)`` (a named pair) when
      ``k_test_test`` (``(n_test, n_test)``) is given.  ``k_test_train=None`` gives the training
      set, ``y_train`` (and a zero ``(n, n)`` covariance if ``k_test_test`` is not None), as in
      neural-tangents.

    Raises:
      ValueError: when ``K`` is numerically singular (``lam_min <= n * eps * lam_max``), e.g.
        duplicate inputs with ``diag_reg=0``; no jitter is added silently.

    Differences from neural-tangents 0.6.5: one precomputed kernel, so no ``get`` argument;
    the result is that of ``get="nngp"`` (or ``"ntkgp"`` when given the NTK).  Its ``get="ntk"``
    covariance, which needs both the NTK and the NNGP, is not offered.  The factorization
    happens here, not on the first call, and a singular ``K`` raises instead of giving NaN.
    """
    K, was_numpy, y, squeeze, diag_reg, absolute = _factory_args(
        k_train_train, y_train, diag_reg, diag_reg_absolute_scale
    )
    spec = _Spectrum(K, diag_reg, absolute)
    spec.check_invertible()
    n, c = y.shape
    alpha = spec.inverse_apply(y)  # (n, c)

    def finish(v: torch.Tensor, vector: bool = True) -> Any:
        return to_output((v[:, 0] if squeeze and vector else v).to(K.dtype), was_numpy)

    def predict_fn(k_test_train: Any, k_test_test: Any = None) -> Any:
        if k_test_train is None:
            mean = finish(y.clone())
            if k_test_test is None:
                return mean
            return Gaussian(mean, finish(torch.zeros_like(K, dtype=torch.float64), False))
        KT, _ = _kernel(k_test_train, "k_test_train", cols=n)
        KT = KT.to(device=K.device, dtype=torch.float64)
        mean = finish(KT @ alpha)
        if k_test_test is None:
            return mean
        m = KT.shape[0]
        Ktt, _ = _kernel(k_test_test, "k_test_test", rows=m)
        cov = Ktt.to(device=K.device, dtype=torch.float64) - KT @ spec.inverse_apply(KT.T)
        cov = (cov + cov.T) / 2  # exactly symmetric
        return Gaussian(mean, finish(cov, False))

    return predict_fn
