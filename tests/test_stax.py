"""Tests of ntkdr.stax: analytic kernel_fn against neural-tangents (mixed architectures in
tests/data/nt_activations_reference.npz) and against fc_kernels, the finite modules' NTK
parameterization, and Monte Carlo averages of wide modules against kernel_fn."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from ntkdr import stax
from ntkdr.kernels.activations import fc_kernels, serial_kernels
from ntkdr.nets.montecarlo import monte_carlo_kernels

DATA = os.path.join(os.path.dirname(__file__), "data", "nt_activations_reference.npz")
CTORS = {
    "relu": lambda p: stax.Relu(),
    "leaky_relu": lambda p: stax.LeakyRelu(p["alpha"]),
    "abrelu": lambda p: stax.ABRelu(p["a"], p["b"]),
    "abs": lambda p: stax.Abs(),
    "erf": lambda p: stax.Erf(**p),
    "gelu": lambda p: stax.Gelu(),
    "sign": lambda p: stax.Sign(),
    "identity": lambda p: stax.Identity(),
}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny matrices: one thread avoids OpenMP waits on a shared machine (restored after)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _net(spec, width=1):
    return stax.serial(
        *(stax.Dense(width, s[1], s[2]) if s[0] == "dense" else CTORS[s[0]](s[1]) for s in spec)
    )


def _well_conditioned(A, B, tol=1e-3):
    G = A @ B.T
    P = np.outer((A * A).sum(1), (B * B).sum(1))
    return np.sqrt(np.maximum(P - G * G, 0)) >= tol * np.sqrt(P) + 1e-300


def test_mixed_architectures_match_neural_tangents():
    ref = np.load(DATA)
    X, Z = ref["X"], ref["Z"]
    for i, spec in enumerate(json.loads(str(ref["mix_specs"]))):
        net = _net(spec)
        for key, B in (("xz", Z), ("xx", None)):
            ok = _well_conditioned(X, X if B is None else B)
            ntk, nngp = net.kernel_fn(X, B, get=("ntk", "nngp"))
            for got, name in ((ntk, "ntk"), (nngp, "nngp")):
                r = ref[f"mix_{name}_{key}"][i]
                np.testing.assert_allclose(
                    got[ok], r[ok], rtol=1e-11, atol=1e-13 * np.abs(r).max(), err_msg=str(spec)
                )
                assert np.isfinite(got).all()


def test_fc_form_delegates_and_equals_the_general_recursion():
    rng = np.random.default_rng(1)
    X, Z = rng.standard_normal((9, 5)), rng.standard_normal((6, 5))
    net = stax.serial(
        stax.Dense(64, 1.3, 0.2), stax.Erf(1.2, 0.8, 0.1), stax.Dense(64, 1.3, 0.2),
        stax.Erf(1.2, 0.8, 0.1), stax.Dense(3, 0.7, 0.2),
    )  # fmt: skip
    assert net._fc_form() == (2, "erf", {"a": 1.2, "b": 0.8, "c": 0.1}, 1.3, 0.2, 0.7)
    ntk, nngp = net.kernel_fn(X, Z, get=("ntk", "nngp"))
    ref = fc_kernels(X, Z, 2, "erf", 1.3, 0.2, 0.7, a=1.2, b=0.8, c=0.1)
    assert np.array_equal(ntk, ref[0]) and np.array_equal(nngp, ref[1])
    gen = serial_kernels(net._layers(), X, Z)  # the layer-by-layer path
    np.testing.assert_allclose(gen[0], ntk, rtol=1e-14)
    np.testing.assert_allclose(gen[1], nngp, rtol=1e-14)
    assert np.array_equal(net.kernel_fn(X, Z, get="nngp"), nngp)
    relu = stax.serial(stax.Dense(8, 1.5), stax.Relu(), stax.Dense(1, 0.9))
    assert relu._fc_form() == (1, "relu", {}, 1.5, 0.0, 0.9)
    mixed = stax.serial(
        stax.Dense(8, 1.5), stax.Relu(), stax.Dense(8, 1.2), stax.Relu(), stax.Dense(1)
    )
    assert mixed._fc_form() is None  # different hidden W_std: the general path


def test_module_is_ntk_parameterized_and_seeded():
    net = stax.serial(stax.Dense(7, 1.5, 0.3), stax.Gelu(), stax.Dense(2, 0.8))
    m = net.module(4, seed=3, dtype=torch.float64)
    x = torch.randn(5, 4, dtype=torch.float64)
    d1, act, d2 = m
    h = 1.5 / 2 * x @ d1.weight.T + 0.3 * d1.bias
    y = 0.8 / 7**0.5 * torch.nn.functional.gelu(h) @ d2.weight.T
    torch.testing.assert_close(m(x), y)
    assert d2.bias is None  # b_std = 0
    same = net.module(4, seed=3, dtype=torch.float64)
    assert all(torch.equal(p, q) for p, q in zip(m.parameters(), same.parameters()))
    other = net.module(4, seed=4)
    assert not torch.equal(other[0].weight.double(), m[0].weight)
    assert other[0].weight.dtype == torch.float32
    assert (
        repr(net) == "serial(Dense(7, W_std=1.5, b_std=0.3), gelu(), Dense(2, W_std=0.8, b_std=0))"
    )


SAMPLES = 24
DEPTH1 = [
    stax.Relu(),
    stax.LeakyRelu(0.2),
    stax.ABRelu(-0.4, 1.3),
    stax.Abs(),
    stax.Erf(1.3, 0.8, 0.2),
    stax.Gelu(),
    stax.Sign(),
    stax.Identity(),
]


@pytest.mark.parametrize("act", DEPTH1, ids=lambda a: repr(a))
def test_monte_carlo_depth1_matches_kernel_fn(act):
    """One hidden layer: the mean empirical NTK / NNGP equals the limit at any width, so the
    analytic kernel must lie within 5 standard errors (estimated from the samples)."""
    rng = np.random.default_rng(2)
    X = rng.standard_normal((4, 3))
    X[3] = X[0] + 0.3 * rng.standard_normal(3)  # a small angle
    net = stax.serial(stax.Dense(512, 1.4, 0.3), act, stax.Dense(2, 0.9, 0.3))
    mc = monte_carlo_kernels(
        lambda s: net.module(3, seed=s, dtype=torch.float64), X, n_samples=SAMPLES
    )
    ntk, nngp = net.kernel_fn(X, get=("ntk", "nngp"))
    for est, err, exact in ((mc.ntk, mc.ntk_stderr, ntk), (mc.nngp, mc.nngp_stderr, nngp)):
        assert np.all(np.abs(est - exact) <= 5 * err + 1e-12 * np.abs(exact).max())
        assert err.max() > 0


def test_monte_carlo_deep_mixed_network():
    """Depth 3 (Erf, Relu, Gelu), width 1024: within 5 standard errors plus the O(1 / width)
    finite-width bias, bounded by 2 / width of the kernel's scale."""
    rng = np.random.default_rng(3)
    X = rng.standard_normal((3, 4))
    w = 1024
    net = stax.serial(
        stax.Dense(w, 1.3, 0.2), stax.Erf(), stax.Dense(w, 1.5, 0.1), stax.Relu(),
        stax.Dense(w, 1.2, 0.0), stax.Gelu(), stax.Dense(1, 1.0, 0.1),
    )  # fmt: skip
    mc = monte_carlo_kernels(lambda s: net.module(4, seed=s), X, n_samples=8, get="nngp")
    assert mc.ntk is None and mc.ntk_stderr is None
    exact = net.kernel_fn(X, get="nngp")
    bias = 2.0 / w * np.abs(exact).max()
    assert np.all(np.abs(mc.nngp - exact) <= 5 * mc.nngp_stderr + bias)


@pytest.mark.parametrize(
    "make,message",
    [
        (lambda: stax.Dense(0), "out_dim must be >= 1, got 0"),
        (lambda: stax.Dense(3, W_std=-1.0), "W_std must be > 0, got -1.0"),
        (lambda: stax.Erf(b=float("inf")), "b must be a finite number, got inf"),
        (lambda: stax.serial(stax.Relu(), 3), "serial takes stax layers, got int"),
        (lambda: stax.serial(), "serial needs at least one layer"),
        (
            lambda: stax.serial(stax.Relu(), stax.Dense(1)).kernel_fn(np.ones((2, 2))),
            "the first layer must be Dense: an activation needs Gaussian inputs",
        ),
        (
            lambda: stax.serial(stax.Dense(2), stax.Relu(), stax.Erf()).kernel_fn(np.ones((2, 2))),
            "each activation must follow a Dense layer (Gaussian inputs)",
        ),
        (
            lambda: stax.Dense(2).kernel_fn(np.ones((2, 2)), get="cov"),
            "get must be 'ntk', 'nngp' or a tuple of them, got 'cov'",
        ),
        (
            lambda: stax.Dense(2).kernel_fn(np.ones((2, 2)), chunk=3),
            "unexpected option(s) 'chunk' for kernel_fn",
        ),
        (lambda: stax.Dense(2).module(0), "in_dim must be >= 1, got 0"),
    ],
)
def test_bad_inputs(make, message):
    with pytest.raises(ValueError) as exc:
        make()
    assert str(exc.value) == message


def test_dense_only_and_sketch_option():
    rng = np.random.default_rng(4)
    X = rng.standard_normal((5, 6))
    ntk, nngp = stax.serial(stax.Dense(3, 2.0, 0.5), stax.Dense(1, 0.5, 0.1)).kernel_fn(
        X, get=("ntk", "nngp")
    )
    k1 = 4.0 * X @ X.T / 6 + 0.25
    np.testing.assert_allclose(nngp, 0.25 * k1 + 0.01, rtol=1e-14)
    np.testing.assert_allclose(ntk, 0.5 * k1 + 0.01, rtol=1e-14)
    from ntkdr.sketches import make_sketch

    S = make_sketch("gaussian", 6, 4, seed=1)
    net = stax.serial(stax.Dense(8, 1.2), stax.Gelu(), stax.Dense(1))
    np.testing.assert_allclose(net.kernel_fn(X, sketch=S), net.kernel_fn(S(X)), rtol=1e-14)
