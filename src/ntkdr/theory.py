"""Quantities of the prior analysis (SPEC section 2, "Quantities of the prior analysis").

Everything here depends on the data only through a kernel Gram matrix ``H`` (for the two-layer
ReLU network with only the first layer trained, ``H = H1(X, X)``; for the factorized network,
``H = H1(SX, SX)``) and, for the bounds, on the targets ``y``:

* :func:`eigh`, :func:`lambda_min`, :func:`lambda_max`, :func:`spectrum_summary` -- spectra;
* :func:`generalization_bound` -- Arora et al. (ICML 2019) Thm 5.1, ``sqrt(2 y^T H^-1 y / n)``;
* :func:`predicted_trajectory` / :func:`predicted_loss` -- Arora et al. Thm 4.1, the linearised
  GD residual ``||(I - lr H)^t (y - u0)||``;
* :func:`width_requirements` -- Du et al. (ICLR 2019) Thm 4.1 and Arora et al. Thm 4.1 widths;
* :func:`jl_min_dim` -- Johnson-Lindenstrauss minimum dimension;
* :func:`cost` -- parameters and multiply-adds of dense vs factorized two-layer networks.

**Constants.** The theorems are stated with ``O(.)`` / ``Omega(.)``; every hidden constant is set
to 1 here.  The numbers are orders of magnitude that show how the requirements scale with
``n``, ``lambda_0``, ``delta``, ``eps``; they are not certified thresholds.

**GD convention** (shared with :mod:`ntkdr.train` and :mod:`ntkdr.regression`): the loss is
``L = 1/2 * sum_i (y_i - u_i)^2`` -- summed, not averaged -- and one full-batch step with step size
``lr`` moves the predictions, in the linearised (NTK) regime, by
``u(t+1) - y = (I - lr H)(u(t) - y)``, with ``H`` the NTK Gram matrix ``J J^T``.  For a model that
is linear in its parameters this is an exact identity.  Dividing the loss by ``n`` is the same as
using ``lr / n`` here.

**Numerics.** Inputs are numpy arrays, torch tensors or nested lists (validated by
:mod:`ntkdr.validation`; ``ValueError`` names the problem).  Spectra and solves are computed in
float64 (on the input's device) whatever the input dtype; tolerances that decide "numerically
zero" use the *input* dtype's machine epsilon, because that is the precision ``H`` was computed
in.  Scalars are returned as Python ``float``; :func:`eigh` returns the input kind and dtype;
trajectories are returned as float64 numpy arrays.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass
from numbers import Real
from typing import Any

import numpy as np
import scipy.linalg
import torch

from .validation import as_labels, as_matrix, check_choice, check_int, check_real, to_output

__all__ = [
    "SingularKernelWarning",
    "BoundResult",
    "eigh",
    "lambda_min",
    "lambda_max",
    "spectrum_summary",
    "generalization_bound",
    "predicted_trajectory",
    "predicted_loss",
    "width_requirements",
    "jl_min_dim",
    "cost",
    "SKETCH_KINDS",
    "CONSTANTS_NOTE",
]

CONSTANTS_NOTE = (
    "all constants hidden in O(.) / Omega(.) are set to 1: these are orders of magnitude "
    "showing how the requirements scale, not certified thresholds"
)

SKETCH_KINDS = ("gaussian", "sparse", "srht", "pca", "identity")

# Relative tolerance (w.r.t. max |H_ij|) for the symmetry check, keyed by the input dtype.
# Loose enough for kernels assembled from tiles K(X_i, X_j) / K(X_j, X_i) computed by
# different GEMMs, tight enough to catch a matrix that is not a Gram matrix.
_SYM_RTOL = {torch.float32: 1e-4, torch.float64: 1e-10}

_DUPLICATE_HINT = (
    "duplicate or parallel inputs make lambda_0 = lambda_min(H1) = 0 "
    "(see ntkdr.validation.find_parallel_rows)"
)


class SingularKernelWarning(UserWarning):
    """The Gram matrix is singular or not numerically positive definite (lambda_min ~ 0)."""


# --------------------------------------------------------------------------------------------
# validation helpers
# --------------------------------------------------------------------------------------------
def _as_gram(H: Any, name: str = "H") -> tuple[torch.Tensor, bool, torch.dtype]:
    """Validate a real symmetric square matrix.

    Returns ``(H64, was_numpy, input_dtype)`` where ``H64`` is the symmetrised float64 copy on
    the input's device.
    """
    t, was_numpy = as_matrix(H, name)
    t = t.detach()
    n0, n1 = t.shape
    if n0 != n1:
        raise ValueError(f"{name} must be square (n, n), got shape {(n0, n1)}")
    in_dtype = t.dtype
    scale = float(t.abs().max())
    asym = float((t - t.T).abs().max())
    if asym > _SYM_RTOL[in_dtype] * max(scale, torch.finfo(in_dtype).tiny):
        raise ValueError(
            f"{name} must be symmetric: max |{name} - {name}^T| = {asym:.3g} exceeds "
            f"{_SYM_RTOL[in_dtype]:g} * max |{name}| = {_SYM_RTOL[in_dtype] * scale:.3g} ({in_dtype})"
        )
    H64 = t.to(torch.float64)
    if scale <= torch.finfo(torch.float64).max / 2:
        H64 = 0.5 * (H64 + H64.T)
    else:  # H + H^T would overflow; halving first is exact there (no subnormals involved)
        H64 = 0.5 * H64 + 0.5 * H64.T
    return H64, was_numpy, in_dtype


def _zero_tol(lmax: float, n: int, dtype: torch.dtype) -> float:
    """Eigenvalues ``<= n * eps(dtype) * |lambda_max|`` are numerically zero (numpy matrix_rank rule)."""
    return n * float(torch.finfo(dtype).eps) * abs(lmax)


# Outside 2^-256 <= max |H| <= 2^256 the eigen-solvers are fed H scaled by a power of two
# (exact) and the eigenvalues scaled back where representable: eigenvalues reach n max |H|, so
# near the float64 maximum the solvers return inf (and the zero tolerance n eps lambda_max
# with it), while the scaled problem decides "numerically singular" correctly.  (The scipy
# "leading minor of order 2 of B is not positive definite" error near the maximum came from
# inf entries of the overflowing symmetrisation 0.5 (H + H^T), fixed in _as_gram.)  Inside the
# range -- LAPACK ?syevr's own safe range for the norm -- H is passed through without a copy.
_SAFE_EXP = 256


def _pow2_scaled(H64: torch.Tensor) -> tuple[torch.Tensor, int]:
    """``(H64 * 2^-e, e)`` with ``max |H64 2^-e|`` in [0.5, 1), or ``(H64, 0)`` inside the safe range."""
    m = float(H64.abs().max()) if H64.numel() else 0.0
    e = math.frexp(m)[1]
    if m == 0.0 or -_SAFE_EXP <= e <= _SAFE_EXP:
        return H64, 0
    return _times_pow2(H64, -e), e


def _unscale(v: float, e: int) -> float:
    """``v * 2^e`` as a float, +-inf where it leaves the float64 range."""
    try:
        return math.ldexp(v, e)
    except OverflowError:
        return math.copysign(math.inf, v)


def _overflow(what: str, value_s: float, e: int) -> ValueError:
    return ValueError(
        f"{what} of H is beyond the float64 range (about {value_s:.6g} * 2^{e}); rescale H"
    )


def _max_exponent(T: torch.Tensor) -> int:
    """``e`` with ``max |T| = f 2^e``, ``f`` in [0.5, 1); 0 for an all-zero (or non-finite) T."""
    m = float(T.abs().max()) if T.numel() else 0.0
    return math.frexp(m)[1] if math.isfinite(m) else 0


def _times_pow2(T: torch.Tensor, e: int) -> torch.Tensor:
    """``T * 2^e``, exact, in two half steps (``2^e`` alone may leave the float64 range)."""
    h = e // 2
    return T * math.ldexp(1.0, h) * math.ldexp(1.0, e - h)


def _ldexp_checked(v: torch.Tensor, e: int, what: str) -> torch.Tensor:
    """``v * 2^e`` (float64 tensor); ``ValueError`` if an entry leaves the float64 range."""
    out = _times_pow2(v, e)
    bad = ~torch.isfinite(out)
    if bool(bad.any()):
        raise _overflow(what, float(v[bad][0]), e)
    return out


def _eigvalsh64(H64: torch.Tensor) -> np.ndarray:
    """All eigenvalues, ascending, float64 numpy (one tridiagonalisation); H64 pre-scaled."""
    if H64.device.type == "cpu":
        return scipy.linalg.eigh(
            H64.numpy(), eigvals_only=True, driver="evr", check_finite=False
        ).astype(np.float64)
    return torch.linalg.eigvalsh(H64).cpu().numpy()


def _extreme64(H64: torch.Tensor, which: str) -> float:
    n = H64.shape[0]
    if H64.device.type == "cpu" and which == "max" and n > 256:
        # The top eigenvalue of a PSD Gram matrix is well separated: Lanczos (ARPACK) gets it to
        # round-off with a few dozen mat-vecs, ~50x cheaper than a dense solve at n = 1000.
        from scipy.sparse.linalg import eigsh

        val = eigsh(H64.numpy(), k=1, which="LA", return_eigenvectors=False, tol=0, v0=np.ones(n))
        return float(val[0])
    if H64.device.type == "cpu":
        idx = 0 if which == "min" else n - 1
        # ?syevr with a one-index subset: no eigenvectors, ~10% cheaper than all eigenvalues.
        val = scipy.linalg.eigh(
            H64.numpy(),
            eigvals_only=True,
            subset_by_index=[idx, idx],
            driver="evr",
            check_finite=False,
        )
        return float(val[0])
    ev = torch.linalg.eigvalsh(H64)
    return float(ev[0] if which == "min" else ev[-1])


def _singular_message(
    lmin: float, lmax: float, tol: float, name: str = "H", e: int = 0
) -> str | None:
    """The warning for ``lmin <= tol``; arguments in units of ``2^e`` (printed scaled back)."""
    if lmin > tol:
        return None
    lmin, lmax, tol = _unscale(lmin, e), _unscale(lmax, e), _unscale(tol, e)
    if lmin <= 0:
        return (
            f"{name} is singular or indefinite: lambda_min = {lmin:.3e} <= 0 "
            f"(lambda_max = {lmax:.3e}); {_DUPLICATE_HINT}"
        )
    if lmin <= tol:
        return (
            f"{name} is numerically singular: lambda_min = {lmin:.3e} <= n * eps * lambda_max = "
            f"{tol:.3e} (lambda_max = {lmax:.3e}); {_DUPLICATE_HINT}"
        )
    return None


# --------------------------------------------------------------------------------------------
# spectra
# --------------------------------------------------------------------------------------------
def eigh(H: Any) -> tuple[Any, Any]:
    """Eigen-decomposition of a symmetric matrix, eigenvalues ascending.

    Computed in float64 with ``torch.linalg.eigh`` on the symmetrised matrix; returned as
    ``(eigenvalues (n,), eigenvectors (n, n))`` (columns are eigenvectors) in the input's kind
    (numpy or torch), dtype and device.  Raises ``ValueError`` if ``H`` is not a finite, real,
    square, symmetric matrix (symmetry tolerance: 1e-4 relative for float32, 1e-10 for float64).
    """
    t_in, was_numpy = as_matrix(H, "H")  # for the output dtype / device
    t_in = t_in.detach()
    H64, _, _ = _as_gram(t_in, "H")
    Hs, e = _pow2_scaled(H64)
    evals, evecs = torch.linalg.eigh(Hs)
    if e:
        evals = _ldexp_checked(evals, e, "an eigenvalue")
    return (
        to_output(evals.to(t_in.dtype), was_numpy),
        to_output(evecs.to(t_in.dtype), was_numpy),
    )


def lambda_min(H: Any, *, warn: bool = True) -> float:
    """Smallest eigenvalue of the symmetric matrix ``H`` (float64 computation), as a float.

    On CPU this uses LAPACK ``?syevr`` restricted to one eigenvalue
    (``scipy.linalg.eigh(subset_by_index=[0, 0])``), without eigenvectors.  With ``warn=True`` a
    :class:`SingularKernelWarning` is emitted when ``lambda_min <= 0`` or
    ``lambda_min <= n * eps(dtype) * lambda_max`` (numerically zero; this costs a second,
    equally cheap, eigenvalue call) -- for the NTK this happens when two inputs are parallel.
    An ``H`` with entries beyond ``2^+-256`` is scaled by a power of two (exact) for the solver;
    ``ValueError`` if ``lambda_min`` itself is beyond the float64 range.
    """
    H64, _, dtype = _as_gram(H)
    Hs, e = _pow2_scaled(H64)
    lmin_s = _extreme64(Hs, "min")
    lmin = _unscale(lmin_s, e)
    if not math.isfinite(lmin):
        raise _overflow("lambda_min", lmin_s, e)
    if warn:  # decided in the scaled units: lambda_max may itself exceed the float64 range
        lmax_s = _extreme64(Hs, "max")
        msg = _singular_message(lmin_s, lmax_s, _zero_tol(lmax_s, H64.shape[0], dtype), e=e)
        if msg:
            warnings.warn(msg, SingularKernelWarning, stacklevel=2)
    return lmin


def lambda_max(H: Any) -> float:
    """Largest eigenvalue of the symmetric matrix ``H`` (float64 computation), as a float."""
    H64, _, _ = _as_gram(H)
    Hs, e = _pow2_scaled(H64)
    lmax_s = _extreme64(Hs, "max")
    lmax = _unscale(lmax_s, e)
    if not math.isfinite(lmax):
        raise _overflow("lambda_max", lmax_s, e)
    return lmax


def spectrum_summary(H: Any) -> dict[str, Any]:
    """Eigenvalue summary for reports.

    Keys: ``eigenvalues`` (float64 numpy, ascending), ``lambda_min``, ``lambda_max``,
    ``condition_number`` (``lambda_max / lambda_min``; ``inf`` if ``lambda_min <= 0``),
    ``numerical_rank`` (eigenvalues above ``n * eps(dtype) * lambda_max``), ``zero_tol``,
    ``effective_rank`` (``exp`` of the Shannon entropy of ``|lambda| / sum |lambda|``,
    Roy & Vetterli 2007), ``stable_rank`` (``trace / lambda_max``), ``is_pd`` (``lambda_min`` above
    the zero tolerance), ``n``.  No warning is emitted (``is_pd`` says it).
    """
    H64, _, dtype = _as_gram(H)
    n = H64.shape[0]
    Hs, e = _pow2_scaled(H64)
    ev_s = _eigvalsh64(Hs)
    ev = _ldexp_checked(torch.from_numpy(ev_s), e, "an eigenvalue").numpy()
    lmin, lmax = float(ev[0]), float(ev[-1])
    tol = _zero_tol(lmax, n, dtype)
    a = np.abs(ev_s)  # the ratios below are scale-free: take them in the scaled units
    total = float(a.sum())
    if total > 0:
        p = a[a > 0] / total
        eff = float(np.exp(-(p * np.log(p)).sum()))
    else:
        eff = 0.0
    return {
        "n": n,
        "eigenvalues": ev,
        "lambda_min": lmin,
        "lambda_max": lmax,
        "condition_number": lmax / lmin if lmin > 0 else math.inf,
        "zero_tol": tol,
        "numerical_rank": int((ev > tol).sum()),
        "effective_rank": eff,
        "stable_rank": float(ev_s.sum()) / float(ev_s[-1]) if lmax > 0 else 0.0,
        "is_pd": bool(lmin > tol),
    }


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
    H: Any, y: Any, delta: float = 0.05, *, eigenvalues: Any = None
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
        ey = _max_exponent(Y)
        Zs = torch.linalg.solve_triangular(L, _times_pow2(Y, -ey), upper=False)
        ez = _max_exponent(Zs)
        zn = float(torch.linalg.vector_norm(_times_pow2(Zs, -ez)))
        value = _unscale(math.sqrt(2.0 / n) * zn, ey + ez)
        if not math.isfinite(value):
            raise ValueError(
                f"the generalization bound sqrt(2 y^T H^-1 y / n) is beyond the float64 range "
                f"(max |y| = {float(Y.abs().max()):.3g}, lambda_min(H) = {lmin:.3g}); rescale y or H"
            )
        complexity = _unscale(
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


def predicted_trajectory(H: Any, y: Any, lr: float, steps: int, u0: Any = None) -> np.ndarray:
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


def predicted_loss(H: Any, y: Any, lr: float, steps: int, u0: Any = None) -> np.ndarray:
    """Predicted training loss ``1/2 ||u(t) - y||^2`` (summed loss), ``t = 0..steps``; see
    :func:`predicted_trajectory`."""
    traj = predicted_trajectory(H, y, lr, steps, u0=u0)
    return 0.5 * traj**2


# --------------------------------------------------------------------------------------------
# width requirements (Du et al. 2019 Thm 4.1; Arora et al. 2019 Thm 4.1)
# --------------------------------------------------------------------------------------------
def _exp_or_inf(log_value: float) -> float:
    try:
        return math.exp(log_value)
    except OverflowError:  # beyond the float64 range (log > ~709.78)
        return math.inf


def width_requirements(
    lambda0: float,
    n: int,
    delta: float = 0.05,
    eps: float = 0.1,
    kappa: float | None = None,
) -> dict[str, Any]:
    """Widths and step sizes the prior analysis asks for; **all O(.) constants set to 1**.

    Du et al. (ICLR 2019) Thm 4.1: ``m >= n^6 / (lambda0^4 delta^3)``, ``lr <= lambda0 / n^2``;
    then ``||u(t) - y||^2 <= (1 - lr lambda0 / 2)^t ||u(0) - y||^2``.

    Arora et al. (ICML 2019) Thm 4.1: ``kappa = eps delta / sqrt(n)`` (if not given),
    ``m >= n^7 / (lambda0^4 kappa^2 delta^4 eps^2)``, ``lr <= lambda0 / n^2``; then the residual
    follows the predicted trajectory within ``eps``.

    Returned keys (all ``float``; widths can be astronomically large and become ``inf`` past the
    float64 range, their ``*_log10`` stays finite): ``du_width``, ``du_width_log10``, ``du_lr``,
    ``du_rate`` (per-step factor ``1 - du_lr * lambda0 / 2`` of the squared residual),
    ``arora_kappa``, ``arora_width``, ``arora_width_log10``, ``arora_lr``, the inputs
    ``lambda0``, ``n``, ``delta``, ``eps``, and ``note`` (a string; says that constants are 1,
    and why widths are infinite when ``lambda0 <= 0``).  ``lambda0 <= 0`` (e.g. duplicate or
    parallel inputs) is not an error: widths are ``inf``, step sizes 0, rate 1.
    """
    if (
        isinstance(lambda0, bool)
        or not isinstance(lambda0, Real)
        or not math.isfinite(float(lambda0))
    ):
        raise ValueError(f"lambda0 must be a finite number, got {lambda0!r}")
    lambda0 = float(lambda0)
    n = check_int(n, "n", min_value=1)
    delta = _check_delta(delta)
    eps = check_real(eps, "eps", positive=True)
    if kappa is None:
        kappa = eps * delta / math.sqrt(n)
    else:
        kappa = check_real(kappa, "kappa", positive=True)
    note = CONSTANTS_NOTE
    if lambda0 > 0:
        ln_n, ln_l, ln_d = math.log(n), math.log(lambda0), math.log(delta)
        du_log = 6 * ln_n - 4 * ln_l - 3 * ln_d
        ar_log = 7 * ln_n - 4 * ln_l - 2 * math.log(kappa) - 4 * ln_d - 2 * math.log(eps)
        du_width, ar_width = _exp_or_inf(du_log), _exp_or_inf(ar_log)
        du_w10, ar_w10 = du_log / math.log(10), ar_log / math.log(10)
        lr = lambda0 / n**2
        rate = 1.0 - lr * lambda0 / 2
    else:
        du_width = ar_width = du_w10 = ar_w10 = math.inf
        lr, rate = 0.0, 1.0
        note = (
            f"{note}; lambda0 = {lambda0:.3e} <= 0, so no finite width or positive step size "
            f"satisfies the theorems ({_DUPLICATE_HINT})"
        )
    return {
        "lambda0": lambda0,
        "n": float(n),
        "delta": delta,
        "eps": eps,
        "du_width": du_width,
        "du_width_log10": du_w10,
        "du_lr": lr,
        "du_rate": rate,
        "arora_kappa": kappa,
        "arora_width": ar_width,
        "arora_width_log10": ar_w10,
        "arora_lr": lr,
        "note": note,
    }


# --------------------------------------------------------------------------------------------
# Johnson-Lindenstrauss
# --------------------------------------------------------------------------------------------
def jl_min_dim(n: int, eps: float) -> int:
    """Smallest ``k`` with ``k >= 4 ln n / (eps^2 / 2 - eps^3 / 3)`` (Dasgupta & Gupta), ``0 < eps < 1``.

    Rounded up (scikit-learn's ``johnson_lindenstrauss_min_dim`` rounds down).  ``n = 1``
    (``ln 1 = 0``, nothing to preserve) returns 1, the smallest meaningful dimension.
    """
    n = check_int(n, "n", min_value=1)
    eps = check_real(eps, "eps")
    if not 0 < eps < 1:
        raise ValueError(f"eps must be in (0, 1), got {eps}")
    if n == 1:
        return 1
    return max(1, math.ceil(4 * math.log(n) / (eps**2 / 2 - eps**3 / 3)))


# --------------------------------------------------------------------------------------------
# cost model
# --------------------------------------------------------------------------------------------
def _next_pow2(d: int) -> int:
    return 1 << (d - 1).bit_length()


def cost(
    d: int,
    m: int,
    k: int | None = None,
    sketch_kind: str | None = None,
    n: int = 1,
    s: int | None = None,
    *,
    train_output: bool = False,
) -> dict[str, Any]:
    """Parameters and multiply-adds (MACs) of the dense vs the factorized two-layer ReLU net.

    Networks: dense ``f(x) = a . relu(W x) / sqrt(m)``, ``W`` (m x d); factorized
    ``f(x) = a . relu(U (S x)) / sqrt(m)``, ``U`` (m x k), ``S`` (k x d) a fixed sketch.

    Counting convention -- one multiply-add (or lone multiply) counts 1; comparisons (ReLU,
    activation masks), subtractions of the residual and the ``1/sqrt(m)`` scale (folded into
    ``a``) count 0.  For a full-batch GD step on ``n`` examples, with ``p`` = d (dense) or k
    (factorized):

    * forward: first layer ``n m p``, output layer ``n m``;
    * backward: masked back-propagated residual ``n m``, first-layer gradient ``n m p``;
      output-layer gradient ``n m`` if ``train_output``;
    * update: one MAC per trainable parameter (``m p``, plus ``m`` if ``train_output``).

    So ``train_macs_per_step = 2 n m p + 2 n m + m p`` (plus ``n m + m`` if ``train_output``).  The sketch ``S X`` of
    the training inputs is computed once, before training, and is reported separately as
    ``sketch_macs_once = n * cost(S)``, not per step (``pca``'s fitting SVD is not counted).
    Inference per example: dense ``m d + m``; factorized ``cost(S) + m k + m``.

    ``cost(S)`` per example by ``sketch_kind``: ``gaussian`` ``k d``; ``sparse`` ``s d``
    (``s`` non-zeros per column; ``s = 1``, CountSketch, if not given); ``srht``
    ``d' log2 d' + k`` (``d'`` = next power of two >= d: fast Walsh-Hadamard transform, then
    ``k`` sampled rows scaled); ``pca`` ``k d``; ``identity`` 0 (and ``k = d``).

    Defaults: ``sketch_kind=None`` means ``"gaussian"`` if ``k`` is given and ``"identity"``
    otherwise; ``k=None`` is allowed only for ``identity`` (``k = d``).

    Returns a dict: ``dense`` and ``factorized`` (each a flat dict of ints: ``params_trainable``,
    ``params_fixed`` (``a``, plus the sketch's stored numbers for factorized: gaussian/pca
    ``k d``, sparse ``s d``, srht ``d' + k`` signs and row indices, identity 0),
    ``train_macs_per_step``, ``infer_macs_per_example``, ``sketch_macs_once``,
    ``sketch_macs_per_example``); the ratios ``speedup_train``, ``speedup_infer`` (dense /
    factorized MACs) and ``param_ratio`` (dense / factorized trainable parameters); and the
    settings ``d``, ``m``, ``k``, ``n``, ``s``, ``sketch_kind``, ``d_padded`` (srht), ``convention``.
    """
    d = check_int(d, "d", min_value=1)
    m = check_int(m, "m", min_value=1)
    n = check_int(n, "n", min_value=1)
    if sketch_kind is None:
        sketch_kind = "identity" if k is None else "gaussian"
    check_choice(sketch_kind, "sketch_kind", SKETCH_KINDS)
    if k is None:
        if sketch_kind != "identity":
            raise ValueError(f"k is required for sketch_kind {sketch_kind!r}")
        k = d
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise ValueError(f"k must be an integer, got {k!r}")
    k = int(k)
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if k > d:
        raise ValueError(f"k must be <= d = {d} (a sketch reduces dimension), got {k}")
    if sketch_kind == "identity" and k != d:
        raise ValueError(f"sketch_kind 'identity' requires k = d = {d}, got k = {k}")
    if sketch_kind == "sparse":
        s = 1 if s is None else check_int(s, "s", min_value=1, max_value=k)
    elif s is not None:
        raise ValueError(
            f"s (non-zeros per column) applies only to sketch_kind 'sparse', not {sketch_kind!r}"
        )
    train_output = bool(train_output)

    d_pad = _next_pow2(d)
    if sketch_kind in ("gaussian", "pca"):
        s_macs, s_stored = k * d, k * d
    elif sketch_kind == "sparse":
        s_macs, s_stored = s * d, s * d
    elif sketch_kind == "srht":
        s_macs, s_stored = d_pad * int(math.log2(d_pad)) + k, d_pad + k
    else:  # identity
        s_macs, s_stored = 0, 0

    def net(p: int, sketch_per_example: int, stored: int) -> dict[str, int]:
        fwd = n * m * p + n * m
        bwd = n * m + n * m * p + (n * m if train_output else 0)
        trainable = m * p + (m if train_output else 0)
        return {
            "params_trainable": trainable,
            "params_fixed": (0 if train_output else m) + stored,
            "train_macs_per_step": fwd + bwd + trainable,
            "infer_macs_per_example": sketch_per_example + m * p + m,
            "sketch_macs_once": n * sketch_per_example,
            "sketch_macs_per_example": sketch_per_example,
        }

    dense = net(d, 0, 0)
    fact = net(k, s_macs, s_stored)
    return {
        "dense": dense,
        "factorized": fact,
        "speedup_train": dense["train_macs_per_step"] / fact["train_macs_per_step"],
        "speedup_infer": dense["infer_macs_per_example"] / fact["infer_macs_per_example"],
        "param_ratio": dense["params_trainable"] / fact["params_trainable"],
        "d": d,
        "m": m,
        "k": k,
        "n": n,
        "s": s,
        "sketch_kind": sketch_kind,
        "d_padded": d_pad if sketch_kind == "srht" else d,
        "train_output": train_output,
        "convention": (
            "multiply-adds; train step = forward (n m p + n m) + backward (n m + n m p [+ n m]) "
            "+ update (one per trainable parameter), p = d dense / k factorized; sketch of the "
            "training set computed once (sketch_macs_once), not per step; inference = cost(S) + m p + m"
        ),
    }
