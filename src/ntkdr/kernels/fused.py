"""Fused elementwise passes on CPU (optional numba backend): the ReLU kernels' transform of each
GEMM tile, and the training step's flip count, mask and ReLU (:func:`relu_mask_flips`).

The torch path of :mod:`ntkdr.kernels.relu` transforms each GEMM block with ~12 eager passes
(products of norms, two square roots, ``atan2``, the arc-cosine terms).  Here one compiled loop
reads each entry of the GEMM result once and writes the kernel value back.  Measured on the
elementwise pass alone, n = 4000 (16M entries), one thread: H1 + H2 3.5x faster than the eager
passes in float32 (0.021 against 0.075 s) and 3.1x in float64; the depth-3 NTK + NNGP 2.8x /
2.7x.  The torch path stays the reference of the tests and the backend wherever this one does
not apply (no numba, another device, a target whose rows are not contiguous).

``atan2`` is written out because numba can only vectorise what LLVM sees: the llvmlite wheels
carry no vector math library (SVML), so ``math.atan2`` would be one libm call per entry.  Only
``atan2(s, g)`` with ``s >= 0`` is needed (``s = |x||z| sin theta``): reduce to
``t = min(s, |g|) / max(s, |g|) <= 1``, reduce ``t`` once more around 1 with
``atan t = pi/4 + atan((t - 1) / (t + 1))``, evaluate Cephes' ``atan`` (S. L. Moshier, *Methods
and Programs for Mathematical Functions*, 1989): the rational P(z)/Q(z) in float64 (peak
relative error 1.8e-16 on [-10, 10] per Cephes; 1.3-1.7e-16 of the kernel's maximum measured
against torch's ``atan2``), the degree-9 odd polynomial on ``|x| <= tan(pi / 8)`` in float32,
each dtype in its own arithmetic.  The identities ``atan2 = pi/2 - atan(|g| / s)`` for
``s > |g|`` and ``pi - atan2(s, |g|)`` for ``g < 0`` give the rest.

Choice of backend: :func:`backend` only -- environment variable ``NTKDR_ELEMENTWISE``
(``auto`` default, ``torch`` or ``numba``).  Kernels compile on first use (about 1 s per plan
and dtype; cached on disk by numba where its cache directory is writable).
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache, lru_cache
from typing import Any

import numpy as np
import torch

__all__ = [
    "available",
    "backend",
    "describe",
    "atan2_nonneg",
    "two_layer_block",
    "fc_block",
    "relu_mask_flips",
]

_ENV = "NTKDR_ELEMENTWISE"
_CHOICES = ("auto", "torch", "numba")


@lru_cache(maxsize=1)
def available() -> bool:
    """Whether numba can be imported (the optional ``fast`` extra)."""
    try:
        import numba  # noqa: F401
    except ImportError:
        return False
    return True


def backend(device: torch.device | str = "cpu") -> str:
    """``"numba"`` or ``"torch"``: the elementwise backend for kernels on ``device``.

    ``NTKDR_ELEMENTWISE=torch`` forces the eager torch passes; ``numba`` requires numba (a
    ``ValueError`` otherwise); ``auto`` takes numba on CPU when it is installed.
    """
    choice = os.environ.get(_ENV, "auto").strip().lower() or "auto"
    if choice not in _CHOICES:
        raise ValueError(f"{_ENV} must be one of {', '.join(_CHOICES)}, got {choice!r}")
    if torch.device(device).type != "cpu" or choice == "torch":
        return "torch"
    if choice == "numba" and not available():
        raise ValueError(f"{_ENV}=numba but numba is not installed (pip install 'ntkdr[fast]')")
    return "numba" if available() else "torch"


def describe(device: torch.device | str = "cpu") -> str:
    """The backend with its version, for reports: ``"numba 0.68.1"`` or ``"torch"``."""
    if backend(device) == "numba":
        import numba

        return f"numba {numba.__version__}"
    return "torch"


# Cephes atan (double): atan(x) = x + x z P(z) / Q(z), z = x^2, |x| <= 0.66
_P = (
    -8.750608600031904122785e-1,
    -1.615753718733365076637e1,
    -7.500855792314704667340e1,
    -1.228866684490136173410e2,
    -6.485021904942025371773e1,
)
_Q = (  # Q(z) = z^5 + q0 z^4 + ... + q4
    2.485846490142306297962e1,
    1.650270098316988542046e2,
    4.328810604912902668951e2,
    4.853903996359136964868e2,
    1.945506571482613964425e2,
)
_MOREBITS = 6.123233995736765886130e-17  # pi/4 - fl(pi/4)
# Cephes atanf (single): atan(x) = x + x z R(z), |x| <= tan(pi/8); Q = 1
_R = (8.05374449538e-2, -1.38776856032e-1, 1.99777106478e-1, -3.33329491539e-1)


@cache
def constants(dtype_name: str) -> np.ndarray:
    """``cst`` of the numba loops, in ``dtype_name``: 0, pi, pi/2, 1/2, the reduction threshold,
    pi/4, p0..p4, q0..q4, q5 (the z^5 coefficient of Q), 1 / (2 pi)."""
    if dtype_name == "float64":
        thr, pio4, p, q, q5 = 0.66, math.pi / 4 + 0.5 * _MOREBITS, _P, _Q, 1.0
    else:
        thr, pio4, p, q, q5 = (
            math.tan(math.pi / 8),
            math.pi / 4,
            (0.0, *_R),
            (0.0,) * 4 + (1.0,),
            0.0,
        )
    vals = [0.0, math.pi, math.pi / 2, 0.5, thr, pio4, *p, *q, q5, 1.0 / (2.0 * math.pi)]
    return np.array(vals, dtype=dtype_name)


def _flat(d: torch.Tensor) -> np.ndarray | None:
    """The rows of a 2-D CPU view as one 1-D array from its first entry (row stride kept),
    or ``None`` when its columns are not contiguous or its dtype is not float32 / float64."""
    if d.dim() != 2 or d.device.type != "cpu" or d.requires_grad:
        return None
    if d.dtype not in (torch.float32, torch.float64) or (d.shape[1] > 1 and d.stride(1) != 1):
        return None
    rows, cols = d.shape
    span = (rows - 1) * d.stride(0) + cols if rows and cols else 0
    return d.as_strided((span,), (1,)).numpy()


# numba's workqueue layer must not be entered by two threads at once (numba's documentation:
# not threadsafe); callers on several Python threads take turns (they share the cores anyway).
_LOCK = threading.Lock()


@contextmanager
def _loops() -> Iterator[Any]:
    """The loops module, numba's threads set to torch's, under :data:`_LOCK`."""
    import numba as nb

    from ntkdr.kernels import _fused_numba

    # numba's OpenMP layer is a second OpenMP runtime beside torch's: measured with `ntkdr
    # bench` (two-layer NTK, n = 4000, 12 rounds, 1 thread) its median was 0.39 s against 0.23 s
    # with the workqueue layer (0.27 s for the torch passes), stalls of 0.3-0.7 s in half the
    # rounds.  Only before numba's first parallel launch, and not over the user's choice.
    if "NUMBA_THREADING_LAYER" not in os.environ:
        nb.config.THREADING_LAYER = "workqueue"  # type: ignore[attr-defined]

    cap = nb.config.NUMBA_NUM_THREADS  # type: ignore[attr-defined]
    with _LOCK:
        nb.set_num_threads(max(1, min(torch.get_num_threads(), cap)))
        yield _fused_numba


def atan2_nonneg(s: np.ndarray, g: np.ndarray) -> np.ndarray:
    """``atan2(s, g)`` for ``s >= 0`` as the numba loops compute it, in the dtype of ``s`` and
    ``g`` (1-D float32 or float64 arrays of one dtype; requires numba)."""
    s, g = np.ascontiguousarray(s), np.ascontiguousarray(g)
    if s.dtype != g.dtype or s.dtype not in (np.float32, np.float64) or s.shape != g.shape:
        raise ValueError("s and g must be 1-D arrays of one float dtype and shape")
    out = np.empty_like(s)
    with _loops() as loops:
        loops.angles(s.ravel(), g.ravel(), out.ravel(), constants(s.dtype.name))
    return out


def two_layer_block(
    A: torch.Tensor, sx: torch.Tensor, sz: torch.Tensor, mul: float, add: float, k2_2pi: float
) -> bool:
    """In place ``A <- A (theta mul + add) (+ s k2_2pi if k2_2pi)`` with ``theta`` and ``s`` of
    :class:`ntkdr.kernels.relu._TwoLayerPlan`; ``False`` (nothing done) where ``A`` does not
    fit (the caller takes the torch path)."""
    flat = _flat(A)
    if flat is None:
        return False
    if flat.size == 0:
        return True
    f = flat.dtype.type
    with _loops() as loops:
        loops.two_layer(
            flat,
            A.stride(0),
            A.shape[0],
            A.shape[1],
            sx.numpy(),
            sz.numpy(),
            f(mul),
            f(add),
            f(k2_2pi),
            bool(k2_2pi),
            constants(flat.dtype.name),
        )
    return True


def fc_block(
    N: torch.Tensor,
    A: torch.Tensor,
    sx: torch.Tensor,
    sz: torch.Tensor,
    w2: np.ndarray,
    w02_over_d: float,
    b2: float,
) -> bool:
    """The whole depth recursion of :class:`ntkdr.kernels.relu._FCPlan` on one block: ``A``
    holds the GEMM on entry and the NNGP on exit, ``N`` the NTK; ``sx`` / ``sz`` are the
    shrunk ``sqrt(q_l)``, (depth, rows) / (depth, cols).  ``False`` (nothing done) where the
    targets do not fit."""
    fn, fa = _flat(N), _flat(A)
    if fn is None or fa is None or fa.dtype != fn.dtype:
        return False
    if A.shape[0] > 1 and N.stride(0) != A.stride(0):
        return False
    if fa.size == 0:
        return True
    f = fa.dtype.type
    with _loops() as loops:
        loops.fc(
            fn,
            fa,
            A.stride(0),
            A.shape[0],
            A.shape[1],
            np.ascontiguousarray(sx.numpy()),
            np.ascontiguousarray(sz.numpy()),
            w2.astype(fa.dtype),
            f(w02_over_d),
            f(b2),
            constants(fa.dtype.name),
        )
    return True


def relu_mask_flips(P: torch.Tensor, mask: torch.Tensor | None, S: torch.Tensor | None) -> int:
    """One pass over a contiguous slab ``P = F W^T`` of the training step: the pattern flips
    ``sum 1[P >= 0] != T`` against ``S = 1 - 2 T`` (int8, ``None``: not counted, 0 returned),
    ``mask <- 1[P > 0]`` (int8, ``None``: not kept), then ``P <- relu(P)`` in place -- three
    (four with the dot product of the count) eager torch passes fused.  The caller checks that
    ``P`` is a contiguous float32 / float64 CPU tensor and the int8 tensors have its shape."""
    rows, cols = P.shape
    flat = P.view(-1).numpy()
    empty = np.empty(0, np.int8)
    m = mask.view(-1).numpy() if mask is not None else empty
    t = S.reshape(-1).numpy() if S is not None else empty
    f = flat.dtype.type
    with _loops() as loops:
        return int(
            loops.relu_mask_flips(flat, rows, cols, m, t, mask is not None, S is not None, f(0))
        )
