"""Measurements over whole networks: two networks' empirical NTKs side by side, and the width at which networks behave like their NTK.

* :mod:`ntkdr.studies.comparison` -- :func:`compare` (a model and e.g. its factorized copy: lambda_min
  and bound ratios, kernel distance and alignment, parameters, seconds) and :class:`Comparison`;
* :mod:`ntkdr.studies.width` -- :func:`width_study`: NTK fidelity vs width for dense and factorized
  two-layer and deep networks, the width reaching a tolerance, the theory's width, the cost there.

This room sits above ``training`` (the width study trains networks) and below ``cli``.
"""

from __future__ import annotations

from ntkdr.studies.comparison import TRACE_CONVENTION, Comparison, compare, empirical_kernel
from ntkdr.studies.width import DEFAULT_WIDTHS, NETWORKS, WidthStudy, mlp_cost, width_study

__all__ = [
    "compare",
    "Comparison",
    "empirical_kernel",
    "TRACE_CONVENTION",
    "width_study",
    "WidthStudy",
    "NETWORKS",
    "DEFAULT_WIDTHS",
    "mlp_cost",
]
