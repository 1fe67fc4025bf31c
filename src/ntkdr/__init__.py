"""ntkdr: cheap, trustworthy neural tangent kernels via dimensionality reduction.

Implements Ailon & Shit, *Efficient NTK using Dimensionality Reduction* (arXiv 2210.04807):
wide two-layer ReLU networks whose first layer W = U S factors through a fixed random
sketch S, with analytic and empirical NTKs and the prior analysis' guarantees
(Du et al. 2019; Arora et al. 2019) measured side by side.
"""
__version__ = "0.1.0"
