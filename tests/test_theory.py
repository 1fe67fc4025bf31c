"""Tests for ntkdr.theory: every fast path against an independent slow reference."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

from ntkdr.theory import (
    BoundResult,
    SingularKernelWarning,
    cost,
    eigh,
    generalization_bound,
    jl_min_dim,
    lambda_max,
    lambda_min,
    predicted_loss,
    predicted_trajectory,
    spectrum_summary,
    width_requirements,
)
from ntkdr.theory import bounds as theory

DTYPES = [np.float32, np.float64]


def h1_reference(X: np.ndarray) -> np.ndarray:
    """H1(x, z) = (x . z)(pi - theta) / (2 pi), straight from the formula (Du et al. 2019; float64)."""
    X = np.asarray(X, dtype=np.float64)
    G = X @ X.T
    nrm = np.linalg.norm(X, axis=1)
    cross = np.sqrt(np.maximum(np.outer(nrm**2, nrm**2) - G**2, 0.0))
    theta = np.arctan2(cross, G)
    return G * (np.pi - theta) / (2 * np.pi)


def unit_rows(n: int, d: int, seed: int = 0) -> np.ndarray:
    X = np.random.default_rng(seed).standard_normal((n, d))
    return X / np.linalg.norm(X, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def pd_gram() -> np.ndarray:
    return h1_reference(unit_rows(30, 10, seed=1))


# ---------------------------------------------------------------------------- spectra
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", ["numpy", "torch"])
def test_lambda_min_max_match_numpy(pd_gram, dtype, kind):
    H = pd_gram.astype(dtype)
    ref = np.linalg.eigvalsh(H.astype(np.float64))
    Hin = torch.from_numpy(H) if kind == "torch" else H
    lmin, lmax = lambda_min(Hin), lambda_max(Hin)
    assert isinstance(lmin, float) and isinstance(lmax, float)
    assert lmin == pytest.approx(ref[0], rel=1e-9, abs=1e-13)
    assert lmax == pytest.approx(ref[-1], rel=1e-12)


@pytest.mark.parametrize("dtype", DTYPES)
def test_lambda_min_large_matches_numpy(dtype):
    A = np.random.default_rng(3).standard_normal((400, 400))
    H = (A @ A.T / 400 + 0.1 * np.eye(400)).astype(dtype)
    ref = np.linalg.eigvalsh(H.astype(np.float64))
    assert lambda_min(H) == pytest.approx(ref[0], rel=1e-9)
    assert lambda_max(H) == pytest.approx(ref[-1], rel=1e-12)


@pytest.mark.parametrize("dtype", DTYPES)
def test_eigh_ascending_reconstructs_and_keeps_kind(pd_gram, dtype):
    H = pd_gram.astype(dtype)
    w, V = eigh(H)
    assert isinstance(w, np.ndarray) and w.dtype == dtype and V.dtype == dtype
    assert np.all(np.diff(w) >= 0)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose((V * w) @ V.T, H, atol=tol)
    np.testing.assert_allclose(w, np.linalg.eigvalsh(H.astype(np.float64)), atol=tol)
    wt, Vt = eigh(torch.from_numpy(H))
    assert isinstance(wt, torch.Tensor) and wt.dtype == torch.from_numpy(H).dtype
    np.testing.assert_allclose(wt.numpy(), w)


def test_lambda_min_warns_on_duplicate_inputs():
    X = unit_rows(12, 5)
    X[7] = X[2]
    H = h1_reference(X)
    with pytest.warns(SingularKernelWarning, match="parallel"):
        lmin = lambda_min(H)
    assert abs(lmin) < 1e-12
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        lambda_min(H, warn=False)


def test_spectrum_summary(pd_gram):
    s = spectrum_summary(pd_gram)
    ref = np.linalg.eigvalsh(pd_gram)
    np.testing.assert_allclose(s["eigenvalues"], ref, rtol=1e-10, atol=1e-13)
    assert s["condition_number"] == pytest.approx(ref[-1] / ref[0], rel=1e-8)
    assert s["stable_rank"] == pytest.approx(ref.sum() / ref[-1], rel=1e-10)
    p = ref / ref.sum()
    assert s["effective_rank"] == pytest.approx(np.exp(-(p * np.log(p)).sum()), rel=1e-10)
    assert s["is_pd"] and s["numerical_rank"] == 30
    D = np.diag([2.0, 1.0, 0.0])
    s0 = spectrum_summary(D)
    assert not s0["is_pd"] and s0["numerical_rank"] == 2 and s0["condition_number"] == math.inf


# ---------------------------------------------------------------------------- generalization bound
@pytest.mark.parametrize("dtype", DTYPES)
def test_generalization_bound_matches_explicit_solve(pd_gram, dtype):
    H = pd_gram.astype(dtype)
    y = np.sign(np.random.default_rng(2).standard_normal(30)).astype(dtype)
    H64, y64 = H.astype(np.float64), y.astype(np.float64)
    comp = float(y64 @ np.linalg.solve(H64, y64))
    lam0 = np.linalg.eigvalsh(H64)[0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = generalization_bound(H, y, delta=0.1)
    assert isinstance(res, BoundResult) and res.is_pd
    assert res.complexity == pytest.approx(comp, rel=1e-8)
    assert res.value == pytest.approx(math.sqrt(2 * comp / 30), rel=1e-8)
    assert res.extra == pytest.approx(math.sqrt(math.log(30 / (lam0 * 0.1)) / 30), rel=1e-8)
    assert res.total == pytest.approx(res.value + res.extra)
    assert res.lambda_min == pytest.approx(lam0, rel=1e-8)
    assert res.n == 30 and res.n_outputs == 1 and res.delta == 0.1
    assert "constants set to 1" in res.message
    # torch input gives the same numbers
    res_t = generalization_bound(torch.from_numpy(H), torch.from_numpy(y), delta=0.1)
    assert res_t.value == pytest.approx(res.value, rel=1e-12)
    assert set(res.as_dict()) >= {"value", "complexity", "extra", "total", "is_pd", "message"}


def test_generalization_bound_multi_output_sums_columns(pd_gram):
    Y = np.random.default_rng(4).standard_normal((30, 3))
    comp = sum(float(Y[:, c] @ np.linalg.solve(pd_gram, Y[:, c])) for c in range(3))
    res = generalization_bound(pd_gram, Y)
    assert res.n_outputs == 3
    assert res.complexity == pytest.approx(comp, rel=1e-8)
    assert res.value == pytest.approx(math.sqrt(2 * comp / 30), rel=1e-8)


@pytest.mark.parametrize("dtype", DTYPES)
def test_generalization_bound_not_pd_duplicate_rows(dtype):
    X = unit_rows(20, 6, seed=5)
    X[11] = X[4]  # duplicate input -> rank-deficient Gram, lambda_0 = 0
    H = h1_reference(X).astype(dtype)
    y = np.random.default_rng(5).standard_normal(20)
    with pytest.warns(SingularKernelWarning, match="not numerically positive definite"):
        res = generalization_bound(H, y)
    assert res.is_pd is False
    # no jitter: no finite bound is produced
    assert res.value == math.inf and res.complexity == math.inf and res.total == math.inf
    assert "lambda_min" in res.message and "parallel" in res.message
    assert "no jitter" in res.message


def test_generalization_bound_indefinite_and_zero_lambda():
    H = np.diag([1.0, 2.0, -0.5])
    with pytest.warns(SingularKernelWarning):
        res = generalization_bound(H, [1.0, 1.0, 1.0])
    assert not res.is_pd and res.extra == math.inf and res.total == math.inf
    assert res.lambda_min == pytest.approx(-0.5)


def test_generalization_bound_extra_clamped_when_log_negative():
    # n / (lambda0 delta) < 1 -> log < 0; the confidence term is clamped at 0, not NaN
    H = 100.0 * np.eye(2)
    res = generalization_bound(H, [1.0, -1.0], delta=0.5)
    assert res.extra == 0.0 and res.value == pytest.approx(math.sqrt(2 * 0.02 / 2))


# ---------------------------------------------------------------------------- predicted trajectory
def _powers_reference(H, r, lr, steps):
    """||(I - lr H)^t r|| by explicit matrix powers, one t at a time."""
    A = np.eye(len(H)) - lr * H
    return np.array([np.linalg.norm(np.linalg.matrix_power(A, t) @ r) for t in range(steps + 1)])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("with_u0", [False, True])
def test_predicted_trajectory_vs_matrix_powers(pd_gram, dtype, with_u0):
    rng = np.random.default_rng(6)
    H = pd_gram.astype(dtype)
    y = rng.standard_normal(30).astype(dtype)
    u0 = rng.standard_normal(30).astype(dtype) * 0.3 if with_u0 else None
    lr, steps = 0.7 / np.linalg.eigvalsh(H.astype(np.float64))[-1], 40
    traj = predicted_trajectory(H, y, lr, steps, u0=u0)
    assert isinstance(traj, np.ndarray) and traj.dtype == np.float64 and traj.shape == (steps + 1,)
    r = y.astype(np.float64) - (0 if u0 is None else u0.astype(np.float64))
    ref = _powers_reference(H.astype(np.float64), r, lr, steps)
    np.testing.assert_allclose(traj, ref, rtol=1e-9)
    np.testing.assert_allclose(predicted_loss(H, y, lr, steps, u0=u0), 0.5 * ref**2, rtol=1e-9)
    if u0 is None:  # Arora et al.'s formula, written out with numpy's eigh
        lam, V = np.linalg.eigh(H.astype(np.float64))
        t = np.arange(steps + 1)[:, None]
        arora = np.sqrt((((1 - lr * lam) ** (2 * t)) * (V.T @ r) ** 2).sum(axis=1))
        np.testing.assert_allclose(traj, arora, rtol=1e-9)


def test_predicted_trajectory_vs_iterated_dynamics_and_linear_gd():
    """Exact identity for a linear model u = Phi w, loss 1/2 sum (u - y)^2, H = Phi Phi^T."""
    rng = np.random.default_rng(7)
    n, p = 15, 40
    Phi = rng.standard_normal((n, p)) / np.sqrt(p)
    H = Phi @ Phi.T
    y = rng.standard_normal(n)
    w = rng.standard_normal(p) * 0.1
    u0 = Phi @ w
    lr, steps = 1.0 / np.linalg.eigvalsh(H)[-1], 200
    traj = predicted_trajectory(H, y, lr, steps, u0=u0)
    u = u0.copy()
    gd = [np.linalg.norm(u - y)]
    dyn_u = u0.copy()
    dyn = [np.linalg.norm(dyn_u - y)]
    for _ in range(steps):
        w = w - lr * Phi.T @ (Phi @ w - y)  # full-batch GD on the summed loss
        gd.append(np.linalg.norm(Phi @ w - y))
        dyn_u = dyn_u - lr * H @ (dyn_u - y)  # u <- u - lr H (u - y)
        dyn.append(np.linalg.norm(dyn_u - y))
    np.testing.assert_allclose(traj, dyn, rtol=1e-8)
    np.testing.assert_allclose(traj, gd, rtol=1e-8)


def test_predicted_trajectory_multi_output_and_chunks(pd_gram, monkeypatch):
    Y = np.random.default_rng(8).standard_normal((30, 2))
    lr, steps = 0.5 / np.linalg.eigvalsh(pd_gram)[-1], 25
    full = predicted_trajectory(pd_gram, Y, lr, steps)
    per_col = [predicted_trajectory(pd_gram, Y[:, c], lr, steps) for c in range(2)]
    np.testing.assert_allclose(full, np.sqrt(per_col[0] ** 2 + per_col[1] ** 2), rtol=1e-12)
    monkeypatch.setattr(theory, "_TRAJ_CHUNK_ELEMS", 7 * 30)  # chunks of 7 steps
    np.testing.assert_allclose(predicted_trajectory(pd_gram, Y, lr, steps), full, rtol=1e-12)


def test_predicted_trajectory_edge_cases(pd_gram):
    y = np.ones(30)
    assert predicted_trajectory(pd_gram, y, 0.1, 0) == pytest.approx([np.linalg.norm(y)])
    np.testing.assert_array_equal(predicted_trajectory(pd_gram, y, 0.1, 5, u0=y), np.zeros(6))
    with pytest.warns(RuntimeWarning, match="lambda_max"):
        predicted_trajectory(pd_gram, y, 3.0 / np.linalg.eigvalsh(pd_gram)[-1], 5)


# ---------------------------------------------------------------------------- width requirements
def test_width_requirements_hand_computed():
    r = width_requirements(0.1, 10, delta=0.5, eps=0.1)
    # Du: 10^6 / (0.1^4 * 0.5^3) = 1e6 / 1.25e-5 = 8e10
    assert r["du_width"] == pytest.approx(8e10, rel=1e-12)
    assert r["du_width_log10"] == pytest.approx(math.log10(8e10), rel=1e-12)
    assert r["du_lr"] == pytest.approx(1e-3) and r["arora_lr"] == pytest.approx(1e-3)
    assert r["du_rate"] == pytest.approx(1 - 1e-3 * 0.1 / 2)
    # Arora: kappa = 0.1*0.5/sqrt(10), kappa^2 = 2.5e-4;
    # 10^7 / (1e-4 * 2.5e-4 * 0.0625 * 0.01) = 1e7 / 1.5625e-11 = 6.4e17
    assert r["arora_kappa"] == pytest.approx(0.05 / math.sqrt(10), rel=1e-12)
    assert r["arora_width"] == pytest.approx(6.4e17, rel=1e-12)
    assert "constants" in r["note"] and "set to 1" in r["note"]
    assert all(isinstance(r[k], float) for k in r if k != "note")
    # explicit kappa
    r2 = width_requirements(0.1, 10, delta=0.5, eps=0.1, kappa=1.0)
    assert r2["arora_width"] == pytest.approx(1e7 / (1e-4 * 0.0625 * 0.01), rel=1e-12)


def test_width_requirements_degenerate_and_huge():
    r = width_requirements(0.0, 100)
    assert r["du_width"] == math.inf and r["arora_width"] == math.inf
    assert r["du_lr"] == 0.0 and r["du_rate"] == 1.0 and "lambda0" in r["note"]
    r = width_requirements(-1e-3, 100)
    assert r["arora_width"] == math.inf
    r = width_requirements(1e-80, 10**6, delta=0.01, eps=0.01)  # beyond float64 range
    assert r["du_width"] == math.inf and math.isfinite(r["du_width_log10"])
    assert r["du_width_log10"] == pytest.approx(36 + 320 + 6)


# ---------------------------------------------------------------------------- JL
def test_jl_min_dim_hand_values():
    # 4 ln 1000 / (0.005 - 0.001/3) = 27.6310211 / 0.00466667 = 5920.93 -> 5921
    assert jl_min_dim(1000, 0.1) == 5921
    # 4 ln 2 / (0.125 - 0.125/3) = 2.7725887 / 0.0833333 = 33.27 -> 34
    assert jl_min_dim(2, 0.5) == 34
    assert jl_min_dim(1, 0.3) == 1
    assert isinstance(jl_min_dim(1000, 0.1), int)


# ---------------------------------------------------------------------------- cost model
def test_cost_hand_counts_all_kinds():
    d, m, n = 8, 4, 3
    c = cost(d, m, k=2, sketch_kind="gaussian", n=n)
    dense = c["dense"]
    # dense: fwd 3*4*8 + 3*4 = 108, bwd 12 + 96 = 108, update 32 -> 248
    assert dense == {
        "params_trainable": 32,
        "params_fixed": 4,
        "train_macs_per_step": 248,
        "infer_macs_per_example": 36,
        "sketch_macs_once": 0,
        "sketch_macs_per_example": 0,
    }
    f = c["factorized"]
    # factorized k=2: fwd 24 + 12, bwd 12 + 24, update 8 -> 80; S costs k d = 16 per example
    assert f == {
        "params_trainable": 8,
        "params_fixed": 4 + 16,
        "train_macs_per_step": 80,
        "infer_macs_per_example": 16 + 8 + 4,
        "sketch_macs_once": 48,
        "sketch_macs_per_example": 16,
    }
    assert c["speedup_train"] == pytest.approx(248 / 80)
    assert c["speedup_infer"] == pytest.approx(36 / 28)
    assert c["param_ratio"] == pytest.approx(4.0)

    pca = cost(d, m, k=2, sketch_kind="pca", n=n)["factorized"]
    assert pca["sketch_macs_per_example"] == 16 and pca["infer_macs_per_example"] == 28

    sp = cost(d, m, k=2, sketch_kind="sparse", n=n)  # s defaults to the sketch's min(8, k)
    assert sp["s"] == 2 and sp["factorized"]["sketch_macs_per_example"] == 16
    assert sp["factorized"]["infer_macs_per_example"] == 16 + 8 + 4
    sp2 = cost(d, m, k=2, sketch_kind="sparse", n=n, s=2)
    assert sp2["factorized"]["sketch_macs_per_example"] == 16

    # srht, d = 6 padded to 8: the pruned transform's 8 * (no factors + 2 kept rows) = 16;
    # stores 8 signs + 2 indices
    sr = cost(6, m, k=2, sketch_kind="srht", n=n)
    assert sr["d_padded"] == 8
    assert sr["factorized"]["sketch_macs_per_example"] == 16
    assert sr["factorized"]["params_fixed"] == 4 + 10
    assert sr["factorized"]["infer_macs_per_example"] == 16 + 8 + 4
    assert sr["dense"]["infer_macs_per_example"] == 4 * 6 + 4

    ident = cost(d, m, sketch_kind="identity", n=n)
    assert ident["k"] == d and ident["factorized"] == ident["dense"]
    assert ident["speedup_train"] == 1.0 and ident["speedup_infer"] == 1.0
    assert cost(d, m)["sketch_kind"] == "identity"
    assert cost(d, m, k=2)["sketch_kind"] == "gaussian"

    to = cost(d, m, k=2, n=n, train_output=True)
    # + output gradient n m = 12 and + m = 4 updates; a is trainable, no longer fixed
    assert to["dense"]["train_macs_per_step"] == 248 + 12 + 4
    assert to["dense"]["params_trainable"] == 36 and to["dense"]["params_fixed"] == 0


# ---------------------------------------------------------------------------- validation
@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: lambda_min(np.ones((3, 4))), "must be square"),
        (lambda: lambda_min(np.array([[1.0, 2.0], [0.0, 1.0]])), "H must be symmetric"),
        (lambda: lambda_min(np.array([[1.0, np.nan], [np.nan, 1.0]])), "NaN"),
        (lambda: lambda_min(np.ones(3)), "2-D"),
        (lambda: eigh(np.array([[1.0, 2.0], [0.0, 1.0]], dtype=np.float32)), "H must be symmetric"),
        (lambda: generalization_bound(np.eye(3), np.ones(4)), "different numbers of samples"),
        (lambda: generalization_bound(np.eye(3), np.ones(3), delta=1.5), "delta must be in"),
        (lambda: generalization_bound(np.eye(3), [1.0, np.inf, 0.0]), "NaN or Inf"),
        (lambda: predicted_trajectory(np.eye(3), np.ones(3), 0.1, -1), "steps must be >= 0"),
        (lambda: predicted_trajectory(np.eye(3), np.ones(3), 0.0, 5), "lr must be > 0"),
        (lambda: predicted_trajectory(np.eye(3), np.ones(3), -1.0, 5), "lr must be > 0"),
        (lambda: predicted_trajectory(np.eye(3), np.ones(3), 0.1, 2.5), "steps must be an integer"),
        (
            lambda: predicted_trajectory(np.eye(3), np.ones(2), 0.1, 5),
            "different numbers of samples",
        ),
        (
            lambda: predicted_trajectory(np.eye(3), np.ones(3), 0.1, 5, u0=np.ones((3, 2))),
            "u0 must have",
        ),
        (lambda: jl_min_dim(100, 1.0), "eps must be in"),
        (lambda: jl_min_dim(100, 0.0), "eps must be in"),
        (lambda: jl_min_dim(0, 0.1), "n must be >= 1"),
        (lambda: width_requirements(float("nan"), 10), "lambda0 must be a finite"),
        (lambda: width_requirements(0.1, 10, delta=0.0), "delta must be > 0"),
        (lambda: width_requirements(0.1, 10, eps=-1.0), "eps must be > 0"),
        (lambda: cost(8, 4, k=9), "k must be <= d"),
        (lambda: cost(8, 4, k=0), "k must be >= 1"),
        (lambda: cost(8, 4, k=2, sketch_kind="fourier"), "unknown sketch_kind"),
        (lambda: cost(8, 4, k=2, sketch_kind="identity"), "requires k = d"),
        (lambda: cost(8, 4, sketch_kind="gaussian"), "k is required"),
        (lambda: cost(8, 4, k=2, sketch_kind="sparse", s=3), "s must be <= 2"),
        (lambda: cost(8, 4, k=2, sketch_kind="gaussian", s=1), "applies only to"),
        (lambda: cost(0, 4, k=1), "d must be >= 1"),
    ],
)
def test_validation_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_symmetry_tolerance_is_dtype_keyed(pd_gram):
    # a float32-sized asymmetry (1e-6 relative) is accepted for float32, rejected for float64
    H = pd_gram.copy()
    H[0, 1] += 1e-6 * np.abs(H).max()
    lambda_min(H.astype(np.float32), warn=False)
    with pytest.raises(ValueError, match="H must be symmetric"):
        lambda_min(H)


def test_tensors_requiring_grad_are_accepted(pd_gram):
    H = torch.tensor(pd_gram, requires_grad=True)
    y = torch.ones(30, requires_grad=True)
    assert lambda_min(H) == pytest.approx(np.linalg.eigvalsh(pd_gram)[0], rel=1e-9)
    assert generalization_bound(H, y).is_pd
    traj = predicted_trajectory(H, y, 0.1, 3, u0=torch.zeros(30, requires_grad=True))
    assert traj.shape == (4,)
    w, V = eigh(H)
    assert not w.requires_grad


def test_generalization_bound_accepts_precomputed_spectrum():
    rng = np.random.default_rng(3)
    A = rng.normal(size=(40, 60))
    H = A @ A.T / 60
    y = rng.choice([-1.0, 1.0], size=40)
    ev = np.linalg.eigvalsh(H)
    a = generalization_bound(H, y)
    b = generalization_bound(H, y, eigenvalues=ev)
    assert a.value == pytest.approx(b.value, rel=1e-12)
    assert a.lambda_min == pytest.approx(b.lambda_min, rel=1e-9)
    with pytest.raises(ValueError, match="eigenvalues must hold the 40 eigenvalues"):
        generalization_bound(H, y, eigenvalues=ev[:5])


def test_lambda_max_lanczos_path_matches_dense():
    rng = np.random.default_rng(4)
    A = rng.normal(size=(600, 50))
    H = A @ A.T / 50  # n > 256 takes the Lanczos path
    assert lambda_max(H) == pytest.approx(np.linalg.eigvalsh(H)[-1], rel=1e-10)


# --------------------------------------------------------------------------------------------
# extreme magnitudes (entries near the float64 maximum / minimum)
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("e", [1000, 1023, -1000, -1040])
def test_spectra_scale_exactly_to_the_float64_limits(e):
    """lambda(2^e H) = 2^e lambda(H) for H with entries near the float64 max / min."""
    X = unit_rows(6, 4, seed=11)
    H = h1_reference(X)
    H = H / np.linalg.eigvalsh(H)[-1] * 0.9  # lambda_max = 0.9: 2^1023 * 0.9 is representable
    Hs = np.ldexp(H, e)  # exact, except for the subnormal rounding of 2^-1040 H
    ev = np.linalg.eigvalsh(np.ldexp(Hs, -e))  # reference: the matrix as stored, scaled back
    # round-off, plus rounding the returned (possibly subnormal) eigenvalue to a multiple of 2^-1074
    tol = 64 * np.finfo(np.float64).eps * ev[-1] + math.ldexp(1.0, -1074 - e)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a PD H: no singular warning at any scale
        assert abs(np.ldexp(lambda_min(Hs), -e) - ev[0]) <= tol
    assert abs(np.ldexp(lambda_max(Hs), -e) - ev[-1]) <= tol
    s = spectrum_summary(Hs)
    np.testing.assert_allclose(np.ldexp(s["eigenvalues"], -e), ev, rtol=0, atol=tol)
    assert s["stable_rank"] == pytest.approx(ev.sum() / ev[-1], rel=1e-12)
    assert s["is_pd"]
    w, _ = eigh(Hs)
    np.testing.assert_allclose(np.ldexp(w, -e), ev, rtol=0, atol=tol)


def test_lambda_min_near_float64_max_names_overflowing_lambda_max():
    M = np.finfo(np.float64).max / 1.1
    H = np.array([[M, M], [M, M]])  # singular; lambda_max = 2M is not representable
    assert abs(lambda_min(H, warn=False)) <= 4 * np.finfo(np.float64).eps * M
    with pytest.warns(SingularKernelWarning, match="singular"):
        lambda_min(H)
    with pytest.raises(ValueError, match="lambda_max of H is beyond the float64 range"):
        lambda_max(H)
    with pytest.raises(ValueError, match="an eigenvalue of H is beyond the float64 range"):
        spectrum_summary(H)


@pytest.mark.parametrize("y_scale", [1e300, 1e-300])
def test_generalization_bound_with_extreme_labels(y_scale):
    """value = sqrt(2 y^T H^-1 y / n) is homogeneous in y: finite where representable."""
    X = unit_rows(8, 5, seed=12)
    H = h1_reference(X)
    y = np.random.default_rng(13).standard_normal(8)
    ref = generalization_bound(H, y)
    res = generalization_bound(H, y * y_scale)
    assert res.is_pd and math.isfinite(res.value)
    assert res.value == pytest.approx(ref.value * y_scale, rel=1e-12)
    if y_scale > 1:
        assert res.complexity == math.inf  # ~1e600: beyond float64, documented
    else:
        assert res.complexity == pytest.approx(ref.complexity * y_scale**2, rel=1e-12)


def test_generalization_bound_unrepresentable_value_raises():
    X = unit_rows(8, 5, seed=12)
    H = h1_reference(X) * 1e-300
    with pytest.raises(ValueError, match="generalization bound .* is beyond the float64 range"):
        generalization_bound(H, np.ones(8) * 1e300)
