"""Conjugate-gradient NTK regression: block, Jacobi-preconditioned CG, local or distributed over ranks, on a matrix-free kernel operator.

:func:`conjugate_gradient` solves ``(K + ridge I) alpha = b`` for a matrix-free operator;
:func:`kernel_operator` / :func:`kernel_cg_fit` build the operator ``v -> (K(X, X) + ridge I) v``
from a kernel object (:class:`ntkdr.kernels.AnalyticNTK`), computed tile by tile under the
kernel's memory budget and, under ``torch.distributed`` (``torchrun``), split by rows over the
ranks: rank ``r`` computes the rows :func:`ntkdr.training.distributed.shard_indices` of ``K v``
and an all-reduce assembles the product, so every rank runs the same CG iterations and holds
the same solution (that of one process, to round-off).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning

from ntkdr.regression.solvers import _as_2d_targets
from ntkdr.training.collectives import ranks_agree
from ntkdr.validation import ArrayLike, as_labels, as_matrix, check_int, check_real, to_output

__all__ = ["CGResult", "conjugate_gradient", "kernel_operator", "kernel_cg_fit"]


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
    from ntkdr.training import distributed as D

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


def _check_same_on_ranks(t: torch.Tensor, name: str) -> None:
    """Raise on every rank unless ``t`` is the same on all ranks (distributed mode only).

    Compares a fingerprint (shape, sum, sum of squares and a row-weighted sum, in float64)
    with :func:`~ntkdr.training.collectives.ranks_agree`: equal inputs give equal
    fingerprints bit for bit, so any difference means the ranks were given different data
    (a silent mix otherwise).
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
    if not ranks_agree(f):
        raise ValueError(
            f"distributed CG: {name} differs between ranks; pass the same full {name} on every rank "
            "(each rank computes its own rows of the kernel product from the full data)"
        )


def _all_reduce_max(t: torch.Tensor) -> torch.Tensor:
    """Element-wise maximum of ``t`` over the ranks, in place (called in distributed mode only)."""
    torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
    return t


def conjugate_gradient(
    matvec: Callable[[torch.Tensor], torch.Tensor],
    b: ArrayLike,
    *,
    x0: ArrayLike | None = None,
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
    bt = b if isinstance(b, torch.Tensor) else torch.as_tensor(np.asarray(b))
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
        from ntkdr.training import distributed as D

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
        from ntkdr.training import distributed as D

        self.kernel, self.X, self.ridge = kernel, X, ridge
        self.rows = D.shard_slice(X.shape[0], D.rank(), D.world_size()) if use_dist else None
        self.n_calls = 0

    def __call__(self, v: torch.Tensor) -> torch.Tensor:
        from ntkdr.training import distributed as D

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


def kernel_operator(
    kernel: Any, X: ArrayLike, *, ridge: float = 0.0, distributed: bool | None = None
):
    """The matrix-free operator ``v -> (K(X, X) + ridge I) v`` for :func:`conjugate_gradient`.

    ``kernel`` is an :class:`ntkdr.kernels.NTK` (any object with ``matvec(X, v, Z=None)`` and
    ``diag(X)``); its ``options`` (``max_memory``, ``tile``, ``dtype``, ``device``) bound the
    tiles: ``K`` is produced a tile of rows at a time and multiplied into ``v`` at once, so the
    ``n x n`` matrix never exists .  ``v`` is cast to the kernel's dtype for the
    product; the result has ``v``'s dtype (the CG recurrences may run in float64 over a float32
    kernel).

    ``distributed`` (``None``: on when a group with more than one rank is initialised): rank
    ``r`` of ``W`` computes only the rows :func:`ntkdr.training.distributed.shard_indices` ``(n, r, W)``
    of ``K v`` (``K(X[shard], X) v``), puts them in an ``(n, c)`` zero block and the blocks are
    summed by :func:`ntkdr.training.distributed.all_reduce_sum`: every rank gets the same full product
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
    X: ArrayLike,
    y: ArrayLike,
    ridge: float,
    *,
    tol: float | None = None,
    max_iter: int | None = None,
    x0: ArrayLike | None = None,
    callback: Callable[[int, np.ndarray], Any] | None = None,
    progress: bool = False,
    distributed: bool | None = None,
) -> CGResult:
    """Dual coefficients ``alpha = (K(X, X) + ridge I)^-1 y`` by matrix-free CG .

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
