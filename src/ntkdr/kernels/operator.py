"""The analytic NTK as a kernel object (:class:`AnalyticNTK` with :class:`KernelOptions`) for matrix-free solvers."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ntkdr.kernels.engine import _check_max_memory, _check_tile, _prepare, _run
from ntkdr.kernels.relu import (
    _fc_plan,
    _two_layer_plan,
    fc_relu_kernels,
    fc_relu_kernels_diag,
    two_layer_ntk,
    two_layer_ntk_diag,
)
from ntkdr.validation import ArrayLike, check_choice, to_output

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
    ``kind="fc"`` uses ``depth``, ``w_std``, ``b_std``, ``w_out`` (:func:`fc_relu_kernels`)
    and ``output`` picks ``"ntk"`` or ``"nngp"``.  ``K(X, Z)`` is the matrix,
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
            return _two_layer_plan(self.layers, self.kappa)
        return _fc_plan(self.depth, self.w_std, self.b_std, self.w_out, d)

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
