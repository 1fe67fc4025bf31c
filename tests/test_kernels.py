"""Tests of ntkdr.kernels: analytic NTK / NNGP against independent slow references.

References: Monte-Carlo averages over random networks (tolerances from the sample's own
standard error), neural-tangents (tests/data/nt_reference.npz, made by make_nt_reference.py),
mpmath at 50 digits, untiled evaluation, and the explicit matrix for matrix-free products.
"""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
import torch

from ntkdr import kernels
from ntkdr.kernels import NTK, KernelOptions, fc_relu_kernels, two_layer_ntk

DATA = os.path.join(os.path.dirname(__file__), "data", "nt_reference.npz")


def _rng(seed=0):
    return np.random.default_rng(seed)


def _mc_check(samples: np.ndarray, exact: float, k: float = 5.0, extra: float = 0.0) -> None:
    """|mean - exact| <= k standard errors (estimated from the samples) + extra."""
    mean = samples.mean()
    stderr = samples.std(ddof=1) / math.sqrt(samples.size)
    assert abs(mean - exact) <= k * stderr + extra + 1e-12, (mean, exact, stderr)


# ----------------------------------------------------------------------------- Monte-Carlo


@pytest.mark.parametrize("kappa", [1.0, 1.5])
def test_two_layer_matches_monte_carlo(kappa):
    rng = _rng(1)
    d, M = 5, 200_000
    X = rng.standard_normal((3, d)) * np.array([[1.0], [0.5], [2.0]])
    Z = rng.standard_normal((2, d))
    Z[1] = X[0] + 0.3 * rng.standard_normal(d)  # a small angle
    H1 = two_layer_ntk(X, Z, "first", kappa=kappa)
    H2 = two_layer_ntk(X, Z, "both", kappa=kappa) - H1
    W = rng.standard_normal((M, d))
    PX, PZ = W @ X.T, W @ Z.T  # w . x, w ~ N(0, I)
    for i in range(X.shape[0]):
        for j in range(Z.shape[0]):
            # H1 = E[(x . z) 1[w.x >= 0] 1[w.z >= 0]] (does not depend on kappa)
            _mc_check((X[i] @ Z[j]) * ((PX[:, i] >= 0) & (PZ[:, j] >= 0)), H1[i, j])
            # H2 = E[relu(w.x) relu(w.z)] with w ~ N(0, kappa^2 I)
            s = kappa**2 * np.maximum(PX[:, i], 0) * np.maximum(PZ[:, j], 0)
            _mc_check(s, H2[i, j])


def _random_inputs(rng, d=5):
    X = rng.standard_normal((3, d))
    X[2] = X[0] + 0.4 * rng.standard_normal(d)
    return X


@pytest.mark.parametrize("w_std,b_std,w_out", [(2**0.5, 0.0, 1.0), (1.2, 0.4, 0.8)])
def test_fc_depth1_ntk_and_nngp_monte_carlo(w_std, b_std, w_out):
    """Depth 1: per-unit gradient products of a sampled network (NTK param.) are iid samples.

    f(x) = w_out/sqrt(m) sum_r v_r relu(h_r(x)) + b beta_out,  h_r = w W_r.x/sqrt(d) + b beta_r.
    J(x).J(z) = sum_r s_r / m with s_r = w_out^2 [relu relu + v_r^2 1[h>0]1[h'>0] (w^2 x.z/d + b^2)] + b^2,
    and E[s_r] is the NTK; w_out^2 relu relu + b^2 has mean NNGP.
    """
    rng = _rng(2)
    d, m = 5, 200_000
    X = _random_inputs(rng, d)
    ntk, nngp = fc_relu_kernels(X, None, 1, w_std, b_std, w_out)
    W = rng.standard_normal((m, d))
    beta = rng.standard_normal(m)
    v = rng.standard_normal(m)
    H = w_std * (W @ X.T) / math.sqrt(d) + b_std * beta[:, None]  # (m, n)
    A, D = np.maximum(H, 0), (H > 0).astype(float)
    for i in range(3):
        for j in range(3):
            base = w_std**2 * (X[i] @ X[j]) / d + b_std**2
            s_nngp = w_out**2 * A[:, i] * A[:, j] + b_std**2
            s_ntk = s_nngp + w_out**2 * v**2 * D[:, i] * D[:, j] * base
            _mc_check(s_nngp, nngp[i, j])
            _mc_check(s_ntk, ntk[i, j])


def test_fc_depth2_nngp_monte_carlo():
    """NNGP = E[f(x) f(z)] over random wide networks of depth 2 (NTK parameterization).

    R independent draws of the first hidden layer (width m1); given it, the m2 second-layer
    units are iid, so each draw gives one mean; the standard error comes from the R means.
    Finite m1 biases the average by O(1/m1) relative (the Gaussian expectation is smooth in
    the layer-1 covariance), allowed for as 4/m1 of the kernel scale.
    """
    rng = _rng(3)
    d, m1, m2, R = 5, 512, 4000, 60
    w, b, w_out = 1.3, 0.3, 0.9
    X = _random_inputs(rng, d)
    _, nngp = fc_relu_kernels(X, None, 2, w, b, w_out)
    means = np.empty((R, 3, 3))
    for r in range(R):
        h1 = w * (rng.standard_normal((m1, d)) @ X.T) / math.sqrt(d) + b * rng.standard_normal(
            (m1, 1)
        )
        a1 = np.maximum(h1, 0)
        h2 = w * (rng.standard_normal((m2, m1)) @ a1) / math.sqrt(m1) + b * rng.standard_normal(
            (m2, 1)
        )
        a2 = np.maximum(h2, 0)
        # E[f(x) f(z) | layers] = w_out^2 mean_j a2_j(x) a2_j(z) + b^2 (readout weights and bias)
        means[r] = w_out**2 * (a2.T @ a2) / m2 + b**2
    mc = means.mean(0)
    stderr = means.std(0, ddof=1) / math.sqrt(R)
    assert np.all(np.abs(mc - nngp) <= 5 * stderr + 4.0 / m1 * np.abs(nngp).max())


# ------------------------------------------------------------------------ neural-tangents


def _ill_conditioned(A, B, tol=1e-3):
    """Pairs whose first-layer |sin theta| < tol (angles only sqrt(eps)-accurate from a GEMM)."""
    G = A @ B.T
    P = np.outer((A * A).sum(1), (B * B).sum(1))
    return np.sqrt(np.maximum(P - G * G, 0)) < tol * np.sqrt(P)


def test_fc_matches_neural_tangents():
    ref = np.load(DATA)
    X, Z = ref["X"], ref["Z"]
    for key, B, sym in (("xz", Z, None), ("xx", X, "sym")):
        bad = _ill_conditioned(X, B)
        assert bad.any() and (~bad).any()
        for i, (depth, w, b, wo) in enumerate(ref["params"]):
            ntk, nngp = fc_relu_kernels(X, None if sym else Z, int(depth), w, b, wo)
            nt_ntk, nt_nngp = ref["ntk_" + key][i], ref["nngp_" + key][i]
            scale_ntk, scale_nngp = np.abs(nt_ntk).max(), np.abs(nt_nngp).max()
            # NNGP: insensitive to the angle's rounding, float64 round-off everywhere
            np.testing.assert_allclose(nngp, nt_nngp, rtol=0, atol=1e-13 * scale_nngp)
            np.testing.assert_allclose(
                nngp, ref["nngp_" + key + "_mp"][i], rtol=0, atol=1e-13 * scale_nngp
            )
            # NTK: float64 round-off where the angle is well conditioned ...
            np.testing.assert_allclose(ntk[~bad], nt_ntk[~bad], rtol=1e-12, atol=1e-13 * scale_ntk)
            # ... and within the sqrt(eps) limit of any GEMM-based evaluation (neural-tangents
            # too) of the 50-digit value on duplicate / parallel / near-parallel pairs
            mp_ntk = ref["ntk_" + key + "_mp"][i]
            lim = 4 * math.sqrt(np.finfo(np.float64).eps) * scale_ntk
            assert np.abs(ntk - mp_ntk).max() <= lim
            assert np.abs(nt_ntk - mp_ntk).max() <= lim  # the reference is no better
            if sym:  # the diagonal is exact (theta = 0 closed form)
                np.testing.assert_allclose(np.diag(ntk), np.diag(mp_ntk), rtol=1e-14)


def test_two_layer_is_scaled_depth1_fc():
    """Exact identity: fc depth 1, b = 0: ntk = c (H1 + H2), nngp = c H2, c = w^2 w_out^2 / d."""
    rng = _rng(4)
    X = rng.standard_normal((6, 4)) * rng.uniform(0.2, 3.0, (6, 1))
    Z = rng.standard_normal((5, 4))
    w, wo, kappa = 1.3, 0.7, 1.7
    ntk, nngp = fc_relu_kernels(X, Z, 1, w, 0.0, wo)
    c = w**2 * wo**2 / X.shape[1]
    H1 = two_layer_ntk(X, Z, "first")
    Hb = two_layer_ntk(X, Z, "both", kappa=kappa)
    np.testing.assert_allclose(ntk - nngp, c * H1, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(Hb, (ntk + (kappa**2 - 1) * nngp) / c, rtol=1e-13, atol=1e-15)


# ----------------------------------------------------------------------- tiling and out=


def _data(n=23, m=17, d=6, seed=5, dtype=np.float64):
    rng = _rng(seed)
    return rng.standard_normal((n, d)).astype(dtype), rng.standard_normal((m, d)).astype(dtype)


@pytest.mark.parametrize("tile", [1, 3, 7, 22, 23, 100])
def test_tiled_equals_untiled(tile, monkeypatch):
    X, Z = _data()
    ref_two = [two_layer_ntk(X, B, "both", kappa=0.8) for B in (Z, None)]
    ref_fc = [fc_relu_kernels(X, B, 3, 1.1, 0.2, 0.9) for B in (Z, None)]
    monkeypatch.setattr("ntkdr.kernels.engine._CPU_BLOCK", 20)  # elementwise blocks of a few rows
    for B, r2, rf in zip((Z, None), ref_two, ref_fc):
        np.testing.assert_allclose(
            two_layer_ntk(X, B, "both", kappa=0.8, tile=tile), r2, rtol=1e-14, atol=1e-14
        )
        ntk, nngp = fc_relu_kernels(X, B, 3, 1.1, 0.2, 0.9, tile=tile)
        np.testing.assert_allclose(ntk, rf[0], rtol=1e-14, atol=1e-14)
        np.testing.assert_allclose(nngp, rf[1], rtol=1e-14, atol=1e-14)


def test_out_memmap_and_tensor(tmp_path):
    X, Z = _data()
    ref = two_layer_ntk(X, Z, "both")
    mm = np.lib.format.open_memmap(tmp_path / "k.npy", mode="w+", dtype=np.float64, shape=ref.shape)
    res = two_layer_ntk(X, Z, "both", tile=4, out=mm)
    assert res is mm
    mm.flush()
    np.testing.assert_allclose(np.load(tmp_path / "k.npy"), ref, rtol=1e-14, atol=1e-14)
    # float32 compute into a float64 file goes through tile buffers (budget-sized)
    mm2 = np.lib.format.open_memmap(
        tmp_path / "k2.npy", mode="w+", dtype=np.float64, shape=(23, 23)
    )
    two_layer_ntk(X.astype(np.float32), None, "both", out=mm2, max_memory=3000)
    np.testing.assert_allclose(mm2, two_layer_ntk(X, None, "both"), rtol=1e-5, atol=1e-5)
    assert np.array_equal(mm2, mm2.T)
    # preallocated tensors for both fc outputs
    o1, o2 = torch.empty(23, 17, dtype=torch.float64), torch.empty(23, 17, dtype=torch.float64)
    r1, r2 = fc_relu_kernels(torch.from_numpy(X), torch.from_numpy(Z), 2, out=(o1, o2), tile=5)
    assert r1 is o1 and r2 is o2
    e1, e2 = fc_relu_kernels(X, Z, 2)
    np.testing.assert_allclose(o1.numpy(), e1, rtol=1e-14)
    np.testing.assert_allclose(o2.numpy(), e2, rtol=1e-14)
    with pytest.raises(ValueError, match="shape"):
        two_layer_ntk(X, Z, out=np.empty((3, 3)))


def test_max_memory():
    X, _ = _data(n=100)
    with pytest.raises(ValueError, match=r"GiB.*out="):
        two_layer_ntk(X, max_memory=1000)
    with pytest.raises(ValueError, match="GiB"):
        fc_relu_kernels(X, max_memory=100 * 100 * 8 * 1.5)  # one result fits, two do not
    # a budget that holds the result: same values
    np.testing.assert_array_equal(two_layer_ntk(X, max_memory=2**20), two_layer_ntk(X))


@pytest.mark.parametrize("kind", ["two_layer", "fc"])
def test_matvec_and_diag(kind):
    X, Z = _data()
    # a budget of 3000 bytes forces tiles of one row in the product
    Kv = NTK(kind=kind, layers="both", depth=2, b_std=0.3, options=KernelOptions(max_memory=3000))
    K = NTK(kind=kind, layers="both", depth=2, b_std=0.3, options=KernelOptions(tile=4))
    rng = _rng(6)
    for v in (rng.standard_normal(17), rng.standard_normal((17, 3))):
        np.testing.assert_allclose(Kv.matvec(X, v, Z), K(X, Z) @ v, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(K.matvec(X, v, Z), K(X, Z) @ v, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="GiB"):
        Kv(X, Z)  # the matrix itself does not fit that budget
    v = torch.randn(23, dtype=torch.float64)
    Xt = torch.from_numpy(X)
    y = K.matvec(Xt, v)
    assert isinstance(y, torch.Tensor)
    torch.testing.assert_close(y, K(Xt) @ v, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(K.diag(X), np.diag(K(X)), rtol=1e-14)
    with pytest.raises(ValueError, match="v has 5 rows but Z has 17"):
        K.matvec(X, np.ones(5), Z)
    if kind == "fc":
        Kn = NTK(kind="fc", depth=2, output="nngp")
        np.testing.assert_allclose(Kn(X, Z), fc_relu_kernels(X, Z, 2)[1], rtol=1e-14)
        np.testing.assert_allclose(Kn.matvec(X, np.ones(17), Z), Kn(X, Z).sum(1), rtol=1e-12)
        np.testing.assert_allclose(Kn.diag(X), np.diag(Kn(X)), rtol=1e-14)


# ------------------------------------------------------------------------------ numerics


def test_symmetry_is_exact():
    X, _ = _data(n=41)
    for tile in (None, 8, 41):
        K = two_layer_ntk(X, layers="both", tile=tile)
        assert np.array_equal(K, K.T)
        ntk, nngp = fc_relu_kernels(X.astype(np.float32), depth=3, b_std=0.1, tile=tile)
        assert np.array_equal(ntk, ntk.T) and np.array_equal(nngp, nngp.T)
    big, _ = _data(n=700, d=10)  # several default tiles and mirror blocks
    K = two_layer_ntk(big)
    assert np.array_equal(K, K.T)


def _mp_two_layer(x, z, both):
    import mpmath as mp

    with mp.workdps(40):
        x = [mp.mpf(float(v)) for v in x]
        z = [mp.mpf(float(v)) for v in z]
        g = mp.fsum(a * b for a, b in zip(x, z))
        r = mp.sqrt(mp.fsum(a * a for a in x) * mp.fsum(b * b for b in z))
        if r == 0:
            return 0.0
        th = mp.acos(min(max(g / r, -1), 1))
        h = g * (mp.pi - th) / (2 * mp.pi)
        if both:
            h += r * (mp.sin(th) + (mp.pi - th) * g / r) / (2 * mp.pi)
        return float(h)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_degenerate_rows(dtype):
    """Duplicate, parallel, anti-parallel, near-parallel and zero rows: finite and accurate.

    The Gram entry g carries a rounding error of at most about d eps |x||z|, so the angle of
    a near-parallel pair is off by at most sqrt(2 d eps) and H1 = g (pi - theta)/(2 pi) by
    |x||z| sqrt(2 d eps) / (2 pi); elsewhere the error is a few eps.
    """
    pytest.importorskip("mpmath")
    rng = _rng(7)
    d = 6
    X = rng.standard_normal((9, d))
    X[1] = X[0]  # duplicate
    X[2] = 3.0 * X[0]  # parallel
    X[3] = -0.5 * X[0]  # anti-parallel
    X[4] = X[0] + 1e-6 * rng.standard_normal(d)  # near-parallel
    X[5] = 0.0  # zero row
    X[6] = X[7] + 1e-3 * rng.standard_normal(d)
    X = X.astype(dtype)
    eps = float(np.finfo(dtype).eps)
    nrm = np.linalg.norm(X.astype(np.float64), axis=1)
    scale = np.outer(nrm, nrm)
    for both in (False, True):
        ref = np.array([[_mp_two_layer(a, b, both) for b in X] for a in X])
        for Zarg in (None, X.copy()):
            K = two_layer_ntk(X, Zarg, "both" if both else "first")
            assert K.dtype == dtype and np.isfinite(K).all()
            assert np.all(K[5] == 0) and np.all(K[:, 5] == 0)
            err = np.abs(K - ref)
            assert np.all(err <= scale * (math.sqrt(2 * d * eps) / (2 * math.pi) + 20 * d * eps))
            # angles with sin(theta) > 0.1 amplify the Gram rounding at most 10-fold
            well = ~_ill_conditioned(X.astype(np.float64), X.astype(np.float64), tol=0.1)
            assert np.all(err[well] <= 50 * d * eps * scale[well])
        ntk, nngp = fc_relu_kernels(X, depth=3, b_std=0.2)
        assert np.isfinite(ntk).all() and np.isfinite(nngp).all()


def test_float32_close_to_float64():
    X, Z = _data(n=30, m=20, d=8)
    for B in (Z, None):
        k64 = two_layer_ntk(X, B, "both")
        k32 = two_layer_ntk(
            X.astype(np.float32), None if B is None else B.astype(np.float32), "both"
        )
        assert k32.dtype == np.float32
        np.testing.assert_allclose(k32, k64, rtol=0, atol=2e-5 * np.abs(k64).max())
        n64, g64 = fc_relu_kernels(X, B, 2, b_std=0.1)
        n32, g32 = fc_relu_kernels(
            torch.from_numpy(X).float(),
            None if B is None else torch.from_numpy(B).float(),
            2,
            b_std=0.1,
        )
        assert n32.dtype == torch.float32
        np.testing.assert_allclose(n32.numpy(), n64, rtol=0, atol=2e-5 * np.abs(n64).max())
        np.testing.assert_allclose(g32.numpy(), g64, rtol=0, atol=2e-5 * np.abs(g64).max())


def test_kinds_and_dtype_promotion():
    X, Z = _data(n=5, m=4)
    K = two_layer_ntk(X.tolist(), Z)
    assert isinstance(K, np.ndarray) and K.dtype == np.float64
    Kt = two_layer_ntk(torch.from_numpy(X).float(), torch.from_numpy(Z).float())
    assert isinstance(Kt, torch.Tensor) and Kt.dtype == torch.float32
    mixed = two_layer_ntk(X.astype(np.float32), Z)  # promoted to the wider dtype
    assert mixed.dtype == np.float64
    np.testing.assert_allclose(
        mixed, two_layer_ntk(X.astype(np.float32).astype(np.float64), Z), rtol=1e-14
    )
    cast = two_layer_ntk(X, Z, dtype="float32")
    assert cast.dtype == np.float32
    ntk, nngp = fc_relu_kernels(torch.from_numpy(X), depth=2)
    assert isinstance(ntk, torch.Tensor) and ntk.dtype == torch.float64 and ntk.shape == (5, 5)
    ints = two_layer_ntk(np.arange(12).reshape(4, 3))
    assert ints.dtype == np.float32


def test_validation_errors():
    X, Z = _data(n=5, m=4)
    bad = X.copy()
    bad[1, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        two_layer_ntk(bad)
    with pytest.raises(ValueError, match="NaN"):
        fc_relu_kernels(X, bad)
    with pytest.raises(ValueError, match="2-D"):
        two_layer_ntk(X[0])
    with pytest.raises(ValueError, match="empty"):
        two_layer_ntk(np.empty((0, 3)))
    with pytest.raises(ValueError, match="same number of features"):
        two_layer_ntk(X, Z[:, :3])
    with pytest.raises(ValueError, match="layers"):
        two_layer_ntk(X, layers="second")
    with pytest.raises(ValueError, match="depth must be >= 1"):
        fc_relu_kernels(X, depth=0)
    with pytest.raises(ValueError, match="depth must be an integer"):
        fc_relu_kernels(X, depth=1.5)
    with pytest.raises(ValueError, match="tile must be >= 1"):
        two_layer_ntk(X, tile=0)
    with pytest.raises(ValueError, match="max_memory"):
        two_layer_ntk(X, max_memory=-1)
    with pytest.raises(ValueError, match="kappa"):
        two_layer_ntk(X, kappa=0)
    with pytest.raises(ValueError, match="b_std"):
        fc_relu_kernels(X, b_std=-0.1)
    with pytest.raises(ValueError, match="kind"):
        NTK(kind="conv")
    with pytest.raises(ValueError, match="only defined for kind='fc'"):
        NTK(output="nngp")
    with pytest.raises(ValueError, match="pair"):
        fc_relu_kernels(X, out=np.empty((5, 5)))


# ------------------------------------------------------------------ extreme magnitudes


def _kahan_h1(X, Z):
    """Slow float64 reference of H1 with Kahan's angle 2 atan2(|u - v|, |u + v|) on unit rows."""
    out = np.zeros((X.shape[0], Z.shape[0]))
    for i, x in enumerate(X):
        for j, z in enumerate(Z):
            nx, nz = np.linalg.norm(x), np.linalg.norm(z)
            u, v = x / nx, z / nz
            th = 2 * math.atan2(np.linalg.norm(u - v), np.linalg.norm(u + v))
            out[i, j] = nx * nz * math.cos(th) * (math.pi - th) / (2 * math.pi)
    return out


@pytest.mark.parametrize(
    "dtype,exp",
    [
        (np.float64, 400),
        (np.float64, -400),
        (np.float64, -500),
        (np.float32, 50),
        (np.float32, -50),
    ],
)
def test_kernels_correct_where_norm_products_overflow(dtype, exp):
    """|x|^2 |z|^2 leaves the dtype's range but the kernel (~|x||z|) does not: H(2^e X) = 4^e H(X)."""
    X = _rng(7).standard_normal((6, 4))
    X[3] = 2.0 * X[1]  # parallel
    X[4] = -X[0]  # opposite
    Xs = (X * 2.0**exp).astype(dtype)
    eps = np.finfo(dtype).eps
    K = two_layer_ntk(Xs).astype(np.float64) / 4.0**exp
    scale = np.sqrt(np.outer(np.diag(K), np.diag(K)))
    assert np.all(np.abs(K - _kahan_h1(X, X)) <= 8 * math.sqrt(eps) * scale)
    ntk, nngp = fc_relu_kernels(Xs, depth=2)
    ntk0, nngp0 = fc_relu_kernels(X.astype(dtype), depth=2)
    for a, b in ((ntk, ntk0), (nngp, nngp0)):
        a = a.astype(np.float64) / 4.0**exp
        s = np.sqrt(np.outer(np.diag(b), np.diag(b)))
        assert np.all(np.abs(a - b) <= 8 * math.sqrt(eps) * s)


@pytest.mark.parametrize("dtype,exp", [(np.float64, 530), (np.float64, 1000), (np.float32, 70)])
def test_kernel_of_tiny_against_huge_rows(dtype, exp):
    """H(2^-e X, 2^e X) = H(X, X) although |x|^2 underflows and |z|^2 overflows."""
    X = _rng(10).standard_normal((5, 3))
    eps = np.finfo(dtype).eps
    K = two_layer_ntk((X * 2.0**-exp).astype(dtype), (X * 2.0**exp).astype(dtype), "both")
    K0 = two_layer_ntk(X, layers="both")
    s = np.sqrt(np.outer(np.diag(K0), np.diag(K0)))
    assert np.all(np.abs(K.astype(np.float64) - K0) <= 8 * math.sqrt(eps) * s)


@pytest.mark.parametrize(
    "call",
    [
        lambda X: two_layer_ntk(X * 1e160),
        lambda X: two_layer_ntk(X * 1e150, X * 1e200),
        lambda X: two_layer_ntk(X * 1e100, layers="both", kappa=1e60),
        lambda X: fc_relu_kernels(X, depth=3, w_std=1e60),
        lambda X: fc_relu_kernels(X.astype(np.float32), depth=1, b_std=1e20),
        lambda X: kernels.two_layer_ntk_diag(X * 1e160),
        lambda X: kernels.fc_relu_kernels_diag(X, w_out=1e160),
        lambda X: NTK().matvec(X * 1e160, np.ones(4)),
    ],
)
def test_unrepresentable_kernel_raises(call):
    X = _rng(8).standard_normal((4, 3))
    with pytest.raises(ValueError, match="kernel values overflow the dtype range"):
        call(X)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("d", [3, 50, 784])
@pytest.mark.parametrize("fn", ["first", "both", "fc3"])
def test_duplicate_and_opposite_rows_exact(dtype, d, fn):
    """Equal rows get theta = 0 exactly, opposite rows pi, whatever the tiling: lambda_min ~ eps."""
    rng = _rng(9)
    B = rng.standard_normal((3, d))
    X = np.concatenate([B, B, B[:1], -B[1:2]]).astype(dtype)  # 8 rows, 3 distinct directions + 1
    eps = float(np.finfo(dtype).eps)
    for tile in (None, 1, 3):
        if fn == "fc3":
            K = fc_relu_kernels(X, depth=3, b_std=0.2, tile=tile)[0]
        else:
            K = two_layer_ntk(X, layers=fn, tile=tile)
        K = K.astype(np.float64)
        ev = np.linalg.eigvalsh(K)
        # 4 exact duplicates -> 4 zero eigenvalues (the opposite row is independent for ReLU)
        assert np.abs(ev[:4]).max() <= 16 * 8 * eps * np.abs(K).max(), (tile, ev[:5])
    if fn == "first":
        Kx = two_layer_ntk(X, X[[0, 1]], tile=1)
        # Equal rows get theta = 0 exactly (the shrink), so H1 = g / 2 with g = x . x from the
        # GEMM.  BLAS does not promise the same rounding for the same row at another offset (or
        # on another CPU), only |g - |x|^2| <= gamma_d |x|^2 with gamma_d ~ d eps (a d-term dot
        # product): each entry is within d eps |x|^2 / 2 of |x|^2 / 2, so of each other within
        # d eps |x|^2.  (float32 rows 0 and 3 differed by one ulp on an AMD EPYC.)
        sq = float((X[0].astype(np.float64) ** 2).sum())
        for i in (0, 3, 6):  # rows 0, 3 and 6 all equal B[0]
            assert abs(float(Kx[i, 0]) - sq / 2) <= d * eps * sq / 2, (i, Kx[i, 0], sq / 2)
        assert abs(float(Kx[0, 0]) - float(Kx[3, 0])) <= d * eps * sq
        assert Kx[7, 1] == 0.0  # opposite rows: theta = pi exactly, H1 = 0 (by construction)


def test_large_results_ask_for_huge_pages_and_stay_correct():
    """The engine's results come from memory.empty_large: on Linux with transparent huge pages
    available the madvise is accepted; the kernel is the same either way."""
    import sys
    from pathlib import Path

    import ntkdr.kernels.engine as eng
    from ntkdr.memory import _advise_huge_pages, empty_large

    t = empty_large((1200, 1100), torch.float64, "cpu")
    assert t.shape == (1200, 1100) and t.dtype == torch.float64
    thp = Path("/sys/kernel/mm/transparent_hugepage/enabled")
    if sys.platform.startswith("linux") and thp.exists() and "[never]" not in thp.read_text():
        assert _advise_huge_pages(t.data_ptr(), t.numel() * 8)
    assert not _advise_huge_pages(t.data_ptr(), 1 << 20)  # no whole 2 MiB page inside
    X = torch.randn(1100, 30, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    K = two_layer_ntk(X, layers="both")
    old = eng.empty_large
    try:
        eng.empty_large = lambda shape, dt, dev: torch.empty(shape, dtype=dt, device=dev)
        assert torch.equal(K, two_layer_ntk(X, layers="both"))
    finally:
        eng.empty_large = old
