"""The numba loops of :mod:`ntkdr.kernels.fused` (imported only when numba is installed).

Module-level functions, so numba caches the machine code on disk (one compilation per dtype,
~1 s, then a load).  The constants arrive as an array ``cst`` in the data's dtype, so float32
data is computed in float32 arithmetic (``cst`` layout: :func:`ntkdr.kernels.fused.constants`).
"""

from __future__ import annotations

import math

import numba as nb


@nb.njit(inline="always", error_model="numpy")
def _theta(s, g, c):
    """atan2(s, g) for s >= 0 (see the module docstring of ntkdr.kernels.fused); ``c``: the
    constants as a tuple of scalars (loaded once, outside the loops: an array read inside them
    could alias the output, which stops LLVM from vectorising)."""
    zero, pi, pio2, thr, pio4 = c[0], c[1], c[2], c[4], c[5]
    ag = abs(g)
    a = min(s, ag)
    b = max(s, ag)
    red = a > thr * b
    num = a - b if red else a
    den = a + b if red else b
    x = num / den if den > zero else zero
    z = x * x
    p = (((c[6] * z + c[7]) * z + c[8]) * z + c[9]) * z + c[10]
    q = ((((c[16] * z + c[11]) * z + c[12]) * z + c[13]) * z + c[14]) * z + c[15]
    y = x + x * (z * p / q)
    y = y + pio4 if red else y
    y = pio2 - y if s > ag else y
    return pi - y if g < zero else y


@nb.njit(inline="always", error_model="numpy")
def _sin_term(P, g, zero):
    return math.sqrt(max(P - g, zero)) * math.sqrt(max(P + g, zero))


@nb.njit(inline="always", error_model="numpy")
def _unpack(cst):
    return (
        cst[0], cst[1], cst[2], cst[3], cst[4], cst[5], cst[6], cst[7], cst[8], cst[9],
        cst[10], cst[11], cst[12], cst[13], cst[14], cst[15], cst[16], cst[17],
    )  # fmt: skip


@nb.njit(parallel=True, error_model="numpy", cache=True)
def two_layer(flat, ld, rows, cols, sx, sz, mul, add, k2_2pi, both, cst):
    c = _unpack(cst)
    zero = c[0]
    for i in nb.prange(rows):
        row = flat[i * ld : i * ld + cols]  # a unit-stride view: indexed by range, vectorised
        px = sx[i]
        for j in range(cols):
            g = row[j]
            s = _sin_term(px * sz[j], g, zero)
            h = g * (_theta(s, g, c) * mul + add)
            if both:
                h = h + s * k2_2pi
            row[j] = h


@nb.njit(parallel=True, error_model="numpy", cache=True)
def fc(ntk, nngp, ld, rows, cols, sx, sz, w2, w02_over_d, b2, cst):
    c = _unpack(cst)
    zero, half, inv2pi = c[0], c[3], c[17]
    depth = w2.shape[0]
    for i in nb.prange(rows):
        rn = ntk[i * ld : i * ld + cols]
        ra = nngp[i * ld : i * ld + cols]
        for j in range(cols):
            a = ra[j] * w02_over_d + b2
            ra[j] = a
            rn[j] = a
        # layer by layer over the row (in cache): LLVM vectorises innermost loops only
        for layer in range(depth):
            wl2 = w2[layer]
            m_dot, a_dot, m_sin = -wl2 * inv2pi, half * wl2, wl2 * inv2pi
            px = sx[layer, i]
            szl = sz[layer]
            for j in range(cols):
                a = ra[j]
                s = _sin_term(px * szl[j], a, zero)
                dot = _theta(s, a, c) * m_dot + a_dot
                a = a * dot + s * m_sin + b2
                ra[j] = a
                rn[j] = rn[j] * dot + a


@nb.njit(error_model="numpy", cache=True)
def angles(s, g, out, cst):
    c = _unpack(cst)
    for j in range(s.shape[0]):
        out[j] = _theta(s[j], g[j], c)


@nb.njit(parallel=True, error_model="numpy", cache=True)
def relu_mask_flips(P, rows, cols, mask, S, keep, count, zero):
    flips = 0
    for i in nb.prange(rows):
        rp = P[i * cols : (i + 1) * cols]
        f = 0
        if count:  # S = 1 - 2 T (+-1, int8): a flip where 1[P >= 0] != T
            rs = S[i * cols : (i + 1) * cols]
            for j in range(cols):
                f += (rp[j] >= zero) != (rs[j] < 0)
        if keep:
            rm = mask[i * cols : (i + 1) * cols]
            for j in range(cols):
                rm[j] = rp[j] > zero
        for j in range(cols):
            if rp[j] < zero:  # NaN stays NaN, as with torch's clamp_min
                rp[j] = zero
        flips += f
    return flips
