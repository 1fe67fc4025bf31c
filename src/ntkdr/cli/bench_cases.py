"""The case definitions of ``ntkdr bench`` (name, metric, goal, sizes) and the measuring context the case functions share.

The functions that measure each case are in :mod:`ntkdr.cli.bench_runs`; the timing protocol is
described in :mod:`ntkdr.cli.bench`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

_DTYPE = torch.float32


class CaseSkipped(Exception):
    """A case that cannot run here (e.g. its optional peer is not installed): reported, not failed."""


@dataclass(frozen=True)
class _Case:
    name: str
    title: str
    metric: str
    op: str  # "<=" (ratio must not exceed goal) or ">=" (speed-up must reach goal)
    goal: float
    full: dict[str, int]
    quick: dict[str, int]


_CASE_LIST = [
    _Case(
        "two_layer_ntk",
        "analytic two-layer NTK H1+H2",
        "time / X X^T GEMM time",
        "<=",
        0.6,
        {"n": 4000, "d": 784},
        {"n": 1000, "d": 784},
    ),
    _Case(
        "deep_ntk",
        "analytic depth-3 FC NTK (+NNGP)",
        "time / X X^T GEMM time",
        "<=",
        0.9,
        {"n": 4000, "d": 784, "depth": 3},
        {"n": 1000, "d": 784, "depth": 3},
    ),
    _Case(
        "sketched_vs_dense_ntk",
        "SRHT-sketched NTK vs dense NTK (sketch included)",
        "speed-up",
        ">=",
        8.0,
        {"n": 4000, "d": 8192, "k": 256},
        {"n": 1000, "d": 8192, "k": 256},
    ),
    _Case(
        "gd_step",
        "full-batch GD step, factorized vs dense",
        "speed-up",
        ">=",
        6.0,
        {"n": 2000, "d": 784, "m": 4096, "k": 64},
        {"n": 500, "d": 784, "m": 1024, "k": 64},
    ),
    _Case(
        "fit_5",
        "end-to-end fit(lr=1e-3), 5 GD steps, factorized vs dense",
        "speed-up",
        ">=",
        6.0,
        {"n": 2000, "d": 784, "m": 4096, "k": 64, "steps": 5},
        {"n": 500, "d": 784, "m": 1024, "k": 64, "steps": 5},
    ),
    _Case(
        "fit_100",
        "end-to-end fit(lr=1e-3), 100 GD steps, factorized vs dense",
        "speed-up",
        ">=",
        8.0,
        {"n": 2000, "d": 784, "m": 4096, "k": 64, "steps": 100},
        {"n": 500, "d": 784, "m": 1024, "k": 64, "steps": 20},
    ),
    _Case(
        "fit_auto_lr",
        "cost of lr=None (1/lambda_max of the NTK at init), factorized fit, 5 steps",
        "time(lr=None) / time(lr=1e-3)",
        "<=",
        4.0,
        {"n": 2000, "d": 784, "m": 4096, "k": 64, "steps": 5},
        {"n": 500, "d": 784, "m": 1024, "k": 64, "steps": 5},
    ),
    _Case(
        "inference",
        "inference, SRHT + factorized vs dense",
        "speed-up",
        ">=",
        12.0,
        {"batch": 256, "d": 4096, "m": 16384, "k": 256},
        {"batch": 64, "d": 4096, "m": 4096, "k": 256},
    ),
    _Case(
        "empirical_closed",
        "closed-form empirical NTK",
        "time / (X W^T + A A^T GEMMs)",
        "<=",
        1.3,
        {"n": 1000, "d": 784, "m": 4096},
        {"n": 250, "d": 784, "m": 1024},
    ),
    _Case(
        "empirical_vs_torchfunc",
        "closed-form vs torch.func empirical NTK",
        "speed-up",
        ">=",
        20.0,
        {"n": 200, "d": 784, "m": 1024},
        {"n": 50, "d": 784, "m": 256},
    ),
    _Case(
        "empirical_vs_nt",
        "closed-form empirical NTK (both layers) vs neural-tangents' structured derivatives",
        "time / neural-tangents' time",
        "<=",
        0.8,
        {"n": 1000, "d": 784, "m": 4096},
        {"n": 250, "d": 784, "m": 1024},
    ),
    _Case(
        "tiled_memory",
        "tiled analytic NTK, peak memory",
        "peak memory / result size",
        "<=",
        1.2,
        {"n": 20000, "d": 784},
        {"n": 5000, "d": 784},
    ),
]
#: Case name -> definition, in run order.
CASES: dict[str, _Case] = {c.name: c for c in _CASE_LIST}


# ----------------------------------------------------------------------------- helpers
def _make_data(n: int, d: int, seed: int, device: torch.device) -> torch.Tensor:
    """``n`` Gaussian rows in R^d normalised to unit norm, float32, from ``manual_seed(seed)``."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + d)  # one stream per dimension
    X = torch.randn(n, d, generator=g, dtype=_DTYPE)
    X /= X.norm(dim=1, keepdim=True)
    return X.to(device)


def _upper_gemm(X: torch.Tensor, out: torch.Tensor, tile: int = 512) -> torch.Tensor:
    """The upper triangle of ``X X^T`` in row tiles against the columns from the diagonal on:
    the GEMM work a symmetric kernel cannot avoid (the engine's own tiling).  Callers pass a
    fresh ``out`` so that its first-touch page faults count, as in the full GEMM's result."""
    n = X.shape[0]
    for a in range(0, n, tile):
        torch.matmul(X[a : a + tile], X[a:].T, out=out[a : a + tile, a:])
    return out


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _measure(
    fns: dict[str, Callable[[], Any]],
    repeats: int,
    warmup: int,
    device: torch.device,
    self_timed: bool = False,
) -> dict[str, list[float]]:
    """Seconds of each call of each function over ``repeats`` rounds (interleaved, the order
    alternating between rounds) after ``warmup`` untimed rounds.  ``self_timed``: the functions
    return their own measured seconds (e.g. :func:`ntkdr.train.time_gd_step`)."""
    names = list(fns)
    for _ in range(warmup):
        for name in names:
            fns[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        for name in names if r % 2 == 0 else names[::-1]:
            _sync(device)
            t0 = time.perf_counter()
            out = fns[name]()
            _sync(device)
            times[name].append(float(out) if self_timed else time.perf_counter() - t0)
            del out
    return times


class _Context:
    def __init__(self, device: torch.device, repeats: int, warmup: int, seed: int, threads: int):
        self.device, self.repeats, self.warmup, self.seed, self.threads = (
            device,
            repeats,
            warmup,
            seed,
            threads,
        )
        self._data: dict[int, torch.Tensor] = {}

    def data(self, n: int, d: int) -> torch.Tensor:
        """The shared data set of dimension d (its first n rows)."""
        X = self._data.get(d)
        if X is None or X.shape[0] < n:
            X = self._data[d] = _make_data(n, d, self.seed, self.device)
        return X[:n]

    def labels(self, n: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.seed + 7)
        return (torch.randint(0, 2, (n,), generator=g).to(_DTYPE) * 2 - 1).to(self.device)

    def measure(
        self, fns: dict[str, Callable[[], Any]], self_timed: bool = False
    ) -> dict[str, list[float]]:
        return _measure(fns, self.repeats, self.warmup, self.device, self_timed)
