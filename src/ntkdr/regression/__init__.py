"""NTK regression: closed-form and conjugate-gradient solvers, the GD-time predictor and scikit-learn estimators.

* :mod:`ntkdr.regression.solvers` -- :func:`kernel_ridge_fit`, :func:`kernel_predict`,
  :func:`gd_time_coef`, :func:`gd_time_predict` on precomputed kernel matrices;
* :mod:`ntkdr.regression.cg` -- :func:`conjugate_gradient`, :func:`kernel_operator`,
  :func:`kernel_cg_fit` (matrix-free, optionally distributed);
* :mod:`ntkdr.regression.estimators` -- :class:`NTKRegressor`, :class:`NTKClassifier`.
"""

from __future__ import annotations

from ntkdr.regression.cg import CGResult, conjugate_gradient, kernel_cg_fit, kernel_operator
from ntkdr.regression.estimators import NTKClassifier, NTKRegressor
from ntkdr.regression.solvers import gd_time_coef, gd_time_predict, kernel_predict, kernel_ridge_fit

__all__ = [
    "CGResult",
    "kernel_operator",
    "kernel_cg_fit",
    "kernel_ridge_fit",
    "kernel_predict",
    "gd_time_coef",
    "gd_time_predict",
    "conjugate_gradient",
    "NTKRegressor",
    "NTKClassifier",
]
