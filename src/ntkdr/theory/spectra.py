"""Spectra of kernel Gram matrices: eigen-decompositions, extreme eigenvalues and the validation of ``H`` shared by :mod:`ntkdr.theory`.

Everything in :mod:`ntkdr.theory` depends on the data only through a kernel Gram matrix ``H``
(for the two-layer ReLU network with only the first layer trained, ``H = H1(X, X)``; for the
factorized network, ``H = H1(SX, SX)``) and, for the bounds, on the targets ``y``.

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
from typing import Any

import numpy as np
import scipy.linalg
import torch

from ntkdr._numerics import ldexp_or_inf, times_pow2
from ntkdr.validation import (
    ArrayLike,
    as_matrix,
    check_symmetric,
    to_output,
)

__all__ = [
    "SingularKernelWarning",
    "eigh",
    "lambda_min",
    "lambda_max",
    "spectrum_summary",
    "top_eigenvalue",
]

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
    check_symmetric(t, name)
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
    return times_pow2(H64, -e), e


def _overflow(what: str, value_s: float, e: int) -> ValueError:
    return ValueError(
        f"{what} of H is beyond the float64 range (about {value_s:.6g} * 2^{e}); rescale H"
    )


def _ldexp_checked(v: torch.Tensor, e: int, what: str) -> torch.Tensor:
    """``v * 2^e`` (float64 tensor); ``ValueError`` if an entry leaves the float64 range."""
    out = times_pow2(v, e)
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


def top_eigenvalue(H64: torch.Tensor, *, magnitude: bool = False) -> float:
    """The largest eigenvalue (``magnitude=True``: the largest ``|eigenvalue|``, i.e. ``||H||_2``)
    of a symmetric float64 matrix: the one copy used by the spectra, training's NTK drift and
    the step-size rules.

    On the CPU above n = 256 it runs Lanczos (ARPACK): the top eigenvalue of a Gram matrix is
    well separated, so a few dozen mat-vecs give it to round-off, ~50x cheaper than a dense
    solve at n = 1000.
    """
    n = H64.shape[0]
    if H64.device.type == "cpu" and n > 256:
        from scipy.sparse.linalg import eigsh

        which = "LM" if magnitude else "LA"
        val = eigsh(H64.numpy(), k=1, which=which, return_eigenvectors=False, tol=0, v0=np.ones(n))
        return float(abs(val[0])) if magnitude else float(val[0])
    ev = torch.linalg.eigvalsh(H64)
    return float(ev.abs().max()) if magnitude else float(ev[-1])


def _extreme64(H64: torch.Tensor, which: str) -> float:
    n = H64.shape[0]
    if H64.device.type == "cpu" and which == "max" and n > 256:
        return top_eigenvalue(H64)
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
    lmin, lmax, tol = ldexp_or_inf(lmin, e), ldexp_or_inf(lmax, e), ldexp_or_inf(tol, e)
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
def eigh(H: ArrayLike) -> tuple[Any, Any]:
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


def lambda_min(H: ArrayLike, *, warn: bool = True) -> float:
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
    lmin = ldexp_or_inf(lmin_s, e)
    if not math.isfinite(lmin):
        raise _overflow("lambda_min", lmin_s, e)
    if warn:  # decided in the scaled units: lambda_max may itself exceed the float64 range
        lmax_s = _extreme64(Hs, "max")
        msg = _singular_message(lmin_s, lmax_s, _zero_tol(lmax_s, H64.shape[0], dtype), e=e)
        if msg:
            warnings.warn(msg, SingularKernelWarning, stacklevel=2)
    return lmin


def lambda_max(H: ArrayLike) -> float:
    """Largest eigenvalue of the symmetric matrix ``H`` (float64 computation), as a float."""
    H64, _, _ = _as_gram(H)
    Hs, e = _pow2_scaled(H64)
    lmax_s = _extreme64(Hs, "max")
    lmax = ldexp_or_inf(lmax_s, e)
    if not math.isfinite(lmax):
        raise _overflow("lambda_max", lmax_s, e)
    return lmax


def spectrum_summary(H: ArrayLike) -> dict[str, Any]:
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
