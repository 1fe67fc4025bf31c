"""Input validation shared by every public entry point, and the ``ArrayLike`` alias of array inputs.

Every check raises ``ValueError`` with a message that names the argument and the
problem; tests assert these messages, so change them only on purpose.  Arrays may be
numpy arrays, torch tensors or nested lists; :func:`as_matrix` converts them to a
torch tensor and remembers whether the caller gave numpy, so that results can be
returned in the kind the caller used (:func:`to_output`).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence
from numbers import Integral, Real
from typing import Any, TypeAlias, cast

import numpy as np
import torch

# the request-size checks live with the memory budget; re-exported here where callers look
from ntkdr.memory import available_memory, check_memory, format_bytes

__all__ = [
    "ArrayLike",
    "MAX_DEPTH",
    "MAX_STEPS",
    "ParallelRowsWarning",
    "available_memory",
    "check_memory",
    "format_bytes",
    "as_matrix",
    "as_labels",
    "label_array",
    "class_labels",
    "check_same_d",
    "check_n_match",
    "check_int",
    "check_real",
    "check_choice",
    "check_k",
    "check_symmetric",
    "check_nonzero_rows",
    "find_parallel_rows",
    "warn_parallel_rows",
    "resolve_dtype",
    "resolve_device",
    "to_output",
]

#: Array inputs: a numpy array (``np.memmap`` included), a torch tensor or nested sequences.
ArrayLike: TypeAlias = np.ndarray | torch.Tensor | Sequence[Any]

_DTYPES = {"float32": torch.float32, "float64": torch.float64}


class ParallelRowsWarning(UserWarning):
    """Two inputs are parallel (or equal), so lambda_0 = lambda_min(H1) = 0."""


def resolve_dtype(dtype: Any) -> torch.dtype | None:
    """Map ``None`` / ``"float32"`` / ``"float64"`` / numpy or torch float dtypes to a torch dtype."""
    if dtype is None:
        return None
    if isinstance(dtype, torch.dtype):
        if dtype not in (torch.float32, torch.float64):
            raise ValueError(f"dtype must be float32 or float64, got {dtype}")
        return dtype
    key = np.dtype(dtype).name if not isinstance(dtype, str) else dtype
    if key not in _DTYPES:
        raise ValueError(f"dtype must be float32 or float64, got {dtype!r}")
    return _DTYPES[key]


def resolve_device(device: Any) -> torch.device | None:
    """``None`` keeps the input's device; ``"cuda"`` without CUDA is an error, not a silent CPU run."""
    if device is None:
        return None
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"device must be 'cpu' or 'cuda[:i]', got {device!r}") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but CUDA is not available on this machine")
    return dev


def as_matrix(
    X: ArrayLike,
    name: str = "X",
    *,
    dtype: Any = None,
    device: Any = None,
    allow_empty: bool = False,
) -> tuple[torch.Tensor, bool]:
    """Validate a 2-D numeric array and return ``(tensor, was_numpy)``.

    Integer / bool input is promoted to float32 (float64 if ``dtype`` says so);
    float16 / bfloat16 is promoted to float32.  Raises ``ValueError`` for non-numeric
    data, wrong rank, empty input and NaN / Inf entries.
    """
    was_numpy = not isinstance(X, torch.Tensor)
    if was_numpy:
        try:
            arr = np.asarray(X)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{name} must be a numeric array: {exc}") from exc
        if arr.dtype == object or not (
            np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_
        ):
            raise ValueError(f"{name} must be numeric, got dtype {arr.dtype}")
        if np.iscomplexobj(arr):
            raise ValueError(f"{name} must be real, got complex dtype {arr.dtype}")
        t = torch.from_numpy(np.ascontiguousarray(arr))
    else:
        t = cast(torch.Tensor, X)
        if t.is_complex():
            raise ValueError(f"{name} must be real, got complex dtype {t.dtype}")
    if t.ndim != 2:
        raise ValueError(f"{name} must be 2-D (n_samples, n_features), got shape {tuple(t.shape)}")
    if not allow_empty and (t.shape[0] == 0 or t.shape[1] == 0):
        raise ValueError(f"{name} is empty: shape {tuple(t.shape)}")
    target = resolve_dtype(dtype)
    if target is None:
        target = t.dtype if t.dtype in (torch.float32, torch.float64) else torch.float32
    dev = resolve_device(device)
    t = t.to(device=dev if dev is not None else t.device, dtype=target)
    # Any NaN / Inf makes the sum non-finite, and the sum is about twice as cheap as an
    # elementwise isfinite pass; the full check only runs when the sum is not finite
    # (which also covers a sum that merely overflowed).
    if not bool(torch.isfinite(t.sum())) and not bool(torch.isfinite(t).all()):
        bad = (~torch.isfinite(t)).nonzero()[0].tolist()
        raise ValueError(f"{name} contains NaN or Inf (first at row {bad[0]}, column {bad[1]})")
    return t, was_numpy


def as_labels(y: ArrayLike, n: int, name: str = "y", *, dtype: Any = None) -> torch.Tensor:
    """Validate targets: numeric, finite, 1-D ``(n,)`` or 2-D ``(n, c)``, with ``n`` rows."""
    if isinstance(y, torch.Tensor):
        t = y
    else:
        arr = np.asarray(y)
        if arr.dtype == object or not (
            np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_
        ):
            raise ValueError(f"{name} must be numeric labels, got dtype {arr.dtype}")
        t = torch.from_numpy(np.ascontiguousarray(arr))
    if t.is_complex():
        raise ValueError(f"{name} must be real, got complex dtype {t.dtype}")
    if t.ndim not in (1, 2):
        raise ValueError(f"{name} must be 1-D (n,) or 2-D (n, outputs), got shape {tuple(t.shape)}")
    if t.numel() == 0:
        raise ValueError(f"{name} is empty: shape {tuple(t.shape)}")
    check_n_match(n, t.shape[0], "X", name)
    target = resolve_dtype(dtype) or (
        t.dtype if t.dtype in (torch.float32, torch.float64) else torch.float32
    )
    t = t.to(dtype=target)
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} contains NaN or Inf")
    return t


def label_array(y: ArrayLike, name: str = "y") -> np.ndarray:
    """Targets or class labels as a numpy array of their own dtype: numeric, 1-D ``(n,)`` or 2-D
    ``(n, outputs)``, non-empty, finite (the one label check of the data pipeline)."""
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


def class_labels(y: ArrayLike, name: str = "y", *, task: str | None = None) -> np.ndarray:
    """:func:`label_array` that must be 1-D: one class label per row (``task`` names the task
    in the message)."""
    arr = label_array(y, name)
    if arr.ndim != 1:
        for_task = f" for a {task} task" if task else ""
        raise ValueError(f"{name} must be 1-D class labels{for_task}, got shape {arr.shape}")
    return arr


def check_same_d(X: torch.Tensor, Z: torch.Tensor, names: tuple[str, str] = ("X", "Z")) -> None:
    if X.shape[1] != Z.shape[1]:
        raise ValueError(
            f"{names[0]} and {names[1]} must have the same number of features, "
            f"got {X.shape[1]} and {Z.shape[1]}"
        )


def check_n_match(n_x: int, n_y: int, x_name: str = "X", y_name: str = "y") -> None:
    if n_x != n_y:
        raise ValueError(
            f"{x_name} and {y_name} have different numbers of samples: {n_x} and {n_y}"
        )


def check_int(
    value: Any, name: str, *, min_value: int | None = None, max_value: int | None = None
) -> int:
    """An integer (not bool) within ``[min_value, max_value]``."""
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    value = int(value)
    if min_value is not None and value < min_value:
        raise ValueError(f"{name} must be >= {min_value}, got {value}")
    if max_value is not None and value > max_value:
        raise ValueError(f"{name} must be <= {max_value}, got {value}")
    return value


def check_real(
    value: Any, name: str, *, min_value: float | None = None, positive: bool = False
) -> float:
    """A finite real number, optionally ``> 0`` or ``>= min_value``."""
    if isinstance(value, bool) or not isinstance(value, Real) or not np.isfinite(float(value)):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    value = float(value)
    if positive and value <= 0:
        raise ValueError(f"{name} must be > 0, got {value}")
    if min_value is not None and value < min_value:
        raise ValueError(f"{name} must be >= {min_value}, got {value}")
    return value


def check_choice(value: Any, name: str, choices: Iterable[str]) -> str:
    choices = tuple(choices)
    if value not in choices:
        raise ValueError(
            f"unknown {name} {value!r}; expected one of {', '.join(map(repr, choices))}"
        )
    return value


# Relative tolerance (w.r.t. max |H_ij|) of the symmetry check, keyed by the matrix's dtype:
# loose enough for kernels assembled from tiles K(X_i, X_j) / K(X_j, X_i) computed by
# different GEMMs, tight enough to catch a matrix that is not a Gram matrix.
SYM_RTOL = {torch.float32: 1e-4, torch.float64: 1e-10}


def check_symmetric(H: torch.Tensor, name: str = "H", block: int = 2048) -> None:
    """Raise unless the square ``H`` is symmetric to :data:`SYM_RTOL` ``[H.dtype] * max |H|``.

    The one symmetry check (theory and regression); blockwise, so it needs O(block n) memory.
    """
    n = H.shape[0]
    rtol = SYM_RTOL.get(H.dtype, SYM_RTOL[torch.float32])
    scale = max(abs(float(H.max())), abs(float(H.min()))) if n else 0.0  # no n x n temporary
    tol = rtol * max(scale, float(torch.finfo(H.dtype).tiny))
    asym = 0.0
    for s in range(0, n, block):
        asym = max(asym, float((H[s : s + block, :] - H[:, s : s + block].T).abs().max()))
    if asym > tol:
        raise ValueError(
            f"{name} must be symmetric: max |{name} - {name}^T| = {asym:.3g} exceeds "
            f"{rtol:g} * max |{name}| = {tol:.3g} ({H.dtype})"
        )


def check_k(k: Any, d: int, name: str = "k") -> int:
    """Target dimension of a sketch: ``1 <= k <= d``."""
    if isinstance(k, bool) or not isinstance(k, Integral):
        raise ValueError(f"{name} must be an integer, got {k!r}")
    if int(k) < 1:
        raise ValueError(f"{name} must be >= 1, got {k}")
    if int(k) > d:
        raise ValueError(f"{name} must be <= d = {d} (a sketch reduces dimension), got {k}")
    return int(k)


def check_nonzero_rows(X: torch.Tensor, name: str = "X") -> None:
    """Raise if a row has zero norm (it cannot be normalised and has no angle)."""
    zero = (X.abs().amax(dim=1) == 0).nonzero().flatten()
    if zero.numel():
        idx = zero[:5].tolist()
        more = f" and {zero.numel() - 5} more" if zero.numel() > 5 else ""
        raise ValueError(
            f"{name} has zero-norm rows (indices {idx}{more}); they cannot be normalised"
        )


def find_parallel_rows(
    X: torch.Tensor, tol: float | None = None, max_pairs: int = 10
) -> list[tuple[int, int]]:
    """Pairs ``(i, j)``, ``i < j``, of rows whose directions coincide up to ``tol`` (cosine >= 1 - tol).

    Parallel rows make H1(X, X) singular (lambda_0 = 0).  Rows are compared in blocks so
    memory stays O(block * n).
    """
    if tol is None:
        tol = 64 * float(torch.finfo(X.dtype).eps)
    Xn = X / X.norm(dim=1, keepdim=True).clamp_min(torch.finfo(X.dtype).tiny)
    pairs: list[tuple[int, int]] = []
    block = 1024
    for start in range(0, Xn.shape[0], block):
        cos = Xn[start : start + block] @ Xn.T
        rows, cols = (cos >= 1 - tol).nonzero(as_tuple=True)
        keep = cols > rows + start
        for i, j in zip((rows[keep] + start).tolist(), cols[keep].tolist()):
            pairs.append((i, j))
            if len(pairs) >= max_pairs:
                return pairs
    return pairs


def warn_parallel_rows(X: torch.Tensor, name: str = "X") -> list[tuple[int, int]]:
    """Warn (``ParallelRowsWarning``) naming parallel / duplicate row pairs; returns them."""
    pairs = find_parallel_rows(X)
    if pairs:
        warnings.warn(
            f"{name} has parallel or duplicate rows {pairs}: lambda_min of the NTK Gram matrix is 0 "
            "and bounds that divide by it are infinite",
            ParallelRowsWarning,
            stacklevel=2,
        )
    return pairs


def to_output(t: torch.Tensor, as_numpy: bool) -> Any:
    """Return ``t`` as a numpy array if the caller gave numpy, else as the tensor."""
    return t.detach().cpu().numpy() if as_numpy else t


#: Deepest kernel / network accepted.  Deep ReLU kernels converge to a constant correlation
#: within a few hundred layers (Hayou et al., ICML 2019), and a depth-L kernel costs L passes
#: over the n x n' result, so a larger depth is a typo, not a request.
MAX_DEPTH = 1000

#: Most training steps accepted in one call.  Ten million full-batch steps of even the smallest
#: network take days; a larger count is a typo (the progress bar shows the time left below it).
MAX_STEPS = 10_000_000
