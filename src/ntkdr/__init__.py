"""ntkdr: cheap, trustworthy neural tangent kernels via dimensionality reduction.

Implements Ailon & Shit, *Efficient NTK using Dimensionality Reduction* (arXiv 2210.04807):
wide two-layer ReLU networks whose first layer W = U S factors through a fixed random
sketch S, with analytic and empirical NTKs and the prior analysis' guarantees
(Du et al. 2019; Arora et al. 2019) measured side by side.

The public names below are imported lazily (PEP 562) so that ``import ntkdr`` stays
cheap; ``from ntkdr import two_layer_ntk`` works as usual, and type checkers see every
name through the ``TYPE_CHECKING`` imports.  The rooms of the package and the data path
through them are described in docs/architecture.md.
"""

from __future__ import annotations

import importlib
import warnings
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "sketches": ("make_sketch", "Sketch", "SKETCH_KINDS", "SketchTransformer"),
    "kernels": (
        "two_layer_ntk",
        "fc_relu_kernels",
        "fc_kernels",
        "factorized_fc_kernels",
        "AnalyticNTK",
        "KernelOptions",
    ),
    "nets": ("TwoLayerReLU", "SketchedLinear", "DeepReLU"),
    "nets.empirical": ("empirical_ntk", "ntk_projected", "ProjectedNTK"),
    "nets.factorize": ("factorize", "factorization_summary", "FactorizationSummary"),
    "nets.montecarlo": ("monte_carlo_kernels", "MonteCarloKernels"),
    "studies": ("compare", "Comparison", "width_study", "WidthStudy"),
    "training": ("fit", "train_network", "History"),
    "theory": (
        "lambda_min",
        "lambda_max",
        "generalization_bound",
        "predicted_trajectory",
        "width_requirements",
        "jl_min_dim",
        "cost",
        "cost_model",
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
#: Old top-level names kept for one release: name -> (new name, module).
_DEPRECATED = {
    "ntk": ("empirical_ntk", "nets.empirical"),
    "NTK": ("AnalyticNTK", "kernels"),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = ["__version__", *_WHERE]  # the deprecated names resolve but are not star-exported

if TYPE_CHECKING:
    from ntkdr.data import DATASETS, Dataset, load_dataset, load_file
    from ntkdr.kernels import (
        AnalyticNTK,
        KernelOptions,
        factorized_fc_kernels,
        fc_kernels,
        fc_relu_kernels,
        two_layer_ntk,
    )
    from ntkdr.kernels import AnalyticNTK as NTK
    from ntkdr.nets import DeepReLU, SketchedLinear, TwoLayerReLU
    from ntkdr.nets.empirical import ProjectedNTK, empirical_ntk, ntk_projected
    from ntkdr.nets.empirical import empirical_ntk as ntk
    from ntkdr.nets.factorize import FactorizationSummary, factorization_summary, factorize
    from ntkdr.nets.montecarlo import MonteCarloKernels, monte_carlo_kernels
    from ntkdr.predict import gp_inference, gradient_descent_mse
    from ntkdr.regression import (
        NTKClassifier,
        NTKRegressor,
        conjugate_gradient,
        gd_time_predict,
        kernel_ridge_fit,
    )
    from ntkdr.sketches import SKETCH_KINDS, Sketch, SketchTransformer, make_sketch
    from ntkdr.studies import Comparison, WidthStudy, compare, width_study
    from ntkdr.theory import (
        BoundResult,
        cost,
        cost_model,
        generalization_bound,
        jl_min_dim,
        lambda_max,
        lambda_min,
        predicted_trajectory,
        width_requirements,
    )
    from ntkdr.training import History, fit, train_network
    from ntkdr.validation import ParallelRowsWarning


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        value = getattr(importlib.import_module(f"ntkdr.{_WHERE[name]}"), name)
        globals()[name] = value
        return value
    if name in _DEPRECATED:
        new, module = _DEPRECATED[name]
        warnings.warn(
            f"ntkdr.{name} is deprecated and will be removed in the next release; use ntkdr.{new}",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(
            importlib.import_module(f"ntkdr.{module}"), new
        )  # not cached: warn each time
    raise AttributeError(f"module 'ntkdr' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
