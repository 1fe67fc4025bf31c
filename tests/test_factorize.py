"""factorize: selection rules, U S x + b, the copy, init modes, errors, transformer layers really
running the factorized layers (train and eval / no_grad), torch.func / torch.compile / state_dict
/ dtypes, the summary's costs; the analytic deep NTK of a factorized first layer against wide
DeepReLU networks built by factorize (Monte Carlo, tolerance from the sample)."""

import copy
import io
import math

import pytest
import torch
from torch import nn

from ntkdr import factorization_summary, factorize, factorized_fc_kernels
from ntkdr.kernels import fc_relu_kernels
from ntkdr.nets import DeepReLU, SketchedLinear
from ntkdr.nets.deep_ntk import deep_relu_ntk
from ntkdr.nets.empirical import empirical_ntk as ntk

F64 = torch.float64


class MyLinear(nn.Linear):
    """A user subclass of nn.Linear."""


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.inner = nn.Sequential(nn.Linear(24, 16), nn.ReLU(), MyLinear(16, 8))

    def forward(self, x):
        return self.inner(x)


def mlp(dtype=torch.float32):
    torch.manual_seed(0)
    return nn.Sequential(Block(), nn.ReLU(), nn.Linear(8, 3)).to(dtype)


def encoder():
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True)
    return nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)


# ----------------------------------------------------------------------------- structure
def test_copy_replaces_nested_and_subclass_layers_leaving_the_input_untouched():
    model = mlp()
    before = copy.deepcopy(model.state_dict())
    f = factorize(model, 6)
    assert f is not model
    assert type(model[0].inner[2]) is MyLinear and type(f[0].inner[2]) is SketchedLinear
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key])
    assert isinstance(f[0].inner[0], SketchedLinear) and isinstance(f[0].inner[2], SketchedLinear)
    assert isinstance(f[2], SketchedLinear)  # 8 > 6
    assert f[0].inner[0].k == 6 and f[0].inner[0].in_features == 24


def test_layer_computes_U_S_x_plus_b():
    f = factorize(mlp(F64), 5, kind="srht", seed=3)
    layer = f[0].inner[0]
    x = torch.randn(4, 24, dtype=F64)
    want = (x @ layer.S.T) @ layer.U.T + layer.bias
    torch.testing.assert_close(layer(x), want)
    assert not isinstance(layer.S, nn.Parameter)  # S fixed (a buffer)
    assert {n for n, _ in layer.named_parameters()} == {"U", "bias"}


def test_layers_none_skips_small_layers_and_weight_readers():
    f = factorize(encoder(), 16)
    s = factorization_summary(f)
    replaced = {r.name for r in s.replaced}
    skipped = {r.name: r.reason for r in s.skipped}
    # linear1 (16 -> 32) has in_features == k: not > k, skipped; linear2 (32 -> 16) replaced
    assert replaced == {"layers.0.linear2", "layers.1.linear2"}
    assert "reads out_proj.weight" in skipped["layers.0.self_attn.out_proj"]
    assert "<= k" in skipped["layers.1.linear1"]
    assert isinstance(f.layers[0].self_attn.out_proj, nn.Linear)


def test_names_predicate_and_fraction():
    f = factorize(mlp(), 4, layers=["0.inner.2"])
    assert isinstance(f[0].inner[2], SketchedLinear) and isinstance(f[0].inner[0], nn.Linear)
    g = factorize(mlp(), 4, layers=lambda name, mod: mod.out_features == 3)
    assert [r.name for r in factorization_summary(g).replaced] == ["2"]
    h = factorize(mlp(), 0.5)
    assert [r.k for r in factorization_summary(h).replaced] == [12, 8, 4]
    assert isinstance(factorize(mlp(), 1.0, layers=["2"])[2], SketchedLinear)


def test_square_sketch_with_project_reproduces_the_layer():
    model = mlp(F64)
    f = factorize(model, 1.0, layers=["0.inner.0", "0.inner.2", "2"], init="project")
    x = torch.randn(7, 24, dtype=F64)
    torch.testing.assert_close(f(x), model(x), rtol=1e-9, atol=1e-9)


def test_project_keeps_a_trained_function_better_than_fresh():
    torch.manual_seed(1)
    lin = nn.Linear(64, 10).double()
    with torch.no_grad():  # a trained-looking, low-rank-dominated weight
        lin.weight.copy_(torch.randn(10, 3, dtype=F64) @ torch.randn(3, 64, dtype=F64) / 8)
    x = torch.randn(200, 64, dtype=F64)
    proj = factorize(nn.Sequential(lin), 48, init="project")
    fresh = factorize(nn.Sequential(lin), 48, init="fresh")
    err_p = (proj(x) - lin(x)).norm() / lin(x).norm()
    err_f = (fresh(x) - lin(x)).norm() / lin(x).norm()
    # least squares keeps the part of W in S's row space: relative error ~ sqrt(1 - k / d)
    assert abs(err_p - math.sqrt(1 - 48 / 64)) < 0.15 and err_f > 0.9
    torch.testing.assert_close(proj[0].bias, lin.bias)


def test_fresh_init_draws_like_nn_linear():
    model = nn.Sequential(nn.Linear(400, 300))
    layer = factorize(model, 100)[0]
    bound = 1 / math.sqrt(400)
    U = layer.U.detach()
    assert U.abs().max() <= bound and U.abs().max() > 0.95 * bound
    assert abs(U.var().item() - bound**2 / 3) < 0.05 * bound**2 / 3


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"k": 100}, "no layer selected"),
        ({"k": 4, "layers": ["nope"]}, "no module named 'nope'"),
        ({"k": 4, "layers": ["1"]}, "ReLU, not a linear layer"),
        ({"k": 9, "layers": ["2"]}, "k = 9 > in_features = 8"),
        ({"k": 0}, "k must be >= 1"),
        ({"k": -3}, "k must be >= 1"),
        ({"k": 0.0}, r"fractional k must be in \(0, 1\]"),
        ({"k": 1.5}, r"fractional k must be in \(0, 1\]"),
        ({"k": float("nan")}, r"fractional k must be in \(0, 1\]"),
        ({"k": "4"}, "k must be an int"),
        ({"k": 4, "kind": "pca"}, "unknown sketch kind"),
        ({"k": 4, "init": "zeros"}, "unknown init"),
        ({"k": 4, "layers": lambda n, m: False}, "no layer selected"),
    ],
)
def test_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        factorize(mlp(), **kwargs)


def test_naming_a_weight_read_layer_is_an_error():
    with pytest.raises(ValueError, match="would never run"):
        factorize(encoder(), 8, layers=["layers.0.self_attn.out_proj"])
    with pytest.raises(ValueError, match="must be a torch.nn.Module"):
        factorize("model", 4)


def test_lazy_layers_are_skipped_or_refused():
    model = nn.Sequential(nn.LazyLinear(8), nn.ReLU(), nn.Linear(8, 2))
    f = factorize(model, 4, layers=lambda name, mod: True)
    assert factorization_summary(f).skipped[0].reason == "not initialised (lazy)"
    with pytest.raises(ValueError, match="not initialised yet"):
        factorize(model, 4, layers=["0"])


def test_shared_layer_replaced_once_and_still_shared_and_frozen_flags_kept():
    shared = nn.Linear(10, 10)
    shared.weight.requires_grad_(False)
    model = nn.Sequential(shared, nn.ReLU(), shared)
    f = factorize(model, 4)
    assert f[0] is f[2] and isinstance(f[0], SketchedLinear)
    assert not f[0].U.requires_grad and f[0].bias.requires_grad


# ----------------------------------------------------------------------------- it really runs
@pytest.fixture
def count_sketched(monkeypatch):
    """Count SketchedLinear.forward calls without hooks (hooks themselves disable torch's fused
    transformer path, which would make the check vacuous)."""
    calls = {"n": 0}
    original = SketchedLinear.forward

    def counting(self, x):
        calls["n"] += 1
        return original(self, x)

    monkeypatch.setattr(SketchedLinear, "forward", counting)
    return calls


def test_transformer_runs_factorized_layers_in_train_and_eval_no_grad(count_sketched):
    f = factorize(encoder(), 8)  # linear1 and linear2 of both layers
    assert len(factorization_summary(f).replaced) == 4
    x = torch.randn(3, 5, 16)
    f.train()
    f(x).sum().backward()
    assert count_sketched["n"] == 4
    f.eval()
    count_sketched["n"] = 0
    with torch.no_grad():
        y_eval = f(x)
    assert count_sketched["n"] == 4
    with torch.inference_mode():
        f(x)
    assert count_sketched["n"] == 8
    # control: with torch's fused path allowed again the factorized layers are not called, so
    # the counter would catch a silent dense U S
    bad = copy.deepcopy(f)
    for mod in bad.modules():
        if isinstance(mod, nn.TransformerEncoderLayer):
            mod.activation_relu_or_gelu = 1
    count_sketched["n"] = 0
    with torch.no_grad():
        y_fused = bad(x)
    assert count_sketched["n"] == 0
    torch.testing.assert_close(y_fused, y_eval, rtol=1e-4, atol=1e-4)


def test_unfactorized_transformer_keeps_its_fast_path_flags():
    enc = encoder()
    f = factorize(enc, 8, layers=["layers.0.linear2"])
    assert f.layers[0].activation_relu_or_gelu == 0 and f.layers[1].activation_relu_or_gelu == 1
    assert enc.layers[0].activation_relu_or_gelu == 1


# ----------------------------------------------------------------------------- torch features
def test_torch_func_jacobian_and_state_dict_roundtrip():
    model = mlp(F64)
    f = factorize(model, 5, seed=7)
    X = torch.randn(4, 24, dtype=F64)
    K = ntk(f, X, method="jacobian")
    assert K.shape == (4, 4, 3, 3) and torch.isfinite(K).all()
    buf = io.BytesIO()
    torch.save(f.state_dict(), buf)
    buf.seek(0)
    g = factorize(model, 5, seed=8)  # different S and U, then loaded
    g.load_state_dict(torch.load(buf))
    torch.testing.assert_close(g(X), f(X))
    buf = io.BytesIO()
    torch.save(f, buf)
    buf.seek(0)
    h = torch.load(buf, weights_only=False)
    torch.testing.assert_close(h(X), f(X))


def test_torch_compile_traces_the_factorized_model():
    f = factorize(mlp(), 5)
    X = torch.randn(6, 24)
    try:
        compiled = torch.compile(f, backend="eager")  # dynamo tracing; inductor: slow test
        out = compiled(X)
    except Exception as exc:  # pragma: no cover - depends on the platform
        pytest.skip(f"torch.compile unavailable here: {exc}")
    torch.testing.assert_close(out, f(X))


@pytest.mark.slow
def test_torch_compile_inductor():
    f = factorize(mlp(), 5)
    X = torch.randn(6, 24)
    try:
        out = torch.compile(f)(X)
    except Exception as exc:  # pragma: no cover
        pytest.skip(f"torch.compile (inductor) unavailable here: {exc}")
    torch.testing.assert_close(out, f(X), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_dtype_and_device_follow_the_layer(dtype):
    f = factorize(mlp(dtype), 5)
    for layer in factorization_summary(f).replaced:
        mod = f.get_submodule(layer.name)
        assert mod.U.dtype == dtype and mod.S.dtype == dtype
    assert f(torch.randn(2, 24, dtype=dtype)).dtype == dtype


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_model_stays_on_cuda():  # pragma: no cover - device-dependent
    f = factorize(mlp().cuda(), 5)
    assert f[2].U.is_cuda and f[2].S.is_cuda
    f(torch.randn(2, 24, device="cuda"))


def test_summary_costs():
    f = factorize(nn.Sequential(nn.Linear(100, 50), nn.ReLU(), nn.Linear(50, 10, bias=False)), 20)
    s = factorization_summary(f)
    a, b = s.replaced
    assert (a.params_before, a.params_after, a.fixed_after) == (5050, 1050, 2000)
    assert (a.macs_before, a.macs_after) == (5000, 20 * 100 + 20 * 50)
    assert (b.params_before, b.params_after, b.macs_after) == (500, 200, 20 * 50 + 20 * 10)
    d = s.as_dict()
    assert d["totals"]["params_before"] == 5550 and len(d["layers"]) == 2
    assert "100 -> 20" in str(s) and s.params_model == 1050 + 200
    assert factorization_summary(f.double()).replaced[0].k == 20  # read from the model


# ----------------------------------------------------------------------------- analytic kernel
def unit_rows(n, d, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d, generator=g, dtype=F64)
    return X / X.norm(dim=1, keepdim=True)


@pytest.mark.parametrize("renormalize, b_std", [(False, 0.0), (True, 0.2)])
def test_factorized_deep_kernel_matches_wide_networks_built_by_factorize(renormalize, b_std):
    """Empirical NTK of wide DeepReLU nets whose first layer is factorized, minus the analytic
    kernel of their own S: the mean over N draws is zero within 5 standard errors (estimated
    from the draws) plus an O(1/m) finite-width allowance, and each draw is within
    c / sqrt(m) relative -- and the kernel differs from the dense one by more than that."""
    d, k, m, depth, N = 16, 6, 1024, 2, 12
    X = unit_rows(5, d)
    diffs, rel = [], []
    for s in range(N):
        net = DeepReLU(d, m, depth=depth, b_std=b_std, seed=s, dtype=F64)
        f = factorize(net, k, layers=["layers.0"], seed=100 + s, renormalize=renormalize)
        A, _ = factorized_fc_kernels(X, f.layers[0], depth=depth, b_std=b_std)
        E = deep_relu_ntk(f, X)
        diffs.append(E - A)
        rel.append(float((E - A).norm() / A.norm()))
    D = torch.stack(diffs)
    mean, se = D.mean(0), D.std(0) / math.sqrt(N)
    scale = A.abs().max()
    assert (mean.abs() <= 5 * se + 4 * scale / m).all(), (mean / se).abs().max()
    assert max(rel) < 6 / math.sqrt(m)
    dense, _ = fc_relu_kernels(X, depth=depth, b_std=b_std)
    assert float((dense - A).norm() / A.norm()) > 2 * max(rel)


def test_factorized_kernel_checks_its_arguments():
    f = factorize(DeepReLU(8, 16, seed=0), 4, layers=["layers.0"])
    with pytest.raises(ValueError, match="w_std"):
        factorized_fc_kernels(torch.randn(3, 8), f.layers[0], w_std=1.0)
    with pytest.raises(ValueError, match="NTK parameterization"):
        factorized_fc_kernels(torch.randn(3, 8), factorize(mlp(), 4)[2])
