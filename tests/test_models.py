"""Models: parameterization, factorized == dense with W = U S, SketchedLinear == Linear, DeepReLU
output variance == NNGP diagonal (Monte Carlo, tolerance from the sample), validation."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from ntkdr.kernels import fc_relu_kernels
from ntkdr.models import DeepReLU, NTKLinear, SketchedLinear, TwoLayerReLU
from ntkdr.sketches import make_sketch

F64 = torch.float64


def unit_rows(n, d, seed=0, dtype=F64):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d, generator=g, dtype=dtype)
    return X / X.norm(dim=1, keepdim=True)


# ----------------------------------------------------------------------------- TwoLayerReLU
@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_dense_forward_is_the_formula(dtype):
    d, m = 7, 300
    net = TwoLayerReLU(d, m, kappa=0.7, seed=3, dtype=dtype)
    X = unit_rows(11, d, dtype=dtype)
    W, a = net.W.detach().double(), net.a.double()
    want = torch.relu(X.double() @ W.T) @ a / math.sqrt(m)
    got = net(X)
    assert got.shape == (11,) and got.dtype == dtype
    tol = 1e-12 if dtype == F64 else 1e-5
    torch.testing.assert_close(got.double(), want, rtol=tol, atol=tol)


def test_parameterization_init_scale_signs_and_buffers():
    d, m, kappa = 20, 5000, 1.7
    net = TwoLayerReLU(d, m, kappa=kappa, seed=1, dtype=F64)
    assert net.W.shape == (m, d) and net.a.shape == (m,)
    assert (net.m, net.d, net.d_in, net.kappa, net.S, net.k) == (m, d, d, kappa, None, None)
    # W entries iid N(0, kappa^2): the sample std of N entries has stderr ~ kappa / sqrt(2 N)
    N = m * d
    assert abs(net.W.std().item() - kappa) < 6 * kappa / math.sqrt(2 * N)
    assert abs(net.W.mean().item()) < 6 * kappa / math.sqrt(N)
    # a uniform on {-1, +1}: a buffer, not a parameter
    assert set(net.a.unique().tolist()) == {-1.0, 1.0}
    assert abs(net.a.mean().item()) < 6 / math.sqrt(m)
    assert [name for name, _ in net.named_parameters()] == ["W"]
    assert "a" in dict(net.named_buffers())
    both = TwoLayerReLU(d, m, train_output=True)
    assert sorted(name for name, _ in both.named_parameters()) == ["W", "a"]


def test_output_scale_is_one_over_sqrt_m():
    # E[f(x)^2] = E[relu(w . x)^2] = kappa^2 |x|^2 / 2 at any width (the a_r are independent signs);
    # Monte Carlo over seeds with the tolerance from the sample standard error.
    d, kappa = 5, 1.3
    x = unit_rows(1, d) * 2.0
    for m in (16, 1024):
        f2 = torch.stack(
            [TwoLayerReLU(d, m, kappa=kappa, seed=s, dtype=F64)(x)[0] ** 2 for s in range(400)]
        )
        want = kappa**2 * 4.0 / 2
        assert abs(f2.mean().item() - want) < 6 * f2.std().item() / math.sqrt(len(f2))


def test_determinism_by_seed():
    a = TwoLayerReLU(6, 50, seed=4)
    b = TwoLayerReLU(6, 50, seed=4)
    c = TwoLayerReLU(6, 50, seed=5)
    assert torch.equal(a.W, b.W) and torch.equal(a.a, b.a)
    assert not torch.equal(a.W, c.W)
    f1 = TwoLayerReLU(6, 50, sketch="gaussian", k=3, seed=4)
    f2 = TwoLayerReLU(6, 50, sketch="gaussian", k=3, seed=4)
    assert torch.equal(f1.W, f2.W) and torch.equal(f1.S, f2.S)
    # a user's sketch with the same raw seed does not share the weights' random stream
    d, k = 6, 3
    sk = make_sketch("gaussian", d, k, seed=4)
    net = TwoLayerReLU(d, 50, sketch=sk, seed=4, dtype=F64)
    first = net.W.detach().flatten()[: k * d]
    corr = torch.corrcoef(torch.stack([first, sk.matrix().flatten()]))[0, 1]
    assert abs(corr.item()) < 0.9


@pytest.mark.parametrize("kind", ["gaussian", "sparse", "srht"])
@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_factorized_equals_dense_with_materialised_weight(kind, dtype):
    d, k, m = 16, 6, 200
    sk = make_sketch(kind, d, k, seed=2)
    fac = TwoLayerReLU(d, m, sketch=sk, seed=0, dtype=dtype, train_output=True)
    assert (
        fac.factorized
        and fac.W.shape == (m, k)
        and fac.S.shape == (k, d)
        and fac.d_in == k == fac.k
    )
    assert fac.U is fac.W
    dense = TwoLayerReLU(d, m, dtype=dtype, train_output=True)
    with torch.no_grad():
        dense.W.copy_(fac.W @ fac.S)
        dense.a.copy_(fac.a)
    torch.testing.assert_close(fac.effective_weight(), dense.W)
    X = unit_rows(9, d, dtype=dtype)
    tol = 1e-11 if dtype == F64 else 1e-4
    torch.testing.assert_close(fac(X), dense(X), rtol=tol, atol=tol)
    # S is the sketch's matrix, features are the sketch's fast apply
    torch.testing.assert_close(fac.S, sk.matrix(dtype=dtype))
    torch.testing.assert_close(fac.features(X), X @ fac.S.T, rtol=tol, atol=tol)
    torch.testing.assert_close(fac.forward_features(fac.features(X)), fac(X))


@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_factorized_srht_forward_at_a_pruned_split(dtype):
    """The inference path (no_grad, the SRHT's pruned apply, d not a power of two, k dividing
    nothing) and the autograd path give f(x) = a . relu(U S x) / sqrt(m) with S = matrix()."""
    d, k, m = 1500, 97, 300
    sk = make_sketch("srht", d, k, seed=4)
    factors, a = sk.plan()
    assert (
        1 < a < sk.d_pad and factors
    )  # really the pruned split, not one GEMM / the full transform
    net = TwoLayerReLU(d, m, sketch=sk, seed=1, dtype=dtype)
    X = unit_rows(40, d, seed=3, dtype=dtype)
    S, W, av = (t.detach().double() for t in (net.S, net.W, net.a))
    want = torch.relu(X.double() @ S.T @ W.T) @ av / math.sqrt(m)
    tol = 1e-10 if dtype == F64 else 2e-5
    with torch.no_grad():
        got = net(X)
    assert got.dtype == dtype and got.shape == (40,)
    torch.testing.assert_close(got.double(), want, rtol=tol, atol=tol)
    Xg = X.clone().requires_grad_(True)
    out = net(Xg)
    torch.testing.assert_close(out.detach().double(), want, rtol=tol, atol=tol)
    out.sum().backward()
    mask = (X.double() @ S.T @ W.T > 0).double()
    want_grad = ((mask * av / math.sqrt(m)) @ W) @ S
    torch.testing.assert_close(Xg.grad.double(), want_grad, rtol=10 * tol, atol=10 * tol)
    # a NaN in a tensor input is still reported by name (the sketch checks it through its output)
    X[7, 1234] = float("nan")
    with (
        torch.no_grad(),
        pytest.raises(ValueError, match=r"X contains NaN or Inf \(first at row 7, column 1234\)"),
    ):
        net(X)


def test_identity_sketch_is_the_dense_net():
    d, m = 8, 64
    dense = TwoLayerReLU(d, m, seed=9, dtype=F64)
    ident = TwoLayerReLU(d, m, sketch="identity", k=d, seed=9, dtype=F64)
    X = unit_rows(5, d)
    torch.testing.assert_close(ident(X), dense(X), rtol=1e-13, atol=1e-13)


def test_only_U_is_trained_when_factorized():
    d, k, m = 12, 4, 40
    net = TwoLayerReLU(d, m, sketch="gaussian", k=k, dtype=F64)
    assert [name for name, _ in net.named_parameters()] == ["W"]
    assert not net.S.requires_grad and "S" in dict(net.named_buffers())
    net(unit_rows(5, d)).sum().backward()
    assert net.W.grad is not None and net.W.grad.abs().sum() > 0
    assert net.S.grad is None
    both = TwoLayerReLU(d, m, sketch="gaussian", k=k, train_sketch=True, dtype=F64)
    assert sorted(name for name, _ in both.named_parameters()) == ["S", "W"]
    torch.testing.assert_close(both.S.detach(), net.S)  # same derived sketch seed
    both(unit_rows(5, d)).sum().backward()
    assert both.S.grad is not None and both.S.grad.abs().sum() > 0


def test_renormalize_is_honoured():
    d, k, m = 20, 5, 30
    X = unit_rows(6, d) * 3.0
    for train_sketch in (False, True):
        sk = make_sketch("gaussian", d, k, seed=1, renormalize=True)
        net = TwoLayerReLU(d, m, sketch=sk, train_sketch=train_sketch, dtype=F64)
        F = net.features(X)
        torch.testing.assert_close(F.norm(dim=1), torch.ones(6, dtype=F64))
        Y = X @ sk.matrix().T
        torch.testing.assert_close(F.detach(), Y / Y.norm(dim=1, keepdim=True))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("out_dim", [1, 3])
def test_no_grad_forward_in_column_blocks_equals_the_autograd_forward(monkeypatch, dtype, out_dim):
    """Without autograd the hidden layer is summed in column blocks; with it, formed whole."""
    import ntkdr.nets.models as M

    monkeypatch.setattr(M, "_BLOCK_BYTES", 1)  # the minimum: 64-neuron blocks
    net = TwoLayerReLU(10, 200, out_dim=out_dim, sketch=make_sketch("srht", 10, 6), dtype=dtype)
    X = torch.randn(7, 10, dtype=dtype, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        blocked = net(X)
    whole = net(X)
    assert whole.requires_grad and not blocked.requires_grad
    tol = 1e-6 if dtype == torch.float32 else 1e-13
    torch.testing.assert_close(blocked, whole.detach(), rtol=tol, atol=tol)
    H = torch.relu(net.features(X) @ net.W.T)  # the formula, independently
    ref = (H @ net.a) / math.sqrt(200)
    torch.testing.assert_close(blocked, ref.detach(), rtol=tol, atol=tol)


def test_multi_output_shapes():
    net = TwoLayerReLU(5, 30, out_dim=3, train_output=True)
    assert net.a.shape == (30, 3) and net(unit_rows(4, 5, dtype=torch.float32)).shape == (4, 3)
    assert TwoLayerReLU(5, 30)(unit_rows(4, 5, dtype=torch.float32)).shape == (4,)


def test_numpy_in_numpy_out_and_dtype_follows_model():
    net64 = TwoLayerReLU(4, 20, dtype=F64)
    X = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    out = net64(X)
    assert isinstance(out, np.ndarray) and out.dtype == np.float64 and out.shape == (3,)
    out_t = net64(torch.from_numpy(X))
    assert isinstance(out_t, torch.Tensor) and out_t.dtype == F64
    np.testing.assert_allclose(out, out_t.detach().numpy(), rtol=1e-12)
    net32 = TwoLayerReLU(4, 20, dtype="float32")
    assert net32(X).dtype == np.float32


@pytest.mark.parametrize(
    "kwargs, msg",
    [
        (dict(d=0, m=5), "d must be >= 1"),
        (dict(d=3, m=0), "m must be >= 1"),
        (dict(d=3, m=2.5), "m must be an integer"),
        (dict(d=3, m=5, kappa=0.0), "kappa must be > 0"),
        (dict(d=3, m=5, kappa=float("nan")), "kappa must be a finite number"),
        (dict(d=3, m=5, train_sketch=True), "train_sketch=True needs a sketch"),
        (dict(d=3, m=5, sketch="gaussian"), "needs the target dimension k"),
        (dict(d=3, m=5, sketch=object()), "sketch must be None"),
        (dict(d=3, m=5, out_dim=0), "out_dim must be >= 1"),
        (dict(d=3, m=5, dtype=torch.float16), "dtype must be float32 or float64"),
    ],
)
def test_two_layer_validation(kwargs, msg):
    with pytest.raises(ValueError, match=msg):
        TwoLayerReLU(**kwargs)


def test_sketch_dimension_mismatch_and_input_validation():
    with pytest.raises(ValueError, match=r"sketch maps d = 10 features but the layer has d = 8"):
        TwoLayerReLU(8, 5, sketch=make_sketch("gaussian", 10, 3))
    with pytest.raises(ValueError, match="k = 4 disagrees"):
        TwoLayerReLU(10, 5, sketch=make_sketch("gaussian", 10, 3), k=4)
    net = TwoLayerReLU(4, 5)
    with pytest.raises(ValueError, match=r"X has 3 features but the model expects d = 4"):
        net(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="must be 2-D"):
        net(torch.zeros(4))
    with pytest.raises(ValueError, match="NaN or Inf"):
        net(np.full((2, 4), np.nan))


# ----------------------------------------------------------------------------- SketchedLinear
@pytest.mark.parametrize("kind", ["gaussian", "srht"])
def test_sketched_linear_equals_linear_with_W_equal_U_S(kind):
    d, m, k = 32, 10, 8
    layer = SketchedLinear(d, m, k, sketch=kind, seed=3, dtype=F64)
    assert layer.U.shape == (m, k) and layer.S.shape == (k, d) and not layer.S.requires_grad
    assert sorted(n for n, _ in layer.named_parameters()) == ["U", "bias"]
    lin = nn.Linear(d, m, dtype=F64)
    with torch.no_grad():
        lin.weight.copy_(layer.U @ layer.S)
        lin.bias.copy_(layer.bias)
    x = torch.randn(2, 3, d, dtype=F64)  # leading batch dims like nn.Linear
    torch.testing.assert_close(layer(x), lin(x), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(layer.weight, lin.weight)
    # standard init matches nn.Linear(d, m): uniform on +-1/sqrt(d)
    assert layer.U.abs().max() <= 1 / math.sqrt(d) and layer.bias.abs().max() <= 1 / math.sqrt(d)


def test_sketched_linear_ntk_parameterization_and_from_linear():
    d, m, k = 16, 7, 16
    layer = SketchedLinear(
        d, m, k, sketch="gaussian", parameterization="ntk", w_std=1.5, b_std=0.2, dtype=F64
    )
    x = torch.randn(5, d, dtype=F64)
    want = 1.5 / math.sqrt(d) * (x @ layer.S.T) @ layer.U.T + 0.2 * layer.bias
    torch.testing.assert_close(layer(x), want.detach())
    # from_linear: U S is the projection of W onto the row space of S (exact when k = d)
    lin = nn.Linear(d, m, dtype=F64)
    fac = SketchedLinear.from_linear(lin, k, sketch="gaussian")
    torch.testing.assert_close(fac(x), lin(x), rtol=1e-9, atol=1e-9)
    fac4 = SketchedLinear.from_linear(lin, 4, sketch="gaussian")
    S = fac4.S
    proj = lin.weight.detach() @ torch.linalg.pinv(S) @ S
    torch.testing.assert_close(fac4.weight.detach(), proj, rtol=1e-9, atol=1e-9)
    with pytest.raises(ValueError, match="unknown parameterization"):
        SketchedLinear(d, m, 4, parameterization="mup")
    with pytest.raises(ValueError, match="needs an nn.Linear"):
        SketchedLinear.from_linear(nn.Conv1d(1, 1, 1), 4)
    with pytest.raises(ValueError, match="input has 3 features"):
        layer(torch.zeros(2, 3, dtype=F64))


# ----------------------------------------------------------------------------- DeepReLU
def test_deep_relu_structure_and_forward_formula():
    d = 5
    net = DeepReLU(d, [7, 9], w_std=1.2, b_std=0.3, w_out=0.8, out_dim=2, seed=1, dtype=F64)
    assert net.widths == (7, 9) and net.depth == 2 and len(net.layers) == 3
    assert DeepReLU(d, 7, depth=3).widths == (7, 7, 7)
    X = unit_rows(4, d)
    h = X
    for i, L in enumerate(net.layers):
        w = 0.8 if i == 2 else 1.2
        h = w / math.sqrt(L.weight.shape[1]) * h @ L.weight.T + 0.3 * L.bias
        if i < 2:
            h = torch.relu(h)
    torch.testing.assert_close(net(X), h.detach())
    assert net(X).shape == (4, 2) and DeepReLU(d, 7)(X.float()).shape == (4,)
    assert torch.equal(
        DeepReLU(d, 7, seed=2).layers[0].weight, DeepReLU(d, 7, seed=2).layers[0].weight
    )
    fac = DeepReLU(d, [16, 16], factorize={1: ("gaussian", 4)}, seed=1)
    assert isinstance(fac.layers[1], SketchedLinear) and isinstance(fac.layers[0], NTKLinear)
    assert fac.layers[1].k == 4 and fac(X.float()).shape == (4,)


@pytest.mark.parametrize("depth, b_std", [(1, 0.0), (2, 0.3), (3, 0.5)])
def test_deep_relu_output_variance_matches_nngp_diagonal(depth, b_std):
    # For ReLU the diagonal recursion is linear (E relu(h)^2 = q / 2 for h ~ N(0, q)), so
    # E[f(x)^2] equals the NNGP diagonal exactly at every width; Monte Carlo over R nets with
    # 4 outputs each (averaged per net, so the R samples are iid), tolerance 6 sample stderrs.
    d, width, R = 6, 32, 600
    X = unit_rows(3, d) * torch.tensor([[1.0], [2.0], [0.5]], dtype=F64)
    f2 = torch.stack(
        [
            (
                DeepReLU(d, width, depth, b_std=b_std, w_out=1.3, out_dim=4, seed=s, dtype=F64)(X)
                ** 2
            ).mean(1)
            for s in range(R)
        ]
    )
    _, nngp = fc_relu_kernels(X, depth=depth, b_std=b_std, w_out=1.3)
    want = torch.as_tensor(nngp).diagonal()
    err = (f2.mean(0) - want).abs()
    assert (err < 6 * f2.std(0) / math.sqrt(R)).all(), (f2.mean(0), want)


def test_deep_relu_validation():
    with pytest.raises(ValueError, match="widths is empty"):
        DeepReLU(3, [])
    with pytest.raises(ValueError, match="width must be >= 1"):
        DeepReLU(3, 0)
    with pytest.raises(ValueError, match="depth is only used"):
        DeepReLU(3, [4, 4], depth=2)
    with pytest.raises(ValueError, match="factorize keys"):
        DeepReLU(3, 4, factorize={5: ("gaussian", 2)})
    with pytest.raises(ValueError, match=r"X has 2 features but the model expects d = 3"):
        DeepReLU(3, 4)(torch.zeros(1, 2))
