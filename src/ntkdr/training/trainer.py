"""The mechanics of one training run: batches, one gradient step (closed form or autograd), the loss of the current model, the checkpoint state, and the timing of one step."""

from __future__ import annotations

import copy
import statistics
import time
from typing import Any

import torch
from torch import nn

from ntkdr.nets.models import model_dtype_device
from ntkdr.training.gradients import (
    ClosedFormGrads,
    InitPatterns,
    _is_two_layer,
    _sketch_trained,
)
from ntkdr.validation import ArrayLike, as_labels, as_matrix, check_choice, check_int, check_real

_NAN = float("nan")
GRAD_METHODS = ("auto", "closed_form", "autograd")


def _accuracy_kind(y: torch.Tensor) -> str | None:
    if y.ndim == 2 and y.shape[1] > 1:
        return "argmax"
    if bool(((y == 1) | (y == -1)).all()):
        return "sign"
    return None


def _accuracy(u: torch.Tensor, y: torch.Tensor, kind: str | None) -> float:
    if kind == "argmax":
        return float((u.argmax(dim=1) == y.argmax(dim=1)).to(torch.float64).mean())
    if kind == "sign":
        pred = torch.where(u >= 0, 1.0, -1.0).to(y.dtype)
        return float((pred == y).to(torch.float64).mean())
    return _NAN


def _half_sq(u: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    r = u - y
    return 0.5 * (r * r).sum()


def _take(T: torch.Tensor, sel: Any) -> torch.Tensor:
    """Rows ``sel`` of ``T``: all (None), a contiguous view (slice) or a gather (index tensor)."""
    if sel is None:
        return T
    if isinstance(sel, slice):
        return T[sel]
    return T.index_select(0, sel)


def _sel_len(sel: Any, n: int) -> int:
    if sel is None:
        return n
    if isinstance(sel, slice):
        return sel.stop - sel.start
    return int(sel.numel())


class _Trainer:
    """State and mechanics of one training run (shared by :func:`fit` and :func:`time_gd_step`)."""

    def __init__(self, model, X, y, optimizer, batch_size, lr_value, seed, grad, F=None, comm=None):
        self.model = model
        self.X, self.y = X, y
        self.n = X.shape[0]
        # data parallel: this rank's contiguous shard of the training set (all of it otherwise)
        self.comm = comm
        self.shard = comm.shard(self.n) if comm is not None else None
        self.optimizer_name = optimizer
        self.batch_size = batch_size
        self.two_layer = _is_two_layer(model)
        self.params = [p for p in model.parameters() if p.requires_grad]
        if not self.params:
            raise ValueError(
                "the model has no parameters with requires_grad=True: nothing to train"
            )

        # Features: computed once when they do not depend on trained parameters.
        self.F = None
        if self.two_layer and not _sketch_trained(model):
            if F is None:
                with torch.no_grad():
                    F = model.features(X)
            self.F = F.detach()

        self.closed_form = False
        self.grads: ClosedFormGrads | None = None
        if grad != "autograd" and self.two_layer:
            self.grads = ClosedFormGrads(model, self.F, self.params, X)
            ok = self.grads.applicable()
            if grad == "closed_form" and not ok:
                raise ValueError(
                    "grad='closed_form' needs a TwoLayerReLU whose sketch is not trained and whose "
                    "trained parameters are W (and optionally a); use grad='autograd'"
                )
            self.closed_form = ok
            if not ok:
                self.grads = None
        elif grad == "closed_form":
            raise ValueError(f"grad='closed_form' needs a TwoLayerReLU, got {type(model).__name__}")
        self.grad_method = "closed_form" if self.closed_form else "autograd"

        if optimizer in ("gd", "sgd"):
            self.opt = torch.optim.SGD(self.params, lr=lr_value)
        else:
            self.opt = torch.optim.Adam(self.params, lr=lr_value)
        self.gen = torch.Generator().manual_seed(int(seed))
        self.perm: torch.Tensor | None = None
        self.batch_pos = 0

    # ---------------------------------------------------------------- batches
    def next_batch(self) -> torch.Tensor | None:
        """Indices of the next mini-batch (None: the whole training set, no shuffling)."""
        if self.optimizer_name == "gd":
            return None
        if self.perm is None or self.batch_pos >= self.n:
            self.perm = torch.randperm(self.n, generator=self.gen)
            self.batch_pos = 0
        idx = self.perm[self.batch_pos : self.batch_pos + self.batch_size]
        self.batch_pos += self.batch_size
        return idx.to(self.X.device)

    # ---------------------------------------------------------------- one step
    def flip_fraction(self, count: float | None) -> float | None:
        """Fraction of the ``n x m`` activation patterns that flipped, from a (global) count."""
        return None if count is None else count / (self.n * self.model.m)

    def compute_grads(
        self, idx: torch.Tensor | None, mask0: InitPatterns | None = None, stats: bool = False
    ):
        """Gradients of the batch loss into ``.grad``; returns (batch loss, flips, tracking seconds).

        ``idx`` is the global batch (None: the full training set); ``mask0`` applies to the full
        batch only (this rank's shard of it when data parallel).  Data parallel: this rank
        differentiates its shard of the batch and the gradients are summed over ranks; with
        ``stats`` the returned loss and flips are global too (one more tiny collective)."""
        if self.comm is None:
            sel = idx
        elif idx is None:
            sel = self.shard
        else:
            sel = idx[self.comm.shard(idx.numel())]
        mask0 = mask0 if idx is None else None
        count, t_track = None, 0.0
        if _sel_len(sel, self.n) == 0:  # more ranks than batch rows: contribute zeros
            for p in self.params:
                p.grad = torch.zeros_like(p)
            loss = 0.0
            count = 0.0 if mask0 is not None else None
        elif self.closed_form:
            loss, count, t_track = self.grads.step(_take(self.F, sel), _take(self.y, sel), mask0)
        else:
            self.opt.zero_grad(set_to_none=True)
            yb = _take(self.y, sel)
            if self.F is not None:
                out = self.model.forward_features(_take(self.F, sel))
            else:
                out = self.model(_take(self.X, sel))
            lt = _half_sq(out.reshape(yb.shape), yb)
            lt.backward()
            loss = float(lt.detach())
            for p in self.params:  # a parameter the loss does not reach still takes part in the sum
                if p.grad is None:
                    p.grad = torch.zeros_like(p)
        if self.comm is not None:
            self.comm.sum_grads(self.params)
            if stats:
                t0 = time.perf_counter()
                loss, c = self.comm.scalars(loss, 0.0 if count is None else count)
                count = None if count is None else c
                t_track += time.perf_counter() - t0
        return loss, self.flip_fraction(count), t_track

    def apply(self) -> None:
        self.opt.step()
        if self.closed_form:
            for p in self.params:
                p.grad = None

    # ---------------------------------------------------------------- evaluation
    def outputs(self, X: torch.Tensor, F: torch.Tensor | None = None) -> torch.Tensor:
        with torch.no_grad():
            if F is not None:
                return self.model.forward_features(F)
            return self.model(X)

    def train_eval(self, mask0: InitPatterns | None):
        """Full training-set loss (and pattern flips for TwoLayerReLU) of the current model.

        Data parallel: each rank evaluates its shard (``mask0`` is the shard's) and the loss
        and flip count are summed over ranks."""
        loss, count = self._eval_local(mask0 if self.two_layer else None)
        if self.comm is not None:
            loss, c = self.comm.scalars(loss, 0.0 if count is None else count)
            count = None if count is None else c
        return loss, self.flip_fraction(count)

    def _eval_local(self, mask0: InitPatterns | None):
        sel = self.shard
        if _sel_len(sel, self.n) == 0:
            return 0.0, (0.0 if mask0 is not None else None)
        y = _take(self.y, sel)
        with torch.no_grad():
            if self.two_layer:
                m = self.model
                F = _take(self.F, sel) if self.F is not None else m.features(_take(self.X, sel))
                if self.closed_form:
                    u, _, count, _ = self.grads.forward(F, mask0, keep_masks=False)
                    r = u.sub_(y)
                    return 0.5 * float((r * r).sum()), count
                count = None
                if mask0 is not None:
                    count = mask0.count_all(F @ m.W.T)
                u = m.forward_features(F)
                return float(_half_sq(u.reshape(y.shape), y)), count
            u = self.model(_take(self.X, sel))
            return float(_half_sq(u.reshape(y.shape), y)), None

    # ---------------------------------------------------------------- checkpoint state
    def state(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.opt.state_dict(),
            "generator": self.gen.get_state(),
            "perm": self.perm,
            "batch_pos": self.batch_pos,
        }

    def load_state(self, ck: dict[str, Any]) -> None:
        self.model.load_state_dict(ck["model"])
        self.opt.load_state_dict(ck["optimizer"])
        self.gen.set_state(ck["generator"])
        self.perm = ck["perm"]
        self.batch_pos = int(ck["batch_pos"])


# ============================================================================ inputs
def _check_model(model: Any) -> tuple[torch.dtype, torch.device]:
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    return model_dtype_device(model)


def _prepare_inputs(model, X, y, name_x="X", name_y="y"):
    dtype, device = model_dtype_device(model)
    Xt, _ = as_matrix(X, name_x, dtype=dtype, device=device)
    d = getattr(model, "d", None)
    if isinstance(d, int) and Xt.shape[1] != d:
        raise ValueError(f"{name_x} has {Xt.shape[1]} features but the model expects d = {d}")
    yt = as_labels(y, Xt.shape[0], name_y, dtype=dtype).to(device)
    return Xt, yt


def _match_output_shape(u: torch.Tensor, y: torch.Tensor, name: str) -> torch.Tensor:
    """Return ``y`` shaped like the model output ``u`` (``(n, 1)`` <-> ``(n,)`` allowed)."""
    if u.shape == y.shape:
        return y
    if (
        u.numel() == y.numel()
        and (u.ndim == 1 or u.shape[1] == 1)
        and (y.ndim == 1 or y.shape[1] == 1)
    ):
        return y.reshape(u.shape)
    raise ValueError(
        f"{name} has shape {tuple(y.shape)} but the model outputs shape {tuple(u.shape)} "
        "(use one column per model output)"
    )


# ============================================================================ timing
def time_gd_step(
    model: nn.Module,
    X: ArrayLike,
    y: ArrayLike,
    *,
    repeats: int = 5,
    warmup: int = 1,
    lr: float = 1e-3,
    grad: str = "auto",
) -> float:
    """Median wall-clock seconds of one full-batch GD step of :func:`fit` (features precomputed,
    tracking excluded) on a copy of ``model`` (the model itself is not changed)."""
    repeats = check_int(repeats, "repeats", min_value=1)
    warmup = check_int(warmup, "warmup", min_value=0)
    grad = check_choice(grad, "grad", GRAD_METHODS)
    _check_model(model)
    model = copy.deepcopy(model)
    Xt, yt = _prepare_inputs(model, X, y)
    with torch.no_grad():
        u = model(Xt[:1])
    yt = _match_output_shape(u.expand(yt.shape[0], *u.shape[1:]), yt, "y")
    tr = _Trainer(model, Xt, yt, "gd", Xt.shape[0], check_real(lr, "lr", positive=True), 0, grad)
    times = []
    for i in range(warmup + repeats):
        t0 = time.perf_counter()
        tr.compute_grads(None)
        tr.apply()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return float(statistics.median(times))
