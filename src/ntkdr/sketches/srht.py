"""The subsampled randomized Hadamard transform (SRHT, the fast Johnson-Lindenstrauss transform of Ailon & Chazelle 2009) as a pruned Hadamard product.

``srht``
    Subsampled randomized Hadamard transform ``sqrt(d'/k) R H D`` (fast JL transform):
    ``d`` is zero-padded to the next power of two ``d'``, ``D`` = diag of ``d'`` random
    signs, ``H`` = the orthonormal (Sylvester-ordered) Walsh-Hadamard matrix, ``R`` picks
    ``k`` distinct rows of ``d'`` uniformly without replacement.  Applied as a *pruned*
    Hadamard transform (only the ``k`` kept rows of ``H`` are formed): ``H_{d'} = H_c (x) H_a``,
    the full transform over the ``c`` high index bits as small GEMMs (Hadamard factors of
    order <= 32), then, for each high part, one GEMM with the kept rows of ``H_a`` that
    share it (see :class:`SRHTSketch`); the split ``d' = c a`` minimises a measured cost
    model and is at most the cost of the full transform, so O(d' log d') per row.
    Cache-blocked on CPU; the d' x d' Hadamard matrix is never built in the apply path.
    Cost reported by :meth:`Sketch.flops`: ``n d' (sum f + g_max)`` multiply-adds (``f`` the
    factors of ``c``, ``g_max`` the most kept rows sharing one high part); the sign flips
    are folded into the copy that pads the input.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from ntkdr.sketches.base import Sketch, _generator, register

# SRHT on CPU: process rows in blocks whose two d'-wide work buffers stay in the (per-core,
# ~2-4 MiB) L2 cache; the input is read from memory once per block.
_CPU_SRHT_BLOCK_ELEMENTS = 1 << 18
# SRHT: largest Hadamard factor applied as one GEMM (larger orders are Kronecker products).
_SRHT_MAX_FACTOR = 32
# SRHT cost model: a GEMM with a Hadamard factor of order f < this runs at ~the speed of one
# of this order (small GEMMs are bound by memory traffic, not by multiply-adds).
_SRHT_MIN_FACTOR_COST = 24
# ... and the pruned contraction costs about as much as if its width g_max (the GEMMs' N)
# were rounded up to a multiple of this (one AVX-512 register of float32; measured: N = 21
# ran at under half the speed of N = 16 per multiply-add).
_SRHT_GROUP_QUANTUM = 16


def _hadamard(b: int, dtype: torch.dtype, device: Any = None) -> torch.Tensor:
    """Unnormalised Sylvester Hadamard matrix of order ``b`` (a power of two); small ``b`` only."""
    H = torch.ones(1, 1, dtype=dtype, device=device)
    while H.shape[0] < b:
        H = torch.cat((torch.cat((H, H), 1), torch.cat((H, -H), 1)), 0)
    return H


def _hadamard_rows(r: torch.Tensor, width: int) -> torch.Tensor:
    """Rows ``r`` of the unnormalised Sylvester Hadamard matrix of order ``width`` (float64):
    ``H[r, j] = (-1)^popcount(r & j)``.  Independent of any butterfly / Kronecker code."""
    bits = r.unsqueeze(1) & torch.arange(width).unsqueeze(0)
    parity = torch.zeros_like(bits)
    while bool(bits.any()):
        parity ^= bits & 1
        bits = bits >> 1
    return 1.0 - 2.0 * parity.to(torch.float64)


def _split_factors(c: int) -> list[int]:
    """``c`` (a power of two) as a product of powers of two <= ``_SRHT_MAX_FACTOR``, as equal as possible."""
    if c == 1:
        return []
    bits = c.bit_length() - 1
    parts = -(-bits // (_SRHT_MAX_FACTOR.bit_length() - 1))
    base, extra = divmod(bits, parts)
    return [1 << (base + (i < extra)) for i in range(parts)]


def _srht_plan(d_pad: int, rows: torch.Tensor) -> tuple[list[int], int]:
    """Kronecker split ``d' = c * a`` of the pruned SRHT (see :class:`SRHTSketch`) minimising
    the modelled cost per input element: ``sum_f max(f, MIN)`` (full transforms over the
    ``c`` high index bits, one GEMM per factor ``f``) plus ``g_max(c)`` rounded up to a
    multiple of ``_SRHT_GROUP_QUANTUM`` (the pruned
    contraction over the ``a`` low bits: ``c`` GEMMs with ``g_max`` = the most kept rows
    sharing one high part).  Returns ``(factors of c, a)``.
    """
    best = None
    for lc in range(d_pad.bit_length()):
        c = 1 << lc
        factors = _split_factors(c)
        gmax = int(torch.bincount(rows // (d_pad // c), minlength=c).max())
        cost = sum(max(f, _SRHT_MIN_FACTOR_COST) for f in factors) + _SRHT_GROUP_QUANTUM * -(
            -gmax // _SRHT_GROUP_QUANTUM
        )
        if best is None or cost < best[0]:
            best = (cost, factors, d_pad // c)
    assert best is not None  # the loop runs at least once
    return best[1], best[2]


def _fwht(x: torch.Tensor) -> torch.Tensor:
    """Unnormalised Walsh-Hadamard transform of the rows of ``x`` (width a power of two):
    radix-2 butterflies, ``log2`` width passes; functional, so autograd can follow it."""
    n, width = x.shape
    h = 1
    while h < width:
        u = x.reshape(n, width // (2 * h), 2, h)
        x = torch.stack((u[:, :, 0] + u[:, :, 1], u[:, :, 0] - u[:, :, 1]), dim=2).reshape(n, width)
        h *= 2
    return x


@register("srht")
class SRHTSketch(Sketch):
    """Subsampled randomized Hadamard transform ``sqrt(d'/k) R H D`` (fast JL transform).

    Apply path (no gradient needed): a *pruned* Hadamard transform, since only the ``k``
    kept rows of ``H`` are needed.  Sylvester order gives ``H_{d'} = H_c (x) H_a`` with
    ``d' = c a``; writing a column index ``j = j_hi a + j_lo`` and a kept row ``r = r_hi a +
    r_lo``, ``(H D x)_r = sum_{j_lo} H_a[r_lo, j_lo] T[r_hi, j_lo]`` with ``T[., j_lo] =
    H_c (D x)[., j_lo]`` the full transform over the high index.  ``H_c`` is applied as one
    small GEMM per Kronecker factor (order <= 32, ``f`` multiply-adds per element each),
    then, for each of the ``c`` high parts, the kept rows sharing it are one GEMM
    ``T[r_hi] @ H_a[r_lo's]^T`` (``a`` multiply-adds per kept row and per high part).  The
    split is chosen per sketch (:func:`_srht_plan`) to minimise ``sum f + g_max``
    per element; ``c = d'`` (the full transform by factors <= 32) is always a candidate, so
    the cost is O(d' log d') per row.  The d' x d' Hadamard matrix is never built.  Rows
    are processed in cache-sized blocks on CPU; high parts that only hold padding zeros are
    skipped in the first GEMM.
    """

    kind = "srht"
    # Every kept row of H D has +-1 in every column (only the padding blocks are skipped):
    # a NaN / Inf in X makes every output of its row non-finite.
    _nonfinite_propagates = True

    def __init__(self, d, k, seed=0, *, renormalize=False, batch_size=None):
        super().__init__(d, k, seed, renormalize=renormalize, batch_size=batch_size)
        self.d_pad = 1 << (self.d - 1).bit_length()

    def _draw(self) -> None:
        g = _generator(self.seed)
        self._signs = (
            torch.randint(0, 2, (self.d_pad,), generator=g).to(torch.float64).mul_(2).sub_(1)
        )
        self._rows = torch.randperm(self.d_pad, generator=g)[: self.k]

    @property
    def signs(self) -> torch.Tensor:
        """``(d',)`` float64 of +-1: the diagonal of D (drawn first from the seed)."""
        if "_signs" not in self.__dict__:
            self._draw()
        return self._signs

    @property
    def rows(self) -> torch.Tensor:
        """``(k,)`` int64: the distinct rows of H D that R keeps, in output order."""
        if "_rows" not in self.__dict__:
            self._draw()
        return self._rows

    def plan(self) -> tuple[list[int], int]:
        """The Kronecker split of the apply path: ``(factors of c, a)`` with ``d' = c a``."""
        p = self.__dict__.get("_plan")
        if p is None:
            p = self._plan = _srht_plan(self.d_pad, self.rows)
        return p

    def _params(self, dtype, device):
        def build(dt, dev):
            factors, a = self.plan()
            c = self.d_pad // a
            hi, lo = self.rows // a, self.rows % a
            counts = torch.bincount(hi, minlength=c)
            gmax = int(counts.max())
            order = torch.argsort(hi, stable=True)
            slot = torch.empty_like(hi)
            slot[order] = torch.arange(self.k) - (torch.cumsum(counts, 0) - counts)[hi[order]]
            # Q[h, :, s] = row r_lo of H_a for the s-th kept row with high part h (zero padding
            # slots), with sqrt(d'/k) * (1/sqrt(d')) folded in: the transforms are unnormalised.
            Q = torch.zeros(c, a, gmax, dtype=torch.float64)
            Q[hi, :, slot] = _hadamard_rows(lo, a) / math.sqrt(self.k)
            return {
                "signs": self.signs[: self.d].to(device=dev, dtype=dt),
                "factors": [(f, _hadamard(f, dt, dev)) for f in factors],
                "a": a,
                "Q": Q.to(device=dev, dtype=dt),
                "take": (hi * gmax + slot).to(device=dev),
            }

        return self._cached(dtype, device, build)

    def _work_width(self):
        return 2 * self.d_pad

    def _apply(self, X):
        if X.requires_grad and torch.is_grad_enabled():
            x = torch.nn.functional.pad(
                X * (self.signs[: self.d] / math.sqrt(self.k)).to(X), (0, self.d_pad - self.d)
            )
            return _fwht(x)[:, self.rows.to(X.device)]
        p = self._params(X.dtype, X.device)
        n, d, width, a = X.shape[0], self.d, self.d_pad, p["a"]
        c = width // a
        signs, Q, take, factors = p["signs"], p["Q"], p["take"], p["factors"]
        gmax = Q.shape[2]
        # Only the high parts (of the first factor) holding data enter the first GEMM.
        f1 = factors[0][0] if factors else 1
        span = c // f1  # high parts per block of the first factor
        used = -(-d // (a * span))  # blocks of the first factor that are not all padding
        q, rem = divmod(d, a)  # high parts filled with data, and the data in the next one
        touched = q + (rem > 0)
        block = n if X.device.type != "cpu" else max(1, _CPU_SRHT_BLOCK_ELEMENTS // width)
        block = min(block, n)
        buf_a = X.new_empty(block * width)
        buf_b = X.new_empty(block * width) if factors else None
        res = X.new_empty(c * gmax * block)
        out = X.new_empty((n, self.k))
        idx = None
        for start in range(0, n, block):
            m = min(block, n - start)
            x = X[start : start + m]
            # Z[h, i, l] = (D x_i)[h a + l]: layout (c, m, a), so every GEMM below has unit strides.
            Z = buf_a[: m * width].view(c, m, a)
            Zv = Z.transpose(0, 1)
            if q:
                torch.mul(x[:, : q * a].view(m, q, a), signs[: q * a].view(q, a), out=Zv[:, :q])
            if rem:
                torch.mul(x[:, q * a :], signs[q * a :], out=Zv[:, q, :rem])
                Zv[:, q, rem:].zero_()
            if used * span > touched:  # all-padding high parts inside the blocks that are used
                Z[touched : used * span].zero_()
            cur, other = buf_a, buf_b
            pre = 1
            for i, (f, H) in enumerate(factors):
                src = cur[: m * width].view(pre, f, -1)
                dst = other[: m * width].view(pre, f, -1)
                if i == 0:
                    torch.mm(H[:, :used], src[0, :used], out=dst[0])
                else:
                    torch.matmul(H, src, out=dst)
                cur, other = other, cur
                pre *= f
            T = cur[: m * width].view(c, m, a)
            R = res[: c * gmax * m].view(c, m, gmax)
            torch.bmm(T, Q, out=R)
            if idx is None or idx.shape[0] != m:
                # out[i, t] = R[hi_t, i, slot_t]: one gather straight from the bmm layout
                idx = (take // gmax * (m * gmax) + take % gmax) + (
                    gmax * torch.arange(m, device=X.device)
                ).unsqueeze(1)
            torch.take(R, idx, out=out[start : start + m])
        return out

    def _matrix(self):
        # Explicit entries, independent of the apply path: H_unnormalised[r, j] = (-1)^popcount(r & j).
        H = _hadamard_rows(self.rows, self.d_pad)[:, : self.d]
        return H * (self.signs[: self.d] / math.sqrt(self.k))

    def _row_flops(self):
        factors, a = self.plan()
        c = self.d_pad // a
        gmax = int(torch.bincount(self.rows // a, minlength=c).max())
        return self.d_pad * (sum(factors) + gmax)

    def _stored(self):
        return self.d_pad + self.k  # the signs and the kept row indices

    def _extra_repr(self):
        return f"d_pad={self.d_pad}"
