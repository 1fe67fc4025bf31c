"""Analytic NTK / NNGP kernels of ReLU networks: closed forms, the tiled engine, the kernel object and out-of-core files.

* :mod:`ntkdr.kernels.relu` -- :func:`two_layer_ntk`, :func:`fc_relu_kernels` and their diagonals;
* :mod:`ntkdr.kernels.activations` -- :func:`fc_kernels`, deep FC kernels for relu, leaky_relu,
  abrelu, abs, erf, gelu, sign and identity (neural-tangents' ``stax`` conventions);
* :mod:`ntkdr.kernels.factorized` -- :func:`factorized_fc_kernels`, the deep kernel of a net whose first
  layer is factorized (the kernel of ``sqrt(k / d) S x``);
* :mod:`ntkdr.kernels.engine` -- the tiling machinery every analytic kernel runs on;
* :mod:`ntkdr.kernels.operator` -- :class:`AnalyticNTK` (also ``NTK``) / :class:`KernelOptions`, the kernel as an object
  with ``K(X, Z)``, ``K.diag(X)`` and ``K.matvec(X, v)``;
* :mod:`ntkdr.kernels.tiles` -- resumable, optionally distributed kernel matrices on disk.
"""

from __future__ import annotations

from ntkdr.kernels.activations import ACTIVATIONS, fc_kernels
from ntkdr.kernels.factorized import factorized_fc_kernels, factorized_inputs
from ntkdr.kernels.operator import NTK, AnalyticNTK, KernelOptions
from ntkdr.kernels.relu import (
    fc_relu_kernels,
    fc_relu_kernels_diag,
    two_layer_ntk,
    two_layer_ntk_diag,
)
from ntkdr.memory import DEFAULT_MAX_MEMORY

__all__ = [
    "DEFAULT_MAX_MEMORY",
    "KernelOptions",
    "AnalyticNTK",
    "NTK",
    "two_layer_ntk",
    "fc_relu_kernels",
    "fc_kernels",
    "ACTIVATIONS",
    "two_layer_ntk_diag",
    "fc_relu_kernels_diag",
    "factorized_fc_kernels",
    "factorized_inputs",
]
