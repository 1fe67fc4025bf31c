"""Empirical NTK: closed form == torch.func to round-off; projected within its own stderr; wide
nets == analytic kernels within tolerances derived from the width / number of nets."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from ntkdr.empirical import ProjectedNTK, ntk, ntk_jacobian, ntk_projected
from ntkdr.kernels import fc_relu_kernels, two_layer_ntk
from ntkdr.models import DeepReLU, TwoLayerReLU
from ntkdr.sketches import make_sketch

F64 = torch.float64


def unit_rows(n, d, seed=0, dtype=F64):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d, generator=g, dtype=dtype)
    return X / X.norm(dim=1, keepdim=True)


CONFIGS = {
    "dense": dict(),
    "dense+output": dict(train_output=True),
    "gaussian": dict(sketch=("gaussian", False)),
    "srht+output": dict(sketch=("srht", False), train_output=True),
    "sparse-renorm": dict(sketch=("sparse", True)),
    "train_sketch": dict(sketch=("gaussian", False), train_sketch=True),
    "train_sketch-renorm+output": dict(
        sketch=("gaussian", True), train_sketch=True, train_output=True
    ),
}


def build(cfg, d=12, k=5, m=64, dtype=F64, kappa=1.3, seed=0):
    cfg = dict(cfg)
    if "sketch" in cfg:
        kind, renorm = cfg.pop("sketch")
        cfg["sketch"] = make_sketch(kind, d, k, seed=7, renormalize=renorm)
    return TwoLayerReLU(d, m, kappa=kappa, seed=seed, dtype=dtype, **cfg)


@pytest.mark.parametrize("name", list(CONFIGS))
@pytest.mark.parametrize("with_z", [False, True])
def test_closed_form_equals_torch_func_float64(name, with_z):
    net = build(CONFIGS[name])
    X = unit_rows(9, 12, seed=1) * 1.5
    Z = unit_rows(4, 12, seed=2) if with_z else None
    closed = ntk(net, X, Z, method="closed")
    generic = ntk(net, X, Z, method="jacobian")
    assert closed.shape == (9, 4 if with_z else 9)
    torch.testing.assert_close(closed, generic, rtol=1e-12, atol=1e-12)
    # row blocks give the same result
    torch.testing.assert_close(
        ntk(net, X, Z, method="closed", chunk=2), closed, rtol=1e-13, atol=1e-13
    )
    assert torch.equal(ntk(net, X, Z), closed)  # auto picks the closed form


@pytest.mark.parametrize("name", list(CONFIGS))
def test_closed_form_symmetric_tiles_equal_general_path(monkeypatch, name):
    """Z = None computes the upper triangle in row tiles and mirrors it: exactly symmetric and
    equal to the general (X, Z) path, and to torch.func, across several tiles."""
    import ntkdr.nets.empirical as E

    monkeypatch.setattr(E, "_SYM_ROWS", 3)
    net = build(CONFIGS[name])
    X = unit_rows(10, 12, seed=3)
    sym = ntk(net, X, method="closed")
    assert torch.equal(sym, sym.T)
    torch.testing.assert_close(sym, ntk(net, X, X.clone(), method="closed"), rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(sym, ntk(net, X, method="jacobian"), rtol=1e-12, atol=1e-12)


def test_closed_form_uses_a_squared_and_requires_grad():
    net = build(dict(train_output=True))
    with torch.no_grad():
        net.a.mul_(torch.linspace(0.2, 2.0, net.m, dtype=F64))  # |a_r| != 1, as after training
    X = unit_rows(7, 12)
    torch.testing.assert_close(
        ntk(net, X, method="closed"), ntk(net, X, method="jacobian"), rtol=1e-12, atol=1e-12
    )
    net.W.requires_grad_(False)  # only the output layer left
    P = torch.relu(X @ net.W.T)
    torch.testing.assert_close(ntk(net, X), P @ P.T / net.m, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(
        ntk(net, X, method="jacobian"), P @ P.T / net.m, rtol=1e-12, atol=1e-12
    )


@pytest.mark.parametrize("name", ["dense+output", "srht+output", "train_sketch-renorm+output"])
def test_closed_form_float32(name):
    net = build(CONFIGS[name], dtype=torch.float32)
    X = unit_rows(8, 12, dtype=torch.float32)
    closed = ntk(net, X)
    assert closed.dtype == torch.float32
    torch.testing.assert_close(closed, ntk(net, X, method="jacobian"), rtol=1e-5, atol=1e-5)


def test_generic_path_on_a_plain_module_against_per_example_autograd():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)).double()
    X, Z = torch.randn(5, 4, dtype=F64), torch.randn(3, 4, dtype=F64)
    params = [p for p in model.parameters()]

    def jac(x):  # (c, p) by plain autograd, one output at a time
        out = model(x[None])[0]
        rows = [
            torch.cat([g.flatten() for g in torch.autograd.grad(out[c], params, retain_graph=True)])
            for c in range(out.numel())
        ]
        return torch.stack(rows)

    JX = torch.stack([jac(x) for x in X])
    JZ = torch.stack([jac(z) for z in Z])
    want = torch.einsum("iap,jbp->ijab", JX, JZ)
    got = ntk(model, X, Z)
    assert got.shape == (5, 3, 3, 3)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    # tiny memory budget: one row per chunk and no Z cache, same result
    torch.testing.assert_close(
        ntk_jacobian(model, X, Z, max_memory=1), want, rtol=1e-12, atol=1e-12
    )
    torch.testing.assert_close(
        ntk_jacobian(model, X, chunk=2), torch.einsum("iap,jbp->ijab", JX, JX)
    )
    # frozen parameters do not count
    model[2].weight.requires_grad_(False)
    idx = sum(p.numel() for p in params[:2])
    keep = torch.ones(JX.shape[-1], dtype=torch.bool)
    keep[idx : idx + params[2].numel()] = False
    want2 = torch.einsum("iap,jbp->ijab", JX[..., keep], JZ[..., keep])
    torch.testing.assert_close(ntk(model, X, Z), want2, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", ["dense+output", "train_sketch-renorm+output"])
def test_projected_within_reported_stderr(name):
    # Each entry of (1/k') (J P)(J P)^T is a mean of k' iid terms (j_x . p)(j_z . p) with variance
    # Theta_xx Theta_zz + Theta_xz^2, so (estimate - exact) / stderr is ~ N(0, 1) for large k'
    # (the plugged-in stderr is off by ~1/sqrt(2 k') relative); 6 sigma over 28 entries.
    net = build(CONFIGS[name], m=32)
    X = unit_rows(7, 12, seed=3)
    exact = ntk(net, X, method="closed")
    res = ntk_projected(net, X, k_proj=400, seed=1)
    assert isinstance(res, ProjectedNTK) and res.k_proj == 400
    z = (res.kernel - exact) / res.stderr
    iu = torch.triu_indices(7, 7)
    assert z[iu[0], iu[1]].abs().max() < 6
    torch.testing.assert_close(res.kernel, res.kernel.T)
    # the reported relative Frobenius error is the right size (E||err||^2 = ||stderr||^2)
    actual = ((res.kernel - exact).norm() / exact.norm()).item()
    assert actual < 3 * res.relative_error
    # deterministic by seed, independent of the tangent block size; Z given
    again = ntk_projected(net, X, k_proj=400, seed=1, chunk=7)
    torch.testing.assert_close(again.kernel, res.kernel, rtol=1e-12, atol=1e-12)
    Z = unit_rows(3, 12, seed=4)
    resz = ntk_projected(net, X, Z, k_proj=400, seed=1)
    assert resz.kernel.shape == (7, 3)
    zz = (resz.kernel - ntk(net, X, Z)) / resz.stderr
    assert zz.abs().max() < 6
    assert torch.equal(ntk(net, X, method="projected", k_proj=400, seed=1), res.kernel)


def test_projected_multi_output_and_deep_model():
    net = DeepReLU(5, [16, 16], out_dim=2, b_std=0.2, dtype=F64)
    X = unit_rows(4, 5)
    exact = ntk(net, X)
    res = ntk_projected(net, X, k_proj=600, seed=0)
    assert res.kernel.shape == exact.shape == (4, 4, 2, 2)
    assert ((res.kernel - exact) / res.stderr).abs().max() < 6


def _two_layer_stderr(net, X):
    """Per-entry standard error of the closed-form kernel, from the m per-unit terms
    t_r(i, j) = (x_i . x_j) A_ir A_jr [+ R_ir R_jr]; E t^2 via GEMMs (A^2 = A, A R = R)."""
    F = net.features(X).detach()
    P = F @ net.W.detach().T
    A, R = (P >= 0).to(F.dtype), torch.relu(P)
    K = F @ F.T
    m = net.m
    mean = K * (A @ A.T) / m
    second = K**2 * (A @ A.T) / m
    if net.train_output:
        mean = mean + R @ R.T / m
        second = second + 2 * K * (R @ R.T) / m + (R**2) @ (R**2).T / m
    var = (second - mean**2).clamp_min(0)
    return (var / m).sqrt()


@pytest.mark.parametrize("dtype", [torch.float32, F64])
@pytest.mark.parametrize(
    "layers, kappa", [("first", 1.0), ("first", 0.5), ("both", 1.0), ("both", 0.6)]
)
def test_wide_two_layer_matches_analytic(layers, kappa, dtype):
    # Entries are means of m iid bounded per-unit terms: |emp - H| < 6 stderr, stderr from the sample.
    m, n, d = 2**16, 10, 6
    net = TwoLayerReLU(d, m, kappa=kappa, train_output=(layers == "both"), seed=11, dtype=dtype)
    X = unit_rows(n, d, seed=5, dtype=dtype) * torch.linspace(0.5, 2.0, n, dtype=dtype)[:, None]
    emp = ntk(net, X).double()
    H = torch.as_tensor(two_layer_ntk(X.double(), layers=layers, kappa=kappa))
    se = _two_layer_stderr(net, X.double() if dtype == F64 else X).double()
    slack = 1e-4 * H.abs().max() if dtype == torch.float32 else 0.0  # float32 accumulation
    assert ((emp - H).abs() <= 6 * se + slack).all()
    assert ((emp - H).abs().max() / H.abs().max()).item() < 0.02  # ~ 1/sqrt(m) scale


@pytest.mark.parametrize("kind, renorm", [("gaussian", False), ("srht", True)])
def test_wide_factorized_matches_analytic_on_sketched_data(kind, renorm):
    m, n, d, k = 2**15, 8, 32, 8
    sk = make_sketch(kind, d, k, seed=3, renormalize=renorm)
    net = TwoLayerReLU(d, m, sketch=sk, train_output=True, seed=2, dtype=F64)
    X = unit_rows(n, d, seed=6)
    emp = ntk(net, X)
    H = torch.as_tensor(two_layer_ntk(sk(X), layers="both"))
    se = _two_layer_stderr(net, X)
    assert ((emp - H).abs() <= 6 * se).all()


@pytest.mark.parametrize("depth, b_std", [(1, 0.0), (2, 0.3), (3, 0.1)])
def test_wide_deep_relu_matches_fc_relu_kernels(depth, b_std):
    # Mean over R independent nets: noise 6 sd / sqrt(R) (t-distributed with R - 1 = 19 dof,
    # P(|t| > 6) ~ 1e-5 per entry), plus the finite-width bias of E[Theta], exactly 0 for
    # depth 1 and O(depth / width) otherwise; measured |bias| * width / depth <= 0.2 (max over
    # entries, relative to max|Theta|) at widths 16 and 64 with 600-1500 nets, so 1x is generous.
    d, width, R, n = 5, 128, 20, 6
    X = unit_rows(n, d, seed=8) * torch.linspace(0.7, 1.5, n, dtype=F64)[:, None]
    Ks = torch.stack(
        [ntk(DeepReLU(d, width, depth, b_std=b_std, seed=s, dtype=F64), X) for s in range(R)]
    )
    theta, _ = fc_relu_kernels(X, depth=depth, b_std=b_std)
    theta = torch.as_tensor(theta)
    bias = 0.0 if depth == 1 else depth / width * theta.abs().max()
    err = (Ks.mean(0) - theta).abs()
    assert (err <= 6 * Ks.std(0) / math.sqrt(R) + bias).all()


def test_factorized_deep_relu_limit_is_the_kernel_of_scaled_sketched_data():
    # Layer 0 factorized with fan-in kept at d: its kernel is the dense one on sqrt(k / d) S X.
    d, k, width, R, n = 16, 6, 128, 20, 5
    X = unit_rows(n, d, seed=9)
    nets = [
        DeepReLU(d, width, 1, factorize={0: ("gaussian", k)}, seed=s, dtype=F64) for s in range(R)
    ]
    Ks = torch.stack([ntk(net, X) for net in nets])
    theta = torch.stack(
        [
            torch.as_tensor(fc_relu_kernels(math.sqrt(k / d) * (X @ net.layers[0].S.T), depth=1)[0])
            for net in nets
        ]
    )  # each net has its own sketch: compare with the mean of the per-net limits
    err = (Ks - theta).mean(0).abs()
    assert (err <= 6 * (Ks - theta).std(0) / math.sqrt(R)).all()


def test_numpy_in_numpy_out_and_validation():
    net = TwoLayerReLU(4, 16, dtype=F64)
    X = np.random.default_rng(0).standard_normal((3, 4))
    K = ntk(net, X)
    assert isinstance(K, np.ndarray) and K.shape == (3, 3) and K.dtype == np.float64
    res = ntk_projected(net, X, k_proj=8)
    assert isinstance(res.kernel, np.ndarray) and isinstance(res.stderr, np.ndarray)
    assert ntk(TwoLayerReLU(4, 16), X).dtype == np.float32
    with pytest.raises(ValueError, match=r"X has 3 features but the model expects d = 4"):
        ntk(net, X[:, :3])
    with pytest.raises(ValueError, match="same number of features"):
        ntk(net, X, X[:, :3])
    with pytest.raises(ValueError, match="unknown method"):
        ntk(net, X, method="exact")
    with pytest.raises(ValueError, match="closed form needs a TwoLayerReLU"):
        ntk(DeepReLU(4, 8), X, method="closed")
    with pytest.raises(ValueError, match="out_dim = 2"):
        ntk(TwoLayerReLU(4, 8, out_dim=2), X, method="closed")
    assert ntk(TwoLayerReLU(4, 8, out_dim=2, dtype=F64), X).shape == (3, 3, 2, 2)
    with pytest.raises(ValueError, match="must be a torch.nn.Module"):
        ntk(lambda x: x, X)
    frozen = TwoLayerReLU(4, 8)
    frozen.W.requires_grad_(False)
    with pytest.raises(ValueError, match="no parameters with requires_grad"):
        ntk(frozen, X, method="jacobian")
    with pytest.raises(ValueError, match="NaN or Inf"):
        ntk(net, np.full((2, 4), np.inf))
    with pytest.raises(ValueError, match="k_proj must be >= 1"):
        ntk_projected(net, X, k_proj=0)
