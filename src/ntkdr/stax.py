r"""A small layer algebra in the vocabulary of neural-tangents' ``stax`` (Novak et al. 2020).

One description gives both the finite network and its infinite-width kernels::

    net = serial(Dense(512, W_std=1.5, b_std=0.1), Erf(), Dense(512, 1.5, 0.1), Relu(), Dense(1))
    model = net.module(in_dim=784, seed=0)       # a torch.nn.Module, NTK parameterization
    ntk, nngp = net.kernel_fn(X, Z, get=("ntk", "nngp"))  # its width -> infinity limit

NTK parameterization (Jacot et al. 2018; neural-tangents' ``parameterization="ntk"``): a
``Dense(out_dim, W_std, b_std)`` layer computes ``W_std / sqrt(fan_in) * x @ W^T + b_std * beta``
with ``W`` and ``beta`` standard normal at initialisation; the trained parameters are ``W`` and
``beta``, so the empirical NTK of the module converges to ``kernel_fn``'s NTK as the hidden
widths grow (Jacot et al. 2018; Lee et al. 2019).  The kernels are per output unit (the same for
every output of the last Dense).  Activations: :func:`Relu`, :func:`LeakyRelu`,
:func:`ABRelu`, :func:`Abs`, :func:`Erf`, :func:`Gelu` (exact), :func:`Sign`,
:func:`Identity`; each must follow a ``Dense`` layer (its input must be Gaussian, as in
neural-tangents).

``kernel_fn`` runs :func:`ntkdr.activations.fc_kernels` when the network is
``Dense(w, b), Act, ..., Dense(w, b), Act, Dense(w_out, b)`` with one activation (the ReLU case
then is :func:`ntkdr.kernels.fc_relu_kernels`), otherwise the same tiled engine layer by layer
(any serial composition of the layers above), so it keeps the memory budget either way.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from ntkdr.kernels.activations import _Dense, fc_kernels, make_activation, serial_kernels
from ntkdr.validation import check_int, check_real

__all__ = [
    "Layer",
    "serial",
    "Dense",
    "Relu",
    "LeakyRelu",
    "ABRelu",
    "Abs",
    "Erf",
    "Gelu",
    "Sign",
    "Identity",
]

_GET = ("ntk", "nngp")


class _DenseModule(nn.Module):
    """``W_std / sqrt(fan_in) x @ W^T + b_std beta`` with standard normal ``W``, ``beta``."""

    def __init__(self, in_dim: int, out_dim: int, w_std: float, b_std: float, gen, dtype):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim, generator=gen, dtype=dtype))
        # b_std = 0: the bias gets zero gradient, so leaving it out changes no kernel
        self.bias = (
            nn.Parameter(torch.randn(out_dim, generator=gen, dtype=dtype)) if b_std > 0 else None
        )
        self.w_scale = w_std / math.sqrt(in_dim)
        self.b_std = b_std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = (x @ self.weight.T) * self.w_scale
        return y if self.bias is None else y + self.b_std * self.bias


class _ActModule(nn.Module):
    def __init__(self, name: str, params: dict[str, float]):
        super().__init__()
        self.name, self.params = name, params

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, p = self.name, self.params
        if n == "relu":
            return torch.relu(x)
        if n == "leaky_relu":
            return nn.functional.leaky_relu(x, p["negative_slope"])
        if n == "abrelu":
            return p["a"] * x.clamp(max=0) + p["b"] * x.clamp(min=0)
        if n == "abs":
            return x.abs()
        if n == "erf":
            return p["a"] * torch.erf(p["b"] * x) + p["c"]
        if n == "gelu":
            return nn.functional.gelu(x)
        if n == "sign":
            return torch.sign(x)
        return x

    def extra_repr(self) -> str:
        return f"{self.name}, {self.params}" if self.params else self.name


class Layer:
    """A serial composition of Dense and activation layers (a single layer included)."""

    def __init__(self, specs: list[tuple]):
        self.specs = specs  # ("dense", out_dim, W_std, b_std) or ("act", name, params)

    def __repr__(self) -> str:
        parts = []
        for s in self.specs:
            if s[0] == "dense":
                parts.append(f"Dense({s[1]}, W_std={s[2]:g}, b_std={s[3]:g})")
            else:
                args = ", ".join(f"{k}={v:g}" for k, v in s[2].items())
                parts.append(f"{s[1]}({args})")
        return "serial(" + ", ".join(parts) + ")"

    def module(self, in_dim: int, seed: int = 0, dtype: Any = torch.float32) -> nn.Module:
        """A fresh ``torch.nn.Sequential`` with standard normal parameters drawn from ``seed``."""
        in_dim = check_int(in_dim, "in_dim", min_value=1)
        seed = check_int(seed, "seed", min_value=0)
        if dtype not in (torch.float32, torch.float64):
            raise ValueError(f"dtype must be torch.float32 or torch.float64, got {dtype!r}")
        gen = torch.Generator().manual_seed(seed)
        mods: list[nn.Module] = []
        width = in_dim
        for s in self.specs:
            if s[0] == "dense":
                mods.append(_DenseModule(width, s[1], s[2], s[3], gen, dtype))
                width = s[1]
            else:
                mods.append(_ActModule(s[1], s[2]))
        return nn.Sequential(*mods)

    def _layers(self) -> list[Any]:
        return [
            _Dense(s[2], s[3]) if s[0] == "dense" else make_activation(s[1], s[2])
            for s in self.specs
        ]

    def _fc_form(self) -> tuple | None:
        """``(depth, name, params, w, b, w_out)`` if this is fc_kernels' architecture."""
        sp = self.specs
        if len(sp) < 3 or len(sp) % 2 == 0 or sp[0][0] != "dense":
            return None
        acts, denses = sp[1::2], sp[0::2]
        if any(a[0] != "act" or a[1:] != acts[0][1:] for a in acts):
            return None
        if any(d[0] != "dense" or d[2:] != denses[0][2:] for d in denses[:-1]):
            return None
        if denses[-1][0] != "dense" or denses[-1][3] != denses[0][3]:
            return None
        return len(acts), acts[0][1], acts[0][2], denses[0][2], denses[0][3], denses[-1][2]

    def kernel_fn(self, X: Any, Z: Any = None, get: str | tuple[str, ...] = "ntk", **options):
        """Analytic kernel(s) between the rows of X and Z (``Z=None``: X, exactly symmetric).

        ``get``: ``"ntk"``, ``"nngp"`` or a tuple of them (then a tuple in that order).
        ``options``: ``sketch``, ``tile``, ``max_memory``, ``dtype``, ``device`` of
        :func:`ntkdr.activations.fc_kernels`.
        """
        keys = (get,) if isinstance(get, str) else get
        if not isinstance(keys, tuple) or not keys or any(k not in _GET for k in keys):
            raise ValueError(f"get must be 'ntk', 'nngp' or a tuple of them, got {get!r}")
        allowed = {"sketch", "tile", "max_memory", "dtype", "device"}
        bad = sorted(set(options) - allowed)
        if bad:
            raise ValueError(f"unexpected option(s) {', '.join(map(repr, bad))} for kernel_fn")
        fc = self._fc_form()
        if fc is not None:
            depth, name, params, w, b, w_out = fc
            ntk, nngp = fc_kernels(X, Z, depth, name, w, b, w_out, **options, **params)
        else:
            ntk, nngp = serial_kernels(self._layers(), X, Z, **options)
        res = {"ntk": ntk, "nngp": nngp}
        return res[keys[0]] if isinstance(get, str) else tuple(res[k] for k in keys)


def serial(*layers: Layer) -> Layer:
    """The composition ``layers[-1] o ... o layers[0]`` (nested serials are flattened)."""
    specs: list[tuple] = []
    for layer in layers:
        if not isinstance(layer, Layer):
            raise ValueError(f"serial takes stax layers, got {type(layer).__name__}")
        specs += layer.specs
    if not specs:
        raise ValueError("serial needs at least one layer")
    return Layer(specs)


def Dense(out_dim: int, W_std: float = 1.0, b_std: float = 0.0) -> Layer:
    """Fully connected layer with ``out_dim`` units, NTK parameterization."""
    out_dim = check_int(out_dim, "out_dim", min_value=1)
    W_std = check_real(W_std, "W_std", positive=True)
    b_std = check_real(b_std, "b_std", min_value=0.0)
    return Layer([("dense", out_dim, W_std, b_std)])


def _act(name: str, **params: float) -> Layer:
    act = make_activation(name, params)  # validates
    del act
    canon = dict(params)
    if name == "leaky_relu":
        canon = {"negative_slope": float(params["alpha"])}
    elif name == "erf":
        canon = {k: float(params[k]) for k in ("a", "b", "c")}
    elif name == "abrelu":
        canon = {k: float(params[k]) for k in ("a", "b")}
    return Layer([("act", name, canon)])


def Relu() -> Layer:
    """``max(x, 0)``."""
    return _act("relu")


def LeakyRelu(alpha: float) -> Layer:
    """``alpha min(x, 0) + max(x, 0)`` (neural-tangents' name and argument)."""
    return _act("leaky_relu", alpha=alpha)


def ABRelu(a: float, b: float) -> Layer:
    """``a min(x, 0) + b max(x, 0)``."""
    return _act("abrelu", a=a, b=b)


def Abs() -> Layer:
    """``|x|``."""
    return _act("abs")


def Erf(a: float = 1.0, b: float = 1.0, c: float = 0.0) -> Layer:
    """``a erf(b x) + c``."""
    return _act("erf", a=a, b=b, c=c)


def Gelu() -> Layer:
    """Exact GELU ``x Phi(x)``."""
    return _act("gelu")


def Sign() -> Layer:
    """``sign(x)`` (its NTK contribution through the activation is zero)."""
    return _act("sign")


def Identity() -> Layer:
    """``x``."""
    return _act("identity")
