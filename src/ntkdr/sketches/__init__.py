"""Dimension-reduction maps ("sketches") S: R^d -> R^k, their registry and a scikit-learn transformer.

Every map is a linear k x d matrix ``S`` applied to the rows of an ``(n, d)`` array,
``X -> X @ S.T``, built with :func:`make_sketch`::

    S = make_sketch("srht", d=784, k=64, seed=0)
    Y = S(X)                 # (n, 64); numpy in -> numpy out, torch in -> torch out
    M = S.matrix()           # the explicit 64 x 784 matrix, float64 (Y == X @ M.T)
    S.flops(len(X))          # multiply-adds that S(X) costs

Kinds (:data:`SKETCH_KINDS`): ``gaussian``, ``sparse``, ``pca`` and ``identity``
(:mod:`ntkdr.sketches.kinds`), ``srht`` (:mod:`ntkdr.sketches.srht`); the common behaviour
is described in :mod:`ntkdr.sketches.base`.  :class:`SketchTransformer`
(:mod:`ntkdr.sketches.transformer`) wraps any kind as a scikit-learn transformer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ntkdr.sketches.base import SKETCH_KINDS, Sketch, make_sketch
from ntkdr.sketches.kinds import GaussianSketch, IdentitySketch, PCASketch, SparseSketch
from ntkdr.sketches.srht import SRHTSketch

__all__ = [
    "SKETCH_KINDS",
    "Sketch",
    "GaussianSketch",
    "SparseSketch",
    "SRHTSketch",
    "PCASketch",
    "IdentitySketch",
    "make_sketch",
    "SketchTransformer",
]

if TYPE_CHECKING:
    from ntkdr.sketches.transformer import SketchTransformer


def __getattr__(name: str) -> Any:
    # the transformer needs scikit-learn: imported on first use, so sketches stay light
    if name == "SketchTransformer":
        from ntkdr.sketches.transformer import SketchTransformer

        return SketchTransformer
    raise AttributeError(f"module 'ntkdr.sketches' has no attribute {name!r}")
