"""Data file loaders: ``.npz``, ``.npy``, CSV / TSV / text and MNIST IDX files.

:func:`load_file` reads ``(X, y)`` from a data file, :func:`load_xy` insists on labels,
:func:`load_labels` reads a separate labels file and :func:`load_idx` one IDX file.  Every
function returns numpy arrays.  Every problem raises ``ValueError`` naming the path: a missing,
unreadable, truncated or malformed file never surfaces as a raw ``OSError``, ``zipfile`` or
``pickle`` traceback; ``.npy`` / ``.npz`` files are read with ``allow_pickle=False``.  Turning
the arrays into a train / test :class:`ntkdr.data.Dataset` is :func:`ntkdr.data.dataset_from_file`.
"""

from __future__ import annotations

import csv
import gzip
import os
import zipfile
import zlib
from numbers import Integral
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["load_file", "load_xy", "load_labels", "load_idx"]

_IDX_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_FORMATS = (
    "expected .npz, .npy, .csv / .txt / .tsv, or MNIST IDX (*-idx3-ubyte[.gz], *-idx1-ubyte[.gz])"
)


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
    if (
        base.endswith(".idx")
        or "idx1-ubyte" in base
        or "idx2-ubyte" in base
        or "idx3-ubyte" in base
        or "idx4-ubyte" in base
    ):
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
        raise ValueError(
            f"{p}: labels {what!r} must be 1-D (n,) or 2-D (n, outputs), got shape {y.shape}"
        )
    if y.shape[0] == 0:
        raise ValueError(f"{p}: labels {what!r} are empty")
    if np.issubdtype(y.dtype, np.floating) and not np.isfinite(y).all():
        raise ValueError(
            f"{p}: labels {what!r} contain NaN or Inf (first at row {int(np.argwhere(~np.isfinite(y))[0][0])})"
        )
    if n is not None and y.shape[0] != n:
        raise ValueError(
            f"{p}: X and {what} have different numbers of samples: {n} and {y.shape[0]}"
        )
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
        raise ValueError(
            f"{p}: not a valid .npy array file (truncated or corrupt): {exc}"
        ) from None


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
    if (
        isinstance(label_column, bool)
        or not isinstance(label_column, Integral)
        or not -ncol <= label_column < ncol
    ):
        raise ValueError(f"{p}: label_column {label_column!r} is out of range for {ncol} columns")
    if ncol < 2:
        raise ValueError(
            f"{p}: has a single column; cannot split off a label column and keep features"
        )
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


def _read_csv(
    p: Path, label_column: int | None, delimiter: str | None
) -> tuple[np.ndarray, np.ndarray | None]:
    try:
        text = _read_bytes(p).decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ValueError(
            f"{p}: not a text (UTF-8) file: {exc.reason} at byte {exc.start}"
        ) from None
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
        raise ValueError(
            f"{p}: truncated IDX file (header needs {head} bytes, file has {len(raw)})"
        )
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    need = head + int(np.prod(shape, dtype=np.int64)) * dt.itemsize
    if len(raw) < need:
        raise ValueError(
            f"{p}: truncated IDX file: shape {shape} needs {need} bytes, file has {len(raw)}"
        )
    if len(raw) > need:
        raise ValueError(
            f"{p}: malformed IDX file: {len(raw) - need} unexpected bytes after the data of shape {shape}"
        )
    arr = np.frombuffer(
        raw, dtype=dt, count=int(np.prod(shape, dtype=np.int64)), offset=head
    ).reshape(shape)
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
            raise ValueError(
                f"{p}: not a valid .npz archive (truncated or corrupt): {exc}"
            ) from None
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
    :func:`ntkdr.data.make_dataset` do it); images with more than two dimensions are
    flattened.  Every problem raises ``ValueError`` naming the path.
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
