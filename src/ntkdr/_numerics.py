"""Small exact floating-point helpers: scaling by powers of two and mirroring a symmetric matrix (the one copy for kernels, nets, sketches and theory)."""

from __future__ import annotations

import math

import torch

__all__ = ["ldexp_exact", "times_pow2", "max_exponent", "ldexp_or_inf", "mirror_upper_"]

# Block size of the transposed copies that mirror the upper triangle.
MIRROR_BLOCK = 256


def ldexp_exact(X: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
    """``X * 2^e`` exactly (up to under/overflow of the result), in two half steps so that no
    factor ``2^e`` itself leaves the dtype's range (|e| reaches 1074 + 1024 in float64)."""
    h = torch.div(e, 2, rounding_mode="floor")
    # The factors 2^h, 2^(e - h) on e's shape, then two products: what torch.ldexp computes,
    # but it forms the powers over the broadcast shape (measured 14x slower for one
    # exponent per row of a 4000 x 256 matrix).
    one = torch.ones(h.shape, dtype=X.dtype, device=X.device)
    return X * torch.ldexp(one, h) * torch.ldexp(one, e - h)


def times_pow2(T: torch.Tensor, e: int) -> torch.Tensor:
    """``T * 2^e`` for one integer ``e``, exact, in two half steps (``2^e`` alone may leave the float64 range)."""
    h = e // 2
    return T * math.ldexp(1.0, h) * math.ldexp(1.0, e - h)


def max_exponent(T: torch.Tensor) -> int:
    """``e`` with ``max |T| = f 2^e``, ``f`` in [0.5, 1); 0 for an all-zero (or non-finite) T."""
    m = float(T.abs().max()) if T.numel() else 0.0
    return math.frexp(m)[1] if math.isfinite(m) else 0


def ldexp_or_inf(v: float, e: int) -> float:
    """``v * 2^e`` as a float, +-inf where it leaves the float64 range."""
    try:
        return math.ldexp(v, e)
    except OverflowError:
        return math.copysign(math.inf, v)


def mirror_upper_(D: torch.Tensor) -> None:
    """Make the square ``D`` exactly symmetric from its upper triangle, in place and in blocks.

    The one mirroring helper: the tiled kernel engine (:mod:`ntkdr.kernels.engine`), the
    out-of-core files (:mod:`ntkdr.kernels.tiles`) and the closed-form empirical NTK use it.
    """
    t = D.shape[0]
    s = min(MIRROR_BLOCK, t)
    r = torch.arange(s, device=D.device)
    below = r[:, None] > r[None, :]
    for i in range(0, t, s):
        i1 = min(i + s, t)
        k = i1 - i
        blk = D[i:i1, i:i1]
        blk.copy_(torch.where(below[:k, :k], blk.T, blk))
        if i1 < t:
            D[i1:, i:i1].copy_(D[i:i1, i1:].T)
