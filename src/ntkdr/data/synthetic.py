"""Synthetic inputs and teacher labels: points on the unit sphere, Gaussian
points, low-rank-plus-noise points, and labels from a random two-layer ReLU teacher network.

All generators are seeded (same seed -> identical arrays) and return float64 numpy arrays
(:func:`teacher_labels` takes a ``dtype``).  :func:`ntkdr.data.load_dataset` builds the
``"sphere"``, ``"gaussian"`` and ``"lowrank"`` data sets from them.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ntkdr.data.preprocessing import _as_np_matrix, _np_dtype
from ntkdr.validation import ArrayLike, check_int, check_real

__all__ = ["teacher_labels", "make_sphere", "make_gaussian", "make_lowrank"]


def teacher_labels(
    X: ArrayLike, width: int = 100, seed: int = 0, *, binary: bool = True, dtype: Any = None
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
            raise ValueError(
                "the teacher network's outputs are constant on X; labels would be a single class"
            )
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


def make_lowrank(
    n: int, d: int = 784, rank: int = 10, noise: float = 0.05, *, seed: int = 0
) -> np.ndarray:
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
