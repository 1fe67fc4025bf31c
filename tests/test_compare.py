"""compare: the closed-form deep NTK against torch.func, method choice (closed / jacobian /
projected), the multi-output trace convention, the reported quantities against direct
computations, and argument checks."""

import math

import pytest
import torch
from torch import nn

from ntkdr import compare, factorize
from ntkdr.nets import DeepReLU, TwoLayerReLU
from ntkdr.nets.deep_ntk import deep_relu_ntk
from ntkdr.nets.empirical import empirical_ntk as ntk
from ntkdr.studies import empirical_kernel
from ntkdr.theory import generalization_bound, lambda_min

F64 = torch.float64


def data(n=10, d=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d, generator=g, dtype=F64)
    y = torch.where(torch.randn(n, generator=g) > 0, 1.0, -1.0).to(F64)
    return X / X.norm(dim=1, keepdim=True), y


@pytest.mark.parametrize("b_std, renormalize", [(0.0, False), (0.3, True)])
def test_deep_closed_form_matches_torch_func(b_std, renormalize):
    X, _ = data()
    net = DeepReLU(12, 24, depth=3, b_std=b_std, seed=1, dtype=F64)
    for model in (net, factorize(net, 5, layers=["layers.0", "layers.2"], renormalize=False)):
        torch.testing.assert_close(deep_relu_ntk(model, X), ntk(model, X, method="jacobian"))
    first = factorize(net, 5, layers=["layers.0"], renormalize=renormalize)
    torch.testing.assert_close(deep_relu_ntk(first, X), ntk(first, X, method="jacobian"))
    net.layers[1].weight.requires_grad_(False)  # frozen parameters do not contribute
    torch.testing.assert_close(deep_relu_ntk(net, X), ntk(net, X, method="jacobian"))


def test_method_choice_and_trace_convention():
    X, _ = data()
    assert empirical_kernel(TwoLayerReLU(12, 32, dtype=F64), X)[1] == "closed"
    assert empirical_kernel(DeepReLU(12, 16, depth=2, dtype=F64), X)[1] == "closed"
    mlp = nn.Sequential(nn.Linear(12, 20), nn.ReLU(), nn.Linear(20, 3)).double()
    K, method, err = empirical_kernel(mlp, X)
    assert method == "jacobian" and err is None
    full = ntk(mlp, X, method="jacobian")  # (n, n, 3, 3)
    torch.testing.assert_close(K, torch.einsum("ijaa->ij", full) / 3)
    Kp, method, err = empirical_kernel(mlp, X, max_memory=2000, k_proj=512)
    assert method == "projected" and 0 < err < 0.5
    assert float((Kp - K).norm() / K.norm()) < 4 * err


def test_quantities_against_direct_computation():
    X, y = data(12, 12)
    a = DeepReLU(12, 64, depth=2, seed=0, dtype=F64)
    b = factorize(a, 6, layers=["layers.0"])
    c = compare(a, b, X, y)
    Ka, Kb = deep_relu_ntk(a, X), deep_relu_ntk(b, X)
    assert math.isclose(c.lambda_min_a, lambda_min(Ka), rel_tol=1e-9)
    assert math.isclose(c.lambda_min_ratio, lambda_min(Kb) / lambda_min(Ka), rel_tol=1e-9)
    ratio = generalization_bound(Kb, y).value / generalization_bound(Ka, y).value
    assert math.isclose(c.bound_ratio, ratio, rel_tol=1e-9)
    rel = float((Kb - Ka).norm() / Ka.norm())
    assert math.isclose(c.relative_frobenius, rel, rel_tol=1e-9)
    assert math.isclose(c.alignment, float((Ka * Kb).sum() / Ka.norm() / Kb.norm()), rel_tol=1e-9)
    d = c.as_dict()
    for key in ("lambda_min_a", "lambda_min_b", "lambda_min_ratio", "bound_ratio", "params_a"):
        assert key in d
    assert d["params_a"] > d["params_b"] and d["seconds_forward_a"] > 0
    assert "trace_axes" in d["trace_convention"] and "kernel_a" not in d


def test_identical_models_and_no_labels():
    X, _ = data()
    net = TwoLayerReLU(12, 40, seed=2, dtype=F64)
    c = compare(net, net, X)
    assert c.lambda_min_ratio == pytest.approx(1.0) and c.relative_frobenius == 0.0
    assert c.alignment == pytest.approx(1.0)
    assert "bound_ratio" not in c.as_dict() and c.bound_ratio is None


def test_mixed_dtypes_and_bad_arguments():
    X, y = data()
    a = nn.Sequential(nn.Linear(12, 8), nn.ReLU(), nn.Linear(8, 1))  # float32
    b = factorize(a, 4).double()
    c = compare(a, b, X.numpy(), y.numpy())
    assert c.relative_frobenius > 0 and math.isfinite(c.bound_ratio)
    with pytest.raises(ValueError, match="model_a must be a torch.nn.Module"):
        compare("a", b, X)
    with pytest.raises(ValueError, match="different numbers of samples"):
        compare(a, b, X, y[:3])
    with pytest.raises(ValueError, match="unknown method"):
        compare(a, b, X, method="magic")
    with pytest.raises(ValueError, match="deep_relu_ntk needs a DeepReLU"):
        deep_relu_ntk(a, X)
