"""The analytic NTK as a kernel object (:class:`AnalyticNTK` with :class:`KernelOptions`) for matrix-free solvers."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ntkdr.kernels.activations import (
    _SerialPlan,
    check_fc_args,
    fc_kernels,
    fc_layers,
    make_activation,
)
from ntkdr.kernels.engine import _check_max_memory, _check_tile, _prepare, _run
from ntkdr.kernels.relu import (
    _fc_plan,
    _two_layer_plan,
    fc_relu_kernels,
    fc_relu_kernels_diag,
    two_layer_ntk,
    two_layer_ntk_diag,
)
from ntkdr.validation import ArrayLike, as_matrix, check_choice, to_output

__all__ = ["KernelOptions", "AnalyticNTK", "NTK"]


# --------------------------------------------------------------------------------------
# Kernel object for matrix-free use
# --------------------------------------------------------------------------------------


@dataclass
class KernelOptions:
    """How kernels are evaluated: rows per tile, memory budget (bytes), dtype, device."""

    tile: int | None = None
    max_memory: float | None = None
    dtype: Any = None
    device: Any = None


@dataclass
class AnalyticNTK:
    """An analytic NTK / NNGP as a kernel object (Falkon-style), for matrix-free solvers.

    ``kind="two_layer"`` uses ``layers`` and ``kappa`` (:func:`two_layer_ntk`);
    ``kind="fc"`` uses ``depth``, ``w_std``, ``b_std``, ``w_out``, ``activation`` and
    ``activation_params`` (:func:`fc_relu_kernels` for ReLU, :func:`fc_kernels` otherwise) and
    ``output`` picks ``"ntk"`` or ``"nngp"``.  ``K(X, Z)`` is the matrix,
    ``K.matvec(X, v, Z)`` is ``K(X, Z) @ v`` computed tile by tile without forming the
    matrix, ``K.diag(X)`` the diagonal of ``K(X, X)``.
    """

    kind: str = "two_layer"
    layers: str = "first"
    kappa: float = 1.0
    depth: int = 1
    w_std: float = 2**0.5
    b_std: float = 0.0
    w_out: float = 1.0
    output: str = "ntk"
    options: KernelOptions = field(default_factory=KernelOptions)
    activation: str = "relu"
    activation_params: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._plan(1)  # validate eagerly

    def _plan(self, d: int):
        check_choice(self.kind, "kind", ("two_layer", "fc"))
        check_choice(self.output, "output", ("ntk", "nngp"))
        _check_tile(self.options.tile)
        _check_max_memory(self.options.max_memory)
        if self.kind == "two_layer":
            if self.output != "ntk":
                raise ValueError("output='nngp' is only defined for kind='fc'")
            if self.activation != "relu" or self.activation_params:
                raise ValueError(
                    "activation is only used with kind='fc' (the two-layer kernel is ReLU)"
                )
            return _two_layer_plan(self.layers, self.kappa)
        if self.activation == "relu" and not self.activation_params:
            return _fc_plan(self.depth, self.w_std, self.b_std, self.w_out, d)
        act = make_activation(self.activation, dict(self.activation_params))
        depth, w_std, b_std, w_out = check_fc_args(self.depth, self.w_std, self.b_std, self.w_out)
        return _SerialPlan(fc_layers(depth, act, w_std, b_std, w_out), d)

    @property
    def _index(self) -> int:
        return 1 if (self.kind == "fc" and self.output == "nngp") else 0

    def __call__(self, X: Any, Z: Any = None, *, out: Any = None):
        o = self.options
        if self.kind == "two_layer":
            return two_layer_ntk(
                X,
                Z,
                self.layers,
                kappa=self.kappa,
                tile=o.tile,
                max_memory=o.max_memory,
                out=out,
                dtype=o.dtype,
                device=o.device,
            )
        outs = None if out is None else ((out, None) if self._index == 0 else (None, out))
        if self.activation != "relu" or self.activation_params:
            params: dict[str, Any] = dict(self.activation_params)
            res = fc_kernels(
                X,
                Z,
                self.depth,
                self.activation,
                self.w_std,
                self.b_std,
                self.w_out,
                tile=o.tile,
                max_memory=o.max_memory,
                out=outs,
                dtype=o.dtype,
                device=o.device,
                **params,
            )
            return res[self._index]
        res = fc_relu_kernels(
            X,
            Z,
            self.depth,
            self.w_std,
            self.b_std,
            self.w_out,
            tile=o.tile,
            max_memory=o.max_memory,
            out=outs,
            dtype=o.dtype,
            device=o.device,
        )
        return res[self._index]

    def diag(self, X: ArrayLike):
        o = self.options
        if self.kind == "two_layer":
            return two_layer_ntk_diag(
                X, self.layers, kappa=self.kappa, dtype=o.dtype, device=o.device
            )
        if self.activation != "relu" or self.activation_params:
            Xt, x_np = as_matrix(X, "X", dtype=o.dtype, device=o.device)
            plan = self._plan(Xt.shape[1])
            sx = plan.stats(Xt)
            plan.check(sx, sx, Xt.dtype)
            return to_output(plan.diag(sx)[self._index], x_np)
        res = fc_relu_kernels_diag(
            X, self.depth, self.w_std, self.b_std, self.w_out, dtype=o.dtype, device=o.device
        )
        return res[self._index]

    def matvec(self, X: ArrayLike, v: ArrayLike, Z: ArrayLike | None = None):
        """``K(X, Z) @ v`` for ``v`` of shape (n',) or (n', c), tile by tile (K never formed)."""
        o = self.options
        tile, max_memory = _check_tile(o.tile), _check_max_memory(o.max_memory)
        Xt, Zt, sym, x_np = _prepare(X, Z, o.dtype, o.device)
        plan = self._plan(Xt.shape[1])
        vt = _as_vector(v, Zt.shape[0], "Z" if Z is not None else "X", Xt)
        y = torch.empty((Xt.shape[0],) + tuple(vt.shape[1:]), dtype=Xt.dtype, device=Xt.device)
        idx = 0 if plan.n_out == 1 else self._index

        def sink(a: int, b: int, tiles: list[torch.Tensor]) -> None:
            torch.matmul(tiles[idx], vt, out=y[a:b])

        _run(plan, Xt, Zt, sym, None, tile, max_memory, sink=sink)
        return to_output(y, x_np)


def _as_vector(v: Any, n: int, rows_name: str, like: torch.Tensor) -> torch.Tensor:
    """Validate the right-hand side of a kernel-vector product."""
    if isinstance(v, torch.Tensor):
        t = v
    else:
        arr = np.asarray(v)
        if arr.dtype == object or not (
            np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_
        ):
            raise ValueError(f"v must be numeric, got dtype {arr.dtype}")
        t = torch.from_numpy(np.ascontiguousarray(arr))
    if t.is_complex():
        raise ValueError("v must be real")
    if t.ndim not in (1, 2):
        raise ValueError(f"v must be 1-D (n,) or 2-D (n, c), got shape {tuple(t.shape)}")
    if t.shape[0] != n:
        raise ValueError(f"v has {t.shape[0]} rows but {rows_name} has {n}")
    t = t.to(dtype=like.dtype, device=like.device)
    if not bool(torch.isfinite(t).all()):
        raise ValueError("v contains NaN or Inf")
    return t


#: The older name of :class:`AnalyticNTK` (``ntkdr.kernels.NTK``); ``ntkdr.NTK`` is deprecated.
NTK = AnalyticNTK
