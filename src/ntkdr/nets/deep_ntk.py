"""The layerwise closed-form empirical NTK of a deep fully connected ReLU net (:class:`DeepReLU`), factorized layers included.

With ``h_l`` the input of layer ``l`` (``S h_l`` for a factorized layer), ``s_l`` its weight scale,
``b_l`` its bias scale and ``D_l`` the per-example derivative of the output with respect to its
pre-activations, ``J J^T`` splits over the layers' parameters (Jacot et al. 2018):

    Theta = sum_l s_l^2 (h_l h_l^T) o (D_l D_l^T) + b_l^2 D_l D_l^T,

so the kernel needs one forward and one backward pass over all examples (rows are independent,
so the gradient of ``sum_i f(x_i)`` with respect to the pre-activations holds every ``D_l``) and
two GEMMs per layer, instead of per-example Jacobians.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from ntkdr.nets.layers import DeepReLU, NTKLinear, SketchedLinear
from ntkdr.nets.models import model_dtype_device
from ntkdr.validation import as_matrix

__all__ = ["deep_relu_ntk", "deep_closed_form_applies"]


def deep_closed_form_applies(model: nn.Module) -> bool:
    """A single-output DeepReLU whose layers are NTKLinear or SketchedLinear with S fixed (a
    renormalizing sketch only in the first layer)."""
    if not isinstance(model, DeepReLU) or model.out_dim != 1:
        return False
    for i, layer in enumerate(model.layers):
        if isinstance(layer, SketchedLinear):
            trained_s = isinstance(layer.S, nn.Parameter) and layer.S.requires_grad
            renorm_inside = i > 0 and getattr(layer.sketch, "renormalize", False)
            if trained_s or renorm_inside:
                return False
        elif not isinstance(layer, NTKLinear):
            return False
    return True


def _layer_terms(layer: nn.Module) -> tuple[Any, float, Any, float]:
    """``(weight, weight scale, bias, bias scale)`` of an NTKLinear / SketchedLinear."""
    if isinstance(layer, NTKLinear):
        return layer.weight, layer.w_std / math.sqrt(layer.in_features), layer.bias, layer.b_std
    return layer.U, layer._w_scale, layer.bias, layer._b_scale


def deep_relu_ntk(model: DeepReLU, X: Any) -> torch.Tensor:
    """Layerwise closed-form empirical NTK of a single-output :class:`DeepReLU` (any layers
    factorized, S fixed), ``n x n`` in the model's dtype; see the module docstring."""
    if not deep_closed_form_applies(model):
        raise ValueError(
            "deep_relu_ntk needs a DeepReLU with out_dim = 1 whose layers are NTKLinear or "
            "SketchedLinear with a fixed S; use method='jacobian'"
        )
    dtype, device = model_dtype_device(model)
    Xt, _ = as_matrix(X, "X", dtype=dtype, device=device)
    inputs, pre = [], []
    with torch.enable_grad():
        h = Xt
        for i, layer in enumerate(model.layers):
            phi = layer.sketch_input(h) if isinstance(layer, SketchedLinear) else h
            inputs.append(phi.detach())
            z = layer(h)
            if i == 0:  # the graph starts at the first pre-activation (X needs no gradient)
                z = z.detach().requires_grad_(True)
            if i < len(model.layers) - 1:
                pre.append(z)
                h = torch.relu(z)
            else:
                out = z.sum()
        # rows are independent, so d(sum_i f(x_i)) / dz_l holds every example's df/dz_l
        deltas = [d.detach() for d in torch.autograd.grad(out, pre)] if pre else []
    # the readout's pre-activation derivative is 1 for every example
    deltas.append(torch.ones(Xt.shape[0], 1, dtype=dtype, device=device))
    K = torch.zeros(Xt.shape[0], Xt.shape[0], dtype=dtype, device=device)
    for layer, phi, D in zip(model.layers, inputs, deltas):
        W, w_scale, b, b_scale = _layer_terms(layer)
        DD = D @ D.T
        if W.requires_grad:
            K.addcmul_(phi @ phi.T, DD, value=w_scale**2)
        if b is not None and b.requires_grad:
            K.add_(DD, alpha=b_scale**2)
    return K
