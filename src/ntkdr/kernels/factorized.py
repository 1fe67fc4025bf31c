"""The analytic NTK / NNGP of a deep ReLU network whose first layer is factorized through a fixed sketch.

A factorized first layer (Ailon & Shit, arXiv 2210.04807, 2022) in NTK parameterization (Jacot et
al. 2018), ``w / sqrt(d) * U (S x) + b_std b`` with S (k x d) fixed and ``U, b ~ N(0, 1)`` trained,
is the dense NTK layer ``w / sqrt(k) * U x' + b_std b`` on ``x' = sqrt(k / d) S x``; the rest of
the recursion (Arora et al. 2019) is unchanged.  (This differs from
``fc_kernels(X, sketch=S)``, the kernel of ``S x`` fed to a network with ``k`` inputs, whose
first layer scales by ``1 / sqrt(k)``: a factorized layer keeps the dense fan-in ``d``.)  The layer is any object with ``sketch_input``,
``k``, ``in_features``, ``w_std``, ``b_std`` and ``parameterization`` -- the
:class:`~ntkdr.nets.SketchedLinear` that :func:`ntkdr.nets.factorize.factorize` builds.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from ntkdr.kernels.relu import fc_relu_kernels
from ntkdr.validation import as_matrix

__all__ = ["factorized_fc_kernels", "factorized_inputs"]


def factorized_inputs(layer: Any, X: Any) -> torch.Tensor:
    """``phi(x) = sqrt(k / d) * S x`` (``S x / |S x|`` first when the sketch renormalizes):
    the inputs whose dense deep kernel is that of the factorized network."""
    if getattr(layer, "parameterization", None) != "ntk" or not hasattr(layer, "sketch_input"):
        raise ValueError(
            "the analytic kernel needs a SketchedLinear in NTK parameterization "
            f"(got {type(layer).__name__})"
        )
    Xt, _ = as_matrix(X, "X", dtype=layer.S.dtype, device=layer.S.device)
    with torch.no_grad():
        return layer.sketch_input(Xt) * math.sqrt(layer.k / layer.in_features)


def factorized_fc_kernels(
    X: Any,
    layer: Any,
    Z: Any = None,
    depth: int = 1,
    w_std: float = 2**0.5,
    b_std: float = 0.0,
    w_out: float = 1.0,
) -> tuple[Any, Any]:
    r"""``(ntk, nngp)`` of a deep ReLU net (NTK parameterization, the network of
    :func:`ntkdr.kernels.fc_relu_kernels`) whose first layer is the factorized ``layer``.

    With S fixed and ``U, b`` trained, the first layer ``w / sqrt(d) * U (S x) + b_std b`` has
    input covariance ``w^2 (S x . S z) / d + b_std^2`` (with ``renormalize``:
    ``w^2 (S x . S z) / (d |S x| |S z|) + b_std^2``), which is that of a dense first layer on
    ``x' = sqrt(k / d) S x`` (see :func:`factorized_inputs`); the rest of the recursion (Jacot
    et al. 2018; Arora et al. 2019) is unchanged, so this is
    ``fc_relu_kernels(phi(X), phi(Z), depth, w_std, b_std, w_out)``.  ``w_std`` / ``b_std``
    must be the layer's own.  numpy in -> numpy out.
    """
    FX = factorized_inputs(layer, X)
    if layer.w_std != w_std or layer.b_std != b_std:
        raise ValueError(
            f"the layer has w_std = {layer.w_std}, b_std = {layer.b_std} but the kernel was asked "
            f"for w_std = {w_std}, b_std = {b_std}"
        )
    was_numpy = not isinstance(X, torch.Tensor)
    FZ = None if Z is None else factorized_inputs(layer, Z)
    ntk, nngp = fc_relu_kernels(FX, FZ, depth=depth, w_std=w_std, b_std=b_std, w_out=w_out)
    if was_numpy:
        return ntk.cpu().numpy(), nngp.cpu().numpy()
    return ntk, nngp
