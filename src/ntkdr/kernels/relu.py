"""Analytic (infinite-width) NTK / NNGP kernels of ReLU networks: the two-layer and deep fully connected plans and their public functions.

Two families (Arora et al. 2019, Sec. 4; neural-tangents, Novak et al. 2020):

* :func:`two_layer_ntk` -- the H-infinity Gram matrix of Du et al. / Arora et al.,
  ``H1(x, z) = (x . z) (pi - theta) / (2 pi)`` and, with ``layers="both"``, the output-layer
  term ``H2(x, z) = kappa^2 |x| |z| (sin theta + (pi - theta) cos theta) / (2 pi)``.
* :func:`fc_relu_kernels` -- NTK and NNGP of a deep fully connected ReLU network in NTK
  parameterization, identical to neural-tangents'
  ``stax.serial(Dense(W_std=w, b_std=b), Relu(), ..., Dense(W_std=w_out, b_std=b))``.

How the work is organised (Falkon-style):

* The result is produced in row tiles.  Each tile starts with one GEMM ``X[a:b] @ Z^T`` that
  writes straight into the result (or into ``out=``, e.g. an ``np.memmap`` on disk); the
  elementwise part (angles, arc-cosine recursion) then runs in place on cache-sized blocks of
  that tile with two small scratch buffers, so the working set beyond the result is a few MiB
  and every element is read and written about once after the GEMM.
* With ``Z=None`` only the upper triangle is computed (tiles ``X[a:b]`` against ``X[a:]``)
  and mirrored, so the result is exactly symmetric and the GEMM does ~half the work; the
  diagonal is set from the closed form at ``theta = 0`` (no ``sqrt(eps)`` angle noise there).
* When the result cannot be written in place (``out`` on another device or of another
  dtype, or a matrix-free product), tiles go through a tile buffer whose size is chosen
  from ``max_memory``.

Numerics: ``theta = atan2(s, g)`` with ``g = x . z`` and ``s = |x||z| sin theta``, i.e.
``sqrt(max(|x|^2 |z|^2 - g^2, 0))`` evaluated as ``sqrt(max(P - g, 0)) sqrt(max(P + g, 0))``
with ``P = |x| |z|``.  The identities ``|x||z| sin theta = s`` and
``|x||z| cos theta = g`` remove every division, so zero-norm rows give finite values
(theta = 0, kernel 0 for the two-layer kernel), and no product of squared norms is formed:
row norms are computed free of over/underflow and the result is correct whenever the kernel
is representable (rows scaled by 2^+-300 in float64 or 2^+-40 in float32 included).  If it is
not -- ``|x||z|`` (times ``1 + kappa^2``), a ``q(x)`` of the deep kernel or a diagonal entry
beyond a quarter of the dtype's maximum -- a ``ValueError`` says so before any work is done.

Angles between nearly parallel rows inherit the rounding error of the GEMM: H1 (and the FC
NTK) then carry an absolute error of order ``sqrt(eps) |x| |z|`` (about 3e-4 relative in
float32, 1e-8 in float64); H2 and the NNGP are insensitive to it (their derivative in
``sin theta`` vanishes at ``theta = 0``).  This is a property of any GEMM-based evaluation,
neural-tangents included.  One case is made exact: ``P`` is shrunk by the relative rounding
noise ``tau = (4 + sqrt(d) / 4) eps`` of ``P - |g|`` (see ``_shrink``), so equal or opposite
rows get exactly ``theta = 0`` or ``pi`` and the kernel of duplicated rows is singular to
round-off (not to ``sqrt(eps)``), whatever the tiling.  The shrink moves other angles by at
most ``sqrt(2 tau)`` -- the size of the GEMM's own error near ``theta = 0`` -- and ``s`` by a
relative ``tau``.

Dtypes: inputs are validated by :func:`ntkdr.validation.as_matrix`; if X and Z have
different float dtypes both are promoted to the wider one (float64), unless ``dtype`` is
given, which casts both.  X and Z must be on the same device (or ``device`` given).  The
result is a numpy array when X was not a tensor, else a tensor on X's device; when ``out``
is given the very object passed is filled and returned.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from ntkdr._numerics import ldexp_exact as _ldexp
from ntkdr.kernels import fused
from ntkdr.kernels.engine import _check_max_memory, _check_tile, _finish, _prepare, _run
from ntkdr.validation import (
    MAX_DEPTH,
    ArrayLike,
    as_matrix,
    check_choice,
    check_int,
    check_real,
    to_output,
)

__all__ = [
    "two_layer_ntk",
    "fc_relu_kernels",
    "two_layer_ntk_diag",
    "fc_relu_kernels_diag",
]

_TWO_PI = 2.0 * math.pi


# --------------------------------------------------------------------------------------
# Kernel "plans": per-row statistics, the elementwise transform of a GEMM block, the diagonal
# --------------------------------------------------------------------------------------


def _row_norms(X: torch.Tensor) -> torch.Tensor:
    """Row norms ``|x|``, free of overflow / underflow in ``sum x_k^2``.

    The plain ``vector_norm`` is used where it is safe (finite and ``>= sqrt(tiny)``, so the sum
    of squares stayed in the normal range); the other rows are recomputed from the row divided
    by a power of two near its largest entry (exact), then multiplied back.
    """
    r = torch.linalg.vector_norm(X, dim=1)
    fi = torch.finfo(X.dtype)
    bad = ~(torch.isfinite(r) & (r >= math.sqrt(fi.tiny)))
    if bool(bad.any()):
        Xb = X[bad]
        e = torch.frexp(Xb.abs().amax(dim=1)).exponent  # zero rows: exponent 0, norm 0
        rb = torch.linalg.vector_norm(_ldexp(Xb, -e[:, None]), dim=1)
        r[bad] = _ldexp(rb, e)
    return r


def _shrink(dtype: torch.dtype, d: int) -> float:
    """Factor ``sqrt(1 - tau)`` applied to the row norms, ``tau = (4 + sqrt(d) / 4) eps``.

    ``tau`` bounds the relative rounding noise of ``|x||z| - |x . z|`` for equal or opposite
    rows (norms and GEMM sum in different orders): measured for random rows it is at most
    ~2.5 eps for d <= 16, ~5.5 eps at d = 784 and ~11 eps at d = 10^4.
    """
    tau = float(torch.finfo(dtype).eps) * (4.0 + 0.25 * math.sqrt(d))
    return math.sqrt(1.0 - tau)


def _overflow_error(what: str, dtype: torch.dtype) -> ValueError:
    return ValueError(
        f"kernel values overflow the dtype range: {what} exceeds the largest "
        f"{str(dtype).replace('torch.', '')} ({torch.finfo(dtype).max:.3g}) / 4; rescale X "
        "(the two-layer kernel is homogeneous of degree 2) or the hyper-parameters, or use float64"
    )


def _sin_term(A: torch.Tensor, P: torch.Tensor, C: torch.Tensor) -> None:
    """``C = sqrt(max(P - A, 0)) sqrt(max(P + A, 0))``, i.e. ``sqrt(P^2 - A^2)`` without squaring.

    ``P`` (overwritten) is ``(1 - tau) |x||z|`` with the shrink ``tau`` of the plans' norms; ``A``
    the inner product.  No product of two squared norms is formed, so nothing over- or
    underflows while the kernel itself is representable.
    """
    torch.sub(P, A, out=C)
    P.add_(A)
    C.clamp_(min=0.0).sqrt_()
    P.clamp_(min=0.0).sqrt_()
    C.mul_(P)


class _TwoLayerPlan:
    """H1 or H1 + H2 of the two-layer ReLU network (Du et al. 2019; Arora et al. 2019).

    Row statistics: ``[sqrt(1 - tau) |x|, |x|]`` (``tau``: :func:`_shrink`).  Using the shrunk
    product ``P = (1 - tau) |x||z|`` in ``|x||z| sin(theta) = sqrt(P^2 - g^2)`` makes the angle
    exactly 0 (pi) when ``1 - |cos(theta)|`` is below the rounding noise of the GEMM, so equal
    (opposite) rows get exactly ``theta = 0`` (``pi``) whatever the tiling -- the kernel of
    duplicated rows is then singular to round-off, not to ``sqrt(eps)``.  Elsewhere it moves
    ``theta`` by at most ``sqrt(2 tau)`` (the size of the GEMM's own angle error near
    ``theta = 0``) and ``sin(theta)`` by a relative ``tau`` (a few ulps).
    """

    n_out = 1
    gemm_index = 0
    n_scratch = 2

    def __init__(self, layers: str, kappa: float):
        self.both = layers == "both"
        self.k2 = kappa * kappa

    def stats(self, X: torch.Tensor) -> list[torch.Tensor]:
        r = _row_norms(X)
        return [r * _shrink(X.dtype, X.shape[1]), r]

    def check(self, sx: list[torch.Tensor], sz: list[torch.Tensor], dtype: torch.dtype) -> None:
        """Raise unless |H| <= (1 + kappa^2) |x||z| / 2 and the intermediates fit the dtype."""
        if not len(sx[1]) or not len(sz[1]):
            return
        c = 1.0 + self.k2 if self.both else 1.0
        big = float(sx[1].max()) * float(sz[1].max()) * max(c, 2.0)
        if not big <= torch.finfo(dtype).max / 4.0:  # NaN / inf fail too
            raise _overflow_error("max |x| |z|" + (" (1 + kappa^2)" if self.both else ""), dtype)

    def diag(self, sx: list[torch.Tensor]) -> list[torch.Tensor]:
        # theta = 0: H1 = |x|^2 / 2, H2 = kappa^2 |x|^2 / 2
        c = 0.5 * (1.0 + self.k2) if self.both else 0.5
        r = sx[1]
        return [r * (r * c)]

    def block(self, outs, sx, sz, scratch) -> None:
        A = outs[0]  # holds g = x . z on entry
        B, C = scratch
        torch.mul(sx[0][:, None], sz[0][None, :], out=B)
        _sin_term(A, B, C)  # C = |x||z| sin(theta)
        if not self.both:
            torch.atan2(C, A, out=B)  # theta
            B.mul_(-1.0 / _TWO_PI).add_(0.5)  # (pi - theta) / (2 pi)
            A.mul_(B)
            return
        c = 1.0 + self.k2
        torch.atan2(C, A, out=B)
        B.mul_(-c / _TWO_PI).add_(0.5 * c)  # (1 + kappa^2)(pi - theta) / (2 pi)
        # H1 + H2 = g (pi - theta)(1 + kappa^2) / (2 pi) + kappa^2 |x||z| sin(theta) / (2 pi)
        A.mul_(B).add_(C, alpha=self.k2 / _TWO_PI)

    def fused(self, outs, sx, sz) -> bool:
        """:meth:`block` as one compiled pass (:func:`ntkdr.kernels.fused.two_layer_block`)."""
        c = 1.0 + self.k2 if self.both else 1.0
        k2 = self.k2 / _TWO_PI if self.both else 0.0
        return fused.two_layer_block(outs[0], sx[0], sz[0], -c / _TWO_PI, 0.5 * c, k2)


class _FCPlan:
    """NTK and NNGP of Dense -> (Relu -> Dense) x depth, NTK parameterization (Du et al. 2019; Arora et al. 2019).

    Outputs are ``(ntk, nngp)``; the GEMM lands in the NNGP output.  Row statistics: for each
    ReLU layer ``l`` the shrunk ``sqrt((1 - tau) q_l(x))`` (see :class:`_TwoLayerPlan`), then
    the plain ``q_l(x)``; ``sqrt(q)`` is accumulated with ``hypot`` so it neither over- nor
    underflows where ``q`` itself would.
    """

    n_out = 2
    gemm_index = 1
    n_scratch = 2

    def __init__(self, depth: int, w_std: float, b_std: float, w_out: float, d: int):
        self.depth = depth
        self.w = [w_std] * (depth - 1) + [w_out]  # Dense after ReLU l
        self.w2 = [w * w for w in self.w]
        self.w0_over_sqrt_d = w_std / math.sqrt(d)
        self.w02_over_d = w_std * w_std / d
        self.b = b_std
        self.b2 = b_std * b_std
        self.d = d

    def stats(self, X: torch.Tensor) -> list[torch.Tensor]:
        """``[sqrt((1 - tau) q_l) for l = 1..depth] + [q_l for l = 1..depth]``."""
        shrink = _shrink(X.dtype, self.d)
        rq = torch.hypot(_row_norms(X) * self.w0_over_sqrt_d, X.new_tensor(self.b))
        rqs = [rq]
        for wl in self.w[:-1]:
            rq = torch.hypot(rq * (wl / math.sqrt(2.0)), X.new_tensor(self.b))
            rqs.append(rq)
        return [r * shrink for r in rqs] + [r * r for r in rqs]

    def check(self, sx: list[torch.Tensor], sz: list[torch.Tensor], dtype: torch.dtype) -> None:
        """Raise unless every q and the diagonal NTK / NNGP (which bound |ntk|, |nngp|) fit."""
        lim = torch.finfo(dtype).max / 4.0
        for s in (sx,) if sz is sx else (sx, sz):
            if not len(s[0]):
                continue
            ntk, nngp = self.diag(s)
            for name, v in (
                ("q(x)", s[self.depth :]),
                ("the diagonal NTK", [ntk]),
                ("the diagonal NNGP", [nngp]),
            ):
                if not all(float(t.max()) <= lim for t in v):  # NaN / inf fail too
                    raise _overflow_error(name, dtype)

    def diag(self, sx: list[torch.Tensor]) -> list[torch.Tensor]:
        # theta = 0 in every layer: relu_nngp = q / 2, relu_dot = 1 / 2
        q = sx[self.depth]
        ntk = q.clone()
        for wl2 in self.w2:
            q = q * (wl2 / 2.0) + self.b2
            ntk = ntk * (wl2 / 2.0) + q
        return [ntk, q]

    def block(self, outs, sx, sz, scratch) -> None:
        N, A = outs  # A holds g = x . z on entry
        B, C = scratch
        b2 = self.b2
        A.mul_(self.w02_over_d)
        if b2:
            A.add_(b2)
        N.copy_(A)
        for layer, wl2 in enumerate(self.w2):
            torch.mul(sx[layer][:, None], sz[layer][None, :], out=B)
            _sin_term(A, B, C)  # C = sqrt(q q') sin(theta)
            torch.atan2(C, A, out=B)
            B.mul_(-wl2 / _TWO_PI).add_(0.5 * wl2)  # w_l^2 * relu_dot
            N.mul_(B)
            A.mul_(B).add_(C, alpha=wl2 / _TWO_PI)  # w_l^2 * relu_nngp
            if b2:
                A.add_(b2)  # nngp of layer l
            N.add_(A)  # ntk = nngp + w_l^2 * ntk * relu_dot

    def fused(self, outs, sx, sz) -> bool:
        """:meth:`block` as one compiled pass (:func:`ntkdr.kernels.fused.fc_block`)."""
        d = self.depth
        return fused.fc_block(
            outs[0],
            outs[1],
            torch.stack(sx[:d]),
            torch.stack(sz[:d]),
            np.asarray(self.w2),
            self.w02_over_d,
            self.b2,
        )


# --------------------------------------------------------------------------------------
# Public functions
# --------------------------------------------------------------------------------------


def _two_layer_plan(layers: Any, kappa: Any) -> _TwoLayerPlan:
    check_choice(layers, "layers", ("first", "both"))
    kappa = check_real(kappa, "kappa", positive=True)
    return _TwoLayerPlan(layers, kappa)


def _fc_plan(depth: Any, w_std: Any, b_std: Any, w_out: Any, d: int) -> _FCPlan:
    depth = check_int(depth, "depth", min_value=1, max_value=MAX_DEPTH)
    w_std = check_real(w_std, "w_std", positive=True)
    b_std = check_real(b_std, "b_std", min_value=0.0)
    w_out = check_real(w_out, "w_out", positive=True)
    return _FCPlan(depth, w_std, b_std, w_out, d)


def two_layer_ntk(
    X: ArrayLike,
    Z: ArrayLike | None = None,
    layers: str = "first",
    *,
    kappa: float = 1.0,
    tile: int | None = None,
    max_memory: float | None = None,
    out: ArrayLike | None = None,
    dtype: Any = None,
    device: Any = None,
):
    """Infinite-width NTK of the two-layer ReLU network, ``H(X, Z)`` (n x n').

    ``layers="first"``: ``H1(x, z) = (x . z)(pi - theta) / (2 pi)`` (first layer trained,
    the H-infinity of Du et al. / Arora et al.); ``layers="both"``: ``H1 + H2`` with
    ``H2(x, z) = kappa^2 |x||z| (sin theta + (pi - theta) cos theta) / (2 pi)``.
    ``kappa`` only scales H2.

    ``Z=None`` computes the symmetric ``H(X, X)`` (exactly symmetric).  ``tile``: rows per
    tile; ``max_memory``: bytes this call may allocate (result plus working set; the default
    working-set budget is :data:`ntkdr.memory.DEFAULT_MAX_MEMORY`).  If the result alone exceeds
    ``max_memory`` a ``ValueError`` says how large it is; pass ``out=`` (a preallocated
    tensor, array or ``np.memmap`` of shape (n, n')) to compute into it instead.
    ``dtype`` / ``device`` cast / move the inputs first.
    """
    plan = _two_layer_plan(layers, kappa)
    tile, max_memory = _check_tile(tile), _check_max_memory(max_memory)
    Xt, Zt, sym, x_np = _prepare(X, Z, dtype, device)
    outs = None if out is None else [out]
    targets = _run(plan, Xt, Zt, sym, outs, tile, max_memory)
    return _finish(targets, outs, x_np)[0]


def fc_relu_kernels(
    X: ArrayLike,
    Z: ArrayLike | None = None,
    depth: int = 1,
    w_std: float = 2**0.5,
    b_std: float = 0.0,
    w_out: float = 1.0,
    *,
    tile: int | None = None,
    max_memory: float | None = None,
    out: tuple[Any, Any] | None = None,
    dtype: Any = None,
    device: Any = None,
):
    """``(ntk, nngp)`` of a deep fully connected ReLU network, each n x n'.

    The network is neural-tangents'
    ``stax.serial(Dense(W_std=w_std, b_std=b_std), Relu(), [Dense(W_std=w_std, b_std=b_std),
    Relu()] * (depth - 1), Dense(W_std=w_out, b_std=b_std))`` in NTK parameterization
    (``depth`` ReLU layers; input covariance ``x . z / d``).

    ``out`` is ``None`` or a pair ``(ntk_out, nngp_out)`` of preallocated tensors / arrays /
    ``np.memmap`` (either entry may be ``None``).  ``tile``, ``max_memory``, ``dtype``,
    ``device`` as in :func:`two_layer_ntk` (``max_memory`` counts both results).
    """
    tile, max_memory = _check_tile(tile), _check_max_memory(max_memory)
    Xt, Zt, sym, x_np = _prepare(X, Z, dtype, device)
    plan = _fc_plan(depth, w_std, b_std, w_out, Xt.shape[1])
    if out is not None:
        if not isinstance(out, (tuple, list)) or len(out) != 2:
            raise ValueError("out must be None or a pair (ntk_out, nngp_out)")
    outs = None if out is None else list(out)
    targets = _run(plan, Xt, Zt, sym, outs, tile, max_memory)
    ntk, nngp = _finish(targets, outs, x_np)
    return ntk, nngp


def two_layer_ntk_diag(
    X: ArrayLike,
    layers: str = "first",
    *,
    kappa: float = 1.0,
    dtype: Any = None,
    device: Any = None,
):
    """Diagonal of :func:`two_layer_ntk` ``(X, X)`` without forming the matrix."""
    plan = _two_layer_plan(layers, kappa)
    Xt, x_np = as_matrix(X, "X", dtype=dtype, device=device)
    sx = plan.stats(Xt)
    plan.check(sx, sx, Xt.dtype)
    return to_output(plan.diag(sx)[0], x_np)


def fc_relu_kernels_diag(
    X: ArrayLike,
    depth: int = 1,
    w_std: float = 2**0.5,
    b_std: float = 0.0,
    w_out: float = 1.0,
    *,
    dtype: Any = None,
    device: Any = None,
):
    """Diagonals ``(ntk, nngp)`` of :func:`fc_relu_kernels` ``(X, X)``."""
    Xt, x_np = as_matrix(X, "X", dtype=dtype, device=device)
    plan = _fc_plan(depth, w_std, b_std, w_out, Xt.shape[1])
    sx = plan.stats(Xt)
    plan.check(sx, sx, Xt.dtype)
    ntk, nngp = plan.diag(sx)
    return to_output(ntk, x_np), to_output(nngp, x_np)
