"""The cost model: parameters and multiply-adds of the dense vs the factorized two-layer ReLU network, with the sketch's cost taken from the sketch object itself."""

from __future__ import annotations

from typing import Any

import numpy as np

from ntkdr.sketches import SKETCH_KINDS, Sketch, make_sketch
from ntkdr.validation import check_choice, check_int

__all__ = ["cost", "cost_model"]


# --------------------------------------------------------------------------------------------
# cost model
# --------------------------------------------------------------------------------------------
def cost(
    d: int,
    m: int,
    k: int | None = None,
    sketch_kind: str | None = None,
    n: int = 1,
    s: int | None = None,
    *,
    train_output: bool = False,
    sketch: Sketch | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Parameters and multiply-adds (MACs) of the dense vs the factorized two-layer ReLU net.

    Networks: dense ``f(x) = a . relu(W x) / sqrt(m)``, ``W`` (m x d); factorized
    ``f(x) = a . relu(U (S x)) / sqrt(m)``, ``U`` (m x k), ``S`` (k x d) a fixed sketch.

    Counting convention -- one multiply-add (or lone multiply) counts 1; comparisons (ReLU,
    activation masks), subtractions of the residual and the ``1/sqrt(m)`` scale (folded into
    ``a``) count 0.  For a full-batch GD step on ``n`` examples, with ``p`` = d (dense) or k
    (factorized):

    * forward: first layer ``n m p``, output layer ``n m``;
    * backward: masked back-propagated residual ``n m``, first-layer gradient ``n m p``;
      output-layer gradient ``n m`` if ``train_output``;
    * update: one MAC per trainable parameter (``m p``, plus ``m`` if ``train_output``).

    So ``train_macs_per_step = 2 n m p + 2 n m + m p`` (plus ``n m + m`` if ``train_output``).  The sketch ``S X`` of
    the training inputs is computed once, before training, and is reported separately as
    ``sketch_macs_once = n * cost(S)``, not per step (``pca``'s fitting SVD is not counted).
    Inference per example: dense ``m d + m``; factorized ``cost(S) + m k + m``.

    ``cost(S)`` per example is the sketch's own count, :meth:`Sketch.flops` ``(1)``, and its
    stored numbers :attr:`Sketch.stored_size`, of the map that is applied: ``sketch`` if given
    (its ``d``, ``k`` and kind are used), else ``make_sketch(sketch_kind, d, k, seed, s=s)``.
    So ``gaussian`` / ``pca`` ``k d``; ``sparse`` ``s d`` (``s`` non-zeros per column, the
    sketch's default ``min(8, k)`` if not given); ``srht`` the pruned Hadamard transform's
    ``d' (sum f + g_max)`` (``d'`` = next power of two >= d; it depends on the sampled rows,
    hence on ``seed``); ``identity`` 0 (and ``k = d``).

    Defaults: ``sketch_kind=None`` means ``"gaussian"`` if ``k`` is given and ``"identity"``
    otherwise; ``k=None`` is allowed only for ``identity`` (``k = d``).

    Returns a dict: ``dense`` and ``factorized`` (each a flat dict of ints: ``params_trainable``,
    ``params_fixed`` (``a``, plus the sketch's stored numbers for factorized: gaussian/pca
    ``k d``, sparse ``s d``, srht ``d' + k`` signs and row indices, identity 0),
    ``train_macs_per_step``, ``infer_macs_per_example``, ``sketch_macs_once``,
    ``sketch_macs_per_example``); the ratios ``speedup_train``, ``speedup_infer`` (dense /
    factorized MACs) and ``param_ratio`` (dense / factorized trainable parameters); and the
    settings ``d``, ``m``, ``k``, ``n``, ``s``, ``sketch_kind``, ``d_padded`` (srht), ``convention``.
    """
    if sketch is not None:
        if not isinstance(sketch, Sketch):
            raise ValueError(
                f"sketch must be an ntkdr.sketches.Sketch, got {type(sketch).__name__}"
            )
        if sketch_kind is not None and sketch_kind != sketch.kind:
            raise ValueError(
                f"sketch_kind {sketch_kind!r} differs from the sketch's kind {sketch.kind!r}"
            )
        if k is not None and k != sketch.k:
            raise ValueError(f"k = {k} differs from the sketch's k = {sketch.k}")
        if d != sketch.d:
            raise ValueError(f"d = {d} differs from the sketch's d = {sketch.d}")
        sketch_kind, k = sketch.kind, sketch.k
        s = getattr(sketch, "s", s)
    d = check_int(d, "d", min_value=1)
    m = check_int(m, "m", min_value=1)
    n = check_int(n, "n", min_value=1)
    if sketch_kind is None:
        sketch_kind = "identity" if k is None else "gaussian"
    check_choice(sketch_kind, "sketch_kind", SKETCH_KINDS)
    if k is None:
        if sketch_kind != "identity":
            raise ValueError(f"k is required for sketch_kind {sketch_kind!r}")
        k = d
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise ValueError(f"k must be an integer, got {k!r}")
    k = int(k)
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if k > d:
        raise ValueError(f"k must be <= d = {d} (a sketch reduces dimension), got {k}")
    if sketch_kind == "identity" and k != d:
        raise ValueError(f"sketch_kind 'identity' requires k = d = {d}, got k = {k}")
    if sketch_kind == "sparse":
        if s is not None:
            s = check_int(s, "s", min_value=1, max_value=k)
    elif s is not None:
        raise ValueError(
            f"s (non-zeros per column) applies only to sketch_kind 'sparse', not {sketch_kind!r}"
        )
    train_output = bool(train_output)

    if sketch is None:
        opts: dict[str, Any] = {"s": s} if s is not None else {}
        sketch = make_sketch(sketch_kind, d, k, seed=check_int(seed, "seed", min_value=0), **opts)
    if sketch_kind == "sparse":
        s = sketch.s  # type: ignore[attr-defined]
    s_macs, s_stored = sketch.flops(1), sketch.stored_size
    d_pad = getattr(sketch, "d_pad", d)

    def net(p: int, sketch_per_example: int, stored: int) -> dict[str, int]:
        fwd = n * m * p + n * m
        bwd = n * m + n * m * p + (n * m if train_output else 0)
        trainable = m * p + (m if train_output else 0)
        return {
            "params_trainable": trainable,
            "params_fixed": (0 if train_output else m) + stored,
            "train_macs_per_step": fwd + bwd + trainable,
            "infer_macs_per_example": sketch_per_example + m * p + m,
            "sketch_macs_once": n * sketch_per_example,
            "sketch_macs_per_example": sketch_per_example,
        }

    dense = net(d, 0, 0)
    fact = net(k, s_macs, s_stored)
    return {
        "dense": dense,
        "factorized": fact,
        "speedup_train": dense["train_macs_per_step"] / fact["train_macs_per_step"],
        "speedup_infer": dense["infer_macs_per_example"] / fact["infer_macs_per_example"],
        "param_ratio": dense["params_trainable"] / fact["params_trainable"],
        "d": d,
        "m": m,
        "k": k,
        "n": n,
        "s": s,
        "sketch_kind": sketch_kind,
        "d_padded": d_pad if sketch_kind == "srht" else d,
        "train_output": train_output,
        "convention": (
            "multiply-adds; train step = forward (n m p + n m) + backward (n m + n m p [+ n m]) "
            "+ update (one per trainable parameter), p = d dense / k factorized; sketch of the "
            "training set computed once (sketch_macs_once), not per step; inference = cost(S) + m p + m"
        ),
    }


#: :func:`cost` under a name that says what it computes (``ntkdr.cost_model``).
cost_model = cost
