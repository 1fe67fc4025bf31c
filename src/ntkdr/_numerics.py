"""Small exact floating-point helpers: scaling by powers of two (the one copy for kernels, sketches and theory)."""

from __future__ import annotations

import math

import torch

__all__ = ["ldexp_exact", "times_pow2", "max_exponent", "ldexp_or_inf"]


def ldexp_exact(X: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
    """``X * 2^e`` exactly (up to under/overflow of the result), in two half steps so that no
    factor ``2^e`` itself leaves the dtype's range (|e| reaches 1074 + 1024 in float64)."""
    h = torch.div(e, 2, rounding_mode="floor")
    return torch.ldexp(torch.ldexp(X, h), e - h)


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
