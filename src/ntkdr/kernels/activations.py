r"""Infinite-width NTK / NNGP of deep fully connected networks with any of eight activations.

The network is neural-tangents' (Novak et al., ICLR 2020) NTK-parameterized
``stax.serial(Dense(W_std=w, b_std=b), Act(), ... depth times, Dense(W_std=w_out, b_std=b))``
on inputs of dimension ``d``.  With ``g = nngp``, ``q(x)`` the pre-activation variance and
``phi`` the activation, every layer maps (Lee et al., ICLR 2018; Jacot et al. 2018)::

    input Dense:   nngp = w^2 (x . z) / d + b^2,   q(x) = w^2 |x|^2 / d + b^2,   ntk = nngp
    activation:    nngp <- E[phi(u) phi(v)],        dot = E[phi'(u) phi'(v)],    ntk <- ntk * dot
                   with (u, v) ~ N(0, [[q(x), g], [g, q(z)]])
    next Dense:    nngp <- w_l^2 nngp + b^2,         ntk <- w_l^2 ntk + nngp

The Gaussian expectations have closed forms; ``theta = atan2(s, g)`` with
``s = sqrt(q(x) q(z) - g^2)`` evaluated as ``sqrt(P - g) sqrt(P + g)``, ``P = sqrt(q(x) q(z))``:

* ``abrelu`` ``a min(x, 0) + b max(x, 0)`` (``relu`` = (0, 1), ``leaky_relu`` = (alpha, 1),
  ``abs`` = (-1, 1), ``identity`` = (1, 1)), the arc-cosine kernels of Cho & Saul (NIPS 2009):
  ``dot = (a^2 + b^2) / 2 - (a - b)^2 theta / (2 pi)``,
  ``nngp = (a - b)^2 s / (2 pi) + dot * g``.
* ``erf`` ``a erf(b x) + c`` (Williams, NIPS 1997), with ``q, g`` scaled by ``b^2``:
  ``nngp = a^2 (2 / pi) atan2(2 g, D) + c^2``, ``dot = a^2 b^2 4 / (pi D)``,
  ``D = sqrt((1 + 2 q(x))(1 + 2 q(z)) - 4 g^2) = sqrt(1 + 2 q(x) + 2 q(z) + 4 s^2)``.
* ``gelu`` ``x Phi(x)`` (Tsuchida et al. 2021, as in neural-tangents), with
  ``delta^2 = s^2 + q(x) + q(z) + 1``, ``alpha = atan2(g, delta)``, ``u = q + 1``,
  ``R = q(x) q(z) / (u(x) u(z))``:
  ``nngp = g / 4 + (g^2 / (u(x) u(z) delta) + R delta + g alpha) / (2 pi)``,
  ``dot = 1 / 4 + (alpha + g / delta (1 / delta^2 + 1 / (u(x) u(z)) - R + 1)) / (2 pi)``.
* ``sign``: ``nngp = 1 - 2 theta / pi`` (0 when q(x) q(z) = 0, as sign(0) = 0); its derivative
  is zero almost everywhere, so the NTK through it is 0, as in neural-tangents.

Numerics are those of :mod:`ntkdr.kernels` (one GEMM per tile, the elementwise maps in place
on cache-sized blocks, exact symmetry, the diagonal from its closed form, the row-norm shrink
that makes equal / opposite rows give exactly ``theta = 0`` / ``pi`` for the angle-based
activations).  Unlike the homogeneous ReLU kernel, ``q`` itself is formed here, so a ``q`` or
a diagonal entry beyond a quarter of the dtype's maximum raises ``ValueError`` (``erf`` and
``gelu`` also need ``4 q^2`` to fit).  Deep ``sign`` networks are ill-conditioned on nearly
parallel inputs: each sign layer turns an angle error ``e`` into about ``sqrt(e)``, so the
``sqrt(eps)`` angle error of any GEMM-based evaluation grows to ~1e-2 at depth 4 (measured
against 50-digit values: 7e-3 here, 8e-2 for neural-tangents 0.6.5).  ``activation="relu"`` runs
:func:`ntkdr.kernels.fc_relu_kernels` itself, so both agree bit for bit.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch

from ntkdr.kernels.engine import _check_max_memory, _check_tile, _finish, _prepare, _run
from ntkdr.kernels.relu import _fc_plan, _overflow_error, _row_norms, _shrink, _sin_term
from ntkdr.sketches import Sketch
from ntkdr.validation import MAX_DEPTH, check_choice, check_int, check_real

__all__ = ["ACTIVATIONS", "fc_kernels", "make_activation"]

#: Activation names accepted by :func:`fc_kernels` (neural-tangents' ``stax`` layers).
ACTIVATIONS = ("relu", "leaky_relu", "abrelu", "abs", "erf", "gelu", "sign", "identity")
# parameters each activation accepts, with their defaults (None: required)
_PARAMS: dict[str, dict[str, float | None]] = {
    "relu": {},
    "leaky_relu": {"negative_slope": 0.01},
    "abrelu": {"a": None, "b": None},
    "abs": {},
    "erf": {"a": 1.0, "b": 1.0, "c": 0.0},
    "gelu": {},
    "sign": {},
    "identity": {},
}
_PI = math.pi
_TWO_PI = 2.0 * math.pi
# sentinels returned by an activation's ``apply`` instead of a ``dot`` tensor
ZERO, ONE = "zero", "one"


class _ABRelu:
    """``a min(x, 0) + b max(x, 0)``: arc-cosine kernels (Cho & Saul 2009)."""

    n_scratch = 2

    def __init__(self, a: float, b: float):
        self.a, self.b = a, b
        self.mean_sq = 0.5 * (a * a + b * b)  # E[phi'^2]; also E[phi(u)^2] / q
        self.k = (a - b) ** 2 / _TWO_PI

    def diag(self, q: torch.Tensor) -> torch.Tensor:
        return q * self.mean_sq

    def stats(self, q: torch.Tensor, shrink: float) -> list[torch.Tensor]:
        return [q.sqrt() * shrink]

    def apply(self, A, x, z, scratch, dot_scale: float):
        B, C = scratch[:2]
        torch.mul(x[0], z[0], out=B)
        _sin_term(A, B, C)  # C = s
        torch.atan2(C, A, out=B)  # theta
        B.mul_(-self.k * dot_scale).add_(self.mean_sq * dot_scale)  # dot_scale * dot
        A.mul_(B).add_(C, alpha=self.k * dot_scale)  # dot_scale * nngp
        return B


class _Identity:
    n_scratch = 0

    def diag(self, q):
        return q

    def stats(self, q, shrink):
        return []

    def apply(self, A, x, z, scratch, dot_scale: float):
        if dot_scale != 1.0:
            A.mul_(dot_scale)
        return ONE


class _Sign:
    """``sign(x)``: ``E[sign(u) sign(v)] = 1 - 2 theta / pi``; zero derivative a.e."""

    n_scratch = 2

    def diag(self, q):
        return (q > 0).to(q.dtype)

    def stats(self, q, shrink):
        return [q.sqrt() * shrink, (q > 0).to(q.dtype)]

    def apply(self, A, x, z, scratch, dot_scale: float):
        B, C = scratch[:2]
        torch.mul(x[0], z[0], out=B)
        _sin_term(A, B, C)
        torch.atan2(C, A, out=B)
        torch.mul(B, -2.0 * dot_scale / _PI, out=A).add_(dot_scale)
        # atan2(0, 0) = 0 but sign(0) = 0: zero the pairs with q(x) q(z) = 0 (neural-tangents too)
        if not (bool(x[1].all()) and bool(z[1].all())):
            torch.mul(x[1], z[1], out=B)
            A.mul_(B)
        return ZERO


class _Erf:
    """``a erf(b x) + c`` (Williams 1997)."""

    n_scratch = 3

    def __init__(self, a: float, b: float, c: float):
        self.a2, self.b2, self.c2 = a * a, b * b, c * c

    def diag(self, q):
        qb = q * self.b2
        return torch.atan2(qb, (qb + 0.25).sqrt()) * (2.0 * self.a2 / _PI) + self.c2

    def stats(self, q, shrink):
        return [q.sqrt(), q * (2.0 * self.b2)]

    def apply(self, A, x, z, scratch, dot_scale: float):
        B, C, D = scratch[:3]
        torch.mul(x[0], z[0], out=B)  # P = sqrt(q q')
        torch.sub(B, A, out=C)
        B.add_(A)
        C.mul_(B).clamp_(min=0.0).mul_(4.0 * self.b2 * self.b2)  # 4 b^4 s^2, s^2 = (P - g)(P + g)
        torch.add(x[1], z[1], out=B)
        C.add_(B).add_(1.0).sqrt_()  # D
        torch.reciprocal(C, out=D).mul_(4.0 * self.a2 * self.b2 * dot_scale / _PI)
        A.mul_(2.0 * self.b2)
        torch.atan2(A, C, out=B)
        torch.mul(B, 2.0 * self.a2 * dot_scale / _PI, out=A)
        if self.c2:
            A.add_(self.c2 * dot_scale)
        return D


class _Gelu:
    """Exact GELU ``x Phi(x)`` (closed form of Tsuchida et al. 2021, neural-tangents' ``Gelu``)."""

    n_scratch = 5

    def diag(self, q):
        r = (2.0 * q + 1.0).sqrt()
        return q * (0.25 + (q / ((q + 1.0) * r) + 0.5 * torch.atan2(q, r)) / _PI)

    def stats(self, q, shrink):
        u = q + 1.0
        return [q.sqrt(), q + 0.5, 1.0 / u, q / u]

    def apply(self, A, x, z, scratch, dot_scale: float):
        B, C, D, E, F = scratch[:5]
        torch.mul(x[0], z[0], out=B)  # P = sqrt(q q')
        torch.sub(B, A, out=C)
        B.add_(A)
        C.mul_(B).clamp_(min=0.0)  # s^2 = (P - g)(P + g), no cancellation in P^2 - g^2
        torch.add(x[1], z[1], out=B)
        C.add_(B)  # delta^2 = s^2 + q + q' + 1
        torch.rsqrt(C, out=E)  # 1 / delta
        torch.mul(E, C, out=F)  # delta
        torch.atan2(A, F, out=D)  # alpha
        torch.mul(x[2], z[2], out=B)  # 1 / (u u')
        torch.mul(x[3], z[3], out=C)  # R
        F.mul_(C)  # R delta
        torch.sub(B, C, out=C).add_(1.0).addcmul_(E, E)  # T = 1 / delta^2 + 1 / (u u') - R + 1
        E.mul_(A)  # g / delta
        B.mul_(E).mul_(A).add_(F).addcmul_(A, D)  # g^2 / (u u' delta) + R delta + g alpha
        C.mul_(E).add_(D).mul_(dot_scale / _TWO_PI).add_(0.25 * dot_scale)  # dot
        A.mul_(0.25 * dot_scale).add_(B, alpha=dot_scale / _TWO_PI)
        return C


def make_activation(name: Any, params: dict[str, Any]):
    """The kernel map of activation ``name`` with ``params``; ``ValueError`` for bad input."""
    name = check_choice(name, "activation", ACTIVATIONS)
    params = dict(params)
    if name == "leaky_relu" and "alpha" in params:
        if "negative_slope" in params:
            raise ValueError("give negative_slope or its alias alpha, not both")
        params["negative_slope"] = params.pop("alpha")
    allowed = _PARAMS[name]
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        names = ", ".join(map(repr, allowed)) or "none"
        raise ValueError(
            f"unexpected parameter(s) {', '.join(map(repr, unknown))} for activation "
            f"{name!r}; allowed: {names}"
        )
    missing = [k for k, v in allowed.items() if v is None and k not in params]
    if missing:
        raise ValueError(f"activation {name!r} needs parameter(s) {', '.join(map(repr, missing))}")
    p = {k: check_real(params.get(k, v), k) for k, v in allowed.items()}
    if name == "relu":
        return _ABRelu(0.0, 1.0)
    if name == "leaky_relu":
        return _ABRelu(p["negative_slope"], 1.0)
    if name == "abrelu":
        return _ABRelu(p["a"], p["b"])
    if name == "abs":
        return _ABRelu(-1.0, 1.0)
    if name == "erf":
        return _Erf(p["a"], p["b"], p["c"])
    if name == "gelu":
        return _Gelu()
    if name == "sign":
        return _Sign()
    return _Identity()


class _Dense:
    def __init__(self, w: float, b: float):
        self.w2, self.b2 = w * w, b * b


class _SerialPlan:
    """Kernel plan of ``serial(Dense, [Act], Dense, ...)`` for the tiled engine of
    :mod:`ntkdr.kernels`: outputs ``(ntk, nngp)``, the GEMM ``x . z`` lands in the NNGP.

    Row statistics, per activation layer: that activation's own ``stats(q)``, then ``q``
    itself at every activation (for the overflow check) and ``|x|^2 / d`` (for the diagonal).
    """

    n_out = 2
    gemm_index = 1

    def __init__(self, layers: Sequence[Any], d: int):
        if not layers or not isinstance(layers[0], _Dense):
            raise ValueError("the first layer must be Dense: an activation needs Gaussian inputs")
        for prev, cur in zip(layers, layers[1:]):
            if not isinstance(cur, _Dense) and not isinstance(prev, _Dense):
                raise ValueError("each activation must follow a Dense layer (Gaussian inputs)")
        self.layers = list(layers)
        self.acts = [l for l in layers if not isinstance(l, _Dense)]
        self.d = d
        self.n_scratch = max([2] + [a.n_scratch for a in self.acts])
        self._diag: tuple[Any, Any] = (None, None)

    def _qs(self, X: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """``|x|^2 / d`` and the pre-activation variance ``q`` at each activation."""
        r = _row_norms(X) / math.sqrt(self.d)
        q, qs, first = r * r, [], True
        for layer in self.layers:
            if isinstance(layer, _Dense):
                if first:  # q = hypot(w |x| / sqrt(d), b)^2, the same q as fc_relu_kernels
                    h = torch.hypot(r * math.sqrt(layer.w2), X.new_tensor(math.sqrt(layer.b2)))
                    q, first = h * h, False
                else:
                    q = q * layer.w2 + layer.b2
            else:
                qs.append(q)
                q = layer.diag(q)
        return r * r, qs

    def stats(self, X: torch.Tensor) -> list[torch.Tensor]:
        shrink = _shrink(X.dtype, self.d)
        q_in, qs = self._qs(X)
        out: list[torch.Tensor] = []
        self.slices = []
        for act, q in zip(self.acts, qs):
            st = act.stats(q, shrink)
            self.slices.append((len(out), len(out) + len(st)))
            out += st
        return out + qs + [q_in]

    def check(self, sx: list[torch.Tensor], sz: list[torch.Tensor], dtype: torch.dtype) -> None:
        lim = torch.finfo(dtype).max / 4.0
        n_act = len(self.acts)
        for s in (sx,) if sz is sx else (sx, sz):
            qs = s[len(s) - n_act - 1 : len(s) - 1]
            need_sq = [isinstance(a, (_Erf, _Gelu)) for a in self.acts]
            for q, sq in zip(qs, need_sq):
                m = float(q.max())
                if not m <= lim or (sq and not 4.0 * m * m <= lim):
                    raise _overflow_error("q(x)" + (" or 4 q(x)^2" if sq else ""), dtype)
            for name, v in zip(("the diagonal NTK", "the diagonal NNGP"), self.diag(s)):
                if not float(v.abs().max()) <= lim:  # NaN / inf fail too
                    raise _overflow_error(name, dtype)

    def diag(self, sx: list[torch.Tensor]) -> list[torch.Tensor]:
        # the block's maps on 1-D vectors with z = x and g = |x|^2 / d: theta = 0 exactly
        if self._diag[0] is sx:  # computed by check() already
            return self._diag[1]
        A = sx[-1].clone()
        N = torch.empty_like(A)
        scratch = [torch.empty_like(A) for _ in range(self.n_scratch)]
        self._forward(N, A, sx, sx, scratch, 1.0, lambda s: s)
        self._diag = (sx, [N, A])
        return [N, A]

    def block(self, outs, sx, sz, scratch) -> None:
        N, A = outs  # A holds g = x . z on entry
        self._forward(N, A, sx, sz, scratch, 1.0 / self.d, None)

    def _forward(self, N, A, sx, sz, scratch, in_scale, view) -> None:
        """Run the layers on ``A`` (nngp, times ``1 / in_scale``) and ``N`` (ntk) in place."""
        xcol = view or (lambda s: s[:, None])
        zrow = view or (lambda s: s[None, :])
        ntk_zero = True  # the NTK is 0 before the first Dense and after a sign
        folded = False  # the activation already multiplied A and its dot by this Dense's w^2
        layers, k = self.layers, 0
        for i, layer in enumerate(layers):
            if isinstance(layer, _Dense):
                if not folded:
                    A.mul_(layer.w2 * in_scale)
                    in_scale = 1.0
                    if not ntk_zero:
                        N.mul_(layer.w2)
                if layer.b2:
                    A.add_(layer.b2)
                if ntk_zero:
                    N.copy_(A)
                else:
                    N.add_(A)
                ntk_zero = folded = False
                continue
            nxt = layers[i + 1] if i + 1 < len(layers) else None
            folded = isinstance(nxt, _Dense)
            w2 = nxt.w2 if isinstance(nxt, _Dense) else 1.0
            a0, a1 = self.slices[k]
            k += 1
            dot = layer.apply(
                A, [xcol(s) for s in sx[a0:a1]], [zrow(s) for s in sz[a0:a1]], scratch, w2
            )
            if dot is ZERO:
                ntk_zero = True
            elif not ntk_zero:
                if dot is not ONE:
                    N.mul_(dot)
                elif w2 != 1.0:
                    N.mul_(w2)
        if ntk_zero:
            N.zero_()


def check_fc_args(
    depth: Any, w_std: Any, b_std: Any, w_out: Any
) -> tuple[int, float, float, float]:
    """Validated ``(depth, w_std, b_std, w_out)`` of a deep FC kernel."""
    return (
        check_int(depth, "depth", min_value=1, max_value=MAX_DEPTH),
        check_real(w_std, "w_std", positive=True),
        check_real(b_std, "b_std", min_value=0.0),
        check_real(w_out, "w_out", positive=True),
    )


def fc_layers(depth: int, act: Any, w_std: float, b_std: float, w_out: float) -> list[Any]:
    """Layer list of ``Dense(w, b), act, ... depth times, Dense(w_out, b)``."""
    layers: list[Any] = []
    for _ in range(depth):
        layers += [_Dense(w_std, b_std), act]
    return layers + [_Dense(w_out, b_std)]


def serial_kernels(
    layers: Sequence[Any] | Callable[[int], Any],
    X: Any,
    Z: Any = None,
    *,
    sketch: Sketch | None = None,
    tile: int | None = None,
    max_memory: float | None = None,
    out: Any = None,
    dtype: Any = None,
    device: Any = None,
):
    """``(ntk, nngp)`` of a layer list (``_Dense`` / activation maps), tiled; see the module.

    ``layers`` may also be a callable ``d -> plan`` (a ready-made plan of the engine, such as
    the specialised ReLU plan).
    """
    tile, max_memory = _check_tile(tile), _check_max_memory(max_memory)
    if sketch is not None and not isinstance(sketch, Sketch):
        raise ValueError(
            f"sketch must be a Sketch (ntkdr.sketches.make_sketch), got {type(sketch).__name__}"
        )
    if out is not None:
        if not isinstance(out, (tuple, list)) or len(out) != 2:
            raise ValueError("out must be None or a pair (ntk_out, nngp_out)")
        out = list(out)
    Xt, Zt, sym, x_np = _prepare(X, Z, dtype, device)
    if sketch is not None:  # the kernel of S x: sketch first, then the same kernel
        Xt = sketch(Xt)
        Zt = Xt if sym else sketch(Zt)
    plan = layers(Xt.shape[1]) if callable(layers) else _SerialPlan(layers, Xt.shape[1])
    targets = _run(plan, Xt, Zt, sym, out, tile, max_memory)
    ntk, nngp = _finish(targets, out, x_np)
    return ntk, nngp


def fc_kernels(
    X: Any,
    Z: Any = None,
    depth: int = 1,
    activation: str = "relu",
    w_std: float = 2**0.5,
    b_std: float = 0.0,
    w_out: float = 1.0,
    sketch: Sketch | None = None,
    *,
    tile: int | None = None,
    max_memory: float | None = None,
    out: tuple[Any, Any] | None = None,
    dtype: Any = None,
    device: Any = None,
    **activation_params: Any,
):
    """``(ntk, nngp)`` of a deep fully connected network, each n x n' (NTK parameterization).

    The network is neural-tangents' (Novak et al. 2020)
    ``stax.serial(Dense(W_std=w_std, b_std=b_std), Act(), [Dense(W_std=w_std, b_std=b_std),
    Act()] * (depth - 1), Dense(W_std=w_out, b_std=b_std))`` with ``Act`` one of
    :data:`ACTIVATIONS` and its parameters as keywords: ``leaky_relu`` ``negative_slope``
    (alias ``alpha``, default 0.01); ``abrelu`` ``a``, ``b`` (required): a min(x, 0) +
    b max(x, 0); ``erf`` ``a``, ``b``, ``c`` (1, 1, 0): a erf(b x) + c.  Formulas and
    numerics: see the module docstring.

    ``sketch``: a :class:`~ntkdr.sketches.Sketch` applied to the rows of X (and Z) first, so
    the result is the kernel of ``S x`` (the factorized first layer of Ailon & Shit 2022).
    ``tile``, ``max_memory``, ``out``, ``dtype``, ``device`` as in
    :func:`ntkdr.kernels.fc_relu_kernels`.
    """
    act = make_activation(activation, activation_params)
    depth, w_std, b_std, w_out = check_fc_args(depth, w_std, b_std, w_out)
    layers: Sequence[Any] | Callable[[int], Any]
    if activation == "relu":  # the specialised ReLU plan, identical to fc_relu_kernels

        def layers(d: int):
            return _fc_plan(depth, w_std, b_std, w_out, d)

    else:
        layers = fc_layers(depth, act, w_std, b_std, w_out)
    return serial_kernels(
        layers,
        X,
        Z,
        sketch=sketch,
        tile=tile,
        max_memory=max_memory,
        out=out,
        dtype=dtype,
        device=device,
    )
