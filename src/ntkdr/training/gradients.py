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

# CPU column blocks of the closed-form step: an (n x block) slab of F W^T of about this many
# bytes stays in the per-core cache between the GEMM and the elementwise passes.
_BLOCK_BYTES = 1 << 20
_MIN_BLOCK = 64


# Which models the closed form (and fit's full tracking) applies to.
def _is_two_layer(model: nn.Module) -> bool:
    from ntkdr.nets.models import TwoLayerReLU

    return isinstance(model, TwoLayerReLU)


def _sketch_trained(model: nn.Module) -> bool:
    S = getattr(model, "S", None)
    return isinstance(S, nn.Parameter) and S.requires_grad


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
        self._scratch: torch.Tensor | None = None
        self._grads: dict[int, torch.Tensor] = {}

    def _block(self, n: int) -> int:
        """Neurons per column block: the ``n x block`` slab of ``F W^T`` stays in cache (CPU).

        On CUDA one block (large GEMMs are best there)."""
        M = self.model.m
        if self.X.device.type != "cpu":
            return M
        elt = self.X.element_size()
        cb = _BLOCK_BYTES // max(1, n * elt)
        cb = max(_MIN_BLOCK, (cb // 64) * 64)
        return min(M, cb)

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

    def _slab(self, n: int, c: int) -> torch.Tensor:
        """A contiguous ``(n, c)`` scratch tensor, reused between steps."""
        need = n * c
        if self._scratch is None or self._scratch.numel() < need:
            self._scratch = torch.empty(need, dtype=self.X.dtype, device=self.X.device)
        return self._scratch[:need].view(n, c)

    def forward(self, Fb: torch.Tensor, mask0: torch.Tensor | None, keep_masks: bool):
        """Outputs ``u = relu(F W^T) a / sqrt(m)`` block by block (no ``n x m`` temporary).

        Returns ``(u, masks, flips, seconds spent on flips)``; ``masks`` are the per-block
        ``1[P > 0]`` (bool) when ``keep_masks``; ``flips`` the number of entries of ``1[P >= 0]``
        that differ from ``mask0`` (when given; a float, exact below 2^53)."""
        m = self.model
        W, a = m.W.detach(), m.a.detach()
        n, M = Fb.shape[0], m.m
        cb = self._block(n)
        u = torch.zeros((n,) + tuple(a.shape[1:]), dtype=Fb.dtype, device=Fb.device)
        masks = []
        n_flip = 0 if mask0 is None else torch.zeros((), dtype=torch.int64, device=Fb.device)
        t_flip = 0.0
        for s in range(0, M, cb):
            c = min(cb, M - s)
            P = self._slab(n, c)
            torch.mm(Fb, W[s : s + c].T, out=P)
            if mask0 is not None:
                t0 = time.perf_counter()
                n_flip += ((P >= 0) != mask0[:, s : s + c]).sum()
                t_flip += time.perf_counter() - t0
            if keep_masks:
                masks.append(P > 0)
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

    def step(self, Fb: torch.Tensor, yb: torch.Tensor, mask0: torch.Tensor | None):
        """Closed-form batch loss and gradients (into ``.grad``).

        With ``M = 1[F W^T > 0]`` and ``r = u - y``:  ``dL/dW = diag(a / sqrt m) M^T (r o F)``
        for one output (``((r a^T / sqrt m) o M)^T F`` for several) and
        ``dL/da = relu(F W^T)^T r / sqrt m``.  Two passes over column blocks of neurons: the
        first forms ``u`` and keeps the masks as bits, the second the gradient blocks; each
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
