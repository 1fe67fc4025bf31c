"""The network classes, at their original import path (they live in :mod:`ntkdr.nets`)."""

from __future__ import annotations

from ntkdr.nets import (
    DeepReLU,
    NTKLinear,
    SketchedLinear,
    TwoLayerReLU,
    derive_seed,
    model_dtype_device,
)

__all__ = [
    "TwoLayerReLU",
    "SketchedLinear",
    "NTKLinear",
    "DeepReLU",
    "derive_seed",
    "model_dtype_device",
]
