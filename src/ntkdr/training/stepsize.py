"""Step-size rules of :func:`ntkdr.training.fit` and the empirical NTK of the model being trained.

``lr=None`` is ``1 / lambda_max(Theta_0)`` (Adam: torch's ``1e-3``), ``lr="theory"`` is Du et
al. (2019) Thm 4.1's ``lambda_0 / n^2``, a number is used as given; :data:`LR_RULES` names
them in ``History.lr_rule``.  :func:`_empirical_kernel` is the training-set NTK ``Theta`` that
``lr=None`` and the NTK-drift tracking of ``fit`` use (per-output block for multi-output
TwoLayerReLU).
"""

from __future__ import annotations

from numbers import Real
from typing import Any

import torch
from torch import nn

from ntkdr.training.gradients import _is_two_layer, _sketch_trained
from ntkdr.validation import check_real

__all__ = ["LR_RULES", "ADAM_DEFAULT_LR"]

ADAM_DEFAULT_LR = 1e-3

LR_RULES = {
    "ntk": "1/lambda_max(empirical NTK at init)",
    "theory": "lambda_0/n^2, lambda_0 = lambda_min(H1(features)) (Du et al. 2019, Thm 4.1)",
    "adam": "torch.optim.Adam default 1e-3 (lr=None; the NTK step size does not apply to Adam)",
    "user": "user",
}


def _two_layer_block_ntk(model: nn.Module, F: torch.Tensor) -> torch.Tensor:
    """Output-averaged empirical NTK of a multi-output TwoLayerReLU (fixed sketch):
    ``(1/c) sum_c Theta^{cc} = (F F^T) o (A diag(mean_c a_rc^2) A^T) / m [+ R R^T / m]``.

    With ``a_rc = +-1`` (the init, and whenever a is not trained) every diagonal block
    ``Theta^{cc}`` equals this matrix; the cross-output blocks are ``O(1/sqrt(m))``.
    """
    W, a, m = model.W.detach(), model.a.detach(), model.m
    P = F @ W.T
    A = (P >= 0).to(P.dtype)
    K = torch.zeros(F.shape[0], F.shape[0], dtype=F.dtype, device=F.device)
    if model.W.requires_grad:
        a2 = (a * a).mean(dim=1) if a.ndim == 2 else a * a
        K = (A * a2) @ A.T
        K.mul_(F @ F.T).mul_(1.0 / m)
    if isinstance(model.a, nn.Parameter) and model.a.requires_grad:
        R = P.clamp_min_(0)
        K.addmm_(R, R.T, alpha=1.0 / m)
    return K


def _empirical_kernel(model: nn.Module, X: torch.Tensor, F: torch.Tensor | None) -> torch.Tensor:
    """Empirical NTK on the training set, as an ``(N, N)`` symmetric matrix.

    Single-output models: :func:`ntkdr.empirical.ntk` (closed form for TwoLayerReLU).
    Multi-output TwoLayerReLU with a fixed sketch: the per-output block (see
    :func:`_two_layer_block_ntk`).  Other multi-output modules: the full ``(n c, n c)`` kernel.
    """
    from ntkdr.nets.empirical import empirical_ntk

    with torch.no_grad():
        if _is_two_layer(model) and model.out_dim > 1 and not _sketch_trained(model):
            return _two_layer_block_ntk(model, F if F is not None else model.features(X))
        K = empirical_ntk(model, X)
    K = torch.as_tensor(K)
    if K.ndim == 4:  # (n, n, c, c) -> (n c, n c)
        n, _, c, _ = K.shape
        K = K.permute(0, 2, 1, 3).reshape(n * c, n * c)
    return K


def _resolve_lr(lr, optimizer, model, X, F, n):
    """-> (value, rule key, Theta_0 or None)."""
    if lr is None:
        if optimizer == "adam":
            return ADAM_DEFAULT_LR, "adam", None
        K0 = _empirical_kernel(model, X, F)
        from ntkdr.theory import lambda_max

        lmax = lambda_max(K0)
        if not lmax > 0:
            raise ValueError(
                f"lr=None: lambda_max of the empirical NTK at init is {lmax:.3e} <= 0; give lr explicitly"
            )
        return 1.0 / lmax, "ntk", K0
    if isinstance(lr, str):
        if lr != "theory":
            raise ValueError(f"lr must be a positive number, None or 'theory', got {lr!r}")
        if not _is_two_layer(model):
            raise ValueError(
                f"lr='theory' (lambda_0/n^2) is defined for TwoLayerReLU only, got {type(model).__name__}"
            )
        from ntkdr.kernels import two_layer_ntk
        from ntkdr.theory import lambda_min

        with torch.no_grad():
            Fi = F if F is not None else model.features(X)
            H1 = two_layer_ntk(Fi.to(torch.float64))
        lam0 = lambda_min(H1)
        if not lam0 > 0:
            raise ValueError(
                f"lr='theory': lambda_0 = lambda_min(H1) = {lam0:.3e} <= 0 (parallel or duplicate inputs); "
                "give lr explicitly"
            )
        return lam0 / n**2, "theory", None
    if not isinstance(lr, Real) or isinstance(lr, bool):
        raise ValueError(f"lr must be a positive number, None or 'theory', got {lr!r}")
    return check_real(lr, "lr", positive=True), "user", None


def _resume_lr(ck: dict, lr: Any, optimizer: str):
    h = ck["history"]
    saved_lr, saved_rule = float(h["lr"]), h["lr_rule"]
    key = next((k for k, v in LR_RULES.items() if v == saved_rule), "user")
    if lr is None:
        want = "adam" if optimizer == "adam" else "ntk"
        if key != want:
            raise ValueError(
                f"checkpoint was written with lr rule {saved_rule!r}, but lr=None asks for {LR_RULES[want]!r}"
            )
    elif isinstance(lr, str):
        if key != "theory":
            raise ValueError(
                f"checkpoint was written with lr rule {saved_rule!r}, but lr='theory' was given"
            )
    elif float(lr) != saved_lr:
        raise ValueError(
            f"checkpoint was written with lr = {saved_lr!r}, but lr = {float(lr)!r} was given"
        )
    return saved_lr, key, None
