r"""How wide is wide enough?  The width at which real networks behave like their NTK, dense and
factorized, next to the widths the theory asks for.

The NTK analyses (Jacot et al. 2018; Du et al. 2019; Arora et al. 2019; Lee et al. 2019) show
that as the width m grows, a network's empirical NTK at initialisation tends to a deterministic
kernel Theta_inf, its weights barely move under gradient descent, and its training follows the
linear dynamics ``u(t+1) - y = (I - lr Theta_inf)(u(t) - y)``; the deviations shrink like
``m^(-1/2)``.  The sufficient widths of the theorems are astronomical (Du et al. Thm 4.1:
``m >= n^6 / (lambda_0^4 delta^3)``, O(.) constants set to 1).  Ailon & Shit (arXiv 2210.04807,
2022) factorize the first layer ``W = U S`` through a fixed sketch S (k x d); the factorized net
tends to its own limit, the NTK of the sketched inputs, at a per-width cost of ``k`` instead of
``d``.  :func:`width_study` measures, on the user's data, for each network and each width m on a
grid (mean over seeds):

(a) ``kernel_deviation`` -- ``||Theta_m(0) - Theta_inf||_F / ||Theta_inf||_F`` at initialisation;
(b) ``trajectory_deviation`` -- ``max_t |r(t) - r_lin(t)| / r_lin(0)`` over ``steps`` full-batch GD
    steps on ``L = 1/2 sum_i (y_i - f(x_i))^2`` (summed, as in Du et al. / Arora et al.) with
    ``lr = 1 / lambda_max(Theta_inf)``, ``r(t) = ||u(t) - y||`` measured and ``r_lin`` the
    linear prediction from the same ``u(0)`` (:func:`ntkdr.theory.predicted_trajectory`);
(c) ``weight_movement`` -- ``||p(t) - p(0)|| / ||p(0)||`` over all trained parameters, and
    ``flip_fraction`` -- the fraction of hidden pre-activation signs (example x unit) that changed.

For each network it fits ``dev = C m^(-1/2)`` (and the free slope), reports the smallest grid
width reaching the tolerance for (a) and (b), the width extrapolated from the fit
``m = (C / tol)^2``, the theory's widths at ``lambda_0 = lambda_min(Theta_inf)`` on the same
points, and the training cost at the reached width (multiply-adds per GD step and measured
seconds).  Networks: ``two_layer_dense`` / ``two_layer_factorized`` (:class:`TwoLayerReLU`,
first layer trained, ``Theta_inf = H1(X)`` / ``H1(S X)``) and ``deep_dense`` / ``deep_factorized``
(:class:`DeepReLU`, all layers trained, the first factorized by :func:`ntkdr.nets.factorize.factorize`,
``Theta_inf`` from :func:`ntkdr.kernels.fc_relu_kernels` /
:func:`ntkdr.kernels.factorized_fc_kernels`).
The factorized nets are measured against their own limit; ``limit_gap`` is how far that limit
is from the dense one (the sketch's error, which no width removes).
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ntkdr.kernels import factorized_fc_kernels, fc_relu_kernels, two_layer_ntk
from ntkdr.nets import DeepReLU, TwoLayerReLU, derive_seed
from ntkdr.nets.factorize import factorize
from ntkdr.sketches import make_sketch
from ntkdr.studies.comparison import empirical_kernel
from ntkdr.theory import (
    SingularKernelWarning,
    cost,
    lambda_max,
    lambda_min,
    predicted_trajectory,
    width_requirements,
)
from ntkdr.training import fit, time_gd_step
from ntkdr.validation import (
    as_labels,
    as_matrix,
    check_choice,
    check_int,
    check_nonzero_rows,
    check_real,
)

__all__ = ["width_study", "WidthStudy", "NETWORKS", "DEFAULT_WIDTHS", "mlp_cost"]

NETWORKS = ("two_layer_dense", "two_layer_factorized", "deep_dense", "deep_factorized")
DEFAULT_WIDTHS = (64, 128, 256, 512, 1024)
METRICS = ("kernel_deviation", "trajectory_deviation", "weight_movement", "flip_fraction")


@dataclass
class WidthStudy:
    """Result of :func:`width_study`: ``config``, per-network results ``networks[name]`` (see
    :meth:`as_dict`), ``cost_ratio`` (factorized / dense multiply-adds per GD step at the width
    each needs to reach the tolerance on the kernel deviation, two-layer and deep), ``seconds``."""

    config: dict[str, Any]
    networks: dict[str, dict[str, Any]] = field(default_factory=dict)
    cost_ratio: dict[str, float | None] = field(default_factory=dict)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: ``config``; ``networks[name]`` with ``widths``, ``metrics[metric]`` (lists
        ``mean``, ``std`` per width), ``fit[metric]`` (``slope``, ``c_half`` with the slope fixed
        at -1/2, ``m_fit``), ``reach[metric]`` (``m_grid``: smallest grid width at the tolerance
        or None), ``lambda0``, ``theory`` (Du / Arora widths), ``limit_gap``, ``cost`` (at
        ``m_reach``: ``macs_per_step``, ``seconds_per_step``, ``m``); ``cost_ratio``; ``seconds``."""
        return {
            "config": self.config,
            "networks": self.networks,
            "cost_ratio": self.cost_ratio,
            "seconds": self.seconds,
        }


# ----------------------------------------------------------------------------- cost
def mlp_cost(d: int, widths: list[int], n: int, k: int | None = None) -> dict[str, int]:
    """Multiply-adds of one full-batch GD step of a fully connected net (one output).

    Same convention as :func:`ntkdr.theory.cost`: forward ``n sum_l in_l out_l``; backward the
    weight gradients (the same again) plus the input gradients of layers 1.. (not of the first);
    update one per trained parameter; elementwise work counts 0.  A factorized first layer has
    ``in_0 = k`` and its sketch of the training set, ``n k d``, is counted once
    (``sketch_macs_once``), not per step.
    """
    sizes = [k or d, *widths, 1]
    mats = [a * b for a, b in zip(sizes[:-1], sizes[1:])]
    params = sum(mats) + sum(sizes[1:])
    step = 2 * n * sum(mats) + n * sum(mats[1:]) + params
    return {"train_macs_per_step": step, "params": params, "sketch_macs_once": n * (k or 0) * d}


# ----------------------------------------------------------------------------- networks
class _Net:
    """Builds one network family on fixed data: its limit kernel, models per (m, seed), costs."""

    def __init__(self, name: str, X: torch.Tensor, k: int, kind: str, depth: int, seed: int):
        self.name, self.k, self.depth = name, k, depth
        self.d = X.shape[1]
        self.deep = name.startswith("deep")
        # deep nets divide by the fan-in: inputs of norm sqrt(d) (entries O(1), the
        # neural-tangents convention) keep their kernel O(1); two-layer nets take unit rows
        self.X = X * math.sqrt(self.d) if self.deep else X
        self.factorized = name.endswith("factorized")
        self.kind, self.sketch_seed = kind, derive_seed(seed, "width-study-sketch")
        self.sketch = (
            make_sketch(kind, self.d, k, seed=self.sketch_seed) if self.factorized else None
        )
        self.limit = self._limit()

    def model(self, m: int, seed: int):
        dtype, device = self.X.dtype, self.X.device
        if not self.deep:
            return TwoLayerReLU(
                self.d, m, sketch=self.sketch, seed=seed, dtype=dtype, device=device
            )
        net = DeepReLU(self.d, m, depth=self.depth, seed=seed, dtype=dtype, device=device)
        if not self.factorized:
            return net
        net = factorize(net, self.k, self.kind, layers=["layers.0"], seed=self.sketch_seed)
        first = net.layers[0]  # S is shared by all widths and seeds; U, b drawn per seed
        gen = torch.Generator().manual_seed(derive_seed(seed, "width-study-U"))
        with torch.no_grad():
            first.U.copy_(torch.randn(first.U.shape, generator=gen, dtype=torch.float64))
            first.bias.copy_(torch.randn(first.bias.shape, generator=gen, dtype=torch.float64))
        return net

    def _limit(self) -> torch.Tensor:
        X = self.X
        if not self.deep:
            return two_layer_ntk(X if self.sketch is None else self.sketch(X))
        if not self.factorized:
            return fc_relu_kernels(X, depth=self.depth)[0]
        layer = self.model(1, 0).layers[0]
        return factorized_fc_kernels(X, layer, depth=self.depth)[0]

    def macs(self, m: int) -> int:
        n = self.X.shape[0]
        if self.deep:
            return mlp_cost(self.d, [m] * self.depth, n, self.k if self.factorized else None)[
                "train_macs_per_step"
            ]
        if self.factorized:
            c = cost(self.d, m, self.k, self.kind, n=n, sketch=self.sketch)
        else:
            c = cost(self.d, m, n=n)
        return c["factorized" if self.factorized else "dense"]["train_macs_per_step"]


def _preacts(model: torch.nn.Module, X: torch.Tensor) -> list[torch.Tensor]:
    with torch.no_grad():
        if isinstance(model, TwoLayerReLU):
            return [model._features(X) @ model.W.T]
        out, h = [], X
        for layer in model.layers[:-1]:
            z = layer(h)
            out.append(z)
            h = torch.relu(z)
        return out


def _one_run(
    net: _Net, m: int, seed: int, y: torch.Tensor, steps: int, lr: float
) -> dict[str, float]:
    X = net.X
    model = net.model(m, seed)
    K, _, _ = empirical_kernel(model, X)
    kdev = float((K - net.limit).norm() / net.limit.norm())
    with torch.no_grad():
        u0 = model(X)
    p0 = torch.cat([p.detach().flatten().clone() for p in model.parameters() if p.requires_grad])
    z0 = _preacts(model, X)
    hist = fit(model, X, y, steps, lr=lr, optimizer="gd", ntk_every=0, progress=False)
    real = np.sqrt(2.0 * np.asarray(hist.train_loss, dtype=np.float64))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        pred = predicted_trajectory(net.limit, y, lr, steps, u0=u0)
    tdev = float(np.max(np.abs(real - pred[: len(real)])) / pred[0])
    p1 = torch.cat([p.detach().flatten() for p in model.parameters() if p.requires_grad])
    z1 = _preacts(model, X)
    flips = sum(int(((a >= 0) != (b >= 0)).sum()) for a, b in zip(z0, z1))
    units = sum(a.numel() for a in z0)
    return {
        "kernel_deviation": kdev,
        "trajectory_deviation": tdev,
        "weight_movement": float((p1 - p0).norm() / p0.norm()),
        "flip_fraction": flips / units,
    }


def _fit(widths: list[int], dev: list[float], tol: float) -> dict[str, float | None]:
    m = np.asarray(widths, dtype=float)
    v = np.asarray(dev, dtype=float)
    ok = np.isfinite(v) & (v > 0)
    if ok.sum() < 2:
        return {"slope": None, "c_half": None, "m_fit": None}
    lm, lv = np.log(m[ok]), np.log(v[ok])
    slope = float(np.polyfit(lm, lv, 1)[0])
    c_half = float(np.exp(np.mean(lv + 0.5 * lm)))  # dev = C m^(-1/2), C by least squares in log
    return {"slope": slope, "c_half": c_half, "m_fit": float((c_half / tol) ** 2)}


# ----------------------------------------------------------------------------- public
def width_study(
    X: Any,
    y: Any,
    *,
    widths: tuple[int, ...] | list[int] = DEFAULT_WIDTHS,
    seeds: int = 3,
    k: int = 64,
    kind: str = "gaussian",
    depth: int = 2,
    steps: int = 20,
    tolerance: float = 0.1,
    networks: tuple[str, ...] | list[str] = NETWORKS,
    n_max: int | None = 128,
    delta: float = 0.05,
    seed: int = 0,
    time_steps: bool = True,
    dtype: Any = torch.float64,
    device: Any = None,
    progress: Any = None,
) -> WidthStudy:
    """Run the width study on ``(X, y)`` (see the module docstring); returns a :class:`WidthStudy`.

    ``X`` ``(n, d)``, ``y`` ``(n,)`` real targets (e.g. +-1 labels); the first ``n_max`` rows
    are used (``None``: all), normalised to unit norm (the deep nets see them scaled by
    ``sqrt(d)``, see the module docstring).  ``widths``: the grid of m; ``seeds``: networks per width (init
    seeds ``0..seeds-1``); ``k`` / ``kind``: the sketch of the factorized nets (one S, drawn
    from ``seed``, for all widths and init seeds); ``depth``: hidden layers of the deep nets;
    ``steps``: GD steps for (b) and (c); ``tolerance`` on the deviations; ``time_steps``:
    measure seconds per GD step at the reached widths; ``progress``: ``callable(message)``.
    """
    widths = sorted({check_int(m, "width", min_value=1) for m in widths})
    if not widths:
        raise ValueError("widths is empty")
    seeds = check_int(seeds, "seeds", min_value=1)
    steps = check_int(steps, "steps", min_value=1)
    depth = check_int(depth, "depth", min_value=1, max_value=16)
    tolerance = check_real(tolerance, "tolerance", positive=True)
    networks = [check_choice(n, "network", NETWORKS) for n in networks]
    if not networks:
        raise ValueError("networks is empty")
    Xt, _ = as_matrix(X, "X", dtype=dtype, device=device)
    yt = as_labels(y, Xt.shape[0], "y")
    if n_max is not None:
        Xt = Xt[: check_int(n_max, "n_max", min_value=2)]
    yt = yt[: Xt.shape[0]].to(dtype=Xt.dtype, device=Xt.device)
    check_nonzero_rows(Xt)
    Xt = Xt / Xt.norm(dim=1, keepdim=True)
    if yt.ndim != 1:
        raise ValueError(f"y must be 1-D (one target per example), got shape {tuple(yt.shape)}")
    n, d = Xt.shape
    k = check_int(k, "k", min_value=1, max_value=d)
    say = progress if callable(progress) else (lambda msg: None)
    t_start = time.perf_counter()
    config = {
        "n": n, "d": d, "widths": widths, "seeds": seeds, "k": k, "kind": kind, "depth": depth,
        "steps": steps, "tolerance": tolerance, "networks": networks, "delta": delta,
        "seed": seed, "dtype": str(Xt.dtype).replace("torch.", ""),
        "lr_rule": "1 / lambda_max(Theta_inf)",
        "inputs": "rows of norm 1 (two-layer nets), sqrt(d) (deep nets)", "loss": "1/2 sum_i (y_i - f(x_i))^2",
    }  # fmt: skip
    result = WidthStudy(config)
    dense_limits: dict[bool, torch.Tensor] = {}
    for name in networks:
        net = _Net(name, Xt, k, kind, depth, seed)
        lr = 1.0 / lambda_max(net.limit)
        runs: dict[str, list[list[float]]] = {key: [] for key in METRICS}
        for m in widths:
            say(f"width study: {name}, m = {m}")
            per = [_one_run(net, m, s, yt, steps, lr) for s in range(seeds)]
            for key in METRICS:
                runs[key].append([r[key] for r in per])
        metrics = {
            key: {
                "mean": [float(np.mean(v)) for v in vals],
                "std": [float(np.std(v)) for v in vals],
            }
            for key, vals in runs.items()
        }
        fits, reach = {}, {}
        for key in ("kernel_deviation", "trajectory_deviation"):
            fits[key] = _fit(widths, metrics[key]["mean"], tolerance)
            hit = [m for m, v in zip(widths, metrics[key]["mean"]) if v <= tolerance]
            reach[key] = {"m_grid": hit[0] if hit else None, "m_fit": fits[key]["m_fit"]}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SingularKernelWarning)
            lam0 = lambda_min(net.limit, warn=False)
        theory = width_requirements(lam0, n, delta=delta)
        m_cost = reach["kernel_deviation"]["m_grid"]
        if m_cost is None and fits["kernel_deviation"]["m_fit"] is not None:
            m_cost = max(1, math.ceil(fits["kernel_deviation"]["m_fit"]))
        seconds = None
        if time_steps and m_cost is not None and m_cost in widths:
            seconds = time_gd_step(net.model(m_cost, 0), net.X, yt, repeats=3, lr=lr)
        if not net.deep:
            dense_limits.setdefault(False, two_layer_ntk(net.X))
        else:
            dense_limits.setdefault(True, fc_relu_kernels(net.X, depth=depth)[0])
        ref = dense_limits[net.deep]
        result.networks[name] = {
            "widths": widths,
            "metrics": metrics,
            "fit": fits,
            "reach": reach,
            "lambda0": lam0,
            "lr": lr,
            "theory": {
                "du_width": theory["du_width"],
                "du_width_log10": theory["du_width_log10"],
                "arora_width": theory["arora_width"],
                "arora_width_log10": theory["arora_width_log10"],
                "note": theory["note"],
            },
            "limit_gap": float((net.limit - ref).norm() / ref.norm()),
            "cost": {
                "m": m_cost,
                "extrapolated": m_cost is not None and m_cost not in widths,
                "macs_per_step": None if m_cost is None else net.macs(m_cost),
                "seconds_per_step": seconds,
            },
        }
    for fam in ("two_layer", "deep"):
        a, b = result.networks.get(f"{fam}_dense"), result.networks.get(f"{fam}_factorized")
        ok = a and b and a["cost"]["macs_per_step"] and b["cost"]["macs_per_step"]
        result.cost_ratio[fam] = (
            b["cost"]["macs_per_step"] / a["cost"]["macs_per_step"] if ok else None
        )
    result.seconds = time.perf_counter() - t_start
    return result
