"""Quantities of the prior analysis: spectra, generalization bounds, predicted trajectories, width requirements and the cost model.

* :mod:`ntkdr.theory.spectra` -- :func:`eigh`, :func:`lambda_min`, :func:`lambda_max`,
  :func:`spectrum_summary`;
* :mod:`ntkdr.theory.bounds` -- :func:`generalization_bound` (Arora et al., ICML 2019, Thm 5.1,
  ``sqrt(2 y^T H^-1 y / n)``), :func:`predicted_trajectory` / :func:`predicted_loss` (Thm 4.1,
  the linearised GD residual ``||(I - lr H)^t (y - u0)||``);
* :mod:`ntkdr.theory.width` -- :func:`width_requirements` (Du et al., ICLR 2019, Thm 4.1 and
  Arora et al. Thm 4.1) and :func:`jl_min_dim` (Johnson-Lindenstrauss minimum dimension);
* :mod:`ntkdr.theory.cost` -- :func:`cost` (also :func:`cost_model`): parameters and
  multiply-adds of dense vs factorized two-layer networks;
* :mod:`ntkdr.theory.certificate` -- the certificate engine: :func:`certify_matrix`,
  :func:`certify_inplace`, :func:`certify_operator` return a :class:`Certificate` (lambda_min,
  lambda_max, y^T H^-1 y and the bounds with proven intervals where a proof exists), methods in
  ``certificate_dense`` / ``certificate_free``, proofs and quadrature in ``certificate_linalg``.
"""

from __future__ import annotations

from ntkdr.sketches.base import SKETCH_KINDS
from ntkdr.theory.bounds import (
    BoundResult,
    generalization_bound,
    predicted_loss,
    predicted_trajectory,
)
from ntkdr.theory.certificate import (
    Certificate,
    certify_inplace,
    certify_matrix,
    certify_operator,
    choose_method,
)
from ntkdr.theory.cost import cost, cost_model
from ntkdr.theory.spectra import (
    SingularKernelWarning,
    eigh,
    lambda_max,
    lambda_min,
    spectrum_summary,
    top_eigenvalue,
)
from ntkdr.theory.width import CONSTANTS_NOTE, jl_min_dim, width_requirements

__all__ = [
    "Certificate",
    "certify_matrix",
    "certify_inplace",
    "certify_operator",
    "choose_method",
    "SingularKernelWarning",
    "BoundResult",
    "eigh",
    "lambda_min",
    "lambda_max",
    "spectrum_summary",
    "top_eigenvalue",
    "generalization_bound",
    "predicted_trajectory",
    "predicted_loss",
    "width_requirements",
    "jl_min_dim",
    "cost",
    "cost_model",
    "SKETCH_KINDS",
    "CONSTANTS_NOTE",
]
