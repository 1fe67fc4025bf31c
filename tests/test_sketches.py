"""Tests for ntkdr.sketches: fast paths against explicit matrices,
the JL distortion and unbiasedness the random maps promise, determinism, array kinds,
and every validation error."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest
import scipy.linalg
import torch

import ntkdr.sketches.srht as sketches_mod
from ntkdr.sketches import SKETCH_KINDS, Sketch, make_sketch

RANDOM_KINDS = ("gaussian", "sparse", "srht")
DTYPES = (torch.float32, torch.float64)
# Relative tolerances keyed by dtype (results are O(1); sums of <= a few hundred terms).
RTOL = {torch.float32: 2e-5, torch.float64: 1e-12}


def _close(a, b, dtype):
    a = torch.as_tensor(a, dtype=torch.float64)
    b = torch.as_tensor(b, dtype=torch.float64)
    scale = max(1.0, float(b.abs().max()))
    err = float((a - b).abs().max())
    assert err <= RTOL[dtype] * scale, f"max abs error {err} > {RTOL[dtype] * scale}"


def _sketch(kind, d=100, k=20, seed=0, X_fit=None, **opts):
    if kind == "identity":
        k = d
    S = make_sketch(kind, d, k, seed, **opts)
    if kind == "pca":
        S.fit(
            X_fit
            if X_fit is not None
            else torch.randn(60, d, generator=torch.Generator().manual_seed(9))
        )
    return S


def _data(n, d, dtype=torch.float64, seed=1):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).to(
        dtype
    )


# ---------------------------------------------------------------- basic API
def test_kinds_and_attributes():
    assert SKETCH_KINDS == ("gaussian", "sparse", "srht", "pca", "identity")
    for kind in SKETCH_KINDS:
        S = _sketch(kind, d=30, k=7, seed=5, renormalize=False)
        assert isinstance(S, Sketch)
        assert S.kind == kind and S.d == 30 and S.seed == 5 and S.renormalize is False
        assert S.k == (30 if kind == "identity" else 7)
        r = repr(S)
        assert f"kind={kind!r}" in r and "d=30" in r and "seed=5" in r


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", SKETCH_KINDS)
def test_call_equals_explicit_matrix(kind, dtype):
    # d = 100 is not a power of two (srht pads to 128).  matrix() is built independently
    # of the apply path (stored weights, explicit sparse entries, (-1)^popcount formula).
    S = _sketch(kind, d=100, k=20, seed=3)
    X = _data(37, 100, dtype)
    Y = S(X)
    assert Y.shape == (37, S.k) and Y.dtype == dtype
    M = S.matrix(dtype=dtype)
    assert M.shape == (S.k, 100) and M.dtype == dtype
    _close(Y, X.double() @ S.matrix().T, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("d,k", [(64, 16), (100, 20), (100, 100), (1, 1), (5, 3), (257, 40)])
def test_srht_against_scipy_hadamard(d, k, dtype):
    S = make_sketch("srht", d, k, seed=11)
    dp = S.d_pad
    assert dp == 1 << (d - 1).bit_length() and dp >= d and dp < 2 * d + 1
    signs, rows = S.signs.numpy(), S.rows.numpy()
    assert signs.shape == (dp,) and set(np.unique(signs)) <= {-1.0, 1.0}
    assert (
        rows.shape == (k,) and len(set(rows.tolist())) == k and rows.min() >= 0 and rows.max() < dp
    )
    H = scipy.linalg.hadamard(dp) / math.sqrt(dp)  # orthonormal, Sylvester order
    D = np.diag(signs)
    R = np.eye(dp)[rows]
    full = math.sqrt(dp / k) * R @ H @ D  # k x d'
    X = _data(23, d, dtype)
    Xpad = np.zeros((23, dp))
    Xpad[:, :d] = X.double().numpy()
    expected = Xpad @ full.T
    _close(S(X), expected, dtype)
    _close(S.matrix(dtype=dtype), full[:, :d], dtype)
    _close(S(X), X.double() @ S.matrix().T, dtype)


def test_srht_small_batches_and_cpu_blocks_agree():
    X = _data(300, 1000)
    ref = make_sketch("srht", 1000, 50, seed=2)(X)
    for bs in (1, 7, 64, 1000):
        _close(make_sketch("srht", 1000, 50, seed=2, batch_size=bs)(X), ref, torch.float64)
    _close(ref, X @ make_sketch("srht", 1000, 50, seed=2).matrix().T, torch.float64)


def _srht_full_reference(S, X):
    """The un-pruned transform: pad, sign, full radix-2 butterfly (float64), keep the rows."""
    x = torch.zeros(X.shape[0], S.d_pad, dtype=torch.float64)
    x[:, : S.d] = X.double() * S.signs[: S.d]
    h = 1
    while h < S.d_pad:  # plain butterfly, written independently of the library's
        u = x.view(X.shape[0], S.d_pad // (2 * h), 2, h)
        x = torch.stack((u[:, :, 0] + u[:, :, 1], u[:, :, 0] - u[:, :, 1]), dim=2).reshape(
            X.shape[0], S.d_pad
        )
        h *= 2
    return x[:, S.rows] / math.sqrt(S.k)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "d,k", [(8, 3), (100, 7), (257, 40), (1000, 50), (1024, 1024), (1500, 333), (4100, 97)]
)
def test_srht_pruned_path_equals_full_transform_for_every_split(d, k, dtype, monkeypatch):
    """Every Kronecker split d' = c a of the pruned apply (c = 1: one GEMM with the kept rows;
    c = d': the full transform by factors) equals the full butterfly, incl. d not a power of
    two (padding blocks skipped), k dividing nothing, and several CPU row blocks with a
    partial last one."""
    n = 37
    X = _data(n, d, dtype, seed=d + k)
    # ~5 rows per block at d' = 2048: several blocks, the last one partial
    monkeypatch.setattr(sketches_mod, "_CPU_SRHT_BLOCK_ELEMENTS", 5 * 2 * 2048)
    S0 = make_sketch("srht", d, k, seed=k)
    ref = _srht_full_reference(S0, X)
    assert S0.plan() in [
        (sketches_mod._split_factors(1 << e), S0.d_pad >> e) for e in range(S0.d_pad.bit_length())
    ]
    _close(S0(X), ref, dtype)
    for e in range(S0.d_pad.bit_length()):
        S = make_sketch("srht", d, k, seed=k)
        S._plan = (sketches_mod._split_factors(1 << e), S.d_pad >> e)
        Y = S(X)
        assert Y.shape == (n, k) and Y.dtype == dtype
        _close(Y, ref, dtype)
    # the largest factor is bounded, so the full-transform candidate is O(d' log d')
    assert all(f <= 32 for f in sketches_mod._split_factors(S0.d_pad))


def test_srht_plan_is_o_d_log_d_and_prunes():
    for d, k in [(8192, 256), (4096, 256), (1 << 16, 1 << 16), (784, 64), (100, 20)]:
        S = make_sketch("srht", d, k)
        full = S.d_pad * (sum(sketches_mod._split_factors(S.d_pad)) + 1)
        # never more multiply-adds than ~1.5x the full transform (the model weighs small GEMMs)
        assert S.flops(1) <= 1.5 * full
    # at the benchmark size the pruned split is used (not c = 1 nor c = d')
    factors, a = make_sketch("srht", 8192, 256).plan()
    assert 1 < a < 8192 and factors


@pytest.mark.parametrize("dtype", DTYPES)
def test_srht_strided_inputs(dtype):
    S = make_sketch("srht", 300, 30, seed=5)
    base = _data(300, 400, dtype)
    column_major = base.T.contiguous().T  # strides (1, n)
    for X in (base[:, :300], column_major[:, 50:350], base[::2, 100:]):
        _close(S(X), X.double() @ S.matrix().T, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_srht_nonfinite_tensor_input_named(bad, dtype):
    # the finiteness check of a float tensor is deferred to the output: same message as as_matrix
    S = make_sketch("srht", 1000, 20, seed=0)
    X = _data(50, 1000, dtype)
    X[31, 997] = bad
    with pytest.raises(ValueError, match=r"X contains NaN or Inf \(first at row 31, column 997\)"):
        S(X)
    Sn = make_sketch("srht", 1000, 20, seed=0, renormalize=True)
    with pytest.raises(ValueError, match=r"X contains NaN or Inf \(first at row 31, column 997\)"):
        Sn(X)


@pytest.mark.parametrize("kind", SKETCH_KINDS)
def test_batching_matches_one_batch(kind):
    X = _data(50, 40)
    S = _sketch(kind, d=40, k=10, seed=4)
    ref = S(X)
    S.batch_size = 7
    _close(S(X), ref, torch.float64)


@pytest.mark.parametrize("s", [None, 1, 3, 10])
def test_sparse_columns(s):
    d, k = 200, 10
    S = make_sketch("sparse", d, k, seed=6, s=s)
    s_eff = min(8, k) if s is None else s
    assert S.s == s_eff
    M = S.matrix()
    nnz = (M != 0).sum(dim=0)
    assert bool((nnz == s_eff).all())
    nz = M[M != 0]
    assert torch.allclose(nz.abs(), torch.full_like(nz, 1 / math.sqrt(s_eff)), rtol=0, atol=1e-15)
    # matches the exposed internals, rows distinct within a column
    assert S.rows.shape == (d, s_eff) and S.signs.shape == (d, s_eff)
    assert all(len(set(r)) == s_eff for r in S.rows.tolist())
    expected = torch.zeros(k, d, dtype=torch.float64)
    for j in range(d):
        for t in range(s_eff):
            expected[S.rows[j, t], j] = S.signs[j, t] / math.sqrt(s_eff)
    assert torch.equal(M, expected)
    # both signs and (for s = 1, CountSketch) many different rows occur
    assert set(S.signs.flatten().tolist()) == {-1.0, 1.0}
    assert len(set(S.rows.flatten().tolist())) == k


# --------------------------------------------------------- JL and unbiasedness
def _jl_k(n, eps):
    return math.ceil(4 * math.log(n) / (eps**2 / 2 - eps**3 / 3))


@pytest.mark.parametrize("kind", RANDOM_KINDS)
def test_jl_distortion_at_jl_dimension(kind):
    """All pairwise squared distances within (1 +- eps) at the JL dimension, fixed seeds.

    With k = ceil(4 ln n / (eps^2/2 - eps^3/3)) the JL lemma (Dasgupta & Gupta) bounds the
    failure probability of one pair of the Gaussian map by 2/n^2, so the union bound only
    promises success with probability >= 1/n: not "always".  For n = 50, eps = 0.5,
    k = 188 the exact Gaussian per-pair failure probability is P(|chi^2_188/188 - 1| > 0.5)
    = 1.1e-5, ~1.3% per seed over the 1225 pairs (and the other maps do no worse here).
    So: over 20 fixed seeds, at most one seed may have a violating pair, it may violate by
    a little only, and the typical worst-pair distortion is well inside eps.  A wrong
    scale or a broken transform violates on many pairs and every seed.
    """
    n, d, eps = 50, 512, 0.5
    k = _jl_k(n, eps)
    assert k == 188
    i, j = torch.triu_indices(n, n, offset=1)
    worst = []
    for seed in range(20):
        # Dense Gaussian rows plus sparse rows (scaled basis vectors, 2-sparse vectors):
        # sparse inputs are the hard case for sparse / Hadamard maps.
        X = _data(n, d, seed=100 + seed)
        X[40:50] = 0
        for r in range(5):
            X[40 + r, 7 * r] = 3.0
            X[45 + r, 11 * r] = 1.0
            X[45 + r, 11 * r + 1] = -2.0
        Y = make_sketch(kind, d, k, seed=seed)(X)
        ratio = ((Y[i] - Y[j]) ** 2).sum(1) / ((X[i] - X[j]) ** 2).sum(1)
        worst.append(float((ratio - 1).abs().max()))
    worst = np.array(worst)
    assert (worst > eps).sum() <= 1, f"{kind}: worst distortion per seed {worst.round(3).tolist()}"
    assert worst.max() <= 1.2 * eps, f"{kind}: worst distortion per seed {worst.round(3).tolist()}"
    assert np.median(worst) <= 0.8 * eps, (
        f"{kind}: worst distortion per seed {worst.round(3).tolist()}"
    )


@pytest.mark.parametrize("kind", RANDOM_KINDS)
def test_norm_unbiased_over_seeds(kind):
    """E ||S x||^2 = ||x||^2, checked by averaging over T independent seeds.

    Variance (for ||x|| = 1), derived per kind:
    * gaussian: ||Sx||^2 = chi^2_k / k, Var = 2/k.
    * sparse: ||Sx||^2 = ||x||^2 + (1/s) sum_i sum_{j != l} delta_ij delta_il sigma_ij sigma_il x_j x_l
      (each column has exactly s non-zeros, so the diagonal part is exactly ||x||^2); the
      cross term has mean 0 and, signs being independent, variance
      (2/s^2) sum_{j != l} x_j^2 x_l^2 * k (s/k)^2 = (2/k)(||x||^4 - ||x||_4^4) <= 2/k.
    * srht: y = H D x has ||y|| = ||x||; given D, ||Sx||^2 is (d'/k) times the sum of k
      coordinates y_r^2 sampled without replacement: mean ||x||^2, variance
      <= (1/k) * (d' sum_r y_r^4 - ||x||^4); with E_D y_r^4 = (3||x||^4 - 2||x||_4^4)/d'^2
      this is <= (2/k)(||x||^4 - ||x||_4^4) <= 2/k.
    So the mean of T draws has standard deviation <= sqrt(2/(k T)); we allow 5 of them
    (the sum of T i.i.d. terms is close to normal; the seeds are fixed, so the test is
    deterministic), and also check the sample variance against the 2/k bound.
    """
    d, k, T = 100, 16, 1000
    g = torch.Generator().manual_seed(0)
    x_dense = torch.randn(d, generator=g, dtype=torch.float64)
    x_spiky = torch.zeros(d, dtype=torch.float64)
    x_spiky[[3, 50, 99]] = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    x_ramp = torch.linspace(-1, 2, d, dtype=torch.float64)
    X = torch.stack([x_dense, x_spiky, x_ramp])
    X = X / X.norm(dim=1, keepdim=True)
    # matrix() is what __call__ applies (test_call_equals_explicit_matrix); using it here
    # keeps 1000 draws fast.
    sq = torch.stack(
        [((X @ make_sketch(kind, d, k, seed=t).matrix().T) ** 2).sum(1) for t in range(T)]
    )
    mean = sq.mean(0)
    tol = 5 * math.sqrt(2 / (k * T))
    assert float((mean - 1).abs().max()) <= tol, f"{kind}: means {mean.tolist()} vs 1 +- {tol}"
    var = sq.var(0)
    # sample variance of T = 1000 draws: relative error ~ sqrt(2/T) ~ 4.5%; 1.5x is far out
    assert float(var.max()) <= 1.5 * 2 / k, f"{kind}: variances {var.tolist()} vs bound {2 / k}"
    if kind == "gaussian":  # exact value 2/k
        assert float((var / (2 / k) - 1).abs().max()) < 0.3


def test_unbiasedness_test_detects_a_wrong_scale():
    # the tolerance above is tight enough to see srht's padding factor d/d' if it were dropped
    d, k, T = 100, 16, 1000
    tol = 5 * math.sqrt(2 / (k * T))
    assert abs(d / 128 - 1) > 3 * tol


# --------------------------------------------------------------- determinism
@pytest.mark.parametrize("kind", RANDOM_KINDS + ("pca",))
def test_deterministic_by_seed(kind):
    X = _data(20, 64)
    a = _sketch(kind, d=64, k=8, seed=7)(X)
    b = _sketch(kind, d=64, k=8, seed=7)(X)
    assert torch.equal(a, b)
    Xf = _data(60, 64, seed=9)
    if (
        kind == "pca"
    ):  # exact solver: the seed does not matter; randomized with a seed is deterministic
        p1 = make_sketch("pca", 64, 8, seed=1, svd_solver="randomized").fit(Xf)
        p2 = make_sketch("pca", 64, 8, seed=1, svd_solver="randomized").fit(Xf)
        assert torch.equal(p1.matrix(), p2.matrix())
    else:
        c = _sketch(kind, d=64, k=8, seed=8)(X)
        assert not torch.allclose(a, c)
    # float32 matrix is the float64 matrix rounded; the same seed gives the same map in both
    S = _sketch(kind, d=64, k=8, seed=7)
    assert torch.equal(S.matrix(torch.float32), S.matrix(torch.float64).to(torch.float32))
    assert torch.equal(S.matrix("float32"), S.matrix(np.float32))
    # float32 application ~ float64 application
    _close(S(X.float()), S(X), torch.float32)


def test_pickle_roundtrip():
    S = make_sketch("sparse", 50, 10, seed=3)
    X = _data(5, 50)
    Y = S(X)
    S2 = pickle.loads(pickle.dumps(S))
    assert torch.equal(S2(X), Y)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("kind", SKETCH_KINDS)
def test_cuda_matches_cpu(kind):
    S = _sketch(kind, d=100, k=20, seed=3)
    X = _data(37, 100)
    assert torch.equal(S.matrix(device="cuda").cpu(), S.matrix())
    Y = S(X.cuda())
    assert Y.device.type == "cuda"
    _close(Y.cpu(), S(X), torch.float64)
    assert torch.equal(S(X.cuda()), Y)


# ------------------------------------------------------- dtype / array kind
@pytest.mark.parametrize("kind", SKETCH_KINDS)
def test_array_kind_and_dtype(kind):
    S = _sketch(kind, d=16, k=4, seed=0)
    X64 = _data(5, 16)
    for dtype in DTYPES:
        Y = S(X64.to(dtype))
        assert isinstance(Y, torch.Tensor) and Y.dtype == dtype
        Yn = S(X64.to(dtype).numpy())
        assert isinstance(Yn, np.ndarray) and Yn.dtype == (
            np.float32 if dtype == torch.float32 else np.float64
        )
        assert Yn.shape == (5, S.k)
    Xi = np.arange(80).reshape(5, 16) % 7 - 3
    Yi = S(Xi)
    assert isinstance(Yi, np.ndarray) and Yi.dtype == np.float32
    _close(Yi, S(torch.tensor(Xi, dtype=torch.float64)), torch.float32)
    Yt = S(torch.tensor(Xi))
    assert isinstance(Yt, torch.Tensor) and Yt.dtype == torch.float32
    Yl = S(Xi.tolist())
    assert isinstance(Yl, np.ndarray)


@pytest.mark.parametrize("kind", SKETCH_KINDS)
def test_gradients_flow(kind):
    S = _sketch(kind, d=16, k=4, seed=0)
    X = _data(6, 16).requires_grad_(True)
    w = _data(6, S.k, seed=3)
    (S(X) * w).sum().backward()
    torch.testing.assert_close(X.grad, w @ S.matrix())
    S.batch_size = 4
    X.grad = None
    (S(X) * w).sum().backward()
    torch.testing.assert_close(X.grad, w @ S.matrix())


@pytest.mark.parametrize("kind", SKETCH_KINDS)
def test_renormalize_unit_rows(kind):
    S = _sketch(kind, d=30, k=6, seed=1, renormalize=True)
    assert S.renormalize is True
    X = _data(10, 30) * 5
    Y = S(X)
    torch.testing.assert_close(Y.norm(dim=1), torch.ones(10, dtype=torch.float64))
    # direction unchanged: renormalised output is the raw output rescaled
    raw = X @ S.matrix().T
    torch.testing.assert_close(Y, raw / raw.norm(dim=1, keepdim=True))
    X[3] = 0
    with pytest.raises(
        ValueError, match=rf"the {kind}-sketched X has zero-norm rows \(indices \[3\]\)"
    ):
        S(X)


def test_identity_returns_copy_of_X():
    X = _data(8, 12)
    S = make_sketch("identity", 12, 12)
    Y = S(X)
    assert torch.equal(Y, X) and Y.data_ptr() != X.data_ptr()
    Xn = X.numpy().copy()
    Yn = S(Xn)
    np.testing.assert_array_equal(Yn, Xn)
    Yn[0, 0] = 99.0
    assert Xn[0, 0] != 99.0
    assert torch.equal(S.matrix(), torch.eye(12, dtype=torch.float64))


# ---------------------------------------------------------------------- pca
@pytest.mark.parametrize("solver", ["full", "randomized", "auto"])
def test_pca_recovers_low_rank_subspace(solver):
    n, d, r, k = 80, 60, 5, 8
    g = torch.Generator().manual_seed(0)
    X = torch.randn(n, r, generator=g, dtype=torch.float64) @ torch.randn(
        r, d, generator=g, dtype=torch.float64
    )
    S = make_sketch("pca", d, k, seed=2, svd_solver=solver)
    assert S.fit(X) is S
    V = S.matrix()
    torch.testing.assert_close(V @ V.T, torch.eye(k, dtype=torch.float64), rtol=0, atol=1e-10)
    assert float((X - X @ V.T @ V).norm()) <= 1e-10 * float(X.norm())
    # S(X) keeps all the geometry of X: Gram matrices agree
    Y = S(X)
    torch.testing.assert_close(Y @ Y.T, X @ X.T, rtol=1e-10, atol=1e-9)


def test_pca_matches_exact_top_k_subspace():
    n, d, k = 120, 40, 6
    g = torch.Generator().manual_seed(1)
    U, _ = torch.linalg.qr(torch.randn(n, d, generator=g, dtype=torch.float64))
    W, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    sv = torch.cat([torch.linspace(10, 5, k), torch.linspace(1, 0.1, d - k)]).double()
    X = U * sv @ W.T
    for solver in ("full", "randomized"):
        S = make_sketch("pca", d, k, svd_solver=solver).fit(X)
        V = S.matrix()
        P_true = W[:, :k] @ W[:, :k].T
        torch.testing.assert_close(V.T @ V, P_true, rtol=0, atol=1e-8)
        torch.testing.assert_close(S.singular_values_, sv[:k], rtol=1e-8, atol=0)
        # deterministic sign convention: largest-magnitude entry of each component is positive
        top = V.abs().argmax(dim=1)
        assert bool((V[torch.arange(k), top] > 0).all())


def test_pca_auto_solver_choice_and_fewer_rows_than_k():
    X = _data(600, 700)
    assert make_sketch("pca", 700, 20).fit(X).solver_ == "randomized"
    assert make_sketch("pca", 700, 600).fit(X).solver_ == "full"
    assert make_sketch("pca", 40, 5).fit(_data(30, 40)).solver_ == "full"
    # n = 4 < k = 6: 4 data directions plus an orthonormal completion
    Xs = _data(4, 20)
    S = make_sketch("pca", 20, 6, seed=3).fit(Xs)
    V = S.matrix()
    torch.testing.assert_close(V @ V.T, torch.eye(6, dtype=torch.float64), rtol=0, atol=1e-12)
    assert float((Xs - Xs @ V.T @ V).norm()) <= 1e-12 * float(Xs.norm())
    assert torch.equal(S.singular_values_[4:], torch.zeros(2, dtype=torch.float64))


# ------------------------------------------------------------ fit and flops
@pytest.mark.parametrize("kind", ["gaussian", "sparse", "srht", "identity"])
def test_fit_is_noop_for_data_independent_kinds(kind):
    S = _sketch(kind, d=16, k=4, seed=0)
    X = _data(5, 16)
    before = S(X)
    assert S.fit(_data(30, 16, seed=5)) is S
    assert torch.equal(S(X), before)


def test_flops():
    n, d, k = 10, 100, 20
    assert make_sketch("gaussian", d, k).flops(n) == n * k * d
    assert make_sketch("pca", d, k).flops(n) == n * k * d
    assert make_sketch("sparse", d, k, s=3).flops(n) == n * 3 * d
    assert make_sketch("sparse", d, k).flops(n) == n * 8 * d
    for dd in (d, 128, 1000, 8192):
        S = make_sketch("srht", dd, k)
        factors, a = S.plan()
        c = S.d_pad // a
        gmax = int(torch.bincount(S.rows // a, minlength=c).max())
        assert S.flops(n) == n * S.d_pad * (sum(factors) + gmax)
    assert make_sketch("identity", d, d).flops(n) == 0
    assert make_sketch("gaussian", d, k).flops(0) == 0
    with pytest.raises(ValueError, match="n must be >= 0"):
        make_sketch("gaussian", d, k).flops(-1)


# ---------------------------------------------------------------- validation
def test_error_unknown_kind():
    with pytest.raises(
        ValueError,
        match=r"unknown sketch kind 'fjlt'; expected one of 'gaussian', 'sparse', 'srht', 'pca', 'identity'",
    ):
        make_sketch("fjlt", 10, 2)


@pytest.mark.parametrize("kind", SKETCH_KINDS)
def test_error_k_out_of_range(kind):
    with pytest.raises(ValueError, match=r"k must be >= 1, got 0"):
        make_sketch(kind, 10, 0)
    with pytest.raises(
        ValueError, match=r"k must be <= d = 10 \(a sketch reduces dimension\), got 11"
    ):
        make_sketch(kind, 10, 11)
    with pytest.raises(ValueError, match=r"k must be an integer, got 2.5"):
        make_sketch(kind, 10, 2.5)
    with pytest.raises(ValueError, match=r"k must be an integer, got True"):
        make_sketch(kind, 10, True)


def test_error_bad_d_seed_and_options():
    with pytest.raises(ValueError, match=r"d must be >= 1, got 0"):
        make_sketch("gaussian", 0, 1)
    with pytest.raises(ValueError, match=r"d must be an integer, got 10.0"):
        make_sketch("gaussian", 10.0, 1)
    with pytest.raises(ValueError, match=r"seed must be an integer, got '1'"):
        make_sketch("gaussian", 10, 2, seed="1")
    with pytest.raises(ValueError, match=r"seed must be >= 0, got -1"):
        make_sketch("gaussian", 10, 2, seed=-1)
    with pytest.raises(ValueError, match=r"renormalize must be True or False, got 'yes'"):
        make_sketch("gaussian", 10, 2, renormalize="yes")
    with pytest.raises(ValueError, match=r"batch_size must be >= 1, got 0"):
        make_sketch("srht", 10, 2, batch_size=0)
    with pytest.raises(
        ValueError,
        match=r"unexpected option\(s\) 's' for the 'gaussian' sketch; allowed: 'batch_size'",
    ):
        make_sketch("gaussian", 10, 2, s=2)
    with pytest.raises(ValueError, match=r"unknown svd_solver 'arpack'"):
        make_sketch("pca", 10, 2, svd_solver="arpack")


def test_error_identity_needs_k_equal_d():
    with pytest.raises(
        ValueError, match=r"identity sketch needs k == d \(no reduction\), got k = 3, d = 10"
    ):
        make_sketch("identity", 10, 3)


def test_error_bad_s():
    with pytest.raises(ValueError, match=r"s must be >= 1, got 0"):
        make_sketch("sparse", 10, 4, s=0)
    with pytest.raises(ValueError, match=r"s \(non-zeros per column\) must be <= k = 4, got 5"):
        make_sketch("sparse", 10, 4, s=5)
    with pytest.raises(ValueError, match=r"s must be an integer, got 1.5"):
        make_sketch("sparse", 10, 4, s=1.5)


@pytest.mark.parametrize("kind", SKETCH_KINDS)
def test_error_bad_X(kind):
    S = _sketch(kind, d=10, k=3, seed=0)
    with pytest.raises(ValueError, match=r"X has 9 features but the sketch expects d = 10"):
        S(np.ones((4, 9)))
    X = np.ones((4, 10))
    X[2, 5] = np.nan
    with pytest.raises(ValueError, match=r"X contains NaN or Inf \(first at row 2, column 5\)"):
        S(X)
    X[2, 5] = np.inf
    with pytest.raises(ValueError, match=r"X contains NaN or Inf"):
        S(torch.tensor(X))
    with pytest.raises(
        ValueError, match=r"X must be 2-D \(n_samples, n_features\), got shape \(10,\)"
    ):
        S(np.ones(10))
    with pytest.raises(ValueError, match=r"X is empty: shape \(0, 10\)"):
        S(np.ones((0, 10)))
    with pytest.raises(ValueError, match=r"X must be numeric"):
        S(np.array([["a"] * 10]))
    with pytest.raises(ValueError, match=r"X has 9 features but the sketch expects d = 10"):
        S.fit(np.ones((4, 9)))


def test_error_pca_not_fit():
    S = make_sketch("pca", 10, 3)
    with pytest.raises(ValueError, match=r"pca sketch must be fit\(X\) before use"):
        S(np.ones((2, 10)))
    with pytest.raises(ValueError, match=r"pca sketch must be fit\(X\) before use"):
        S.matrix()
    assert "fitted=False" in repr(S)


# ---------------------------------------------------------------- extreme magnitudes
@pytest.mark.parametrize("kind", SKETCH_KINDS)
@pytest.mark.parametrize(
    "dtype,exp",
    [
        (torch.float64, 1020),
        (torch.float64, -1060),
        (torch.float64, -600),
        (torch.float32, 125),
        (torch.float32, -140),
        (torch.float32, -100),
    ],
)
def test_renormalize_rows_of_extreme_magnitude(kind, dtype, exp):
    """Rows of any finite magnitude come back unit-norm, in the direction of the exact sketch."""
    S = _sketch(kind, d=16, k=16 if kind == "identity" else 5, seed=2, renormalize=True)
    Xs = torch.ldexp(_data(4, 16, seed=3), torch.tensor(exp)).to(dtype)  # exact unless subnormal
    Y = S(Xs)
    assert Y.dtype == dtype
    # reference: the rows as stored (subnormal rounding included), sketched in float64
    ref = torch.ldexp(Xs.double(), torch.tensor(-exp)) @ S.matrix().T
    ref = ref / ref.norm(dim=1, keepdim=True)
    _close(Y, ref, dtype)


@pytest.mark.parametrize("kind", SKETCH_KINDS)
def test_overflowing_partial_sums_give_the_exact_sketch(kind, monkeypatch):
    """float32 rows near the float32 maximum: partial sums overflow, the result does not.

    x = fmax (M^+ tau + c v) with tau = 0.3 per output and v in the null space of M, scaled so
    that max |x_j| = 0.9 fmax: the exact sketch M x = 0.3 fmax per entry is representable, but
    the terms x_j M_ij cancel from a mass sum_j |x_j M_ij| of several fmax.  The k >= 4 outputs
    are positive and sum to >= 1.2 fmax, so whatever order the direct product summed in, its
    overflow check (one sum over the output) is not finite and the power-of-two rescaled path
    runs (for the identity, with no null space, that sum is the only overflowing partial sum;
    here gaussian, sparse and srht overflow inside the product itself, pca only in that sum).
    """
    d = 16
    S = _sketch(kind, d=d, k=d if kind == "identity" else 4, seed=0)
    M = S.matrix().numpy()
    fmax = float(torch.finfo(torch.float32).max)
    P = np.linalg.pinv(M)
    x = P @ np.full(M.shape[0], 0.3)
    if kind != "identity":
        # null-space parts of random sign vectors, scaled to max |x_j| = 0.9; keep the heaviest
        best = None
        for signs in np.random.default_rng(0).choice([-1.0, 1.0], size=(50, d)):
            v = signs - P @ (M @ signs)  # M v = 0
            on = np.abs(v) > 1e-9
            c = min((0.9 - np.sign(v[on]) * x[on]) / np.abs(v[on]))
            cand = x + c * v
            if (
                best is None
                or (np.abs(cand) @ np.abs(M).T).max() > (np.abs(best) @ np.abs(M).T).max()
            ):
                best = cand
        x = best
    X = torch.from_numpy(x * fmax).to(torch.float32)[None, :]
    exact = X.double().numpy() @ M.T  # from the float32 row actually passed
    mass = np.abs(X.double().numpy()) @ np.abs(M).T
    assert bool(torch.isfinite(X).all()) and float(X.abs().max()) <= 0.91 * fmax
    assert np.all((exact > 0.29 * fmax) & (exact < 0.31 * fmax)), exact / fmax
    if kind != "identity":
        assert mass.max() >= 2.0 * fmax, mass / fmax  # a sum in that order overflows

    calls = []
    scaled = Sketch._transform_scaled

    def spy(self, *args, **kwargs):
        calls.append(args)
        return scaled(self, *args, **kwargs)

    monkeypatch.setattr(Sketch, "_transform_scaled", spy)
    Y = S(X)
    assert calls, "the rescaled path did not run"
    assert Y.dtype == torch.float32 and bool(torch.isfinite(Y).all())
    # Error bound of the rescaled product (scaling by 2^-e and back is exact): a d-term sum in
    # float32, gamma_d <= d u with u = eps / 2, plus the rounding of M to float32 (u per entry),
    # both relative to the mass sum_j |x_j M_ij|: |Y - exact| <= (d + 1) u mass, allowed 2x.
    eps = float(torch.finfo(torch.float32).eps)
    err = np.abs(Y.double().numpy() - exact)
    assert np.all(err <= (d + 1) * eps * mass), (err / mass).max() / eps


@pytest.mark.parametrize("kind", ["gaussian", "sparse", "srht", "pca"])
def test_unrepresentable_sketch_raises(kind):
    S = _sketch(kind, d=8, k=2, seed=0)
    # x = max * sign(S[0]): (S x)_0 = max * sum_j |S_0j| > max, not representable
    X = (torch.sign(S.matrix()[0]) * float(torch.finfo(torch.float32).max)).to(torch.float32)[
        None, :
    ]
    assert float((X.double() @ S.matrix().T).abs().max()) > 1.01 * float(
        torch.finfo(torch.float32).max
    )
    with pytest.raises(
        ValueError, match=rf"the {kind}-sketched X overflows float32 \(entries beyond"
    ):
        S(X)
    # with renormalize the scale drops out: the same rows are fine
    Sn = _sketch(kind, d=8, k=2, seed=0, renormalize=True)
    torch.testing.assert_close(Sn(X).norm(dim=1), torch.ones(1))
