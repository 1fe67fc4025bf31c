"""The :class:`Sketch` base class, the one registry of sketch kinds (:data:`SKETCH_KINDS`) and :func:`make_sketch`.

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

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, TypeVar, cast

import numpy as np
import torch

from ntkdr._numerics import ldexp_exact as _ldexp
from ntkdr.validation import (
    ArrayLike,
    as_matrix,
    check_choice,
    check_int,
    check_k,
    check_nonzero_rows,
    resolve_device,
    resolve_dtype,
    to_output,
)

__all__ = ["SKETCH_KINDS", "Sketch", "make_sketch", "register"]

#: Every kind of map, in the order reports list them; :func:`register` fills in the classes.
SKETCH_KINDS: tuple[str, ...] = ("gaussian", "sparse", "srht", "pca", "identity")

# Default row-batch size: keep one batch's workspace below this many elements
# (128 MiB in float64).
_BATCH_ELEMENTS = 1 << 24

_CLASSES: dict[str, type[Sketch]] = {}
_S = TypeVar("_S", bound="type[Sketch]")


def register(kind: str) -> Callable[[_S], _S]:
    """Class decorator: make ``cls`` the implementation of ``kind`` (one of :data:`SKETCH_KINDS`)."""

    def deco(cls: _S) -> _S:
        if kind not in SKETCH_KINDS:
            raise ValueError(f"unknown sketch kind {kind!r}; add it to SKETCH_KINDS")
        _CLASSES[kind] = cls
        return cls

    return deco


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
        return torch.cat(parts) if parts else cast(torch.Tensor, out)

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

    def fit(self, X: ArrayLike) -> Sketch:
        """Data-independent kinds: validate X and return ``self`` (pca overrides)."""
        self._validate_X(X)
        return self

    def flops(self, n: int) -> int:
        """Multiply-adds that applying the map to ``n`` rows costs (see each kind's docs)."""
        n = check_int(n, "n", min_value=0)
        return n * self._row_flops()

    @property
    def stored_size(self) -> int:
        """Numbers the map keeps (matrix entries, signs, row indices) -- the cost model's
        fixed parameters of the factorized network."""
        return self._stored()

    def _stored(self) -> int:
        return self.k * self.d

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
