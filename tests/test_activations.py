"""Tests of ntkdr.activations.fc_kernels: every activation against neural-tangents
(tests/data/nt_activations_reference.npz, made by make_nt_activations_reference.py), the
ReLU case against fc_relu_kernels, tiling, dtypes, the sketch option and bad inputs."""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest
import torch

from ntkdr.kernels import engine, fc_relu_kernels
from ntkdr.kernels.activations import ACTIVATIONS, fc_kernels
from ntkdr.sketches import make_sketch

DATA = os.path.join(os.path.dirname(__file__), "data", "nt_activations_reference.npz")
REF = np.load(DATA)
SPECS = json.loads(str(REF["act_specs"]))
# activations whose kernels depend on the angle through theta itself (not smoothly through
# cos theta): there any GEMM-based evaluation (neural-tangents' too) is sqrt(eps)-accurate
# on (nearly) parallel pairs
ANGULAR = {"relu", "leaky_relu", "abrelu", "abs", "sign"}
# one example configuration per activation, for the cheaper tests
EXAMPLES = [
    ("relu", {}),
    ("leaky_relu", {"alpha": 0.2}),
    ("abrelu", {"a": 0.5, "b": -1.2}),
    ("abs", {}),
    ("erf", {"a": 1.5, "b": 0.7, "c": 0.2}),
    ("gelu", {}),
    ("sign", {}),
    ("identity", {}),
]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny matrices: one thread avoids OpenMP waits on a shared machine (restored after)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _ill_conditioned(A, B, tol=1e-3):
    """Pairs whose input |sin theta| < tol (angles only sqrt(eps)-accurate from a GEMM)."""
    G = A @ B.T
    P = np.outer((A * A).sum(1), (B * B).sum(1))
    return np.sqrt(np.maximum(P - G * G, 0)) < tol * np.sqrt(P) + 1e-300


def test_reference_covers_every_activation():
    assert {name for name, _ in SPECS} == set(ACTIVATIONS)
    assert set(REF["fc_params"][:, 1].astype(int)) == {1, 2, 3, 4}


def test_matches_neural_tangents():
    """Float64 round-off against neural-tangents; on (nearly) parallel pairs of the angle-based
    activations, the sqrt(eps) limit of any GEMM-based evaluation against 50-digit values."""
    X, Z = REF["X"], REF["Z"]
    lim = 4 * math.sqrt(np.finfo(np.float64).eps)
    for key, B in (("xz", Z), ("xx", None)):
        bad = _ill_conditioned(X, X if B is None else B)
        assert bad.any() and (~bad).any()
        for i, (ai, depth, w, b, wo) in enumerate(REF["fc_params"]):
            name, params = SPECS[int(ai)]
            ntk, nngp = fc_kernels(X, B, int(depth), name, w, b, wo, **params)
            for got, k in ((ntk, "ntk"), (nngp, "nngp")):
                ref = REF[f"fc_{k}_{key}"][i]
                scale = max(np.abs(ref).max(), 1e-300)
                ctx = str((name, params, depth, w, b, wo, key, k))
                if name not in ANGULAR:
                    np.testing.assert_allclose(
                        got, ref, rtol=1e-11, atol=1e-13 * scale, err_msg=ctx
                    )
                    continue
                np.testing.assert_allclose(
                    got[~bad], ref[~bad], rtol=1e-11, atol=1e-13 * scale, err_msg=ctx
                )
                exact = REF[f"fc_{k}_{key}_mp"][i]
                if name == "sign":
                    # each sign layer maps an angle error e to about sqrt(e): 1 - cos theta of
                    # the next layer is linear in theta (neural-tangents' error is larger here)
                    tol = lim ** (0.5 ** (depth - 1))
                elif k == "nngp":
                    tol = 1e-13  # insensitive to the angle's rounding (zero slope at theta = 0)
                else:
                    tol = lim
                assert np.abs(got - exact).max() <= tol * scale, ctx


def test_relu_is_fc_relu_kernels_bit_for_bit():
    X, Z = REF["X"], REF["Z"]
    for B in (Z, None):
        for depth, w, b, wo in ((1, 2**0.5, 0.0, 1.0), (3, 1.2, 0.4, 0.7)):
            got = fc_kernels(X, B, depth, "relu", w, b, wo)
            ref = fc_relu_kernels(X, B, depth, w, b, wo)
            assert all(np.array_equal(g, r) for g, r in zip(got, ref))
    # leaky_relu with slope 0 is ReLU through the general plan: equal to round-off
    got = fc_kernels(X, Z, 2, "leaky_relu", 1.3, 0.2, negative_slope=0.0)
    ref = fc_relu_kernels(X, Z, 2, 1.3, 0.2)
    for g, r in zip(got, ref):
        np.testing.assert_allclose(g, r, rtol=1e-14, atol=1e-15)


def _data(n=23, m=17, d=6, seed=5, dtype=np.float64):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, d)).astype(dtype), rng.standard_normal((m, d)).astype(dtype)


@pytest.mark.parametrize("name,params", EXAMPLES)
def test_tiled_equals_untiled(name, params, monkeypatch):
    X, Z = _data()
    refs = [fc_kernels(X, B, 3, name, 1.1, 0.2, 0.9, **params) for B in (Z, None)]
    monkeypatch.setattr(engine, "_CPU_BLOCK", 20)  # elementwise blocks of a few rows
    for tile in (1, 7):
        for B, ref in zip((Z, None), refs):
            got = fc_kernels(X, B, 3, name, 1.1, 0.2, 0.9, tile=tile, **params)
            for g, r in zip(got, ref):
                np.testing.assert_allclose(g, r, rtol=1e-14, atol=1e-14)
    # through budget-sized tile buffers (float32 into float64 outputs)
    o1, o2 = np.empty((23, 23)), np.empty((23, 23))
    res = fc_kernels(
        X.astype(np.float32), None, 3, name, 1.1, 0.2, 0.9, out=(o1, o2), max_memory=4000, **params
    )
    assert res[0] is o1 and res[1] is o2
    assert np.array_equal(o1, o1.T) and np.array_equal(o2, o2.T)
    for g, r in zip(res, refs[1]):
        np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-5 * np.abs(r).max())


# relative (to max |K|) tolerance of each dtype against the float64 reference on well
# conditioned pairs: a few hundred ulps through four layers
TOL = {np.float32: 3e-5, np.float64: 1e-13}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dtype_tolerances_against_neural_tangents(dtype):
    X, Z = REF["X"], REF["Z"]
    bad = _ill_conditioned(X, Z)
    for i, (ai, depth, w, b, wo) in enumerate(REF["fc_params"]):
        if depth != 4:
            continue
        name, params = SPECS[int(ai)]
        got = fc_kernels(X.astype(dtype), Z.astype(dtype), 4, name, w, b, wo, **params)
        for g, key in zip(got, ("ntk", "nngp")):
            assert g.dtype == dtype
            ref = REF[f"fc_{key}_xz"][i]
            err = np.abs(g.astype(np.float64) - ref)[~bad].max()
            assert err <= TOL[dtype] * max(np.abs(ref).max(), 1e-300), (name, key, err)


@pytest.mark.parametrize("kind", ["gaussian", "srht"])
def test_sketch_is_kernel_of_sketched_inputs(kind):
    X, Z = _data(d=16)
    S = make_sketch(kind, 16, 8, seed=3)
    for name, params in EXAMPLES[::2] + [("gelu", {})]:
        for B in (Z, None):
            got = fc_kernels(X, B, 2, name, 1.2, 0.1, sketch=S, **params)
            ref = fc_kernels(S(X), None if B is None else S(B), 2, name, 1.2, 0.1, **params)
            for g, r in zip(got, ref):
                np.testing.assert_allclose(g, r, rtol=1e-14, atol=1e-14)


@pytest.mark.parametrize("name,params", [e for e in EXAMPLES if e[0] in ANGULAR])
def test_equal_and_opposite_rows_exact(name, params):
    """Equal rows get theta = 0 exactly, so the kernel of duplicated rows is singular to round-off."""
    rng = np.random.default_rng(9)
    B = rng.standard_normal((3, 50))
    X = np.vstack([B, B[:1], -B[1:2], 3.0 * B[2:3]])
    for K in fc_kernels(X, None, 2, name, 1.3, 0.0, **params):
        if not np.abs(K).max():
            continue
        np.testing.assert_allclose(K[3], K[0], rtol=1e-14, atol=1e-14 * np.abs(K).max())


def test_torch_in_torch_out_and_promotion():
    X, Z = _data(n=5, m=4)
    ntk, nngp = fc_kernels(torch.from_numpy(X), torch.from_numpy(Z).float(), 2, "erf")
    assert isinstance(ntk, torch.Tensor) and ntk.dtype == torch.float64 and ntk.shape == (5, 4)
    n32, _ = fc_kernels(X, Z, 2, "gelu", dtype="float32")
    assert n32.dtype == np.float32


def test_max_memory_and_out_errors():
    X, _ = _data(n=100)
    with pytest.raises(ValueError, match=r"GiB.*out="):
        fc_kernels(X, activation="gelu", max_memory=100 * 100 * 8 * 1.5)
    with pytest.raises(ValueError, match="^out must be None or a pair"):
        fc_kernels(X, activation="erf", out=np.empty((100, 100)))


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (
            {"activation": "tanh"},
            "unknown activation 'tanh'; expected one of 'relu', 'leaky_relu', 'abrelu', "
            "'abs', 'erf', 'gelu', 'sign', 'identity'",
        ),
        (
            {"activation": "relu", "alpha": 0.1},
            "unexpected parameter(s) 'alpha' for activation 'relu'; allowed: none",
        ),
        (
            {"activation": "erf", "d": 0.1},
            "unexpected parameter(s) 'd' for activation 'erf'; allowed: 'a', 'b', 'c'",
        ),
        (
            {"activation": "leaky_relu", "alpha": 0.1, "negative_slope": 0.2},
            "give negative_slope or its alias alpha, not both",
        ),
        ({"activation": "abrelu", "a": 0.1}, "activation 'abrelu' needs parameter(s) 'b'"),
        ({"activation": "erf", "a": float("nan")}, "a must be a finite number, got nan"),
        (
            {"activation": "leaky_relu", "alpha": "x"},
            "negative_slope must be a finite number, got 'x'",
        ),
        ({"depth": 0}, "depth must be >= 1, got 0"),
        ({"w_std": 0.0, "activation": "gelu"}, "w_std must be > 0, got 0.0"),
        ({"b_std": -1.0, "activation": "sign"}, "b_std must be >= 0.0, got -1.0"),
        (
            {"sketch": np.eye(3)},
            "sketch must be a Sketch (ntkdr.sketches.make_sketch), got ndarray",
        ),
        ({"tile": 0, "activation": "abs"}, "tile must be >= 1, got 0"),
    ],
)
def test_bad_inputs(kwargs, message):
    X, _ = _data(n=5, m=4)
    with pytest.raises(ValueError) as exc:
        fc_kernels(X, **kwargs)
    assert str(exc.value) == message


def test_unrepresentable_kernel_raises():
    X, _ = _data(n=4, m=4)
    with pytest.raises(ValueError, match=r"^kernel values overflow the dtype range: q\(x\) or 4"):
        fc_kernels(X.astype(np.float32) * 1e10, activation="gelu")
    with pytest.raises(ValueError, match="^kernel values overflow the dtype range"):
        fc_kernels(X, depth=4, activation="abs", w_std=1e80)
    S = make_sketch("gaussian", 6, 3)
    with pytest.raises(ValueError, match="^X has 5 features but the sketch expects d = 6"):
        fc_kernels(X[:, :5], sketch=S, activation="erf")
