"""Tests of ntkdr.montecarlo.monte_carlo_kernels: the mean and standard error equal an explicit
per-seed computation, output averaging, any nn.Module factory, the budget, bad inputs.
(Monte Carlo against the analytic kernels: tests/test_stax.py.)"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from ntkdr import stax
from ntkdr.nets.empirical import empirical_ntk
from ntkdr.nets.montecarlo import MonteCarloKernels, monte_carlo_kernels

NET = stax.serial(stax.Dense(6, 1.3, 0.2), stax.Erf(), stax.Dense(3, 0.8, 0.1))


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny matrices: one thread avoids OpenMP waits on a shared machine (restored after)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _factory(seed: int) -> nn.Module:
    return NET.module(4, seed=seed, dtype=torch.float64)


def _explicit(X, Z, n):
    """Per-seed kernels averaged over the 3 outputs, then mean and std / sqrt(n) by numpy."""
    ntks, nngps = [], []
    for s in range(n):
        m = _factory(s)
        K = empirical_ntk(m, X, Z, method="jacobian")  # (n, n', 3, 3)
        ntks.append(np.einsum("ijaa->ij", K) / 3)
        with torch.no_grad():
            FX = m(torch.from_numpy(X)).numpy()
            FZ = FX if Z is None else m(torch.from_numpy(Z)).numpy()
        nngps.append(FX @ FZ.T / 3)
    out = []
    for v in (np.array(ntks), np.array(nngps)):
        out += [v.mean(0), v.std(0, ddof=1) / math.sqrt(n)]
    return out


@pytest.mark.parametrize("with_z", [False, True])
def test_mean_and_stderr_equal_explicit_samples(with_z):
    rng = np.random.default_rng(0)
    X, Z = rng.standard_normal((5, 4)), rng.standard_normal((3, 4))
    Zarg = Z if with_z else None
    # a small budget: the Jacobians and forward passes go in chunks of rows
    mc = monte_carlo_kernels(_factory, X, Zarg, n_samples=5, max_memory=20_000)
    assert isinstance(mc, MonteCarloKernels) and mc.n_samples == 5
    ntk, ntk_se, nngp, nngp_se = _explicit(X, Zarg, 5)
    for got, ref in (
        (mc.ntk, ntk),
        (mc.ntk_stderr, ntk_se),
        (mc.nngp, nngp),
        (mc.nngp_stderr, nngp_se),
    ):
        assert isinstance(got, np.ndarray) and got.shape == ref.shape
        np.testing.assert_allclose(got, ref, rtol=1e-10, atol=1e-13)


def test_any_module_factory_and_torch_io():
    def factory(seed: int) -> nn.Module:
        torch.manual_seed(seed)
        return nn.Sequential(nn.Linear(3, 16), nn.Tanh(), nn.Linear(16, 1))

    X = torch.randn(4, 3)
    mc = monte_carlo_kernels(factory, X, n_samples=3, get="ntk", seed=7)
    assert isinstance(mc.ntk, torch.Tensor) and mc.ntk.shape == (4, 4)
    assert mc.nngp is None and mc.nngp_stderr is None
    ref = sum(empirical_ntk(factory(7 + s), X) for s in range(3)) / 3
    torch.testing.assert_close(mc.ntk, ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(mc.ntk, mc.ntk.T)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"n_samples": 1}, "n_samples must be >= 2, got 1"),
        ({"get": "cov"}, "get must be 'ntk', 'nngp' or a tuple of them, got 'cov'"),
        ({"seed": -1}, "seed must be >= 0, got -1"),
        ({"max_memory": 0}, "max_memory must be > 0, got 0.0"),
        (
            {"max_memory": 100},
            "the Monte Carlo accumulators need 800 bytes (4 x 5 x 5), more than "
            "max_memory = 100 bytes; use fewer rows or raise max_memory",
        ),
        ({"model_fn": 3}, "model_fn must be callable (seed -> nn.Module), got int"),
        ({"model_fn": lambda s: None}, "model_fn must return a torch.nn.Module, got NoneType"),
        ({"Z": np.ones((2, 3))}, "X and Z must have the same number of features, got 4 and 3"),
    ],
)
def test_bad_inputs(kwargs, message):
    args = {"model_fn": _factory, "X": np.ones((5, 4)), "n_samples": 2} | kwargs
    with pytest.raises(ValueError) as exc:
        monte_carlo_kernels(**args)
    assert str(exc.value) == message
