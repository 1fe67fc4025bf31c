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
    ``k`` distinct rows of ``d'`` uniformly without replacement.  Applied with a fast
    Walsh-Hadamard transform (a reshape-based butterfly, ``log2 d'`` add/subtract passes,
    cache-blocked on CPU, the first four passes fused into one GEMM with the 16 x 16
    Hadamard matrix); the d' x d' Hadamard matrix is never built in the apply path.  Cost
    reported by :meth:`Sketch.flops`: ``n (d' log2 d' + k)`` (butterfly additions plus the
    final scaling of the ``k`` kept coordinates; the sign flips are folded into the copy
    that pads the input).
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
  numeric; integer / bool / half input becomes float32), checks ``X.shape[1] == d``,
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
from typing import Any

import numpy as np
import torch

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
# SRHT on CPU: process rows in blocks whose two d'-wide buffers stay in cache
# (the butterfly is memory bound; blocking makes it ~4x faster than one big pass).
_CPU_FWHT_BLOCK_ELEMENTS = 1 << 18
# SRHT: the first log2(_FWHT_KERNEL) butterfly passes are one GEMM with this small Hadamard.
_FWHT_KERNEL = 16


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


def _ldexp(X: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
    """``X * 2^e`` exactly (up to under/overflow of the result), in two half steps so that no
    factor ``2^e`` itself leaves the dtype's range (|e| reaches 1074 + 1024 in float64)."""
    h = torch.div(e, 2, rounding_mode="floor")
    return torch.ldexp(torch.ldexp(X, h), e - h)


class Sketch:
    """A fixed linear map ``S`` (k x d) applied to rows: ``S(X) = X @ S.T``.

    Use :func:`make_sketch` to build one.  Attributes: ``kind``, ``d``, ``k``, ``seed``,
    ``renormalize``, ``batch_size`` (``None``: automatic).  Subclasses implement
    ``_apply(X)`` (a validated ``(b, d)`` float tensor batch -> ``(b, k)``, same dtype /
    device) and ``_matrix()`` (the explicit k x d matrix as a CPU float64 tensor).
    """

    kind: str = ""
    _options: tuple[str, ...] = ("batch_size",)

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
        self.batch_size = None if batch_size is None else check_int(batch_size, "batch_size", min_value=1)
        self._cache: dict[tuple[torch.dtype, str], Any] = {}

    # ----------------------------------------------------------------- hooks
    def _apply(self, X: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def _matrix(self) -> torch.Tensor:
        """Explicit k x d matrix (CPU float64).  Default: apply the map to the identity."""
        eye = torch.eye(self.d, dtype=torch.float64)
        return self._transform(eye).T.contiguous()

    def _row_flops(self) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

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
        t, was_numpy = self._validate_X(X)
        out = self._transform(t)
        # One cheap reduction (isfinite(...).all() costs ~15x more): a finite sum proves every
        # entry finite; a sum that overflows with finite entries only costs the slow path.
        if not bool(torch.isfinite(out.detach().sum())):
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

    def fit(self, X: Any) -> "Sketch":
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
                    torch.rand(min(chunk, d - c), k, generator=g, dtype=torch.float64).topk(s, dim=1).indices
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


def _fwht_pingpong(a: torch.Tensor, b: torch.Tensor, kernel: torch.Tensor | None = None) -> torch.Tensor:
    """Unnormalised Walsh-Hadamard transform of the rows of ``a`` (width a power of two).

    Radix-2 butterflies: pass ``h`` views the rows as ``(n, d'/2h, 2, h)`` and writes the
    sums / differences of the two halves into the other buffer; ``log2 d'`` passes, no
    allocation.  If ``kernel`` (the order-``B`` Hadamard matrix, ``B`` = 16) is given, the
    first ``log2 B`` passes -- whose contiguous runs ``h < B`` are too short for vectorised
    elementwise kernels -- are done at once as one small GEMM on contiguous groups of ``B``
    (``B`` multiply-adds per element: still O(d' log d') overall).  Overwrites both
    buffers; returns the one holding the result.
    """
    n, width = a.shape
    h = 1
    if kernel is not None:
        B = kernel.shape[0]
        torch.mm(a.view(-1, B), kernel, out=b.view(-1, B))
        a, b = b, a
        h = B
    while h < width:
        u = a.view(n, width // (2 * h), 2, h)
        v = b.view(n, width // (2 * h), 2, h)
        torch.add(u[:, :, 0], u[:, :, 1], out=v[:, :, 0])
        torch.sub(u[:, :, 0], u[:, :, 1], out=v[:, :, 1])
        a, b = b, a
        h *= 2
    return a


def _fwht(x: torch.Tensor) -> torch.Tensor:
    """Functional (autograd-friendly) version of :func:`_fwht_pingpong`."""
    n, width = x.shape
    h = 1
    while h < width:
        u = x.reshape(n, width // (2 * h), 2, h)
        x = torch.stack((u[:, :, 0] + u[:, :, 1], u[:, :, 0] - u[:, :, 1]), dim=2).reshape(n, width)
        h *= 2
    return x


class SRHTSketch(Sketch):
    """Subsampled randomized Hadamard transform ``sqrt(d'/k) R H D`` (fast JL transform)."""

    kind = "srht"

    def __init__(self, d, k, seed=0, *, renormalize=False, batch_size=None):
        super().__init__(d, k, seed, renormalize=renormalize, batch_size=batch_size)
        self.d_pad = 1 << (self.d - 1).bit_length()

    def _draw(self) -> None:
        g = _generator(self.seed)
        self._signs = torch.randint(0, 2, (self.d_pad,), generator=g).to(torch.float64).mul_(2).sub_(1)
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

    def _params(self, dtype, device):
        def build(dt, dev):
            # sqrt(d'/k) * (1/sqrt(d')) folded into the signs: the butterfly is unnormalised.
            scaled = (self.signs[: self.d] / math.sqrt(self.k)).to(device=dev, dtype=dt)
            kernel = _hadamard(_FWHT_KERNEL, dt, dev) if self.d_pad >= 4 * _FWHT_KERNEL else None
            return scaled, self.rows.to(device=dev), kernel

        return self._cached(dtype, device, build)

    def _work_width(self):
        return 2 * self.d_pad

    def _apply(self, X):
        scaled, rows, kernel = self._params(X.dtype, X.device)
        n, d, width = X.shape[0], self.d, self.d_pad
        if X.requires_grad and torch.is_grad_enabled():
            x = torch.nn.functional.pad(X * scaled, (0, width - d))
            return _fwht(x)[:, rows]
        out = X.new_empty((n, self.k))
        block = n if X.device.type != "cpu" else max(1, _CPU_FWHT_BLOCK_ELEMENTS // width)
        block = min(block, n)
        buf_a = X.new_empty((block, width))
        buf_b = X.new_empty((block, width))
        for start in range(0, n, block):
            m = min(block, n - start)
            a, b = buf_a[:m], buf_b[:m]
            torch.mul(X[start : start + m], scaled, out=a[:, :d])
            a[:, d:].zero_()
            res = _fwht_pingpong(a, b, kernel)
            torch.index_select(res, 1, rows, out=out[start : start + m])
        return out

    def _matrix(self):
        # Explicit entries, independent of the butterfly: H_unnormalised[r, j] = (-1)^popcount(r & j).
        bits = self.rows.unsqueeze(1) & torch.arange(self.d).unsqueeze(0)
        parity = torch.zeros_like(bits)
        while bool(bits.any()):
            parity ^= bits & 1
            bits = bits >> 1
        H = 1.0 - 2.0 * parity.to(torch.float64)
        return H * (self.signs[: self.d] / math.sqrt(self.k))

    def _row_flops(self):
        return self.d_pad * (self.d_pad.bit_length() - 1) + self.k

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

    def fit(self, X: Any) -> "PCASketch":
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
        V = self._cached(X.dtype, X.device, lambda dt, dev: self.components_.to(device=dev, dtype=dt))
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
            raise ValueError(f"identity sketch needs k == d (no reduction), got k = {self.k}, d = {self.d}")

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
