r"""Factorize the dense linear layers of any PyTorch network through fixed random sketches.

Ailon & Shit (*Efficient NTK using Dimensionality Reduction*, arXiv 2210.04807, 2022) replace a
dense layer ``y = W x + b`` (``W`` of shape ``out x d``) by the low-complexity factorization

    y = U (S x) + b,        S: k x d fixed (a random dimension-reduction map),  U: out x k trained,

so a layer costs ``k (d + out)`` multiply-adds per input row instead of ``d out``, and the NTK
analysis of the wide network (Jacot et al. 2018; Du et al. 2019; Arora et al. 2019) goes through
with the Gram matrix of the sketched inputs.  :func:`factorize` applies this to every selected
``nn.Linear`` of an arbitrary module (and to ntkdr's own NTK-parameterized layers), returning a
new module; :func:`factorization_summary` says what was replaced, what was skipped and why, and
what it costs.  :func:`factorized_fc_kernels` is the infinite-width NTK / NNGP of a deep ReLU net
whose first layer is factorized, is :func:`ntkdr.kernels.factorized_fc_kernels`.

Layers that run.  Some parents do not call a child ``nn.Linear`` as a module but read its
``weight`` (``nn.MultiheadAttention.out_proj``); replacing such a layer would silently run the
dense ``U S``, so ``layers=None`` skips it (listed as skipped) and naming it is an error.  A
parent that has a fused inference path reading the weights (``nn.TransformerEncoderLayer`` in
eval mode without grad, see ``torch/nn/modules/transformer.py``) has that path switched off once
one of its layers is factorized, so the factorized layers really run in every mode; an
``nn.TransformerEncoder`` holding such layers has its nested-tensor path switched off too.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from ntkdr.nets.layers import NTKLinear, SketchedLinear
from ntkdr.nets.models import derive_seed
from ntkdr.sketches import make_sketch
from ntkdr.validation import check_choice, check_int

__all__ = [
    "factorize",
    "factorization_summary",
    "FactorizationSummary",
    "LayerRecord",
]

#: sketch kinds that factorize can build without data (``pca`` needs the layer's inputs)
FACTORIZE_KINDS = ("gaussian", "sparse", "srht", "identity")
_INITS = ("fresh", "project")
#: parents that read a child linear layer's ``weight`` instead of calling it: {type: children}
WEIGHT_READERS: dict[type, tuple[str, ...]] = {nn.MultiheadAttention: ("out_proj",)}
_RECORD_ATTR = "_ntkdr_factorization"

Selector = None | Sequence[str] | Callable[[str, nn.Module], bool]


@dataclass
class LayerRecord:
    """One linear layer seen by :func:`factorize`.

    ``status`` is ``"replaced"`` or ``"skipped"`` (then ``reason`` says why).  Costs are per
    input row (per token for sequence models): ``params_before`` = ``d out (+ out)``;
    ``params_after`` the trained ``k out (+ out)``, ``fixed_after`` the ``k d`` numbers of S
    (a buffer); ``macs_before`` = ``d out``, ``macs_after`` = ``k d + k out`` (S is applied as
    an explicit matrix, whatever its kind, so a replacement saves work only when
    ``k < d out / (d + out)``).
    """

    name: str
    status: str
    in_features: int
    out_features: int
    k: int | None = None
    kind: str | None = None
    reason: str = ""
    params_before: int = 0
    params_after: int = 0
    fixed_after: int = 0
    macs_before: int = 0
    macs_after: int = 0


@dataclass
class FactorizationSummary:
    """What :func:`factorization_summary` returns: ``layers`` (replaced and skipped
    :class:`LayerRecord`), totals over the replaced layers, ``params_model`` (trainable
    parameters of the whole model now); ``as_dict()`` for JSON, ``str()`` a table."""

    layers: list[LayerRecord] = field(default_factory=list)
    params_model: int = 0

    @property
    def replaced(self) -> list[LayerRecord]:
        return [r for r in self.layers if r.status == "replaced"]

    @property
    def skipped(self) -> list[LayerRecord]:
        return [r for r in self.layers if r.status == "skipped"]

    def totals(self) -> dict[str, int]:
        keys = ("params_before", "params_after", "fixed_after", "macs_before", "macs_after")
        return {key: sum(getattr(r, key) for r in self.replaced) for key in keys}

    def as_dict(self) -> dict[str, Any]:
        return {
            "layers": [asdict(r) for r in self.layers],
            "totals": self.totals(),
            "params_model": self.params_model,
            "convention": "per input row (token); multiply-adds; S applied as a k x d matrix",
        }

    def __str__(self) -> str:
        head = f"{'layer':<32} {'d -> k':>12} {'params':>21} {'MACs/row':>21}  note"
        lines = [head, "-" * len(head)]
        for r in self.layers:
            if r.status == "replaced":
                dk = f"{r.in_features} -> {r.k}"
                par = f"{r.params_before} -> {r.params_after}"
                mac = f"{r.macs_before} -> {r.macs_after}"
                note = f"{r.kind}, S stores {r.fixed_after}"
            else:
                dk, par, mac, note = f"{r.in_features}", "-", "-", f"skipped: {r.reason}"
            lines.append(f"{r.name:<32} {dk:>12} {par:>21} {mac:>21}  {note}")
        t = self.totals()
        lines.append(
            f"replaced {len(self.replaced)}, skipped {len(self.skipped)}; parameters "
            f"{t['params_before']} -> {t['params_after']} (+{t['fixed_after']} fixed), "
            f"MACs/row {t['macs_before']} -> {t['macs_after']}"
        )
        return "\n".join(lines)


# ----------------------------------------------------------------------------- helpers
def _is_linear(module: nn.Module) -> bool:
    return isinstance(module, (nn.Linear, NTKLinear))


def _resolve_k(k: Any, in_features: int) -> int:
    """``k`` for a layer with ``in_features`` inputs: an int as is, a fraction of in_features."""
    if isinstance(k, float):
        return max(1, math.floor(k * in_features + 0.5))
    return int(k)


def _check_k(k: Any) -> int | float:
    if isinstance(k, bool) or not isinstance(k, (int, float)):
        raise ValueError(f"k must be an int >= 1 or a float fraction in (0, 1], got {k!r}")
    if isinstance(k, float):
        if not (math.isfinite(k) and 0.0 < k <= 1.0):
            raise ValueError(
                f"a fractional k must be in (0, 1] (of each layer's in_features), got {k}"
            )
        return k
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    return int(k)


def _uncalled(model: nn.Module) -> dict[str, str]:
    """Qualified names of linear layers that their parent reads as weights, with the reason."""
    out = {}
    for pname, parent in model.named_modules():
        for cls, children in WEIGHT_READERS.items():
            if isinstance(parent, cls):
                for child in children:
                    mod = getattr(parent, child, None)
                    if mod is not None and _is_linear(mod):
                        name = f"{pname}.{child}" if pname else child
                        out[name] = f"{type(parent).__name__} reads {child}.weight directly"
    return out


def _is_lazy(module: nn.Module) -> bool:
    return isinstance(getattr(module, "weight", None), nn.parameter.UninitializedParameter)


def _record(name: str, layer: nn.Module, k: int | None, kind: str | None, reason: str = ""):
    """The :class:`LayerRecord` of a linear layer (``reason``: why it was skipped)."""
    d, o = layer.in_features, layer.out_features
    has_b = getattr(layer, "bias", None) is not None
    rec = LayerRecord(name, "skipped" if reason else "replaced", d, o, k, kind, reason)
    rec.params_before, rec.macs_before = d * o + (o if has_b else 0), d * o
    if not reason:
        rec.params_after = k * o + (o if has_b else 0)
        rec.fixed_after, rec.macs_after = k * d, k * d + k * o
    return rec


def _build(layer: nn.Module, k: int, kind: str, seed: int, init: str, renormalize: bool):
    """The SketchedLinear replacing ``layer`` (same dtype / device / requires_grad / mode)."""
    W = layer.weight.detach()
    sketch = make_sketch(
        kind, layer.in_features, k, seed=derive_seed(seed, "sketch"), renormalize=renormalize
    )
    opts: dict[str, Any] = {}
    if isinstance(layer, NTKLinear):
        opts = {"parameterization": "ntk", "w_std": layer.w_std, "b_std": layer.b_std}
    has_b = getattr(layer, "bias", None) is not None
    new = SketchedLinear(
        layer.in_features,
        layer.out_features,
        sketch=sketch,
        bias=has_b,
        seed=derive_seed(seed, "init"),
        dtype=W.dtype,
        device=W.device,
        **opts,
    )
    if init == "project":  # U = W S^+: the projection of W onto the row space of S
        S = new.S.detach().to(torch.float64)
        U = torch.linalg.lstsq(S.T, W.to(torch.float64).T).solution.T
        with torch.no_grad():
            new.U.copy_(U.to(W.dtype))
            if has_b:
                new.bias.copy_(layer.bias.detach())
    new.U.requires_grad_(layer.weight.requires_grad)
    if has_b:
        new.bias.requires_grad_(layer.bias.requires_grad)
    new.train(layer.training)
    return new


def _disable_fused_paths(model: nn.Module) -> None:
    """Switch off fused paths that would read a factorized layer's dense ``U S``."""
    for mod in model.modules():
        if isinstance(mod, nn.TransformerEncoderLayer) and any(
            isinstance(getattr(mod, n, None), SketchedLinear) for n in ("linear1", "linear2")
        ):
            # torch takes the fused path only when activation_relu_or_gelu is truthy; the
            # slow path calls self.activation, so the function is unchanged
            mod.activation_relu_or_gelu = 0
        if isinstance(mod, nn.TransformerEncoder) and any(
            isinstance(s, SketchedLinear) for s in mod.modules()
        ):
            mod.use_nested_tensor = False


# ----------------------------------------------------------------------------- public
def factorize(
    model: nn.Module,
    k: int | float,
    kind: str = "gaussian",
    *,
    layers: Selector = None,
    seed: int = 0,
    init: str = "fresh",
    renormalize: bool = False,
) -> nn.Module:
    """A copy of ``model`` whose selected linear layers compute ``U S x + b`` with S fixed.

    Parameters
    ----------
    model : any ``nn.Module``; left untouched (a deep copy is factorized).
    k : sketch dimension: an int (``1 <= k``; ``k == in_features`` gives a square S) or a float
        in (0, 1], the fraction of each layer's ``in_features`` (rounded half up, at least 1).
    kind : ``"gaussian"`` (entries N(0, 1/k)), ``"sparse"``, ``"srht"`` or ``"identity"``
        (see :func:`ntkdr.sketches.make_sketch`).
    layers : ``None`` -- every ``nn.Linear`` (subclasses included, any depth) and every
        ntkdr ``NTKLinear`` with ``in_features > k`` that its parent calls as a module; a list
        of qualified module names (each must exist, be linear, have ``k <= in_features`` and
        be called by its parent); or a predicate ``(name, module) -> bool`` over the linear
        layers (those it selects that cannot be factorized are skipped and listed).
    seed : every layer gets its own S and U streams derived from ``(seed, layer name)``.
    init : ``"fresh"`` draws U (and b) like the layer's own init (``nn.Linear``: uniform on
        +-1/sqrt(in_features); ``NTKLinear``: N(0, 1) under the same NTK scaling);
        ``"project"`` keeps a trained layer's function as closely as possible,
        ``U = W S^+`` (least squares; exact when ``k == in_features``), bias copied.
    renormalize : rescale each sketched row ``S x`` to unit norm (the layer is then no longer
        linear; ``"project"`` still fits ``U = W S^+``).

    Returns the new module; :func:`factorization_summary` describes it.  Raises ``ValueError``
    when nothing is selected, a named layer is missing / not linear / read as weights by its
    parent, ``k > in_features`` for a named layer, ``k < 1`` or a fraction outside (0, 1].
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    k = _check_k(k)
    check_choice(kind, "sketch kind for factorize", FACTORIZE_KINDS)
    init = check_choice(init, "init", _INITS)
    seed = check_int(seed, "seed", min_value=0)
    modules = dict(model.named_modules())
    linear = {n: m for n, m in modules.items() if _is_linear(m) and n}
    uncalled = _uncalled(model)
    chosen: list[str] = []
    records: list[LayerRecord] = []
    if layers is None or callable(layers):
        for name, mod in linear.items():
            if callable(layers) and not layers(name, mod):
                continue
            kl = _resolve_k(k, mod.in_features)
            reason = uncalled.get(name, "") or ("not initialised (lazy)" if _is_lazy(mod) else "")
            if not reason and (kl > mod.in_features or (layers is None and kl == mod.in_features)):
                reason = f"in_features = {mod.in_features} <= k = {kl}"
            if not reason and kind == "identity" and kl != mod.in_features:
                reason = f"identity needs k = in_features = {mod.in_features}"
            if reason:
                records.append(_record(name, mod, None, None, reason))
            else:
                chosen.append(name)
    else:
        if isinstance(layers, str):
            layers = [layers]
        for name in layers:
            if name not in modules or not name:
                raise ValueError(f"layers: model has no module named {name!r}")
            mod = modules[name]
            if not _is_linear(mod):
                raise ValueError(
                    f"layers: {name!r} is a {type(mod).__name__}, not a linear layer (nn.Linear)"
                )
            if _is_lazy(mod):
                raise ValueError(f"layers: {name!r} is not initialised yet (run the model once)")
            if name in uncalled:
                raise ValueError(
                    f"layers: {name!r} cannot be factorized: {uncalled[name]} (the factorized "
                    "layer would never run)"
                )
            kl = _resolve_k(k, mod.in_features)
            if kl > mod.in_features:
                raise ValueError(f"layers: k = {kl} > in_features = {mod.in_features} of {name!r}")
            if kind == "identity" and kl != mod.in_features:
                raise ValueError(
                    f"layers: identity needs k = in_features = {mod.in_features} for {name!r}"
                )
            chosen.append(name)
    if not chosen:
        raise ValueError(
            f"factorize: no layer selected (k = {k}, layers = {layers!r}); "
            f"linear layers: {sorted(linear) or 'none'}"
        )
    new_model = copy.deepcopy(model)
    new_modules = dict(new_model.named_modules())
    replacements: dict[int, nn.Module] = {}
    for name in chosen:
        old = new_modules[name]
        if id(old) not in replacements:  # a layer shared under two names is replaced once
            kl = _resolve_k(k, old.in_features)
            replacements[id(old)] = _build(
                old, kl, kind, derive_seed(seed, name), init, renormalize
            )
            records.append(_record(name, old, kl, kind))
    for parent in new_model.modules():
        for cname, child in list(parent._modules.items()):  # every name, shared ones too
            if child is not None and id(child) in replacements:
                setattr(parent, cname, replacements[id(child)])
    _disable_fused_paths(new_model)
    order = {n: i for i, n in enumerate(modules)}
    records.sort(key=lambda r: order.get(r.name, 0))
    setattr(new_model, _RECORD_ATTR, records)
    return new_model


def factorization_summary(model: nn.Module) -> FactorizationSummary:
    """Replaced and skipped layers of a model returned by :func:`factorize` (d -> k, parameters
    and multiply-adds per input row before and after, see :class:`LayerRecord`).

    Replaced layers are read from the model itself (every :class:`SketchedLinear` it holds), so
    the summary stays right after the model is moved, cast or reloaded; skipped layers come
    from the record :func:`factorize` left on the returned module.
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    records = [r for r in getattr(model, _RECORD_ATTR, []) if r.status == "skipped"]
    for name, mod in model.named_modules():
        if isinstance(mod, SketchedLinear):
            records.append(_record(name, mod, mod.k, getattr(mod.sketch, "kind", "?")))
    order = {n: i for i, (n, _) in enumerate(model.named_modules())}
    records.sort(key=lambda r: order.get(r.name, -1))
    params = sum(
        p.numel()
        for p in model.parameters()
        if p.requires_grad and not isinstance(p, nn.parameter.UninitializedParameter)
    )
    return FactorizationSummary(records, params)
