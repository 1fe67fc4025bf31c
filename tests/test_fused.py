"""The numba backend of the ReLU kernels' elementwise pass against the torch passes (the reference)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ntkdr.kernels import fc_relu_kernels, fused, two_layer_ntk

numba = pytest.importorskip("numba")

# max |numba - torch| / max |K|: the two differ only by the atan2 (<= 1 ulp in float64, <= 3 in
# float32, against libm), amplified near theta = 0 by the deeper layers' square roots
TOL = {torch.float64: 1e-12, torch.float32: 2e-5}
DTYPES = [torch.float32, torch.float64]


def _data(n: int, d: int, dtype: torch.dtype, seed: int = 0) -> torch.Tensor:
    X = torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    X[1] = X[0]  # theta = 0
    X[2] = -X[0]  # theta = pi
    X[3] = 0.0  # zero row
    X[4] = 3.0 * X[5]  # parallel, other norm
    return X.to(dtype)


def _both(monkeypatch, fn):
    monkeypatch.setenv("NTKDR_ELEMENTWISE", "torch")
    ref = fn()
    monkeypatch.setenv("NTKDR_ELEMENTWISE", "numba")
    return ref, fn()


def _close(a, b, dtype):
    a, b = torch.as_tensor(a), torch.as_tensor(b)
    scale = float(a.abs().max())
    assert float((a - b).abs().max()) <= TOL[dtype] * scale


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layers,kappa", [("first", 1.0), ("both", 1.0), ("both", 0.6)])
@pytest.mark.parametrize("general", [False, True])
def test_two_layer_matches_torch(monkeypatch, dtype, layers, kappa, general):
    X = _data(301, 17, dtype)
    Z = _data(97, 17, dtype, seed=1) if general else None
    ref, got = _both(monkeypatch, lambda: two_layer_ntk(X, Z, layers, kappa=kappa, tile=64))
    assert got.dtype == ref.dtype and got.shape == ref.shape
    _close(ref, got, dtype)
    if not general:
        # equal / opposite rows: theta exactly 0 / pi on both paths, so the entries agree bitwise
        assert got[0, 1] == ref[0, 1] and got[0, 2] == ref[0, 2]
        if layers == "first":
            assert got[0, 2] == 0.0
        assert torch.equal(got, got.T)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("depth,b_std", [(1, 0.0), (2, 0.3), (3, 0.0), (3, 0.5)])
def test_fc_matches_torch(monkeypatch, dtype, depth, b_std):
    X = _data(257, 23, dtype)
    Z = _data(40, 23, dtype, seed=2)
    for z in (None, Z):
        ref, got = _both(
            monkeypatch, lambda z=z: fc_relu_kernels(X, z, depth=depth, b_std=b_std, tile=50)
        )
        for r, g in zip(ref, got):
            _close(r, g, dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_atan2_within_ulps_of_libm(dtype):
    rng = np.random.default_rng(0)
    n = 50_000
    s = np.abs(rng.standard_normal(n)) * 10.0 ** rng.uniform(-30, 30, n)
    g = rng.standard_normal(n) * 10.0 ** rng.uniform(-30, 30, n)
    s[:6] = [0.0, 0.0, 0.0, 1.0, 1.0, 2.0]
    g[:6] = [1.0, -1.0, 0.0, 0.0, -0.0, 2.0]
    S, G = s.astype(dtype), g.astype(dtype)
    got = fused.atan2_nonneg(S, G).astype(np.float64)
    ref = np.arctan2(S.astype(np.float64), G.astype(np.float64))
    ulps = np.abs(got - ref) / np.spacing(ref.astype(dtype)).astype(np.float64)
    assert ulps.max() <= (2.0 if dtype == np.float64 else 3.0)
    assert got[0] == 0.0 and got[2] == 0.0  # exactly, as the duplicate-row contract needs
    assert got[1] == np.float64(dtype(np.pi)) and got[3] == got[4] == np.float64(dtype(np.pi / 2))


def test_noncontiguous_out_falls_back(monkeypatch):
    X = _data(120, 9, torch.float64)
    monkeypatch.setenv("NTKDR_ELEMENTWISE", "numba")
    ref = two_layer_ntk(X)
    out = np.asfortranarray(np.zeros((120, 120)))  # rows not contiguous: the torch passes
    two_layer_ntk(X, out=out)
    _close(ref, torch.from_numpy(out), torch.float64)


def test_backend_choice(monkeypatch):
    monkeypatch.setenv("NTKDR_ELEMENTWISE", "torch")
    assert fused.backend() == "torch" and fused.describe() == "torch"
    monkeypatch.setenv("NTKDR_ELEMENTWISE", "auto")
    assert fused.backend("cpu") == "numba" and fused.describe().startswith("numba ")
    assert fused.backend("meta") == "torch"  # only CPU tensors go to numba
    monkeypatch.setenv("NTKDR_ELEMENTWISE", "fastest")
    with pytest.raises(ValueError, match=r"NTKDR_ELEMENTWISE must be one of auto, torch, numba"):
        fused.backend()
    monkeypatch.setenv("NTKDR_ELEMENTWISE", "numba")
    monkeypatch.setattr(fused, "available", lambda: False)
    with pytest.raises(ValueError, match="numba is not installed"):
        fused.backend()
    monkeypatch.setenv("NTKDR_ELEMENTWISE", "auto")
    assert fused.backend() == "torch"


def test_bad_angle_inputs():
    with pytest.raises(ValueError, match="one float dtype"):
        fused.atan2_nonneg(np.zeros(3), np.zeros(3, np.float32))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("train_a", [False, True])
def test_training_step_identical_to_torch(monkeypatch, dtype, train_a):
    """The fused pass (flips, int8 mask, relu) computes the same numbers as the torch passes:
    the losses, weights and exact flip counts of ``fit`` agree bit for bit."""
    from ntkdr.nets.models import TwoLayerReLU
    from ntkdr.sketches import make_sketch
    from ntkdr.training.loop import fit

    g = torch.Generator().manual_seed(3)
    X = torch.randn(150, 40, generator=g, dtype=dtype)
    y = torch.randn(150, generator=g, dtype=dtype).sign()
    runs = []
    for b in ("torch", "numba"):
        monkeypatch.setenv("NTKDR_ELEMENTWISE", b)
        net = TwoLayerReLU(40, 300, sketch=make_sketch("srht", 40, 16, seed=0), seed=1)
        net = net.to(dtype)
        net.a.requires_grad_(train_a)
        hist = fit(net, X, y, 6, lr=0.05, progress=False)
        runs.append((hist, net.W.detach().clone()))
    (h0, W0), (h1, W1) = runs
    assert h0.train_loss == h1.train_loss
    assert h0.pattern_flip_fraction == h1.pattern_flip_fraction
    assert any(f > 0 for f in h1.pattern_flip_fraction)  # the count is exercised
    assert torch.equal(W0, W1)


def test_relu_mask_flips_counts_exactly():
    rng = np.random.default_rng(0)
    P = torch.from_numpy(rng.standard_normal((33, 70)).astype(np.float32))
    P[0, :5] = torch.tensor([0.0, -0.0, float("nan"), 1.0, -1.0])
    S = torch.from_numpy(np.where(rng.standard_normal((33, 70)) > 0, 1, -1).astype(np.int8))
    ref_flips = int(((P >= 0) != (S < 0)).sum())
    ref_mask = (P > 0).to(torch.int8)
    ref_relu = P.clamp_min(0)
    mask = torch.empty_like(S)
    Q = P.clone()
    assert fused.relu_mask_flips(Q, mask, S) == ref_flips
    assert torch.equal(mask, ref_mask)
    assert torch.equal(Q.isnan(), ref_relu.isnan()) and bool(Q.isnan()[0, 2])
    assert torch.equal(torch.nan_to_num(Q), torch.nan_to_num(ref_relu))
    Q = P.clone()
    assert fused.relu_mask_flips(Q, None, None) == 0
    assert torch.equal(torch.nan_to_num(Q), torch.nan_to_num(ref_relu))


def test_threads_take_turns(monkeypatch):
    """Kernels called from several Python threads at once (numba's workqueue layer is not
    threadsafe: the calls are serialised) give the serial results."""
    from concurrent.futures import ThreadPoolExecutor

    monkeypatch.setenv("NTKDR_ELEMENTWISE", "numba")
    Xs = [_data(200, 11, torch.float64, seed=s) for s in range(6)]
    serial = [two_layer_ntk(X, layers="both") for X in Xs]
    with ThreadPoolExecutor(4) as pool:
        threaded = list(pool.map(lambda X: two_layer_ntk(X, layers="both"), Xs))
    assert all(
        torch.equal(torch.as_tensor(a), torch.as_tensor(b)) for a, b in zip(serial, threaded)
    )
