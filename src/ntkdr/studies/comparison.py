r"""Compare two networks through their empirical NTKs on the same points (typically a model and
its :func:`~ntkdr.nets.factorize.factorize`-d copy).

The empirical NTK (Jacot et al. 2018) of a network with trained parameters ``p`` is
``Theta(x, z) = J(x) J(z)^T`` with ``J = df/dp``.  For a model with ``c > 1`` outputs the kernel
compared is its trace over the output axis divided by ``c``,
``Theta(x, z) = (1/c) sum_a J_a(x) . J_a(z)`` -- neural-tangents' ``trace_axes=(-1,)``
convention -- an ``n x n`` matrix either way.

How each kernel is computed (``method="auto"``):

* ``closed`` -- networks ntkdr knows: :class:`~ntkdr.nets.TwoLayerReLU` (one output; the two-GEMM
  closed form of :mod:`ntkdr.nets.empirical`) and :class:`~ntkdr.nets.DeepReLU` (one output, S not
  trained; :mod:`ntkdr.nets.deep_ntk`): the layerwise form ``Theta = sum_l s_l^2 (h_l h_l^T) o (D_l D_l^T) + b_l^2 D_l D_l^T``,
  ``h_l`` the input of layer ``l`` (``S h_l`` for a factorized layer), ``s_l`` its weight scale,
  ``D_l`` the per-example derivative of the output with respect to its pre-activations (one
  backward pass for all examples) -- no per-example Jacobians.
* ``jacobian`` -- any other module, ``torch.func`` (``vmap(jacrev)``), in row chunks.
* ``projected`` -- when one example's Jacobian does not fit in ``max_memory``: the unbiased
  random projection ``(1/k') (J P)(J P)^T`` of :func:`ntkdr.nets.empirical.ntk_projected`.

Quantities: ``lambda_min`` of each kernel and their ratio (b / a); with labels ``y`` the
Arora et al. (2019, Thm 5.1) bound ``sqrt(2 y^T Theta^-1 y / n)`` of each and its ratio;
``relative_frobenius`` ``||Theta_b - Theta_a||_F / ||Theta_a||_F``; ``alignment``
``<Theta_a, Theta_b>_F / (||Theta_a||_F ||Theta_b||_F)`` (Cristianini et al.'s kernel alignment,
uncentred); trained parameters; measured seconds per forward and per backward on ``X``.
"""

from __future__ import annotations

import math
import statistics
import time
import warnings
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from ntkdr.memory import check_max_memory, working_budget
from ntkdr.nets import DeepReLU, TwoLayerReLU, model_dtype_device
from ntkdr.nets.deep_ntk import deep_closed_form_applies, deep_relu_ntk
from ntkdr.nets.empirical import empirical_ntk, ntk_projected
from ntkdr.theory import SingularKernelWarning, generalization_bound, lambda_min
from ntkdr.validation import as_labels, as_matrix, check_choice, check_int

__all__ = ["compare", "Comparison", "empirical_kernel", "TRACE_CONVENTION"]

TRACE_CONVENTION = (
    "multi-output models: Theta(x, z) = (1/c) sum_a J_a(x) . J_a(z), the trace over the output "
    "axis divided by c (neural-tangents trace_axes=(-1,))"
)
_METHODS = ("auto", "closed", "jacobian", "projected")


@dataclass
class Comparison:
    """Result of :func:`compare`; ``as_dict()`` gives every scalar (JSON-ready), the kernels stay
    in ``kernel_a`` / ``kernel_b`` (float64 tensors, ``n x n``)."""

    n: int
    lambda_min_a: float
    lambda_min_b: float
    lambda_min_ratio: float
    relative_frobenius: float
    alignment: float
    params_a: int
    params_b: int
    outputs_a: int
    outputs_b: int
    method_a: str
    method_b: str
    seconds_kernel_a: float
    seconds_kernel_b: float
    seconds_forward_a: float | None
    seconds_forward_b: float | None
    seconds_backward_a: float | None
    seconds_backward_b: float | None
    seconds_total: float
    bound_a: float | None = None
    bound_b: float | None = None
    bound_ratio: float | None = None
    projected_relative_error_a: float | None = None
    projected_relative_error_b: float | None = None
    trace_convention: str = TRACE_CONVENTION
    kernel_a: torch.Tensor | None = field(default=None, repr=False)
    kernel_b: torch.Tensor | None = field(default=None, repr=False)

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("kernel_a")
        out.pop("kernel_b")
        if self.bound_ratio is None:
            for key in ("bound_a", "bound_b", "bound_ratio"):
                out.pop(key)
        return out


# ----------------------------------------------------------------------------- kernels
def _n_outputs(model: nn.Module, X: torch.Tensor) -> int:
    with torch.no_grad():
        out = model(X[:1])
    return 1 if out.ndim <= 1 else int(out.reshape(1, -1).shape[1])


def _trace(K: torch.Tensor) -> torch.Tensor:
    if K.ndim == 4:  # (n, n', c, c) -> mean over the output diagonal
        return torch.diagonal(K, dim1=2, dim2=3).mean(dim=-1)
    return K


def empirical_kernel(
    model: nn.Module,
    X: Any,
    *,
    method: str = "auto",
    max_memory: float | str | None = None,
    k_proj: int = 256,
    seed: int = 0,
) -> tuple[torch.Tensor, str, float | None]:
    """``(Theta, method used, projected relative error or None)``: the ``n x n`` empirical NTK of
    ``model`` on ``X`` under the trace convention above (float64)."""
    method = check_choice(method, "method", _METHODS)
    max_memory = int(working_budget(check_max_memory(max_memory)))
    dtype, device = model_dtype_device(model)
    Xt, _ = as_matrix(X, "X", dtype=dtype, device=device)
    if method == "auto":
        if (
            isinstance(model, TwoLayerReLU)
            and model.out_dim == 1
            or deep_closed_form_applies(model)
        ):
            method = "closed"
        else:
            c = _n_outputs(model, Xt)
            p = sum(v.numel() for v in model.parameters() if v.requires_grad)
            one_row = 3 * c * p * Xt.element_size()  # a row's Jacobian and jacrev's temporaries
            method = "jacobian" if one_row <= max_memory // 2 else "projected"
    err = None
    if method == "closed":
        K = (
            deep_relu_ntk(model, Xt)
            if isinstance(model, DeepReLU)
            else empirical_ntk(model, Xt, method="closed")
        )
    elif method == "jacobian":
        K = empirical_ntk(model, Xt, method="jacobian", max_memory=max_memory)
    else:
        res = ntk_projected(model, Xt, k_proj=k_proj, seed=seed, max_memory=max_memory)
        K, err = res.kernel, res.relative_error
    return _trace(K).detach().to(torch.float64), method, err


def _time(fn, repeats: int) -> float:
    times = []
    for i in range(repeats + 1):
        t0 = time.perf_counter()
        fn()
        if i:  # the first call is a warm-up
            times.append(time.perf_counter() - t0)
    return float(statistics.median(times))


def _forward_backward(model: nn.Module, X: torch.Tensor, repeats: int) -> tuple[float, float]:
    def fwd():
        with torch.no_grad():
            model(X)

    params = [p for p in model.parameters() if p.requires_grad]

    def fwd_bwd():
        out = model(X)
        torch.autograd.grad(out.sum(), params)

    t_f = _time(fwd, repeats)
    t_fb = _time(fwd_bwd, repeats)
    return t_f, max(t_fb - t_f, 0.0)


def _safe_ratio(b: float, a: float) -> float:
    if a == 0 or not (math.isfinite(a) and math.isfinite(b)):
        return math.nan
    return b / a


# ----------------------------------------------------------------------------- public
def compare(
    model_a: nn.Module,
    model_b: nn.Module,
    X: Any,
    y: Any = None,
    *,
    method: str = "auto",
    max_memory: float | str | None = None,
    k_proj: int = 256,
    seed: int = 0,
    delta: float = 0.05,
    repeats: int = 3,
) -> Comparison:
    """Empirical NTKs of ``model_a`` and ``model_b`` on the rows of ``X``, side by side.

    Both models map ``(n, d)`` inputs to ``(n,)`` or ``(n, c)`` outputs; ``X`` is cast to each
    model's dtype and device.  ``y`` (``(n,)`` or ``(n, c)``) adds the generalization bound of
    each kernel and ``bound_ratio = bound_b / bound_a``.  ``method`` applies to both models
    (``"auto"``: closed form, ``torch.func`` or projected, see the module docstring);
    ``max_memory`` (bytes or a size such as ``"2GB"``; None: :data:`ntkdr.memory.DEFAULT_MAX_MEMORY`)
    bounds the Jacobian blocks; ``k_proj`` and ``seed`` set the projected
    estimate; ``repeats`` timed forward / backward passes (median, after one warm-up; ``0``
    skips the timing and leaves the seconds ``None``).
    Ratios are b / a; ``nan`` where a value is zero or infinite.
    """
    for name, mod in (("model_a", model_a), ("model_b", model_b)):
        if not isinstance(mod, nn.Module):
            raise ValueError(f"{name} must be a torch.nn.Module, got {type(mod).__name__}")
    repeats = check_int(repeats, "repeats", min_value=0)
    t_start = time.perf_counter()
    X64, _ = as_matrix(X, "X")
    n = X64.shape[0]
    y_t = None if y is None else as_labels(y, n, "y")
    res: dict[str, Any] = {}
    kernels = []
    for tag, model in (("a", model_a), ("b", model_b)):
        dtype, device = model_dtype_device(model)
        Xm = X64.to(dtype=dtype, device=device)
        t0 = time.perf_counter()
        K, used, err = empirical_kernel(
            model, Xm, method=method, max_memory=max_memory, k_proj=k_proj, seed=seed
        )
        res[f"seconds_kernel_{tag}"] = time.perf_counter() - t0
        res[f"method_{tag}"], res[f"projected_relative_error_{tag}"] = used, err
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SingularKernelWarning)
            if y_t is not None:  # one spectrum gives both the bound and lambda_min
                bound = generalization_bound(K, y_t, delta)
                res[f"bound_{tag}"], res[f"lambda_min_{tag}"] = bound.value, bound.lambda_min
            else:
                res[f"lambda_min_{tag}"] = lambda_min(K, warn=False)
        res[f"params_{tag}"] = sum(p.numel() for p in model.parameters() if p.requires_grad)
        res[f"outputs_{tag}"] = _n_outputs(model, Xm)
        fwd, bwd = _forward_backward(model, Xm, repeats) if repeats else (None, None)
        res[f"seconds_forward_{tag}"], res[f"seconds_backward_{tag}"] = fwd, bwd
        kernels.append(K.cpu())
    Ka, Kb = kernels
    na, nb = float(Ka.norm()), float(Kb.norm())
    res["lambda_min_ratio"] = _safe_ratio(res["lambda_min_b"], res["lambda_min_a"])
    if y_t is not None:
        res["bound_ratio"] = _safe_ratio(res["bound_b"], res["bound_a"])
    res["relative_frobenius"] = float((Kb - Ka).norm()) / na if na > 0 else math.nan
    res["alignment"] = float((Ka * Kb).sum()) / (na * nb) if na > 0 and nb > 0 else math.nan
    res["seconds_total"] = time.perf_counter() - t_start
    return Comparison(n=n, kernel_a=Ka, kernel_b=Kb, **res)
