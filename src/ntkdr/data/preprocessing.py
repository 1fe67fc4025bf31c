"""Preprocessing of arrays for the NTK code: row normalisation, centring, standardisation,
train / test splits and label tasks.

Numpy-first: every function returns numpy arrays (torch tensors are accepted as input) and
raises ``ValueError`` naming the argument and the problem.  Label conventions (binary +-1 with
the *first* class -> +1, multiclass indices, one-hot targets) are those of :mod:`ntkdr.data`,
whose module docstring states them in full.  The private helpers here (array / label checks,
class-pair masks, split sizes and indices) are shared with :func:`ntkdr.data.make_dataset`.
"""

from __future__ import annotations

from numbers import Integral
from typing import Any

import numpy as np
import torch

from ntkdr.validation import (
    ArrayLike,
    as_matrix,
    check_choice,
    check_int,
    check_n_match,
    check_nonzero_rows,
    check_real,
    class_labels,
    label_array,
    resolve_dtype,
)

__all__ = ["normalize_rows", "center", "standardize", "train_test_split", "binary_task", "one_hot"]

_DEFAULT_TEST_FRACTION = 0.25


# --------------------------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------------------------
def _np_dtype(dtype: Any) -> np.dtype:
    t = resolve_dtype(dtype if dtype is not None else np.float64)
    return np.dtype(np.float32 if t == torch.float32 else np.float64)


def _as_np_matrix(X: Any, name: str = "X", dtype: Any = None) -> np.ndarray:
    """Validate a 2-D finite numeric array (via :func:`as_matrix`) and return it as numpy.

    Float32 / float64 input keeps its dtype unless ``dtype`` is given; other numeric input
    becomes float64.
    """
    if dtype is None:
        kind = X.dtype if isinstance(X, (np.ndarray, torch.Tensor)) else None
        if kind not in (np.float32, np.float64, torch.float32, torch.float64):
            dtype = np.float64
    t, _ = as_matrix(X, name, dtype=dtype)
    return t.detach().cpu().numpy()


def _label_key(v: Any) -> Any:
    """Plain Python scalar for a label (so classes print as ``(3, 5)``, not numpy scalars)."""
    v = np.asarray(v).item()
    if isinstance(v, float) and v.is_integer():
        return int(v)
    return v


def _side(c: Any) -> tuple:
    """A binary side: one label or a collection of labels -> tuple of labels."""
    if isinstance(c, (tuple, list, np.ndarray, set, frozenset)):
        vals = tuple(_label_key(v) for v in (sorted(c) if isinstance(c, (set, frozenset)) else c))
        if not vals:
            raise ValueError("a class group in classes is empty")
        return vals
    if isinstance(c, (bool, np.bool_)) or not isinstance(c, (Integral, float, np.number)):
        raise ValueError(f"class labels must be numbers, got {c!r}")
    return (_label_key(c),)


def _binary_mask(y: np.ndarray, classes: Any) -> tuple[np.ndarray, np.ndarray, tuple]:
    """(mask of rows in either class, +-1 labels of those rows, normalised classes)."""
    y = class_labels(y, "y", task="binary")
    present = np.unique(y)
    if classes is None:
        if present.size == 1:
            raise ValueError(
                f"y has a single class ({_label_key(present[0])}); a binary task needs two"
            )
        if present.size > 2:
            raise ValueError(
                f"y has {present.size} classes; pass classes=(a, b) to choose the binary task"
            )
        classes = (present[1], present[0])
    if not isinstance(classes, (tuple, list)) or len(classes) != 2:
        raise ValueError(f"classes must be a pair (a, b) for a binary task, got {classes!r}")
    pos, neg = _side(classes[0]), _side(classes[1])
    overlap = set(pos) & set(neg)
    if overlap:
        raise ValueError(f"classes {classes!r}: label(s) {sorted(overlap)} on both sides")
    for side in (pos, neg):
        for c in side:
            if not np.any(y == c):
                raise ValueError(
                    f"class {c} has no samples in y (labels present: {[_label_key(v) for v in present]})"
                )
    in_pos = np.isin(y, pos)
    in_neg = np.isin(y, neg)
    mask = in_pos | in_neg
    y_pm = np.where(in_pos[mask], 1.0, -1.0)
    norm = tuple(s[0] if len(s) == 1 else s for s in (pos, neg))
    return mask, y_pm, norm


# --------------------------------------------------------------------------------------------
# preprocessing
# --------------------------------------------------------------------------------------------
def normalize_rows(X: ArrayLike, *, dtype: Any = None) -> np.ndarray:
    """Scale every row to unit Euclidean norm (the NTK analysis assumes ||x_i|| = 1).

    Float32 / float64 input keeps its dtype (``dtype`` overrides); zero rows raise
    ``ValueError`` naming their indices.
    """
    A = _as_np_matrix(X, "X", dtype)
    check_nonzero_rows(torch.from_numpy(A), "X")
    # scale by the max first so that huge / tiny entries do not overflow / underflow
    scale = np.abs(A).max(axis=1, keepdims=True)
    B = A / scale
    return (B / np.linalg.norm(B, axis=1, keepdims=True)).astype(A.dtype, copy=False)


def center(X: ArrayLike, mean: Any = None, *, dtype: Any = None) -> np.ndarray:
    """Subtract the column means (of ``X``, or the given ``mean``, e.g. the training means)."""
    A = _as_np_matrix(X, "X", dtype)
    if mean is None:
        mu = A.mean(axis=0)
    else:
        mu = np.asarray(mean, dtype=A.dtype).reshape(-1)
        if mu.shape[0] != A.shape[1]:
            raise ValueError(
                f"mean must have {A.shape[1]} entries (one per column of X), got {mu.shape[0]}"
            )
    return A - mu


def standardize(
    X: ArrayLike, mean: Any = None, std: Any = None, *, dtype: Any = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Zero-mean, unit-variance columns: returns ``(X_std, mean, std)``.

    Pass the training ``mean`` / ``std`` to transform test data the same way; constant columns
    get std 1 (left centred at 0).
    """
    A = _as_np_matrix(X, "X", dtype)
    mu = A.mean(axis=0) if mean is None else np.asarray(mean, dtype=A.dtype).reshape(-1)
    sd = A.std(axis=0) if std is None else np.asarray(std, dtype=A.dtype).reshape(-1)
    if mu.shape[0] != A.shape[1] or sd.shape[0] != A.shape[1]:
        raise ValueError(f"mean and std must have {A.shape[1]} entries (one per column of X)")
    sd = np.where(sd > 0, sd, 1.0).astype(A.dtype)
    return (A - mu) / sd, mu, sd


def train_test_split(
    X: ArrayLike,
    y: ArrayLike,
    *,
    n_train: int | None = None,
    n_test: int | None = None,
    test_fraction: float = _DEFAULT_TEST_FRACTION,
    seed: int = 0,
    stratify: Any = "auto",
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Random split ``(X_train, X_test, y_train, y_test)`` (scikit-learn's order), numpy out.

    Sizes: ``n_train`` / ``n_test`` rows (either may be omitted: the rest of the data); with both
    omitted, ``test_fraction`` of the rows are test rows.  ``stratify``: ``"auto"`` stratifies
    by ``y`` when it looks like class labels (1-D integer-valued with few distinct values),
    ``None`` / ``False`` never, or an array of group labels.  When a stratum is too small to
    split, the split falls back to unstratified (still determined by ``seed``).
    """
    A = _as_np_matrix(X, "X")
    yy = label_array(y, "y")
    check_n_match(A.shape[0], yy.shape[0], "X", "y")
    idx_tr, idx_te = _split_indices(yy, A.shape[0], n_train, n_test, test_fraction, seed, stratify)
    return A[idx_tr], A[idx_te], yy[idx_tr], yy[idx_te]


def _looks_like_classes(y: np.ndarray) -> bool:
    if y.ndim != 1:
        return False
    if not np.issubdtype(y.dtype, np.integer) and not np.all(np.mod(y, 1) == 0):
        return False
    return np.unique(y).size <= max(2, min(100, y.shape[0] // 2))


def _resolve_sizes(
    n: int,
    n_train: int | None,
    n_test: int | None,
    test_fraction: float = _DEFAULT_TEST_FRACTION,
    default: tuple[int, int] | None = None,
    what: str = "the data",
) -> tuple[int, int]:
    """Sizes of the split.  ``default`` sizes are used when they fit, else ``test_fraction``."""
    if n_train is not None:
        n_train = check_int(n_train, "n_train", min_value=1)
    if n_test is not None:
        n_test = check_int(n_test, "n_test", min_value=1)
    if n < 2:
        raise ValueError(f"{what} has {n} sample(s); a train / test split needs at least 2")
    if n_train is None and n_test is None:
        if default is not None and sum(default) <= n:
            return default
        n_test = min(max(1, int(round(test_fraction * n))), n - 1)
        return n - n_test, n_test
    if n_train is None:
        if n_test >= n:
            raise ValueError(f"n_test = {n_test} leaves no training rows: {what} has {n} samples")
        n_train = n - n_test if default is None else min(default[0], n - n_test)
    elif n_test is None:
        if n_train >= n:
            raise ValueError(f"n_train = {n_train} leaves no test rows: {what} has {n} samples")
        n_test = n - n_train if default is None else min(default[1], n - n_train)
    if n_train + n_test > n:
        raise ValueError(
            f"n_train + n_test = {n_train} + {n_test} = {n_train + n_test} exceeds the {n} samples "
            f"available in {what}"
        )
    return n_train, n_test


def _split_indices(
    y, n, n_train, n_test, test_fraction, seed, stratify, default=None, what="the data"
):
    from sklearn.model_selection import train_test_split as sk_split

    seed = check_int(seed, "seed", min_value=0)
    test_fraction = check_real(test_fraction, "test_fraction", positive=True)
    if test_fraction >= 1:
        raise ValueError(f"test_fraction must be < 1, got {test_fraction}")
    n_train, n_test = _resolve_sizes(n, n_train, n_test, test_fraction, default, what)
    if isinstance(stratify, str):
        check_choice(stratify, "stratify", ("auto",))
        strat = y if (y is not None and _looks_like_classes(y)) else None
    elif stratify is None or stratify is False:
        strat = None
    else:
        strat = np.asarray(stratify)
        check_n_match(n, strat.shape[0], "X", "stratify")
    idx = np.arange(n)
    if strat is not None:
        try:
            tr, te = sk_split(
                idx, train_size=n_train, test_size=n_test, random_state=seed, stratify=strat
            )
            return tr, te
        except ValueError:
            pass  # a stratum too small for the requested sizes: unstratified below
    tr, te = sk_split(idx, train_size=n_train, test_size=n_test, random_state=seed)
    return tr, te


def binary_task(X: ArrayLike, y: ArrayLike, classes: Any = None) -> tuple[np.ndarray, np.ndarray]:
    """Rows of two classes with labels +-1: returns ``(X_sel, y_pm)``.

    ``classes = (a, b)``: rows labelled ``a`` get +1, rows labelled ``b`` get -1, other rows are
    dropped; ``a`` / ``b`` may also be tuples of labels (``((0, 2, 4, 6, 8), (1, 3, 5, 7, 9))``).
    ``classes=None`` requires exactly two labels in ``y`` (the larger one -> +1).  A requested
    class with no samples, or ``y`` with a single class, raises ``ValueError``.
    """
    A = _as_np_matrix(X, "X")
    yy = label_array(y, "y")
    check_n_match(A.shape[0], yy.shape[0], "X", "y")
    mask, y_pm, _ = _binary_mask(yy, classes)
    return A[mask], y_pm


def one_hot(
    y: ArrayLike, classes: Any = None, *, centered: bool = False, dtype: Any = None
) -> np.ndarray:
    """One-hot regression targets ``(n, C)`` for multiclass NTK regression.

    Convention: entries in {0, 1} (row ``i`` has 1 in the column of its class; columns in the
    order of ``classes``, default the sorted distinct labels).  ``centered=True`` subtracts
    1 / C (targets ``e_c - 1/C``, zero-mean rows, as in Arora et al. 2019's CNTK experiments).
    A label not in ``classes`` raises ``ValueError``.
    """
    yy = class_labels(y, "y")
    cls = np.unique(yy) if classes is None else np.asarray(classes).reshape(-1)
    if cls.size == 0:
        raise ValueError("classes is empty")
    if np.unique(cls).size != cls.size:
        raise ValueError(f"classes has repeated labels: {cls.tolist()}")
    pos = {(_label_key(c)): i for i, c in enumerate(cls)}
    try:
        cols = np.fromiter((pos[_label_key(v)] for v in yy), dtype=np.int64, count=yy.shape[0])
    except KeyError as exc:
        raise ValueError(
            f"y has label {exc.args[0]!r} not in classes {[_label_key(c) for c in cls]}"
        ) from None
    out = np.zeros((yy.shape[0], cls.size), dtype=_np_dtype(dtype))
    out[np.arange(yy.shape[0]), cols] = 1.0
    if centered:
        out -= 1.0 / cls.size
    return out
