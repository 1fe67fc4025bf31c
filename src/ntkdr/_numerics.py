"""Small exact floating-point helpers shared by the kernel and sketch modules."""

from __future__ import annotations

import torch


def ldexp_exact(X: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
    """``X * 2^e`` exactly (up to under/overflow of the result), in two half steps so that no
    factor ``2^e`` itself leaves the dtype's range (|e| reaches 1074 + 1024 in float64)."""
    h = torch.div(e, 2, rounding_mode="floor")
    return torch.ldexp(torch.ldexp(X, h), e - h)
