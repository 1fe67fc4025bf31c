"""ntkdr: cheap, trustworthy neural tangent kernels via dimensionality reduction.

Implements Ailon & Shit, *Efficient NTK using Dimensionality Reduction* (arXiv 2210.04807):
wide two-layer ReLU networks whose first layer W = U S factors through a fixed random
sketch S, with analytic and empirical NTKs and the prior analysis' guarantees
(Du et al. 2019; Arora et al. 2019) measured side by side.

The public names below are imported lazily (PEP 562) so that ``import ntkdr`` stays
cheap; ``from ntkdr import two_layer_ntk`` works as usual.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "sketches": ("make_sketch", "Sketch", "SKETCH_KINDS"),
    "kernels": ("two_layer_ntk", "fc_relu_kernels", "NTK", "KernelOptions"),
    "models": ("TwoLayerReLU", "SketchedLinear", "DeepReLU"),
    "empirical": ("ntk", "ntk_projected", "ProjectedNTK"),
    "train": ("fit", "History"),
    "theory": (
        "lambda_min",
        "lambda_max",
        "generalization_bound",
        "predicted_trajectory",
        "width_requirements",
        "jl_min_dim",
        "cost",
        "BoundResult",
    ),
    "regression": (
        "NTKRegressor",
        "NTKClassifier",
        "kernel_ridge_fit",
        "gd_time_predict",
        "conjugate_gradient",
    ),
    "predict": ("gradient_descent_mse", "gp_inference"),
    "data": ("load_dataset", "load_file", "Dataset", "DATASETS"),
    "validation": ("ParallelRowsWarning",),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = ["__version__", *_WHERE]


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        value = getattr(importlib.import_module(f"ntkdr.{_WHERE[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'ntkdr' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
