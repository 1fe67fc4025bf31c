r"""Finite-width (empirical) NTK (Jacot et al. 2018) ``Theta(x, z) = J(x) J(z)^T``,
``J = df/dp`` over the parameters that require grad, for the dense and
factorized two-layer nets of Ailon & Shit (arXiv 2210.04807) and for any ``nn.Module``.

Three methods:

* ``closed`` -- :class:`~ntkdr.models.TwoLayerReLU` with one output, no autograd.  With
  ``F = phi(X)`` the features (X, or S X), ``P = F W^T``, ``A = 1[P >= 0]`` and ``R = relu(P)``:

      first layer W (or U):  Theta_W = (F_X F_Z^T) o (A_X diag(a^2) A_Z^T) / m
      output layer a:        Theta_a = R_X R_Z^T / m
      sketch S (train_sketch): Theta_S = (X Z^T) o (G_X G_Z^T),  G = (A o a^T) U / sqrt(m)

  (with ``sketch.renormalize`` the S-gradient goes through ``F = y / |y|``, ``y = S x``, and
  ``G`` becomes ``(G - (G . F) F) / |y|`` row-wise).  Two GEMMs for the first-layer term plus
  one elementwise pass over the mask.
* ``jacobian`` -- any ``nn.Module``: ``torch.func.vmap(jacrev)`` per row, in row chunks sized by
  ``max_memory``, ``Theta = sum_params J_X J_Z^T``.
* ``projected`` -- ``(1/k') (J P)(J P)^T`` with ``P`` (p x k') standard Gaussian, generated per
  column from the seed (never stored whole) and applied with forward-mode ``jvp``; see
  :func:`ntk_projected`, which also returns the standard error of each entry.

Output shapes: ``(n, n')`` when the model has one output per example, else ``(n, n', c, c)``
with ``Theta[i, j, a, b] = J_a(x_i) . J_b(z_j)`` (closed form: one output only).  numpy in ->
numpy out; the kernel has the model's dtype and device.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, NamedTuple

import torch
from torch import nn
from torch.func import functional_call, jacrev, jvp, vmap

from ntkdr._numerics import mirror_upper_
from ntkdr.memory import DEFAULT_MAX_MEMORY, check_max_memory, working_budget
from ntkdr.nets.models import TwoLayerReLU, derive_seed, model_dtype_device
from ntkdr.validation import ArrayLike, as_matrix, check_choice, check_int, check_same_d, to_output

__all__ = [
    "empirical_ntk",
    "ntk",
    "ntk_closed",
    "ntk_jacobian",
    "ntk_projected",
    "ProjectedNTK",
    "DEFAULT_MAX_MEMORY",
]


class ProjectedNTK(NamedTuple):
    """Result of :func:`ntk_projected`.

    ``kernel`` -- the estimate ``(1/k') (J_X P)(J_Z P)^T``;
    ``stderr`` -- per-entry standard error ``sqrt((Theta_xx Theta_zz + Theta_xz^2) / k')`` (the
    exact standard deviation of a Gaussian-projection estimate, with the estimate plugged in);
    ``k_proj`` -- the number of random directions k'.
    """

    kernel: Any
    stderr: Any
    k_proj: int

    @property
    def relative_error(self) -> float:
        """Expected relative Frobenius error ``||stderr||_F / ||kernel||_F`` (E||est - Theta||_F^2 = ||stderr||_F^2)."""
        k = torch.as_tensor(self.kernel)
        s = torch.as_tensor(self.stderr)
        return float(s.norm() / k.norm().clamp_min(torch.finfo(k.dtype).tiny))


# ----------------------------------------------------------------------------- helpers
def _prepare(model: nn.Module, X: Any, Z: Any) -> tuple[torch.Tensor, torch.Tensor | None, bool]:
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    dtype, device = model_dtype_device(model)
    Xt, was_numpy = as_matrix(X, "X", dtype=dtype, device=device)
    d = getattr(model, "d", None)
    if isinstance(d, int) and Xt.shape[1] != d:
        raise ValueError(f"X has {Xt.shape[1]} features but the model expects d = {d}")
    Zt = None
    if Z is not None:
        Zt, _ = as_matrix(Z, "Z", dtype=dtype, device=device)
        check_same_d(Xt, Zt)
    return Xt, Zt, was_numpy


# Rows per tile of the symmetric closed form (K(X, X)): upper-triangle GEMMs save
# (1 - 1/tiles) / 2 of their work.
_SYM_ROWS = 256


def _closed_supported(model: nn.Module) -> bool:
    return isinstance(model, TwoLayerReLU) and model.out_dim == 1


def _budget(max_memory: float | str | None) -> int:
    """Bytes for Jacobian chunks, masks and jvp batches (:mod:`ntkdr.memory`; None: the default)."""
    return int(working_budget(check_max_memory(max_memory)))


def _rows_per_chunk(bytes_per_row: int, max_memory: int, chunk: int | None, n: int) -> int:
    if chunk is not None:
        return check_int(chunk, "chunk", min_value=1)
    return max(1, min(n, max_memory // max(1, bytes_per_row)))


# ----------------------------------------------------------------------------- public API
def empirical_ntk(
    model: nn.Module,
    X: ArrayLike,
    Z: ArrayLike | None = None,
    *,
    method: str = "auto",
    chunk: int | None = None,
    max_memory: float | str | None = None,
    k_proj: int = 256,
    seed: int = 0,
) -> Any:
    """Empirical NTK of ``model`` between the rows of ``X`` and of ``Z`` (``Z=None``: ``Z = X``).

    ``method="auto"`` uses the closed form for a single-output :class:`TwoLayerReLU` and the
    ``torch.func`` Jacobian otherwise; ``"projected"`` returns only the estimate of
    :func:`ntk_projected` (call that for its standard errors).  ``chunk`` fixes the number of
    rows per block (else it is chosen from ``max_memory`` bytes).
    """
    method = check_choice(method, "method", ("auto", "closed", "jacobian", "projected"))
    if method == "auto":
        method = "closed" if _closed_supported(model) else "jacobian"
    if method == "closed":
        return ntk_closed(model, X, Z, chunk=chunk, max_memory=max_memory)
    if method == "jacobian":
        return ntk_jacobian(model, X, Z, chunk=chunk, max_memory=max_memory)
    return ntk_projected(
        model, X, Z, k_proj=k_proj, seed=seed, chunk=chunk, max_memory=max_memory
    ).kernel


def ntk_closed(
    model: TwoLayerReLU,
    X: ArrayLike,
    Z: ArrayLike | None = None,
    *,
    chunk: int | None = None,
    max_memory: float | str | None = None,
) -> Any:
    """Closed-form empirical NTK of a single-output :class:`TwoLayerReLU` (see the module docstring).

    Only parameters with ``requires_grad`` contribute.  The Z side's ``(n', m)`` mask is held
    whole; when Z is given, X is processed in row blocks (``chunk`` rows, or as many as fit in
    ``max_memory`` bytes).  Cost: the GEMMs ``F W^T`` and ``A_X A_Z^T`` plus O(n m + n n')
    elementwise work.
    """
    if not _closed_supported(model):
        what = (
            type(model).__name__
            if not isinstance(model, TwoLayerReLU)
            else f"out_dim = {model.out_dim}"
        )
        raise ValueError(
            f"the closed form needs a TwoLayerReLU with out_dim = 1 (got {what}); use method='jacobian'"
        )
    Xt, Zt, was_numpy = _prepare(model, X, Z)
    with torch.no_grad():
        out = _closed(model, Xt, Zt, chunk, _budget(max_memory))
    return to_output(out, was_numpy)


def _closed(
    model: TwoLayerReLU, X: torch.Tensor, Z: torch.Tensor | None, chunk, max_memory
) -> torch.Tensor:
    W, a, m = model.W, model.a, model.m
    S = model.S
    train_W = W.requires_grad
    train_a = isinstance(a, nn.Parameter) and a.requires_grad
    train_S = isinstance(S, nn.Parameter) and S.requires_grad
    if not (train_W or train_a or train_S):
        raise ValueError("the model has no parameters with requires_grad=True: its NTK is zero")
    same = Z is None
    renorm = bool(getattr(model.sketch, "renormalize", False))
    a_abs = a.abs()
    a_is_unit = bool((a_abs == 1).all())

    def side(Xb: torch.Tensor):
        """Per-row quantities of a block: features F, mask A (scaled by a^2 if needed), relu R, G."""
        F = model._features(Xb)
        P = F @ W.T
        # straight into a float tensor: PyTorch's CPU bool -> float copy is not vectorised (6x)
        A = torch.ge(P, 0, out=torch.empty_like(P)) if (train_W or train_S) else None
        G = None
        if train_S:
            G = (A * a) @ W * (1.0 / math.sqrt(m))  # (n, k): df/dF
            if renorm:
                y = Xb @ S.T
                ny = y.norm(dim=1, keepdim=True)
                G = (G - (G * F).sum(dim=1, keepdim=True) * F) / ny
        if train_W and not a_is_unit:
            A.mul_(a_abs)  # |a| on both sides: (A|a|)(A|a|)^T = A diag(a^2) A^T
        R = P.clamp_min_(0) if train_a else None
        return F, A, R, G

    Zsrc = X if same else Z
    n_z = Zsrc.shape[0]
    Zs = side(Zsrc)
    FZ, AZ, RZ, GZ = Zs
    out = torch.empty(X.shape[0], n_z, dtype=X.dtype, device=X.device)

    def fill(blk, sx, x0, x1, c0):
        """Kernel block rows ``x0:x1`` (side quantities ``sx``) against Z's rows ``c0:``."""
        FX, AX, RX, GX = sx
        if train_W:
            torch.mm(AX, AZ[c0:].T, out=blk)
            blk.mul_(torch.mm(FX, FZ[c0:].T).mul_(1.0 / m))
        else:
            blk.zero_()
        if train_a:
            blk.addmm_(RX, RZ[c0:].T, alpha=1.0 / m)
        if train_S:
            blk.addcmul_(X[x0:x1] @ Zsrc[c0:].T, GX @ GZ[c0:].T)

    if same:
        # upper triangle in row tiles against the columns from the diagonal on (the GEMMs do
        # ~half the work), then mirrored: the result is exactly symmetric
        for a0 in range(0, n_z, _SYM_ROWS):
            a1 = min(a0 + _SYM_ROWS, n_z)
            sx = tuple(None if t is None else t[a0:a1] for t in Zs)
            fill(out[a0:a1, a0:], sx, a0, a1, a0)
        mirror_upper_(out)
        return out
    # X is processed in row blocks whose P and A (m values each) plus a kernel row (n_z) stay
    # within max_memory
    rows = _rows_per_chunk(X.element_size() * (2 * m + 2 * n_z), max_memory, chunk, X.shape[0])
    for start in range(0, X.shape[0], rows):
        stop = min(start + rows, X.shape[0])
        fill(out[start:stop], side(X[start:stop]), start, stop, 0)
    return out


def _split_params(model: nn.Module):
    trained = {k: v.detach() for k, v in model.named_parameters() if v.requires_grad}
    if not trained:
        raise ValueError("the model has no parameters with requires_grad=True: its NTK is zero")
    frozen = {k: v.detach() for k, v in model.named_parameters() if not v.requires_grad}
    frozen.update({k: v for k, v in model.named_buffers()})
    return trained, frozen


class _FeatureHead(nn.Module):
    """``net.forward_features`` as a module, so ``functional_call`` can swap the net's tensors."""

    def __init__(self, net: TwoLayerReLU) -> None:
        super().__init__()
        self.net = net

    def forward(self, F: torch.Tensor) -> torch.Tensor:
        return self.net.forward_features(F)


def _function(model: nn.Module, X: torch.Tensor, Z: torch.Tensor | None):
    """``(f(params, batch) -> (b, c), params, X, Z)``.  For a TwoLayerReLU whose sketch is fixed the
    inputs are replaced by the precomputed features (they do not depend on the parameters) and
    ``f`` is its ``forward_features``; otherwise ``f`` is the model itself."""
    if isinstance(model, TwoLayerReLU) and not (
        isinstance(model.S, nn.Parameter) and model.S.requires_grad
    ):
        with torch.no_grad():
            X = model._features(X)
            Z = None if Z is None else model._features(Z)
        module: nn.Module = _FeatureHead(model)
    else:
        module = model
    trained, frozen = _split_params(module)

    def f(p, xb):
        return functional_call(module, (p, frozen), (xb,)).reshape(xb.shape[0], -1)

    return f, trained, X, Z


def ntk_jacobian(
    model: nn.Module,
    X: ArrayLike,
    Z: ArrayLike | None = None,
    *,
    chunk: int | None = None,
    max_memory: float | str | None = None,
) -> Any:
    """Empirical NTK of any ``nn.Module`` via ``torch.func.vmap(jacrev)``: ``sum_p J_X J_Z^T``.

    The model is called on ``(1, d)`` slices of X (it must map ``(b, d)`` inputs to ``(b,)`` or
    ``(b, c)`` outputs row-wise).  Jacobians are formed ``chunk`` rows at a time; the Z-side
    Jacobians are kept when they fit in half of ``max_memory``, else recomputed per X block.
    """
    Xt, Zt, was_numpy = _prepare(model, X, Z)
    f, params, Xf, Zf = _function(model, Xt, Zt)
    same = Zf is None
    Zf = Xf if same else Zf

    def f_single(p, x):
        return f(p, x.unsqueeze(0))[0]

    jac = vmap(jacrev(f_single), in_dims=(None, 0))
    with torch.no_grad():
        c = f(params, Xf[:1]).shape[1]
    n_params = sum(v.numel() for v in params.values())
    row_bytes = Xf.element_size() * c * n_params * 3  # the Jacobian and jacrev's temporaries
    max_memory = _budget(max_memory)
    rows = _rows_per_chunk(row_bytes, max_memory // 2, chunk, max(Xf.shape[0], Zf.shape[0]))

    def jac_block(inp: torch.Tensor) -> list[torch.Tensor]:
        J = jac(params, inp)
        return [J[name].reshape(inp.shape[0] * c, -1) for name in params]

    z_starts = list(range(0, Zf.shape[0], rows))
    cache_z = Zf.shape[0] * c * n_params * Xf.element_size() <= max_memory // 2
    z_cache: dict[int, list[torch.Tensor]] = {}
    out = torch.zeros(Xf.shape[0] * c, Zf.shape[0] * c, dtype=Xf.dtype, device=Xf.device)
    for xs in range(0, Xf.shape[0], rows):
        xe = min(xs + rows, Xf.shape[0])
        JX = jac_block(Xf[xs:xe])
        if same and cache_z:
            z_cache.setdefault(xs, JX)
        for zs in z_starts:
            ze = min(zs + rows, Zf.shape[0])
            if same and zs == xs:
                JZ = JX
            elif zs in z_cache:
                JZ = z_cache[zs]
            else:
                JZ = jac_block(Zf[zs:ze])
                if cache_z:
                    z_cache[zs] = JZ
            blk = out[xs * c : xe * c, zs * c : ze * c]
            for jx, jz in zip(JX, JZ):
                blk.addmm_(jx, jz.T)
    return to_output(_reshape_kernel(out, Xf.shape[0], Zf.shape[0], c), was_numpy)


def _reshape_kernel(K: torch.Tensor, n: int, nz: int, c: int) -> torch.Tensor:
    if c == 1:
        return K
    return K.reshape(n, c, nz, c).permute(0, 2, 1, 3).contiguous()


def _tangent(params: dict, seed: int, j: int) -> dict:
    """Column ``j`` of P: an independent N(0, I) tangent, generated from ``(seed, j)`` on the CPU."""
    gen = torch.Generator().manual_seed(derive_seed(seed, "projected-ntk", j))
    return {
        name: torch.randn(v.shape, generator=gen, dtype=torch.float64).to(
            device=v.device, dtype=v.dtype
        )
        for name, v in params.items()
    }


def ntk_projected(
    model: nn.Module,
    X: ArrayLike,
    Z: ArrayLike | None = None,
    *,
    k_proj: int = 256,
    seed: int = 0,
    chunk: int | None = None,
    max_memory: float | str | None = None,
) -> ProjectedNTK:
    """Randomly projected empirical NTK ``(1/k') (J_X P)(J_Z P)^T`` for models whose Jacobian does
    not fit in memory.

    ``P`` (p x k', p = number of trained parameters) has independent N(0, 1) entries; column j is
    generated from ``(seed, j)`` only, so results do not depend on ``chunk`` (tangents per
    forward-mode pass; chosen from ``max_memory`` if None).  ``J P`` costs k' forward-mode passes
    over the data and O(n k') memory.  The estimate is unbiased; each entry's standard deviation
    is ``sqrt((Theta_xx Theta_zz + Theta_xz^2) / k')``, returned (with the estimate plugged in) as
    ``stderr``.  Same output shapes as :func:`ntk`.
    """
    k_proj = check_int(k_proj, "k_proj", min_value=1)
    seed = check_int(seed, "seed")
    Xt, Zt, was_numpy = _prepare(model, X, Z)
    f, params, Xf, Zf = _function(model, Xt, Zt)
    n = Xf.shape[0]
    inp = Xf if Zf is None else torch.cat([Xf, Zf])
    with torch.no_grad():
        c = f(params, inp[:1]).shape[1]
    n_params = sum(v.numel() for v in params.values())
    # per tangent: its parameter-sized copy, and primal + tangent activations (about one value
    # per output unit of each parameter tensor) for every input row
    units = sum(v.shape[0] for v in params.values() if v.ndim >= 1)
    per_tangent = inp.element_size() * (n_params + 2 * inp.shape[0] * (units + c))
    block = _rows_per_chunk(per_tangent, _budget(max_memory), chunk, k_proj)

    def jp(tangents: dict) -> torch.Tensor:
        return jvp(lambda p: f(p, inp), (params,), (tangents,))[1]

    batched = vmap(jp)
    Y = torch.empty(k_proj, inp.shape[0], c, dtype=inp.dtype, device=inp.device)
    with torch.no_grad(), warnings.catch_warnings():
        # torch's first jvp loads decompositions through the deprecated torch.jit.script
        warnings.filterwarnings(
            "ignore", message=".*torch.jit.script.* is deprecated", category=DeprecationWarning
        )
        for j0 in range(0, k_proj, block):
            j1 = min(j0 + block, k_proj)
            ts = [_tangent(params, seed, j) for j in range(j0, j1)]
            V = {name: torch.stack([t[name] for t in ts]) for name in params}
            Y[j0:j1] = batched(V)
    Y = Y.permute(1, 2, 0).reshape(inp.shape[0] * c, k_proj)  # rows (i, a), columns j
    YX = Y[: n * c]
    YZ = YX if Zf is None else Y[n * c :]
    K = (YX @ YZ.T) / k_proj
    dx = (YX * YX).sum(dim=1) / k_proj
    dz = dx if Zf is None else (YZ * YZ).sum(dim=1) / k_proj
    err = ((torch.outer(dx, dz) + K * K) / k_proj).sqrt_()
    nz = n if Zf is None else Zf.shape[0]
    return ProjectedNTK(
        to_output(_reshape_kernel(K, n, nz, c), was_numpy),
        to_output(_reshape_kernel(err, n, nz, c), was_numpy),
        k_proj,
    )


#: The older name of :func:`empirical_ntk` (``ntkdr.empirical.ntk``); ``ntkdr.ntk`` is deprecated.
ntk = empirical_ntk
