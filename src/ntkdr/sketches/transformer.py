"""A scikit-learn transformer for every sketch kind: :class:`SketchTransformer` (``fit`` / ``transform``, usable in a ``Pipeline``)."""

from __future__ import annotations

from numbers import Integral
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassNamePrefixFeaturesOutMixin, TransformerMixin
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted, validate_data

from ntkdr.sketches.base import SKETCH_KINDS, Sketch, make_sketch
from ntkdr.validation import ArrayLike

__all__ = ["SketchTransformer"]


class SketchTransformer(ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator):
    """Reduce ``X`` (n, d) to (n, k) with a sketch of the given ``kind`` (see :mod:`ntkdr.sketches`).

    Parameters
    ----------
    kind : one of :data:`~ntkdr.sketches.SKETCH_KINDS` (default ``"gaussian"``).
    n_components : k, the output dimension (``1 <= k <= d``); ``None`` keeps ``k = d``
        (required for ``kind="identity"``).
    random_state : int, ``numpy.random.RandomState`` or None: the sketch's seed (an int is
        used as is; otherwise a seed is drawn from it, scikit-learn's convention).
    renormalize : rescale every output row to unit norm (the NTK analysis assumes ``|x| = 1``).
    options : extra options of :func:`~ntkdr.sketches.make_sketch` (e.g. ``{"s": 4}`` for
        ``sparse``, ``{"svd_solver": "full"}`` for ``pca``).

    Attributes after ``fit``: ``sketch_`` (the :class:`~ntkdr.sketches.Sketch`),
    ``n_components_``, ``n_features_in_`` (and ``feature_names_in_`` for DataFrames).
    """

    _parameter_constraints: dict[str, list[Any]] = {
        "kind": [StrOptions(set(SKETCH_KINDS))],
        "n_components": [Interval(Integral, 1, None, closed="left"), None],
        "random_state": ["random_state"],
        "renormalize": ["boolean"],
        "options": [dict, None],
    }

    def __init__(
        self,
        kind: str = "gaussian",
        n_components: int | None = None,
        *,
        random_state: Any = None,
        renormalize: bool = False,
        options: dict[str, Any] | None = None,
    ) -> None:
        self.kind = kind
        self.n_components = n_components
        self.random_state = random_state
        self.renormalize = renormalize
        self.options = options

    def fit(self, X: ArrayLike, y: ArrayLike | None = None) -> SketchTransformer:
        """Draw the sketch for ``X``'s dimension (and fit it to ``X`` for ``kind="pca"``)."""
        self._validate_params()
        Xv: np.ndarray = validate_data(self, X, dtype=[np.float64, np.float32])
        d = Xv.shape[1]
        k = d if self.n_components is None else int(self.n_components)
        if isinstance(self.random_state, Integral):
            seed = int(self.random_state)
        else:
            seed = int(check_random_state(self.random_state).randint(np.iinfo(np.int32).max))
        sketch: Sketch = make_sketch(
            self.kind, d, k, seed=seed, renormalize=bool(self.renormalize), **(self.options or {})
        )
        self.sketch_ = sketch.fit(Xv)
        self.n_components_ = k
        return self

    def transform(self, X: ArrayLike) -> np.ndarray:
        """``X @ S.T`` (rows renormalised if asked), as a numpy array of X's float dtype."""
        check_is_fitted(self)
        Xv = validate_data(self, X, reset=False, dtype=[np.float64, np.float32])
        return np.asarray(self.sketch_(Xv))

    @property
    def _n_features_out(self) -> int:
        return self.n_components_
