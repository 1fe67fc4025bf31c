"""The two-layer ReLU net of the prior analysis (:class:`TwoLayerReLU`), dense or factorized, and the seed / dtype helpers of every network.

The net is that of Du et al. (ICLR 2019) and Arora et al. (ICML 2019), dense or factorized as
``W = U S`` through a fixed sketch S as in Ailon & Shit, *Efficient NTK using Dimensionality
Reduction* (arXiv 2210.04807, 2022).  The sketched ``nn.Linear`` drop-in and the deep net are
in :mod:`ntkdr.nets.layers`.

Seeds.  Every module draws its initial weights on the CPU from
``torch.Generator().manual_seed(s)`` with ``s = derive_seed(seed, tag)`` (a SeedSequence
mix of the user's seed and the class name), then moves them to ``device``: the same seed
gives the same weights on every device.  The mix matters: ``make_sketch(kind, d, k, seed=0)``
draws S from ``manual_seed(0)``, so weights drawn from the same raw seed would repeat S's
numbers (U = sqrt(k) S entry for entry for a Gaussian S).  A sketch that a module builds
from a kind name gets yet another derived seed.
The dense net and the factorized net with the ``identity`` sketch draw the same numbers,
so with the same seed they are the same function.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn

from ntkdr.memory import check_memory
from ntkdr.validation import (
    ArrayLike,
    as_matrix,
    check_int,
    check_real,
    resolve_device,
    resolve_dtype,
    to_output,
)

__all__ = ["TwoLayerReLU", "derive_seed", "model_dtype_device"]


def derive_seed(seed: int, *tags: Any) -> int:
    """A 63-bit seed mixed from ``seed`` and ``tags`` (deterministic, decorrelated streams)."""
    words = [int(seed) & 0xFFFFFFFF, (int(seed) >> 32) & 0xFFFFFFFF]
    for tag in tags:
        words.extend(int(b) for b in str(tag).encode())
    state = np.random.SeedSequence(words).generate_state(2, dtype=np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1])) & 0x7FFFFFFFFFFFFFFF


def model_dtype_device(model: nn.Module) -> tuple[torch.dtype, torch.device]:
    """The dtype and device of a module's first floating-point parameter or buffer
    (float32 on the CPU for a module without any)."""
    for t in list(model.parameters()) + list(model.buffers()):
        if t.is_floating_point():
            return t.dtype, t.device
    return torch.float32, torch.device("cpu")


def _generator(seed: int, *tags: Any) -> torch.Generator:
    return torch.Generator().manual_seed(derive_seed(seed, *tags))


def _resolve_sketch(sketch: Any, d: int, k: Any, seed: int, owner: str):
    """``sketch`` given as a Sketch object or a kind name (with ``k``) -> a Sketch with ``.d == d``."""
    if isinstance(sketch, str):
        from ntkdr.sketches import make_sketch  # local import: sketches is optional for dense nets

        if k is None:
            raise ValueError(
                f"{owner}: sketch={sketch!r} given by name needs the target dimension k"
            )
        return make_sketch(sketch, d, k, seed=derive_seed(seed, "sketch"))
    if not (
        callable(sketch)
        and hasattr(sketch, "matrix")
        and hasattr(sketch, "d")
        and hasattr(sketch, "k")
    ):
        raise ValueError(
            f"{owner}: sketch must be None, a sketch kind name or a Sketch from ntkdr.sketches.make_sketch, "
            f"got {type(sketch).__name__}"
        )
    if sketch.d != d:
        raise ValueError(
            f"{owner}: the sketch maps d = {sketch.d} features but the layer has d = {d}"
        )
    if k is not None and check_int(k, "k", min_value=1) != sketch.k:
        raise ValueError(f"{owner}: k = {k} disagrees with the sketch's k = {sketch.k}")
    return sketch


def _check_input(
    X: Any, d: int, dtype: torch.dtype, device: torch.device
) -> tuple[torch.Tensor, bool]:
    """Inputs of ``forward``: numpy is fully validated; tensors get shape checks only (vmap-safe)."""
    if not isinstance(X, torch.Tensor):
        X, was_numpy = as_matrix(X, dtype=dtype, device=device)
    else:
        was_numpy = False
        if X.ndim != 2:
            raise ValueError(f"X must be 2-D (n_samples, n_features), got shape {tuple(X.shape)}")
        if X.dtype != dtype or X.device != device:
            X = X.to(device=device, dtype=dtype)
    if X.shape[1] != d:
        raise ValueError(f"X has {X.shape[1]} features but the model expects d = {d}")
    return X, was_numpy


# CPU column blocks over the m neurons: an (n x block) slab of F W^T of about this many bytes
# stays in cache (L2 / L3) between its GEMM and the elementwise passes (the no-grad forward
# here and the closed-form training step, ntkdr.training.gradients).  Measured on 2 cores
# (fit, n = 2000, m = 4096, 20 steps): 4 MiB slabs 0.70 s factorized / 3.5 s dense, 1 MiB
# 0.80 / 3.85 s (fewer, larger PyTorch ops), 16 MiB 0.78 s factorized.
_BLOCK_BYTES = 1 << 22
_MIN_BLOCK = 64


def column_block(n: int, m: int, like: torch.Tensor) -> int:
    """Neurons per column block of an ``n``-row pass: the ``n x block`` slab of ``F W^T`` (about
    ``_BLOCK_BYTES``) stays in cache on CPU; on accelerators one block (large GEMMs are best there)."""
    if like.device.type != "cpu":
        return m
    cb = _BLOCK_BYTES // max(1, n * like.element_size())
    return min(m, max(_MIN_BLOCK, (cb // 64) * 64))


def _renormalize_rows(F: torch.Tensor) -> torch.Tensor:
    return F / F.norm(dim=-1, keepdim=True).clamp_min(torch.finfo(F.dtype).tiny)


class TwoLayerReLU(nn.Module):
    r"""Two-layer ReLU net ``f(x) = (1/sqrt m) sum_r a_r relu(w_r . phi(x))`` (Du et al. 2019).

    ``phi(x) = x`` for the dense net (``sketch=None``) and ``phi(x) = S x`` (rows re-normalised
    when ``sketch.renormalize``) for the factorized net ``W = U S``.  ``w_r(0) ~ N(0, kappa^2 I)``
    in the feature space (``u_r ~ N(0, kappa^2 I_k)`` when factorized), ``a_r`` uniform on
    ``{-1, +1}``.

    Parameters
    ----------
    d : input dimension.
    m : width.
    sketch : ``None`` (dense), a ``Sketch`` from :func:`ntkdr.sketches.make_sketch` with
        ``sketch.d == d``, or a kind name (``"gaussian"``, ``"srht"``, ...) together with ``k``.
    kappa : init scale of the first layer.
    train_output : ``a`` is an ``nn.Parameter`` (else a buffer).
    train_sketch : ``S`` is an ``nn.Parameter`` initialised from ``sketch.matrix()`` and the
        features are computed as ``X @ S.T`` (else S is a buffer and the sketch's own fast
        apply computes the features).
    seed : init seed (see the module docstring).
    dtype, device : of the parameters; inputs are cast to them.
    k : target dimension when ``sketch`` is a kind name.
    out_dim : number of outputs ``c``; ``a`` is ``(m,)`` and ``forward`` returns ``(n,)`` when
        ``c == 1``, else ``a`` is ``(m, c)`` and the output ``(n, c)``.

    Stable attributes: ``W`` (trained first-layer weight acting on the features, ``(m, d_in)``;
    ``U`` is an alias), ``a``, ``S`` (``(k, d)`` or ``None``), ``m``, ``d``, ``d_in``, ``k``,
    ``kappa``, ``out_dim``, ``train_output``, ``train_sketch``, ``sketch``, ``factorized``.
    """

    def __init__(
        self,
        d: int,
        m: int,
        sketch: Any = None,
        kappa: float = 1.0,
        train_output: bool = False,
        train_sketch: bool = False,
        seed: int = 0,
        dtype: Any = torch.float32,
        *,
        k: int | None = None,
        out_dim: int = 1,
        device: Any = None,
    ) -> None:
        super().__init__()
        d = check_int(d, "d", min_value=1)
        m = check_int(m, "m", min_value=1)
        kappa = check_real(kappa, "kappa", positive=True)
        seed = check_int(seed, "seed")
        out_dim = check_int(out_dim, "out_dim", min_value=1)
        dtype = resolve_dtype(dtype) or torch.float32
        device = resolve_device(device) or torch.device("cpu")
        if sketch is None:
            if train_sketch:
                raise ValueError("train_sketch=True needs a sketch (the dense net has no S)")
            if k is not None:
                raise ValueError("k is only meaningful with a sketch")
        else:
            sketch = _resolve_sketch(sketch, d, k, seed, "TwoLayerReLU")
        self.d, self.m, self.kappa, self.out_dim = d, m, kappa, out_dim
        self.train_output, self.train_sketch = bool(train_output), bool(train_sketch)
        self.sketch = sketch
        self.d_in = d if sketch is None else int(sketch.k)
        # W is drawn in float64 and then cast: refuse a width that cannot fit before drawing it
        n_w = m * self.d_in + m * out_dim + (0 if sketch is None else self.d_in * d)
        check_memory(
            n_w * (8 + dtype.itemsize),
            f"width m = {m} (a {m} x {self.d_in} first layer)",
            "use a smaller width",
            device,
        )

        gen = _generator(seed, "TwoLayerReLU")
        W = torch.randn(m, self.d_in, generator=gen, dtype=torch.float64).mul_(kappa)
        a_shape = (m,) if out_dim == 1 else (m, out_dim)
        a = torch.randint(0, 2, a_shape, generator=gen).to(torch.float64).mul_(2).sub_(1)
        self.W = nn.Parameter(W.to(device=device, dtype=dtype))
        if self.train_output:
            self.a = nn.Parameter(a.to(device=device, dtype=dtype))
        else:
            self.register_buffer("a", a.to(device=device, dtype=dtype))
        if sketch is None:
            self.S = None
        else:
            S = torch.as_tensor(sketch.matrix(dtype=dtype, device=device)).to(
                device=device, dtype=dtype
            )
            if self.train_sketch:
                self.S = nn.Parameter(S.clone())
            else:
                self.register_buffer("S", S)

    # ------------------------------------------------------------------ properties
    @property
    def factorized(self) -> bool:
        return self.sketch is not None

    @property
    def k(self) -> int | None:
        return self.d_in if self.factorized else None

    @property
    def U(self) -> nn.Parameter:
        """Alias of ``W`` (the factor ``U`` of ``W = U S``)."""
        return self.W

    @property
    def dtype(self) -> torch.dtype:
        return self.W.dtype

    @property
    def device(self) -> torch.device:
        return self.W.device

    def extra_repr(self) -> str:
        kind = (
            "dense"
            if self.sketch is None
            else f"sketch={getattr(self.sketch, 'kind', '?')}, k={self.d_in}"
        )
        return (
            f"d={self.d}, m={self.m}, {kind}, kappa={self.kappa}, out_dim={self.out_dim}, "
            f"train_output={self.train_output}, train_sketch={self.train_sketch}"
        )

    # ------------------------------------------------------------------ computation
    def features(self, X: ArrayLike) -> torch.Tensor:
        """The first layer's input: ``X`` (dense) or ``S X`` (factorized), as a tensor ``(n, d_in)``."""
        X, _ = _check_input(X, self.d, self.dtype, self.device)
        return self._features(X)

    def _features(self, X: torch.Tensor) -> torch.Tensor:
        if self.sketch is None:
            return X
        if self.train_sketch:
            F = X @ self.S.T
            return _renormalize_rows(F) if getattr(self.sketch, "renormalize", False) else F
        return self.sketch(X)

    def forward_features(self, F: torch.Tensor) -> torch.Tensor:
        """Output from precomputed features ``F = features(X)`` (so training sketches X once).

        Without autograd the ``n x m`` hidden layer is never formed: ``relu(F W^T) a`` is
        summed over cache-sized column blocks (:func:`column_block`; measured at batch 256,
        m = 16384, k = 256: 9.6 ms against 11.3 ms for the whole product)."""
        if torch.is_grad_enabled():
            H = torch.relu_(F @ self.W.T)  # in place: no second n x m buffer
            return (H @ self.a) * (1.0 / math.sqrt(self.m))
        W, a = self.W, self.a
        n, m = F.shape[0], self.m
        cb = column_block(n, m, F)
        u = F.new_zeros((n,) + tuple(a.shape[1:]))
        for s in range(0, m, cb):
            c = min(cb, m - s)
            # no out=: torch.func's forward-mode AD (ntk_projected's jvp) cannot follow it
            H = (F @ W[s : s + c].T).clamp_min_(0)
            if a.ndim == 1:
                u.addmv_(H, a[s : s + c])
            else:
                u.addmm_(H, a[s : s + c])
        return u.mul_(1.0 / math.sqrt(m))

    def forward(self, X: ArrayLike) -> Any:
        """``f(X)``: ``(n,)`` for ``out_dim == 1``, else ``(n, out_dim)``; numpy in -> numpy out."""
        X, was_numpy = _check_input(X, self.d, self.dtype, self.device)
        out = self.forward_features(self._features(X))
        return to_output(out, was_numpy)

    def effective_weight(self) -> torch.Tensor:
        """The first-layer weight acting on raw inputs: ``W`` (dense) or ``U S`` (factorized), ``(m, d)``.

        With ``sketch.renormalize`` the factorized net is not linear in x before the ReLU, so
        ``U S`` is then only the weight acting on the un-normalised sketch.
        """
        return self.W if self.S is None else self.W @ self.S
