"""Dimension-reduction maps ("sketches") S: R^d -> R^k (SPEC section 3).

Every map is a linear k x d matrix ``S`` applied to the rows of an ``(n, d)`` array,
``X -> X @ S.T``, built with :func:`make_sketch`::

    S = make_sketch("srht", d=784, k=64, seed=0)
    Y = S(X)                 # (n, 64); numpy in -> numpy out, torch in -> torch out
    M = S.matrix()           # the explicit 64 x 784 matrix, float64 (Y == X @ M.T)
    S.flops(len(X))          # multiply-adds that S(X) costs

Kinds (:data:`SKETCH_KINDS`):

``gaussian``
    Dense, entries i.i.d. N(0, 1/k).  Applied with one GEMM; cost ``n k d``.
``sparse``
    Sparse JL / CountSketch family: each column has exactly ``s`` non-zeros, at ``s``
    distinct uniformly random rows, with independent random signs and magnitude
    ``1/sqrt(s)``.  ``s = 1`` is CountSketch.  Default ``s = min(8, k)``: a sparse-JL
    map (Kane & Nelson 2014) needs s = Theta(eps^-1 log(1/delta)) for the JL guarantee;
    8 gives JL-quality distortion at the distortions the project measures (eps ~ 0.1-0.5)
    at 8 / k of the Gaussian cost.  Applied as a sparse CSR product; cost ``n s d``.
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
``pca``
    Data-fitted, deterministic baseline: the top-k right singular vectors of the training
    data, ``S = V_k^T``, fitted with :meth:`Sketch.fit`.  No centering: the map stays
    linear (so ``matrix()`` is exactly what is applied, and sketched inner products / angles
    are taken through the origin, as the NTK needs); centre the data yourself if wanted.
    Solver (option ``svd_solver``): ``"full"`` exact SVD, ``"randomized"`` a randomized
    range finder (Halko, Martinsson & Tropp 2011) with ``n_iter`` power iterations and
    ``n_oversamples`` extra columns, drawn from the sketch's seed, or ``"auto"`` (default):
    randomized when ``max(n, d) > 500`` and ``k < 0.8 min(n, d)``, exact otherwise (the
    rule scikit-learn's PCA uses).  The SVD runs in float64 on X's device.  Signs are
    fixed so that the largest-magnitude entry of each component is positive.  If the data
    has fewer than ``k`` rows, the missing directions are an orthonormal completion drawn
    from the seed (they carry no variance of the training data).  Cost ``n k d``.
``identity``
    No reduction, ``k`` must equal ``d``, so dense and factorized code paths are the same
    code.  Returns a copy of X (never a view of the caller's array).  Cost 0.

Common behaviour (the base class :class:`Sketch`; each kind implements one hook,
``_apply``, on a validated tensor batch, plus ``_matrix``, an independent explicit
construction used by :meth:`Sketch.matrix` and by the tests as the reference):

* randomness: all random parts are drawn from ``torch.Generator().manual_seed(seed)`` on
  the CPU in float64 and only then cast / moved, so one seed gives the same map on every
  device and dtype (``matrix(float32)`` is ``matrix(float64)`` rounded).  Cast copies are
  cached per (dtype, device).
* ``__call__`` validates X (:func:`ntkdr.validation.as_matrix`: 2-D, non-empty, finite,
  numeric; integer / bool / half input becomes float32; for srht, a float tensor's
  finiteness is checked through its sketch, which is non-finite exactly when X is or
  the sum overflowed, saving a pass over X), checks ``X.shape[1] == d``,
  applies in row batches of ``batch_size`` (default: as many rows as keep the per-batch
  workspace under 2**24 elements), and returns the caller's array kind, dtype and device.
* ``renormalize=True`` rescales every output row to unit norm (the analysis assumes
  ``|x| = 1``); a row that sketches to zero raises ``ValueError``.  Rows of any finite
  magnitude (1e308 or subnormal) come back unit-norm, to the dtype's precision (rows whose
  sketch is near-subnormal are sketched again from power-of-two-scaled rows).  ``matrix()`` ignores
  ``renormalize`` (the map is then no longer linear).
* Extreme magnitudes: if the product overflows for a finite X (partial sums near the dtype's
  maximum), the rows are rescaled by powers of two (exact), sketched and scaled back; the
  result is the same map to round-off.  If the exact result is not representable a
  ``ValueError`` says so.  The check costs one sum over the (n, k) output.
* Gradients flow through ``__call__`` when X requires them.
"""

from __future__ import annotations

import math
import warnings
from abc import ABC, abstractmethod
from typing import Any

import numpy as np
import torch

from ntkdr._numerics import ldexp_exact as _ldexp

from .validation import (
    as_matrix,
    check_choice,
    check_int,
    check_k,
    check_nonzero_rows,
    resolve_device,
    resolve_dtype,
    to_output,
)

__all__ = [
    "SKETCH_KINDS",
    "Sketch",
    "GaussianSketch",
    "SparseSketch",
    "SRHTSketch",
    "PCASketch",
    "IdentitySketch",
    "make_sketch",
]

SKETCH_KINDS: tuple[str, ...] = ("gaussian", "sparse", "srht", "pca", "identity")

# Default row-batch size: keep one batch's workspace below this many elements
# (128 MiB in float64).
_BATCH_ELEMENTS = 1 << 24
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


def _generator(seed: int) -> torch.Generator:
    return torch.Generator(device="cpu").manual_seed(seed)


def _pow2_exponents(X: torch.Tensor) -> torch.Tensor:
    """Per-row ``e`` with ``max_k |X_ik| = f 2^e``, ``f`` in [0.5, 1) (0 for zero rows), shape (n, 1)."""
    return torch.frexp(X.detach().abs().amax(dim=1, keepdim=True)).exponent


def _precise_floor(dtype: torch.dtype) -> float:
    """``tiny / eps``: a row whose largest entry is below it may carry subnormal rounding
    (or underflow to 0) at more than the eps level."""
    fi = torch.finfo(dtype)
    return fi.tiny / fi.eps


class Sketch(ABC):
    """A fixed linear map ``S`` (k x d) applied to rows: ``S(X) = X @ S.T``.

    Use :func:`make_sketch` to build one.  Attributes: ``kind``, ``d``, ``k``, ``seed``,
    ``renormalize``, ``batch_size`` (``None``: automatic).  Subclasses implement
    ``_apply(X)`` (a validated ``(b, d)`` float tensor batch -> ``(b, k)``, same dtype /
    device) and ``_matrix()`` (the explicit k x d matrix as a CPU float64 tensor).
    """

    kind: str = ""
    _options: tuple[str, ...] = ("batch_size",)
    # True where every input entry reaches some output entry through a non-zero coefficient,
    # in IEEE arithmetic (NaN / Inf in X => a non-finite output), so X's finiteness can be
    # checked through the output (see _validate_X_deferred).
    _nonfinite_propagates: bool = False

    def __init__(
        self,
        d: int,
        k: int,
        seed: int = 0,
        *,
        renormalize: bool = False,
        batch_size: int | None = None,
    ) -> None:
        self.d = check_int(d, "d", min_value=1)
        self.k = check_k(k, self.d)
        self.seed = check_int(seed, "seed", min_value=0)
        if not isinstance(renormalize, (bool, np.bool_)):
            raise ValueError(f"renormalize must be True or False, got {renormalize!r}")
        self.renormalize = bool(renormalize)
        self.batch_size = (
            None if batch_size is None else check_int(batch_size, "batch_size", min_value=1)
        )
        self._cache: dict[tuple[torch.dtype, str], Any] = {}

    # ----------------------------------------------------------------- hooks
    @abstractmethod
    def _apply(self, X: torch.Tensor) -> torch.Tensor:
        """The map on a validated (rows, d) tensor batch -> (rows, k): the one hook of each kind."""

    def _matrix(self) -> torch.Tensor:
        """Explicit k x d matrix (CPU float64).  Default: apply the map to the identity."""
        eye = torch.eye(self.d, dtype=torch.float64)
        return self._transform(eye).T.contiguous()

    @abstractmethod
    def _row_flops(self) -> int:
        """Multiply-adds to apply the map to one row."""

    def _work_width(self) -> int:
        """Elements of workspace per input row (sets the default batch size)."""
        return max(self.d, self.k)

    def _check_ready(self) -> None:
        """Raise if the map cannot be applied yet (pca before fit)."""

    def _extra_repr(self) -> str:
        return ""

    # --------------------------------------------------------------- helpers
    def _cached(self, dtype: torch.dtype, device: torch.device, build):
        key = (dtype, str(device))
        if key not in self._cache:
            self._cache[key] = build(dtype, device)
        return self._cache[key]

    def _validate_X(self, X: Any) -> tuple[torch.Tensor, bool]:
        t, was_numpy = as_matrix(X, "X")
        if t.shape[1] != self.d:
            raise ValueError(f"X has {t.shape[1]} features but the sketch expects d = {self.d}")
        return t, was_numpy

    def _validate_X_deferred(self, X: Any) -> tuple[torch.Tensor, bool, bool]:
        """Like :meth:`_validate_X`, but a float32 / float64 2-D non-empty tensor of width
        ``d`` is accepted without the finiteness pass over X (a full extra read of the input,
        as long as the whole SRHT apply at n = 4000, d = 8192).  Only for kinds whose apply
        turns any NaN / Inf of X into a non-finite output entry (``_nonfinite_propagates``):
        :meth:`__call__` then checks the (small) output, and only if that is not finite
        does it run the full check on X, which raises the usual message.
        Returns ``(tensor, was_numpy, deferred)``."""
        if (
            self._nonfinite_propagates
            and isinstance(X, torch.Tensor)
            and X.dtype in (torch.float32, torch.float64)
            and X.ndim == 2
            and X.shape[0] > 0
            and X.shape[1] == self.d
        ):
            return X, False, True
        return (*self._validate_X(X), False)

    def _batch_rows(self) -> int:
        if self.batch_size is not None:
            return self.batch_size
        return max(1, _BATCH_ELEMENTS // max(1, self._work_width()))

    def _transform(self, X: torch.Tensor) -> torch.Tensor:
        n = X.shape[0]
        rows = self._batch_rows()
        if n <= rows:
            return self._apply(X)
        parts = []
        out = None
        for start in range(0, n, rows):
            y = self._apply(X[start : start + rows])
            if X.requires_grad and torch.is_grad_enabled():
                parts.append(y)
                continue
            if out is None:
                out = y.new_empty((n, self.k))
            out[start : start + y.shape[0]] = y
        return torch.cat(parts) if parts else out

    # ------------------------------------------------------------ public API
    def __call__(self, X: Any) -> Any:
        """Sketch the rows of ``X`` (n, d) -> (n, k), in the caller's array kind / dtype / device."""
        self._check_ready()
        t, was_numpy, deferred = self._validate_X_deferred(X)
        out = self._transform(t)
        # One cheap reduction (isfinite(...).all() costs ~15x more): a finite sum proves every
        # entry finite; a sum that overflows with finite entries only costs the slow path.
        if not bool(torch.isfinite(out.detach().sum())):
            if deferred:
                self._validate_X(t)  # raises if X itself has NaN / Inf; else the sum overflowed
            # renormalize: the row scale drops out, so the scaled rows need no undoing
            out = self._transform_scaled(t, undo=not self.renormalize)
        if self.renormalize:
            # Rows that sketched to (nearly) subnormal values lost precision, or to 0 by
            # underflow: sketch them again from rows scaled up by a power of two (the scale
            # drops out of the direction).  Rows of exact zeros stay zero and are reported.
            m = out.detach().abs().amax(dim=1, keepdim=True)
            if bool((m < _precise_floor(out.dtype)).any()):
                out = self._transform_scaled(t, undo=False)
                m = out.detach().abs().amax(dim=1, keepdim=True)
            if bool((m == 0).any()):
                check_nonzero_rows(out, f"the {self.kind}-sketched X")
            e = torch.frexp(m).exponent
            # Rows scaled by a power of two near their largest entry (exact) first, so that the
            # norm neither overflows (|x| ~ 1e308) nor underflows (1e-310, or 1e-30 in float32).
            out = _ldexp(out, -e)
            out = out / torch.linalg.vector_norm(out, dim=1, keepdim=True)
        return to_output(out, was_numpy)

    def _transform_scaled(self, X: torch.Tensor, undo: bool = True) -> torch.Tensor:
        """Apply the map to rows scaled to max |entry| in [0.5, 1) by powers of two, then undo.

        Only used when the direct product is not finite (the input is finite, so partial sums
        overflowed) or, with ``renormalize``, when rows sketched to (near-)subnormal values.
        The scaling is exact, so the result is the same map to round-off; if it still
        overflows, the exact result is not representable.  ``undo=False`` returns the sketch of
        the scaled rows (for ``renormalize``, where the row scale drops out).
        """
        e = _pow2_exponents(X)
        out = self._transform(_ldexp(X, -e))
        if undo:
            out = _ldexp(out, e)
        if not bool(torch.isfinite(out).all()):
            fi = torch.finfo(out.dtype)
            raise ValueError(
                f"the {self.kind}-sketched X overflows {str(out.dtype).replace('torch.', '')} "
                f"(entries beyond {fi.max:.3g}); rescale X or use float64"
            )
        return out

    def matrix(self, dtype: Any = torch.float64, device: Any = None) -> torch.Tensor:
        """The explicit k x d matrix ``S`` (a fresh tensor), so that ``S(X) == X @ S.T``.

        Built in float64 on the CPU, then cast / moved; ignores ``renormalize``.
        """
        self._check_ready()
        dt = resolve_dtype(dtype) or torch.float64
        dev = resolve_device(device) or torch.device("cpu")
        return self._matrix().to(device=dev, dtype=dt, copy=True)

    def fit(self, X: Any) -> Sketch:
        """Data-independent kinds: validate X and return ``self`` (pca overrides)."""
        self._validate_X(X)
        return self

    def flops(self, n: int) -> int:
        """Multiply-adds that applying the map to ``n`` rows costs (see the module docs)."""
        n = check_int(n, "n", min_value=0)
        return n * self._row_flops()

    def __repr__(self) -> str:
        extra = self._extra_repr()
        return (
            f"{type(self).__name__}(kind={self.kind!r}, d={self.d}, k={self.k}, seed={self.seed}, "
            f"renormalize={self.renormalize}{', ' + extra if extra else ''})"
        )

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_cache"] = {}
        return state


# --------------------------------------------------------------------- kinds
class GaussianSketch(Sketch):
    """Dense Gaussian map, entries N(0, 1/k)."""

    kind = "gaussian"

    @property
    def weight(self) -> torch.Tensor:
        """The k x d matrix, CPU float64 (generated on first use)."""
        w = self.__dict__.get("_weight")
        if w is None:
            g = _generator(self.seed)
            w = torch.randn(self.k, self.d, generator=g, dtype=torch.float64) / math.sqrt(self.k)
            self._weight = w
        return w

    def _apply(self, X):
        W = self._cached(X.dtype, X.device, lambda dt, dev: self.weight.to(device=dev, dtype=dt))
        return X @ W.T

    def _matrix(self):
        return self.weight

    def _row_flops(self):
        return self.k * self.d


class SparseSketch(Sketch):
    """Sparse JL map: ``s`` non-zeros ``+-1/sqrt(s)`` per column, at ``s`` distinct random rows."""

    kind = "sparse"
    _options = ("batch_size", "s")

    def __init__(self, d, k, seed=0, *, renormalize=False, batch_size=None, s=None):
        super().__init__(d, k, seed, renormalize=renormalize, batch_size=batch_size)
        if s is None:
            s = min(8, self.k)
        s = check_int(s, "s", min_value=1)
        if s > self.k:
            raise ValueError(f"s (non-zeros per column) must be <= k = {self.k}, got {s}")
        self.s = s

    def _draw(self) -> None:
        g = _generator(self.seed)
        d, k, s = self.d, self.k, self.s
        if s * s <= k:
            # Rejection: redraw whole columns that hit a repeated row (P <= ~1/2 each),
            # which leaves every column a uniform s-subset.  O(d s) expected work.
            rows = torch.randint(0, k, (d, s), generator=g)
            while True:
                srt = rows.sort(dim=1).values
                bad = (srt[:, 1:] == srt[:, :-1]).any(dim=1).nonzero().flatten()
                if bad.numel() == 0:
                    break
                rows[bad] = torch.randint(0, k, (bad.numel(), s), generator=g)
        else:
            # Dense case (s ~ k): the s largest of k uniforms per column, in chunks.
            chunk = max(1, (1 << 20) // k)
            rows = torch.cat(
                [
                    torch.rand(min(chunk, d - c), k, generator=g, dtype=torch.float64)
                    .topk(s, dim=1)
                    .indices
                    for c in range(0, d, chunk)
                ]
            )
        signs = torch.randint(0, 2, (d, s), generator=g).to(torch.float64).mul_(2).sub_(1)
        self._rows, self._signs = rows, signs

    @property
    def rows(self) -> torch.Tensor:
        """``(d, s)`` int64: the rows of column j's non-zeros (distinct within a column)."""
        if "_rows" not in self.__dict__:
            self._draw()
        return self._rows

    @property
    def signs(self) -> torch.Tensor:
        """``(d, s)`` float64 of +-1: the signs of those non-zeros."""
        if "_signs" not in self.__dict__:
            self._draw()
        return self._signs

    def _csr(self, dtype, device):
        cols = torch.arange(self.d).repeat_interleave(self.s)
        values = (self.signs / math.sqrt(self.s)).flatten()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "sparse CSR support is in beta"
            coo = torch.sparse_coo_tensor(
                torch.stack((self.rows.flatten(), cols)), values, (self.k, self.d)
            ).coalesce()
            return coo.to_sparse_csr().to(device=device, dtype=dtype)

    def _apply(self, X):
        S = self._cached(X.dtype, X.device, self._csr)
        return (S @ X.T).T

    def _matrix(self):
        M = torch.zeros(self.k, self.d, dtype=torch.float64)
        cols = torch.arange(self.d).unsqueeze(1).expand(self.d, self.s)
        M[self.rows, cols] = self.signs / math.sqrt(self.s)
        return M

    def _row_flops(self):
        return self.s * self.d

    def _extra_repr(self):
        return f"s={self.s}"


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

    def _extra_repr(self):
        return f"d_pad={self.d_pad}"


class PCASketch(Sketch):
    """Top-k right singular vectors of the training data (no centering); call :meth:`fit` first."""

    kind = "pca"
    _options = ("batch_size", "svd_solver", "n_iter", "n_oversamples")
    _solvers = ("auto", "full", "randomized")

    def __init__(
        self,
        d,
        k,
        seed=0,
        *,
        renormalize=False,
        batch_size=None,
        svd_solver="auto",
        n_iter=None,
        n_oversamples=10,
    ):
        super().__init__(d, k, seed, renormalize=renormalize, batch_size=batch_size)
        self.svd_solver = check_choice(svd_solver, "svd_solver", self._solvers)
        self.n_iter = None if n_iter is None else check_int(n_iter, "n_iter", min_value=0)
        self.n_oversamples = check_int(n_oversamples, "n_oversamples", min_value=0)
        self.components_: torch.Tensor | None = None  # (k, d) float64, CPU
        self.singular_values_: torch.Tensor | None = None  # (k,) float64, CPU
        self.solver_: str | None = None  # the solver "auto" picked

    def _check_ready(self):
        if self.components_ is None:
            raise ValueError("pca sketch must be fit(X) before use")

    def fit(self, X: Any) -> PCASketch:
        """Fit the top-k right singular vectors of ``X`` (n, d); returns ``self``."""
        t, _ = self._validate_X(X)
        t = t.detach().to(torch.float64)
        n, d, k = t.shape[0], self.d, self.k
        r = min(n, d)
        solver = self.svd_solver
        if solver == "auto":
            solver = "randomized" if max(n, d) > 500 and k < 0.8 * r else "full"
        if solver == "randomized" and k > r:
            solver = "full"
        g = _generator(self.seed)
        if solver == "full":
            _, sv, Vh = torch.linalg.svd(t, full_matrices=False)
        else:
            Vh, sv = self._randomized_svd(t, g)
        V = Vh[:k].cpu()
        sv = sv[:k].cpu()
        if V.shape[0] < k:  # fewer rows than k: complete to an orthonormal basis
            extra = torch.randn(d, k - V.shape[0], generator=g, dtype=torch.float64)
            extra -= V.T @ (V @ extra)
            q, _ = torch.linalg.qr(extra)
            q -= V.T @ (V @ q)  # second pass: orthogonal to V to round-off
            q, _ = torch.linalg.qr(q)
            V = torch.cat((V, q.T))
            sv = torch.cat((sv, sv.new_zeros(k - sv.shape[0])))
        # Deterministic signs: the largest-magnitude entry of each component is positive.
        top = V.abs().argmax(dim=1)
        V = V * torch.sign(V[torch.arange(k), top]).unsqueeze(1)
        self.components_ = V.contiguous()
        self.singular_values_ = sv
        self.solver_ = solver
        self._cache.clear()
        return self

    def _randomized_svd(self, X: torch.Tensor, g: torch.Generator):
        n, d = X.shape
        r = min(n, d)
        l = min(self.k + self.n_oversamples, r)
        n_iter = self.n_iter
        if n_iter is None:
            n_iter = 7 if self.k < 0.1 * r else 4
        omega = torch.randn(d, l, generator=g, dtype=torch.float64).to(X.device)
        Q, _ = torch.linalg.qr(X @ omega)
        for _ in range(n_iter):
            Z, _ = torch.linalg.qr(X.T @ Q)
            Q, _ = torch.linalg.qr(X @ Z)
        B = Q.T @ X
        _, sv, Vh = torch.linalg.svd(B, full_matrices=False)
        return Vh, sv

    def _apply(self, X):
        V = self._cached(
            X.dtype, X.device, lambda dt, dev: self.components_.to(device=dev, dtype=dt)
        )
        return X @ V.T

    def _matrix(self):
        return self.components_

    def _row_flops(self):
        return self.k * self.d

    def _extra_repr(self):
        return f"fitted={self.components_ is not None}"


class IdentitySketch(Sketch):
    """No reduction (``k == d``): returns a copy of X."""

    kind = "identity"

    def __init__(self, d, k, seed=0, *, renormalize=False, batch_size=None):
        super().__init__(d, k, seed, renormalize=renormalize, batch_size=batch_size)
        if self.k != self.d:
            raise ValueError(
                f"identity sketch needs k == d (no reduction), got k = {self.k}, d = {self.d}"
            )

    def _apply(self, X):
        return X.clone()

    def _matrix(self):
        return torch.eye(self.d, dtype=torch.float64)

    def _row_flops(self):
        return 0


_CLASSES: dict[str, type[Sketch]] = {
    "gaussian": GaussianSketch,
    "sparse": SparseSketch,
    "srht": SRHTSketch,
    "pca": PCASketch,
    "identity": IdentitySketch,
}


def make_sketch(
    kind: str, d: int, k: int, seed: int = 0, *, renormalize: bool = False, **opts: Any
) -> Sketch:
    """Build a dimension-reduction map of the given ``kind`` (one of :data:`SKETCH_KINDS`).

    ``d`` input dimension (>= 1), ``k`` output dimension (``1 <= k <= d``; ``k == d`` for
    ``identity``), ``seed`` (>= 0) fixes every random choice.  Options: ``batch_size``
    (rows per batch, all kinds), ``s`` (sparse: non-zeros per column, ``1 <= s <= k``,
    default ``min(8, k)``), ``svd_solver`` / ``n_iter`` / ``n_oversamples`` (pca).
    Raises ``ValueError`` naming the problem for any invalid argument.
    """
    check_choice(kind, "sketch kind", SKETCH_KINDS)
    cls = _CLASSES[kind]
    unknown = sorted(set(opts) - set(cls._options))
    if unknown:
        raise ValueError(
            f"unexpected option(s) {', '.join(map(repr, unknown))} for the {kind!r} sketch; "
            f"allowed: {', '.join(map(repr, cls._options))}"
        )
    return cls(d, k, seed, renormalize=renormalize, **opts)
