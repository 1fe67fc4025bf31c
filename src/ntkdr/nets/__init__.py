"""Networks and their finite-width NTKs: the dense / factorized two-layer ReLU net, sketched layers, the deep ReLU net and the empirical NTK."""

from __future__ import annotations

from ntkdr.nets.empirical import (
    ProjectedNTK,
    empirical_ntk,
    ntk,
    ntk_closed,
    ntk_jacobian,
    ntk_projected,
)
from ntkdr.nets.layers import DeepReLU, NTKLinear, SketchedLinear
from ntkdr.nets.models import TwoLayerReLU, derive_seed, model_dtype_device

__all__ = [
    "TwoLayerReLU",
    "SketchedLinear",
    "NTKLinear",
    "DeepReLU",
    "derive_seed",
    "model_dtype_device",
    "empirical_ntk",
    "ntk",
    "ntk_closed",
    "ntk_jacobian",
    "ntk_projected",
    "ProjectedNTK",
]
