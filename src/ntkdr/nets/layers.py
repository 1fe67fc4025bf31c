"""Sketched layers and the deep ReLU net: :class:`SketchedLinear` (a drop-in for ``nn.Linear`` through a fixed sketch), :class:`NTKLinear` and :class:`DeepReLU` (NTK parameterization).

Seeds follow :mod:`ntkdr.nets.models`: weights are drawn on the CPU from a generator seeded
with :func:`~ntkdr.nets.models.derive_seed` of the user's seed and the class name.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from ntkdr.memory import check_memory
from ntkdr.nets.models import (
    _check_input,
    _generator,
    _renormalize_rows,
    _resolve_sketch,
    derive_seed,
)
from ntkdr.validation import (
    MAX_DEPTH,
    ArrayLike,
    check_int,
    check_real,
    resolve_device,
    resolve_dtype,
    to_output,
)

__all__ = ["SketchedLinear", "NTKLinear", "DeepReLU"]


class SketchedLinear(nn.Module):
    """``y = U (S x) + b``: a drop-in for ``nn.Linear(in_features, out_features)`` with a fixed
    random ``k x in_features`` sketch ``S`` and a trained ``U`` (``out_features x k``).

    ``parameterization="standard"`` initialises ``U`` and ``b`` like ``nn.Linear(in_features, ...)``
    would (uniform on ``+-1/sqrt(in_features)``; a sketch preserves norms, so the output scale
    matches the dense layer's).  ``parameterization="ntk"`` computes
    ``y = w_std / sqrt(in_features) * U (S x) + b_std * b`` with ``U, b ~ N(0, 1)``: the fan-in
    stays the original ``in_features`` so that the layer approximates the dense NTK-parameterized
    layer; its exact kernel is the dense one applied to ``sqrt(k / in_features) * S x``.

    ``sketch`` is a kind name (built with a seed derived from ``seed``) or a ``Sketch`` object.
    S is its explicit matrix, a buffer (``self.S``), or an ``nn.Parameter`` with ``train_sketch``.
    The layer applies it as a matrix, not through the sketch's fast apply: a hidden layer's
    input depends on the parameters, so the map must be differentiable and traceable by
    ``torch.func`` (the fast apply validates its input).  :class:`TwoLayerReLU`, where the
    sketch acts on the data, does use the fast apply.  Inputs may have leading batch dims.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        k: int | None = None,
        sketch: Any = "gaussian",
        bias: bool = True,
        seed: int = 0,
        train_sketch: bool = False,
        *,
        parameterization: str = "standard",
        w_std: float = 1.0,
        b_std: float = 1.0,
        dtype: Any = torch.float32,
        device: Any = None,
    ) -> None:
        super().__init__()
        self.in_features = check_int(in_features, "in_features", min_value=1)
        self.out_features = check_int(out_features, "out_features", min_value=1)
        seed = check_int(seed, "seed")
        if parameterization not in ("standard", "ntk"):
            raise ValueError(
                f"unknown parameterization {parameterization!r}; expected 'standard' or 'ntk'"
            )
        self.parameterization = parameterization
        self.w_std = check_real(w_std, "w_std", min_value=0.0)
        self.b_std = check_real(b_std, "b_std", min_value=0.0)
        dtype = resolve_dtype(dtype) or torch.float32
        device = resolve_device(device) or torch.device("cpu")
        self.sketch = _resolve_sketch(sketch, self.in_features, k, seed, "SketchedLinear")
        self.k = int(self.sketch.k)
        self.train_sketch = bool(train_sketch)

        gen = _generator(seed, "SketchedLinear")
        if parameterization == "standard":
            bound = 1.0 / math.sqrt(self.in_features)
            U = (
                torch.rand(self.out_features, self.k, generator=gen, dtype=torch.float64)
                .mul_(2 * bound)
                .sub_(bound)
            )
            b = (
                torch.rand(self.out_features, generator=gen, dtype=torch.float64)
                .mul_(2 * bound)
                .sub_(bound)
            )
            self._w_scale, self._b_scale = 1.0, 1.0
        else:
            U = torch.randn(self.out_features, self.k, generator=gen, dtype=torch.float64)
            b = torch.randn(self.out_features, generator=gen, dtype=torch.float64)
            self._w_scale, self._b_scale = self.w_std / math.sqrt(self.in_features), self.b_std
        self.U = nn.Parameter(U.to(device=device, dtype=dtype))
        self.bias = nn.Parameter(b.to(device=device, dtype=dtype)) if bias else None
        S = torch.as_tensor(self.sketch.matrix(dtype=dtype, device=device)).to(
            device=device, dtype=dtype
        )
        if self.train_sketch:
            self.S = nn.Parameter(S.clone())
        else:
            self.register_buffer("S", S)

    @property
    def weight(self) -> torch.Tensor:
        """The equivalent dense weight ``scale * U S`` (``out_features x in_features``)."""
        return (self.U @ self.S) * self._w_scale

    def sketch_input(self, x: torch.Tensor) -> torch.Tensor:
        """``S x`` for ``x`` of shape ``(..., in_features)`` -> ``(..., k)``."""
        if x.shape[-1] != self.in_features:
            raise ValueError(
                f"input has {x.shape[-1]} features but the layer expects in_features = {self.in_features}"
            )
        y = x @ self.S.T
        return _renormalize_rows(y) if getattr(self.sketch, "renormalize", False) else y

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.sketch_input(x) @ self.U.T
        if self._w_scale != 1.0:
            y = y * self._w_scale
        if self.bias is not None:
            y = y + (self.bias * self._b_scale if self._b_scale != 1.0 else self.bias)
        return y

    @classmethod
    def from_linear(
        cls, linear: nn.Linear, k: int | None = None, sketch: Any = "gaussian", seed: int = 0
    ) -> SketchedLinear:
        """Best factorization of a trained ``nn.Linear``: ``U = W S^+`` (least squares), bias copied.

        ``U S`` is then the projection of ``W`` onto the row space of ``S`` (exact when k = d).
        """
        if not isinstance(linear, nn.Linear):
            raise ValueError(f"from_linear needs an nn.Linear, got {type(linear).__name__}")
        W = linear.weight.detach()
        layer = cls(
            linear.in_features,
            linear.out_features,
            k,
            sketch=sketch,
            bias=linear.bias is not None,
            seed=seed,
            dtype=W.dtype,
            device=W.device,
        )
        S = layer.S.detach().to(torch.float64)
        U = torch.linalg.lstsq(S.T, W.to(torch.float64).T).solution.T
        with torch.no_grad():
            layer.U.copy_(U.to(W.dtype))
            if linear.bias is not None:
                layer.bias.copy_(linear.bias.detach())
        return layer

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, k={self.k}, "
            f"sketch={getattr(self.sketch, 'kind', '?')}, bias={self.bias is not None}, "
            f"parameterization={self.parameterization!r}, train_sketch={self.train_sketch}"
        )


class NTKLinear(nn.Module):
    """Dense layer in NTK parameterization: ``y = w_std / sqrt(in) * W x + b_std * b``, ``W, b ~ N(0, 1)``
    (neural-tangents ``stax.Dense(out, W_std=w_std, b_std=b_std)``)."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        w_std: float = 2**0.5,
        b_std: float = 0.0,
        *,
        generator: torch.Generator | None = None,
        dtype: Any = torch.float32,
        device: Any = None,
    ) -> None:
        super().__init__()
        self.in_features = check_int(in_features, "in_features", min_value=1)
        self.out_features = check_int(out_features, "out_features", min_value=1)
        self.w_std = check_real(w_std, "w_std", min_value=0.0)
        self.b_std = check_real(b_std, "b_std", min_value=0.0)
        dtype = resolve_dtype(dtype) or torch.float32
        W = torch.randn(
            self.out_features, self.in_features, generator=generator, dtype=torch.float64
        )
        b = torch.randn(self.out_features, generator=generator, dtype=torch.float64)
        self.weight = nn.Parameter(W.to(device=device, dtype=dtype))
        self.bias = nn.Parameter(b.to(device=device, dtype=dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x @ self.weight.T) * (
            self.w_std / math.sqrt(self.in_features)
        ) + self.bias * self.b_std

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, w_std={self.w_std}, b_std={self.b_std}"


class DeepReLU(nn.Module):
    """Fully connected ReLU net in NTK parameterization, the finite-width counterpart of
    :func:`ntkdr.kernels.fc_relu_kernels` (neural-tangents ``stax.serial(Dense(w, b), Relu(), ...,
    Dense(w_out, b))``).

    ``widths`` is a sequence of hidden widths, or one int repeated ``depth`` times
    (``DeepReLU(d, 512, depth=3)``).  Layer ``l`` (``l = 0..L``, ``L = len(widths)``; layer ``L``
    is the readout with ``w_out``) computes ``w / sqrt(fan_in) * W h + b_std * b`` with
    ``W, b ~ N(0, 1)``; as the widths grow, the empirical NTK (all parameters trained) tends to
    ``fc_relu_kernels(...)[0]`` and the output covariance to its NNGP.  Biases are parameters
    even when ``b_std = 0`` (their gradient then vanishes), matching stax.

    ``factorize`` maps layer indices to ``(kind, k)`` (or a Sketch of the layer's fan-in): that
    layer becomes a :class:`SketchedLinear` in NTK parameterization (fan-in kept at the dense
    value, see there).  With layer 0 factorized the infinite-width kernel is
    ``fc_relu_kernels(sqrt(k / d) * S X)``.  Output ``(n,)`` for ``out_dim == 1``, else ``(n, out_dim)``.
    """

    def __init__(
        self,
        d: int,
        widths: int | Sequence[int],
        depth: int | None = None,
        *,
        w_std: float = 2**0.5,
        b_std: float = 0.0,
        w_out: float = 1.0,
        out_dim: int = 1,
        factorize: Mapping[int, Any] | None = None,
        seed: int = 0,
        dtype: Any = torch.float32,
        device: Any = None,
    ) -> None:
        super().__init__()
        self.d = check_int(d, "d", min_value=1)
        if isinstance(widths, (int, np.integer)) and not isinstance(widths, bool):
            depth = (
                1 if depth is None else check_int(depth, "depth", min_value=1, max_value=MAX_DEPTH)
            )
            widths = [check_int(widths, "width", min_value=1)] * depth
        else:
            if depth is not None:
                raise ValueError(
                    "depth is only used with a single int width; got a sequence of widths too"
                )
            try:
                widths = [check_int(w, "width", min_value=1) for w in widths]
            except TypeError as exc:
                raise ValueError(
                    f"widths must be an int or a sequence of ints, got {widths!r}"
                ) from exc
            if not widths:
                raise ValueError("widths is empty: the net needs at least one hidden layer")
        if len(widths) > MAX_DEPTH:
            raise ValueError(f"depth must be <= {MAX_DEPTH}, got {len(widths)} hidden layers")
        self.widths = tuple(widths)
        self.depth = len(widths)
        self.w_std = check_real(w_std, "w_std", min_value=0.0)
        self.b_std = check_real(b_std, "b_std", min_value=0.0)
        self.w_out = check_real(w_out, "w_out", min_value=0.0)
        self.out_dim = check_int(out_dim, "out_dim", min_value=1)
        seed = check_int(seed, "seed")
        dtype = resolve_dtype(dtype) or torch.float32
        device = resolve_device(device) or torch.device("cpu")
        factorize = dict(factorize or {})
        sizes = [self.d, *self.widths, self.out_dim]
        for idx in factorize:
            if (
                isinstance(idx, bool)
                or not isinstance(idx, (int, np.integer))
                or not 0 <= idx <= self.depth
            ):
                raise ValueError(
                    f"factorize keys must be layer indices in 0..{self.depth}, got {idx!r}"
                )
        n_w = sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:]))
        check_memory(
            n_w * (8 + dtype.itemsize),
            f"widths {list(self.widths)} ({n_w} parameters)",
            "use smaller widths",
            device,
        )
        gen = _generator(seed, "DeepReLU")
        layers = []
        for l in range(self.depth + 1):
            w = self.w_out if l == self.depth else self.w_std
            if l in factorize:
                spec = factorize[l]
                if isinstance(spec, (tuple, list)) and len(spec) == 2:
                    kind, k = spec
                else:
                    kind, k = spec, None
                layer = SketchedLinear(
                    sizes[l],
                    sizes[l + 1],
                    k,
                    sketch=kind,
                    seed=derive_seed(seed, "DeepReLU", l),
                    parameterization="ntk",
                    w_std=w,
                    b_std=self.b_std,
                    dtype=dtype,
                    device=device,
                )
            else:
                layer = NTKLinear(
                    sizes[l], sizes[l + 1], w, self.b_std, generator=gen, dtype=dtype, device=device
                )
            layers.append(layer)
        self.layers = nn.ModuleList(layers)

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def forward(self, X: ArrayLike) -> Any:
        X, was_numpy = _check_input(X, self.d, self.dtype, self.device)
        h = X
        for layer in self.layers[:-1]:
            h = torch.relu(layer(h))
        out = self.layers[-1](h)
        if self.out_dim == 1:
            out = out.squeeze(-1)
        return to_output(out, was_numpy)
