r"""Closed-form blocked gradients of :class:`~ntkdr.nets.TwoLayerReLU` with a fixed sketch.

With features ``F = model.features(X)``, ``P = F W^T``, outputs ``u = relu(P) a / sqrt(m)`` and
residual ``r = u - y`` of the summed loss ``L = 1/2 ||u - y||^2`` (the convention of
:mod:`ntkdr.training`):

    dL/dW = ((r a^T / sqrt(m)) o 1[P > 0])^T F,    dL/da = relu(P)^T r / sqrt(m)

computed over column blocks of neurons so that each ``n x block`` slab of ``P`` stays in cache
between the GEMM and the elementwise passes.  :class:`ClosedFormGrads` does it for one
training run; the trainer (:mod:`ntkdr.training.trainer`) holds one and calls it.
"""

from __future__ import annotations

import math
import time
from typing import Any

import torch
from torch import nn

from ntkdr.kernels import fused
from ntkdr.kernels.fused import backend
from ntkdr.nets.models import column_block


# Which models the closed form (and fit's full tracking) applies to.
def _is_two_layer(model: nn.Module) -> bool:
    from ntkdr.nets.models import TwoLayerReLU

    return isinstance(model, TwoLayerReLU)


def _sketch_trained(model: nn.Module) -> bool:
    S = getattr(model, "S", None)
    return isinstance(S, nn.Parameter) and S.requires_grad


# The step's masks and the initial patterns are int8 (0 / 1 and +-1): float <-> int8 copies are
# vectorised in PyTorch's CPU kernels, float <-> bool ones are not (measured, n = 2000, m = 4096:
# forming the bool mask took 5.4 ms and copying it back 5.5 ms per step; float16 2.0 and 0.5 ms;
# per 2000 x 512 slab, one thread: gt into int8 0.54 ms against 0.92 for float16, the copy back
# 0.19 against 0.23 ms).  numba (the fused pass) has no float16 on CPU either.
_MASK_DTYPE = torch.int8
# Elements per dot product when counting with 0 / 1 vectors: partial sums stay below 2^24,
# so float32 counts are exact.
_COUNT_CHUNK = 1 << 22


def _dot_count(g: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """``g . t`` of integer-valued vectors (0 / 1, +-1), exactly, as a float64 scalar (BLAS
    dot products: one pass, ~8x faster than ``count_nonzero`` on CPU, measured)."""
    total = torch.zeros((), dtype=torch.float64, device=g.device)
    for s in range(0, g.numel(), _COUNT_CHUNK):
        total += torch.dot(g[s : s + _COUNT_CHUNK], t[s : s + _COUNT_CHUNK]).to(torch.float64)
    return total


class InitPatterns:
    """The activation patterns ``1[F W0^T >= 0]`` at initialisation, for the pattern-flip count.

    Stored as ``S = 1 - 2 T`` (``T`` the 0 / 1 patterns) in int8 (1 byte per entry, where
    ``F``'s dtype would take 4 or 8 -- ``n x m`` of them), in the column blocks of
    :func:`column_block` (contiguous ``n x c`` pieces, read with unit stride next to the slab of
    ``F W^T`` they are compared with), with the number of ones of ``T`` per block: the flips of
    a slab ``G = 1[P >= 0]`` are ``sum G + sum T - 2 G . T = G . S + sum T``, one dot product
    after one vectorised int8 -> float copy of ``S`` (or, with the numba backend, counted in
    the step's fused pass: :func:`ntkdr.kernels.fused.relu_mask_flips`).
    """

    def __init__(self, F: torch.Tensor, W0: torch.Tensor) -> None:
        n, m = F.shape[0], W0.shape[0]
        self.n, self.m = n, m
        self.block = column_block(n, m, F)
        self.blocks: list[torch.Tensor] = []
        self.ones: list[torch.Tensor] = []
        P = F.new_empty(n * min(self.block, m))
        for s in range(0, m, self.block):
            c = min(self.block, m - s)
            Pj = torch.mm(F, W0[s : s + c].T, out=P[: n * c].view(n, c))
            T = torch.ge(Pj, 0, out=F.new_empty((n, c)))  # float straight away: see _dot_count
            self.ones.append(_dot_count(T.view(-1), T.view(-1)))
            self.blocks.append(T.mul_(-2.0).add_(1.0).to(_MASK_DTYPE))

    def count(self, P: torch.Tensor, j: int, G: torch.Tensor, S: torch.Tensor) -> torch.Tensor:
        """Entries of ``1[P >= 0]`` that differ from block ``j`` (``P`` that block's slab; ``G``,
        ``S`` scratch of its shape and dtype): a float64 scalar tensor, exact."""
        g = torch.ge(P, 0, out=G).view(-1)
        return _dot_count(g, S.copy_(self.blocks[j]).view(-1)) + self.ones[j]

    def count_all(self, P: torch.Tensor) -> float:
        """Flips of a full ``n x m`` pre-activation matrix ``P`` (the autograd path)."""
        total = 0.0
        for j, s in enumerate(range(0, self.m, self.block)):
            Pj = P[:, s : s + self.block]
            total += float(((Pj >= 0) != (self.blocks[j] < 0)).sum())
        return total


class ClosedFormGrads:
    """Closed-form gradient steps of one training run (held by its trainer, not inherited).

    ``model`` a :class:`~ntkdr.nets.models.TwoLayerReLU`, ``F`` its fixed training features
    (``n`` rows, on ``X``'s device and dtype), ``params`` the trained parameters; the object
    owns its scratch buffers (one ``(n, block)`` slab and the gradient tensors).
    """

    def __init__(
        self, model: nn.Module, F: torch.Tensor | None, params: list[nn.Parameter], X: torch.Tensor
    ) -> None:
        self.model: Any = model
        self.F: Any = F
        self.params = params
        self.X = X
        self.n = X.shape[0]
        self._scratch: list[torch.Tensor | None] = [None, None, None]
        self._mask_buf: torch.Tensor | None = None
        self._grads: dict[int, torch.Tensor] = {}

    def _block(self, n: int) -> int:
        return column_block(n, self.model.m, self.X)

    def applicable(self) -> bool:
        m = self.model
        if _sketch_trained(m) or not m.W.requires_grad:
            return False
        allowed = {id(m.W), id(m.a)}
        if any(id(p) not in allowed for p in self.params):
            return False
        # Guard against a forward that differs from f = relu(F W^T) a / sqrt(m).
        with torch.no_grad():
            Fb = self.F[: min(self.n, 64)]
            ref = m.forward_features(Fb)
            mine = torch.relu(Fb @ m.W.T) @ m.a * (1.0 / math.sqrt(m.m))
        if ref.shape != mine.shape:
            return False
        tol = 1e-4 if mine.dtype == torch.float32 else 1e-10
        scale = float(ref.abs().max()) + 1.0
        return bool((ref - mine).abs().max() <= tol * scale)

    def _slab(self, n: int, c: int, i: int = 0) -> torch.Tensor:
        """Contiguous ``(n, c)`` scratch tensor number ``i`` (0, 1 or 2), reused between steps."""
        need = n * c
        buf = self._scratch[i]
        if buf is None or buf.numel() < need:
            buf = self._scratch[i] = torch.empty(need, dtype=self.X.dtype, device=self.X.device)
        return buf[:need].view(n, c)

    def _masks(self, n: int) -> torch.Tensor:
        """The ``n x m`` float16 buffer of the step's ``1[P > 0]`` blocks, reused between steps."""
        need = n * self.model.m
        if self._mask_buf is None or self._mask_buf.numel() < need:
            self._mask_buf = torch.empty(need, dtype=_MASK_DTYPE, device=self.X.device)
        return self._mask_buf

    def forward(self, Fb: torch.Tensor, mask0: InitPatterns | None, keep_masks: bool):
        """Outputs ``u = relu(F W^T) a / sqrt(m)`` block by block (no ``n x m`` temporary).

        Returns ``(u, masks, flips, seconds spent on flips)``; ``masks`` are the per-block
        ``1[P > 0]`` (float16 0 / 1) when ``keep_masks``; ``flips`` the number of entries of
        ``1[P >= 0]`` that differ from ``mask0`` (when given; a float, exact)."""
        m = self.model
        W, a = m.W.detach(), m.a.detach()
        n, M = Fb.shape[0], m.m
        cb = self._block(n)
        if mask0 is not None and (mask0.n != n or mask0.block != cb):
            raise ValueError(
                f"initial patterns of {mask0.n} rows in blocks of {mask0.block} do not match "
                f"this pass ({n} rows, blocks of {cb})"
            )
        u = torch.zeros((n,) + tuple(a.shape[1:]), dtype=Fb.dtype, device=Fb.device)
        masks = []
        mbuf = self._masks(n) if keep_masks else None
        n_flip = torch.zeros((), dtype=torch.float64, device=Fb.device)
        t_flip = 0.0
        fuse = backend(Fb.device) == "numba" and Fb.dtype in (torch.float32, torch.float64)
        for j, s in enumerate(range(0, M, cb)):
            c = min(cb, M - s)
            P = self._slab(n, c)
            torch.mm(Fb, W[s : s + c].T, out=P)
            if fuse:  # flips, mask and relu in one pass
                mk = mbuf[s * n : (s + c) * n].view(n, c) if mbuf is not None else None
                S = mask0.blocks[j] if mask0 is not None else None
                n_flip += fused.relu_mask_flips(P, mk, S)
                if mk is not None:
                    masks.append(mk)
            elif mask0 is not None:
                t0 = time.perf_counter()
                n_flip += mask0.count(P, j, self._slab(n, c, 1), self._slab(n, c, 2))
                t_flip += time.perf_counter() - t0
            if not fuse:
                if mbuf is not None:
                    masks.append(torch.gt(P, 0, out=mbuf[s * n : (s + c) * n].view(n, c)))
                P.clamp_min_(0)
            if a.ndim == 1:
                u.addmv_(P, a[s : s + c])
            else:
                u.addmm_(P, a[s : s + c])
        u.mul_(1.0 / math.sqrt(M))
        flips = None
        if mask0 is not None:
            t0 = time.perf_counter()
            flips = float(n_flip)
            t_flip += time.perf_counter() - t0
        return u, masks, flips, t_flip

    def step(self, Fb: torch.Tensor, yb: torch.Tensor, mask0: InitPatterns | None):
        """Closed-form batch loss and gradients (into ``.grad``).

        With ``M = 1[F W^T > 0]`` and ``r = u - y``:  ``dL/dW = diag(a / sqrt m) M^T (r o F)``
        for one output (``((r a^T / sqrt m) o M)^T F`` for several) and
        ``dL/da = relu(F W^T)^T r / sqrt m``.  Two passes over column blocks of neurons: the
        first forms ``u`` and keeps the masks (float16), the second the gradient blocks; each
        ``n x block`` slab is reused from cache, so the elementwise work costs no extra trips
        to memory.  Returns ``(loss, flip count, seconds spent on flips)``."""
        m = self.model
        W, a = m.W.detach(), m.a.detach()
        train_a = isinstance(m.a, nn.Parameter) and m.a.requires_grad
        n, M = Fb.shape[0], m.m
        inv = 1.0 / math.sqrt(M)
        u, masks, flips, t_flip = self.forward(Fb, mask0, keep_masks=not train_a)
        r = u.sub_(yb)  # residual u - y
        loss = 0.5 * float((r * r).sum())
        gW = self._grad_buffer(m.W)
        ga = self._grad_buffer(m.a) if train_a else None
        cb = self._block(n)
        one = a.ndim == 1
        rF = Fb * r[:, None] if one else None
        for j, s in enumerate(range(0, M, cb)):
            c = min(cb, M - s)
            P = self._slab(n, c)
            if train_a:  # relu(P) is needed again: recompute the slab (one small GEMM)
                torch.mm(Fb, W[s : s + c].T, out=P)
                P.clamp_min_(0)
                if one:
                    torch.mv(P.T, r, out=ga[s : s + c])
                else:
                    torch.mm(P.T, r, out=ga[s : s + c])
                P.sign_()  # relu(P) > 0  <=>  P > 0
            else:
                P.copy_(masks[j])
            if one:
                torch.mm(P.T, rF, out=gW[s : s + c])
            else:
                P.mul_(r @ a[s : s + c].T)
                torch.mm(P.T, Fb, out=gW[s : s + c])
        if one:
            gW.mul_((a * inv)[:, None])
        else:
            gW.mul_(inv)
        if train_a:
            ga.mul_(inv)
        m.W.grad = gW
        if train_a:
            m.a.grad = ga
        return loss, flips, t_flip

    def _grad_buffer(self, p: torch.Tensor) -> torch.Tensor:
        g = self._grads.get(id(p))
        if g is None or g.shape != p.shape:
            g = torch.empty_like(p, memory_format=torch.contiguous_format).detach()
            self._grads[id(p)] = g
        return g
