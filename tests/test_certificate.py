"""The certificate engine against the exact eigh / Cholesky values (the accuracy contract:
lambda_min within 1e-4 relative, bounds within 1e-6 relative), its intervals against the
exact values they claim to contain, the method choice, non-PD kernels, resume, and two gloo
ranks against one process.  The n = 2000-3000 comparisons for every sketch kind are ``slow``."""

from __future__ import annotations

import datetime
import math
import os

import numpy as np
import pytest
import scipy.linalg as sl
import torch

from ntkdr.data import load_dataset
from ntkdr.experiment.certify import certify_features, certify_grid
from ntkdr.kernels import two_layer_ntk
from ntkdr.sketches import make_sketch
from ntkdr.theory import SingularKernelWarning
from ntkdr.theory import certificate as C
from ntkdr.theory import certificate_linalg as LA

LAMBDA_RTOL, BOUND_RTOL = 1e-4, 1e-6


def _exact(F, Ys):
    """Reference: full eigh and Cholesky solves of the float64 kernel (the old path)."""
    K = two_layer_ntk(np.asarray(F, dtype=np.float64))
    ev = sl.eigh(K, eigvals_only=True)
    L = sl.cholesky(K, lower=True)
    comps = []
    for Y in Ys:
        Z = sl.solve_triangular(L, np.asarray(Y, dtype=np.float64), lower=True)
        comps.append(float(np.sum(Z * Z)))
    return ev, comps


def _check(cert, ev, comps, n, *, certified):
    lam = cert.lambda_min
    assert abs(lam["value"] - ev[0]) <= LAMBDA_RTOL * ev[0]
    assert abs(cert.lambda_max - ev[-1]) <= 1e-8 * ev[-1]
    if certified:
        assert lam["status"] == "certified"
        assert lam["lower"] <= ev[0] * (1 + 1e-12) and ev[0] <= lam["upper"] * (1 + 1e-12)
    for key, exact in zip(("true", "random"), comps):
        bound = math.sqrt(2 * exact / n)
        got = cert.bound[key]
        assert abs(got["value"] - bound) <= BOUND_RTOL * bound
        assert got["lower"] <= bound * (1 + 1e-13)
        if certified:
            assert got["status"] == "certified" and bound <= got["upper"] * (1 + 1e-13)


@pytest.fixture(scope="module")
def mnist():
    ds = load_dataset("mnist", n_train=300, n_test=200, seed=0)
    yr = np.random.default_rng(1).choice([-1.0, 1.0], size=300)
    return ds, yr


# --------------------------------------------------------------------------------------------
# the proofs
# --------------------------------------------------------------------------------------------
def _spd(n=120, cond=1e5, seed=0):
    g = np.random.default_rng(seed)
    Q = np.linalg.qr(g.standard_normal((n, n)))[0]
    ev = np.geomspace(1.0 / cond, 1.0, n)
    return (Q * ev) @ Q.T, ev


def test_shifted_cholesky_proves_exactly_what_it_claims():
    A, ev = _spd()
    buf = np.empty_like(A)
    below = LA.shifted_cholesky(A, ev[0] * (1 - 1e-6), buf)
    assert below.ok and below.lower <= ev[0] and below.lower > ev[0] * (1 - 1e-5)
    above = LA.shifted_cholesky(A, ev[0] * 1.01, buf)
    assert not above.ok and above.factor is None
    assert LA.shifted_cholesky(A, 0.0, buf).margin < 1e-10


def test_pcg_quadrature_brackets_b_inv_b_and_converges():
    A, ev = _spd(cond=1e3)
    b = np.random.default_rng(2).standard_normal((A.shape[0], 2))
    exact = np.einsum("ij,ij->j", b, np.linalg.solve(A, b))
    ident = lambda r: r  # noqa: E731  (unpreconditioned: many steps, bounds tighten monotonically)
    for steps in (3, 10, 30):
        r = LA.pcg_quadrature(A.__matmul__, ident, b, ev[0], maxiter=steps, rtol=0)
        assert np.all(r.lower <= exact * (1 + 1e-12)) and np.all(exact <= r.upper * (1 + 1e-12))
    r = LA.pcg_quadrature(A.__matmul__, ident, b, ev[0], maxiter=500)
    assert r.converged and np.allclose(r.lower, exact, rtol=1e-10)
    # the energy-norm stop (1e-13 of b^T A^-1 b) leaves x accurate to ~sqrt(kappa 1e-13)
    np.testing.assert_allclose(r.x, np.linalg.solve(A, b), rtol=1e-3)


# --------------------------------------------------------------------------------------------
# the engine against the exact path (small n here; n = 2000-3000 below, slow)
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["exact", "cholesky"])
@pytest.mark.parametrize("kind", [None, "gaussian", "srht"])
def test_in_memory_methods_match_exact(mnist, method, kind):
    ds, yr = mnist
    F = ds.X_train
    if kind is not None:
        F = make_sketch(kind, F.shape[1], 32, seed=0, renormalize=True).fit(F)(F)
    ev, comps = _exact(F, [ds.y_train, yr])
    cert = certify_matrix_k(F, ds.y_train, yr, method)
    assert cert.method == method and cert.is_pd
    _check(cert, ev, comps, F.shape[0], certified=True)


def certify_matrix_k(F, y, yr, method):
    return C.certify_matrix(two_layer_ntk(np.asarray(F)), y, yr, method=method)


def _sketched_k(ds, seed=1):
    F = make_sketch("gaussian", ds.X_train.shape[1], 32, seed=seed, renormalize=True)
    return F.fit(ds.X_train)(ds.X_train)


def test_unproven_route_same_values_says_estimate(mnist):
    ds, yr = mnist
    F = _sketched_k(ds)
    ev, comps = _exact(F, [ds.y_train, yr])
    K = two_layer_ntk(F)
    cert = C.certify_matrix(K, ds.y_train, yr, method="cholesky", proven=False)
    assert cert.details["factorizations"] == 0 and cert.details["route"] == "float32 preconditioner"
    _check(cert, ev, comps, F.shape[0], certified=False)
    assert cert.lambda_min["status"] == "estimate" and cert.lambda_min["lower"] == -math.inf
    assert all(b["status"] == "estimate" for b in cert.bound.values())
    proven = C.certify_matrix(K, ds.y_train, yr, method="cholesky")
    assert proven.details["factorizations"] == 1
    assert proven.lambda_min["value"] == cert.lambda_min["value"]


def test_float64_route_takes_over_where_float32_cannot_decide(mnist, monkeypatch):
    ds, yr = mnist
    F = _sketched_k(ds, seed=2)
    ev, comps = _exact(F, [ds.y_train, yr])
    K = two_layer_ntk(F)
    monkeypatch.setattr(LA, "float32_cholesky", lambda *a, **kw: (None, math.nan))
    cert = C.certify_matrix(K, ds.y_train, yr, method="cholesky", proven=False)
    assert cert.details["route"] == "float64" and cert.details["factorizations"] == 2
    _check(cert, ev, comps, F.shape[0], certified=True)


def test_unconverged_lanczos_falls_back_to_the_float64_route(mnist, monkeypatch):
    ds, yr = mnist
    F = _sketched_k(ds, seed=3)
    ev, comps = _exact(F, [ds.y_train, yr])
    real = LA.lanczos_bottom

    def first_fails(solve, n, shift, count=4, **kw):
        if "v0" in kw:  # the float32 route's call
            raise LA.LanczosNoConvergence("no convergence")
        return real(solve, n, shift, count, **kw)

    monkeypatch.setattr(LA, "lanczos_bottom", first_fails)
    cert = C.certify_matrix(two_layer_ntk(F), ds.y_train, yr, method="cholesky")
    assert cert.details["route"] == "float64"
    _check(cert, ev, comps, F.shape[0], certified=True)


def test_float32_preconditioner_of_an_ill_conditioned_matrix():
    rng = np.random.default_rng(0)
    n = 200
    Q = np.linalg.qr(rng.standard_normal((n, n)))[0]
    K = (Q * np.logspace(-12, 0, n)) @ Q.T
    K = (K + K.T) / 2
    buf = np.empty((n, n), dtype=np.float32)
    factor, tau = LA.float32_cholesky(K, buf)
    assert factor is not None and tau > 0  # float32 cannot factor kappa = 1e12 unshifted
    R = factor.astype(np.float64)
    assert np.allclose(np.triu(R).T @ np.triu(R), K + tau * np.eye(n), atol=1e-5)
    K2 = np.diag(np.linspace(1.0, 2.0, n))
    factor, tau = LA.float32_cholesky(K2, buf)
    assert tau == 0.0
    x = LA.cho_solve_fn(factor)(np.ones((n, 1)))
    assert x.dtype == np.float64 and np.allclose(x[:, 0], 1 / np.diag(K2), rtol=1e-6)


def test_residual_quadrature_brackets_from_any_approximate_solution():
    rng = np.random.default_rng(1)
    n = 150
    A = rng.standard_normal((n, n))
    K = A @ A.T / n + 0.05 * np.eye(n)
    B = rng.standard_normal((n, 3))
    exact = np.einsum("ij,ij->j", B, np.linalg.solve(K, B))
    lam = float(np.linalg.eigvalsh(K)[0])
    for noise in (1e-12, 1e-6, 1e-2):
        X = np.linalg.solve(K, B) + noise * rng.standard_normal((n, 3))
        value, lower, upper = LA.residual_quadrature(K.__matmul__, X, B, lam, np.linalg.norm(K))
        assert np.all(lower <= exact) and np.all(exact <= upper)
        assert np.all(np.abs(value - exact) <= 1e3 * noise**2 * np.abs(exact) + 1e-10)
    _, _, upper = LA.residual_quadrature(K.__matmul__, X, B, None, np.linalg.norm(K))
    assert np.all(np.isinf(upper))


def test_inplace_method_matches_exact_with_one_buffer(mnist):
    ds, yr = mnist
    ev, comps = _exact(ds.X_train, [ds.y_train, yr])
    cert = certify_features(ds.X_train, ds.y_train, Y_random=yr, method="cholesky-inplace")
    assert cert.method == "cholesky-inplace" and cert.details["kernel_formations"] == 2
    _check(cert, ev, comps, ds.X_train.shape[0], certified=True)
    assert C.choose_method(40_000, max_memory=16 * 2**30)[0] == "cholesky-inplace"


def test_matrix_free_meets_the_contract_and_says_estimate():
    ds = load_dataset("mnist", n_train=160, n_test=100, seed=1)
    yr = np.random.default_rng(3).choice([-1.0, 1.0], size=160)
    ev, comps = _exact(ds.X_train, [ds.y_train, yr])
    cert = certify_features(ds.X_train, ds.y_train, Y_random=yr, method="matrix-free")
    assert cert.method == "matrix-free"
    _check(cert, ev, comps, 160, certified=False)
    assert cert.lambda_min["status"] == "estimate" and cert.bound["true"]["status"] == "estimate"
    assert ev[0] <= cert.lambda_min["upper"] * (1 + 1e-12)


def test_regression_test_error_and_multiclass(mnist):
    ds, _ = mnist
    K = two_layer_ntk(ds.X_train)
    alpha = sl.cho_solve(sl.cho_factor(K), ds.y_train)
    pred = two_layer_ntk(ds.X_test, ds.X_train) @ alpha
    want = float(np.mean(np.sign(pred) != ds.y_test))
    cert = certify_features(ds.X_train, ds.y_train, F_test=ds.X_test, Y_test=ds.y_test)
    assert cert.regression_test_error == pytest.approx(want, abs=1e-12)
    Y = -np.ones((300, 3))
    Y[np.arange(300), np.arange(300) % 3] = 1.0
    cert = certify_features(ds.X_train, Y, method="cholesky")
    exact = np.trace(Y.T @ sl.cho_solve(sl.cho_factor(K), Y)) / 3  # per-class mean
    assert cert.complexity["true"]["value"] == pytest.approx(exact, rel=1e-10)


def test_not_pd_warns_names_and_goes_on(mnist):
    ds, yr = mnist
    X = np.array(ds.X_train[:100])
    X[7] = X[3]  # duplicate rows: lambda_0 = 0
    for method in ("exact", "cholesky"):
        with pytest.warns(SingularKernelWarning, match="dup-config"):
            cert = certify_features(
                X, ds.y_train[:100], Y_random=yr[:100], method=method, name="dup-config"
            )
        assert not cert.is_pd and math.isinf(cert.bound["true"]["value"])
        assert cert.lambda_min["value"] < 1e-12
        assert math.isnan(cert.regression_test_error)


def test_lower_bound_policy_by_size():
    from ntkdr.experiment.certify import PROOF_AUTO_MAX_N, lower_bound_policy

    assert lower_bound_policy("auto", PROOF_AUTO_MAX_N)[0] is True
    proven, reason = lower_bound_policy("auto", PROOF_AUTO_MAX_N + 1)
    assert proven is False and "--lower-bound proven" in reason
    assert lower_bound_policy("proven", 10**6)[0] is True
    assert lower_bound_policy("none", 10)[0] is False


def test_method_choice_and_budget_errors():
    assert C.choose_method(500)[0] == "exact"
    assert C.choose_method(5000, max_memory=2**31)[0] == "cholesky"
    assert C.choose_method(50_000, max_memory=24 * 2**30)[0] == "cholesky-inplace"
    method, why = C.choose_method(50_000, max_memory=12 * 2**30)
    assert method == "matrix-free" and "does not fit" in why
    with pytest.raises(ValueError, match=r"needs at least .* budget") as exc:
        C.choose_method(50_000, max_memory=2**20)
    assert "\n" not in str(exc.value)
    with pytest.raises(ValueError, match="method"):
        C.certify_matrix(np.eye(3), np.ones(3), method="eigh")


# --------------------------------------------------------------------------------------------
# the grid: progress, atomic parts, resume
# --------------------------------------------------------------------------------------------
def _grid(tmp, ds, yr, log=None, lower_bound="auto", method="auto"):
    def feats(kind, k, s):
        sk = make_sketch(kind, ds.X_train.shape[1], k, seed=s, renormalize=True).fit(ds.X_train)
        return sk(ds.X_train), sk(ds.X_test)

    jobs = [("gaussian", 16, 0), ("gaussian", 16, 1), ("srht", 32, 0)]
    return certify_grid(
        ds.X_train[:200],
        ds.y_train[:200],
        Y_random=yr[:200],
        jobs=jobs,
        make_features=lambda kind, k, s: tuple(
            f[:200] if i == 0 else f for i, f in enumerate(feats(kind, k, s))
        ),
        X_test=ds.X_test,
        Y_test=ds.y_test,
        parts_dir=tmp,
        settings={"seed": 0},
        progress=False,
        log=log,
        lower_bound=lower_bound,
        method=method,
    )


def test_grid_resume_gives_the_same_results(mnist, tmp_path):
    ds, yr = mnist
    first = _grid(tmp_path / "parts", ds, yr)
    assert set(first) == {"dense", "gaussian-k16-s0", "gaussian-k16-s1", "srht-k32-s0"}
    os.unlink(tmp_path / "parts" / "gaussian-k16-s1.json")  # as if interrupted there
    lines: list[str] = []
    again = _grid(tmp_path / "parts", ds, yr, log=lines.append)
    assert sum("resumed" in line for line in lines) == 3
    for cid in first:
        a, b = dict(first[cid]), dict(again[cid])
        a.pop("seconds"), b.pop("seconds")  # timings aside
        a["details"].pop("timings", None), b["details"].pop("timings", None)
        assert json_equal(a, b), cid


def test_grid_unproven_lower_bounds_same_point_values(mnist):
    ds, yr = mnist
    proven = _grid(None, ds, yr, method="cholesky")
    none = _grid(None, ds, yr, lower_bound="none", method="cholesky")
    for cid in proven:
        p, e = proven[cid], none[cid]
        assert e["lambda_min"]["value"] == p["lambda_min"]["value"]
        assert e["bound"]["true"]["value"] == pytest.approx(p["bound"]["true"]["value"], rel=1e-12)
        assert p["lambda_min"]["status"] == "certified" and e["lambda_min"]["status"] == "estimate"
        assert e["details"]["factorizations"] == 0
    with pytest.raises(ValueError, match="lower_bound must be one of 'auto', 'proven', 'none'"):
        _grid(None, ds, yr, lower_bound="tight")


def json_equal(a, b):
    import json

    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


# --------------------------------------------------------------------------------------------
# two gloo ranks == one process (matrix-free row blocks)
# --------------------------------------------------------------------------------------------
def _rank_worker(rank: int, tmp: str) -> None:
    torch.set_num_threads(1)
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    torch.distributed.init_process_group(
        "gloo",
        init_method=f"file://{tmp}/rendezvous",
        rank=rank,
        world_size=2,
        timeout=datetime.timedelta(seconds=90),
    )
    ds = load_dataset("mnist", n_train=100, n_test=50, seed=2)
    from ntkdr.experiment import certify as G

    G.BLOCK_ROWS = 30  # several blocks per rank
    cert = certify_features(ds.X_train, ds.y_train, F_test=ds.X_test, Y_test=ds.y_test)
    torch.save(cert.as_dict(), os.path.join(tmp, f"rank{rank}.pt"))
    torch.distributed.destroy_process_group()


def test_two_ranks_equal_one_process(tmp_path_factory, monkeypatch):
    from _spawn import spawn_ranks
    from ntkdr.experiment import certify as G

    tmp = spawn_ranks(_rank_worker, tmp_path_factory, "cert", 2, 120)
    got = [torch.load(os.path.join(tmp, f"rank{r}.pt"), weights_only=False) for r in (0, 1)]
    monkeypatch.setattr(G, "BLOCK_ROWS", 30)
    ds = load_dataset("mnist", n_train=100, n_test=50, seed=2)
    with _threads(1):
        one = certify_features(
            ds.X_train, ds.y_train, F_test=ds.X_test, Y_test=ds.y_test, method="matrix-free"
        )
    for g in got:
        assert g["method"] == "matrix-free"
        for key in ("lambda_min", "lambda_max", "bound", "complexity", "regression_test_error"):
            assert g[key] == one.as_dict()[key], key


class _threads:
    def __init__(self, n):
        self.n = n

    def __enter__(self):
        self.before = torch.get_num_threads()
        torch.set_num_threads(self.n)

    def __exit__(self, *exc):
        torch.set_num_threads(self.before)


# --------------------------------------------------------------------------------------------
# the contract at n = 2000-3000, every sketch kind, MNIST and a synthetic set (slow)
# --------------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("dataset,n", [("mnist", 2500), ("lowrank", 2000)])
def test_contract_every_kind_and_recommended_k(dataset, n):
    from ntkdr.experiment import _recommend

    opts = {"d": 784} if dataset != "mnist" else {}
    ds = load_dataset(dataset, n_train=n, n_test=300, seed=0, **opts)
    yr = np.random.default_rng(1).choice([-1.0, 1.0], size=n)
    ev, comps = _exact(ds.X_train, [ds.y_train, yr])
    dense = C.certify_matrix(two_layer_ntk(ds.X_train), ds.y_train, yr, method="cholesky")
    _check(dense, ev, comps, n, certified=True)
    ref = {"lambda_min": ev[0], "bound_true": math.sqrt(2 * comps[0] / n)}
    eng = {"lambda_min": dense.lambda_min["value"], "bound_true": dense.bound["true"]["value"]}
    rows_ref, rows_eng = [], []
    for kind in ("gaussian", "sparse", "srht", "pca"):
        for k in (16, 64, 256):
            sk = make_sketch(kind, ds.X_train.shape[1], k, seed=0, renormalize=True).fit(ds.X_train)
            F = sk(ds.X_train)
            e, c = _exact(F, [ds.y_train, yr])
            cert = C.certify_matrix(two_layer_ntk(F), ds.y_train, yr, method="cholesky")
            _check(cert, e, c, n, certified=True)
            b = math.sqrt(2 * c[0] / n)
            rows_ref.append(_row(kind, k, e[0] / ref["lambda_min"], b / ref["bound_true"]))
            rows_eng.append(
                _row(
                    kind,
                    k,
                    cert.lambda_min["value"] / eng["lambda_min"],
                    cert.bound["true"]["value"] / eng["bound_true"],
                )
            )
    for tol in (0.02, 0.05, 0.1, 0.2, 0.5):
        assert _recommend({}, rows_ref, tol) == _recommend({}, rows_eng, tol)


def _row(kind, k, lam_ratio, bound_ratio):
    return {
        "kind": kind,
        "k": k,
        "all_pd": True,
        "lambda_min_ratio": {"mean": lam_ratio},
        "bound_ratio": {"mean": bound_ratio},
    }


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("cols", [None, 1, 2, 3, 5])
def test_matmul_fn_symv_and_gemm_paths_equal_the_product(dtype, cols):
    """Up to three columns are multiplied by BLAS symv (one triangle read), more by one GEMM;
    a matrix that is not C-contiguous takes the GEMM path.  All equal K @ V to round-off."""
    from ntkdr.theory import certificate_linalg as LA

    rng = np.random.default_rng(0)
    A = rng.standard_normal((40, 40))
    K = (A + A.T).astype(dtype)
    V = rng.standard_normal(40 if cols is None else (40, cols)).astype(dtype)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    ref = K.astype(np.float64) @ V.astype(np.float64)
    for M in (K, np.asfortranarray(K)):
        out = LA.matmul_fn(M)(V)
        assert out.shape == V.shape and out.dtype == dtype
        np.testing.assert_allclose(out, ref, rtol=tol, atol=tol * np.abs(ref).max())


@pytest.mark.parametrize("spectrum", ["decaying", "clustered", "repeated"])
def test_lanczos_top_and_bottom_match_eigh(spectrum):
    """Lanczos (full reorthogonalization, stopped at convergence) against LAPACK's eigh: the
    top 10 and, by shift-invert with an exact solve, the bottom 2, with residuals at ``tol``.
    A spectrum of 3 distinct values (an invariant subspace after 3 steps) gives true eigenpairs
    but, as any single-vector Krylov method, one copy of each value per restart."""
    from ntkdr.theory import certificate_linalg as LA

    rng = np.random.default_rng(4)
    n = 120
    Q = np.linalg.qr(rng.standard_normal((n, n)))[0]
    ev = {
        "decaying": np.logspace(-4, 2, n),
        "clustered": 1.0 + 1e-3 * rng.random(n),
        "repeated": np.repeat([0.5, 1.0, 3.0], n // 3),
    }[spectrum]
    K = (Q * ev) @ Q.T
    K = (K + K.T) / 2
    exact = np.linalg.eigvalsh(K)
    vals, V = LA.lanczos_top(K.__matmul__, n, 10, tol=1e-10, vectors=True)
    assert np.linalg.norm(K @ V - V * vals, axis=0).max() <= 1e-8 * vals[0]
    assert np.allclose(np.linalg.norm(V, axis=0), 1.0)
    low, W = LA.lanczos_bottom(lambda b: np.linalg.solve(K, b), n, 0.0, 2, tol=1e-12)
    assert np.allclose(np.linalg.norm(W, axis=0), 1.0)
    if spectrum == "repeated":
        assert np.allclose(vals[:4], 3.0) and np.all(np.min(np.abs(vals[:, None] - ev), 1) < 1e-12)
        assert np.isclose(low[0], 0.5) and np.all(np.min(np.abs(low[:, None] - ev), 1) < 1e-12)
    else:
        np.testing.assert_allclose(vals, exact[::-1][:10], rtol=1e-9)
        np.testing.assert_allclose(low, exact[:2], rtol=1e-9)


def test_lanczos_says_when_it_does_not_converge():
    from ntkdr.theory import certificate_linalg as LA

    K = np.diag(np.linspace(1.0, 1.0 + 1e-6, 300))  # 10 values in a cluster of width 1e-6
    with pytest.raises(LA.LanczosNoConvergence, match="not within 1e-12 in 5 products"):
        LA.lanczos_top(K.__matmul__, 300, 10, tol=1e-12, maxiter=5)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_blocked_cholesky_beyond_lapack_limit_equals_lapack(dtype, monkeypatch):
    """From 2^31 entries on (where scipy's 32-bit OpenBLAS ?potrf segfaults) the factorization is
    blocked over torch; with the limit lowered it must give LAPACK's factor, in the same layout,
    and LAPACK's ``info`` for a matrix that is not positive definite."""
    from ntkdr.theory import certificate_linalg as LA

    rng = np.random.default_rng(5)
    n = 300
    A = rng.standard_normal((n, 40))
    K = (A @ A.T + 0.5 * np.eye(n)).astype(dtype)
    ref = K.copy()
    assert LA._potrf_inplace(ref) == 0
    monkeypatch.setattr(LA, "_LAPACK_MAX_ENTRIES", 1000)
    monkeypatch.setattr(LA, "_BLOCK", 64)
    monkeypatch.setattr(LA, "_PANEL_ROWS", 100)
    got = K.copy()
    assert LA._potrf_inplace(got) == 0
    tol = 1e-4 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(np.tril(got), np.tril(ref), atol=tol * np.abs(ref).max())
    solve = LA.cho_solve_fn(got.T)
    x = solve(np.ones(n))
    np.testing.assert_allclose(K.astype(np.float64) @ x, np.ones(n), atol=50 * tol)
    for c in (2, 3, 5):  # blocks of columns: the same solutions
        rhs = np.outer(np.ones(n), np.arange(1.0, c + 1))
        X = solve(rhs)
        assert X.shape == (n, c) and X.dtype == np.float64
        np.testing.assert_allclose(K.astype(np.float64) @ X, rhs, atol=50 * c * tol)
    bad = K.copy()
    bad[150, 150] = -1.0
    ref_bad = bad.copy()
    monkeypatch.setattr(LA, "_LAPACK_MAX_ENTRIES", 2**31 - 1)
    info = LA._potrf_inplace(ref_bad)
    monkeypatch.setattr(LA, "_LAPACK_MAX_ENTRIES", 1000)
    assert info == 151 and LA._potrf_inplace(bad) == info
    proof = LA.shifted_cholesky(K.astype(np.float64), 0.1, np.empty((n, n)))
    assert proof.ok and proof.lower <= float(np.linalg.eigvalsh(K.astype(np.float64))[0])


def test_buffer_pool_reuses_and_replaces_buffers():
    from ntkdr.memory import BufferPool

    pool = BufferPool()
    a = pool.get("K", (5, 5), np.float64)
    assert pool.get("K", (5, 5), np.float64) is a
    b = pool.get("K", (6, 6), np.float64)
    assert b.shape == (6, 6) and b is not a
    c = pool.get("K", (6, 6), np.float32)
    assert c.dtype == np.float32
    pool.release("K")
    assert pool.get("K", (6, 6), np.float32) is not c


@pytest.mark.parametrize("method", ["cholesky", "cholesky-inplace"])
def test_grid_buffers_give_the_same_certificates(mnist, method):
    """A grid reuses K's buffer and its float32 copy across configurations: the certificates of
    a sketch computed after the dense kernel equal those computed with fresh buffers."""
    from ntkdr.experiment.certify import certify_features
    from ntkdr.memory import BufferPool

    ds, yr = mnist
    F = _sketched_k(ds, seed=4)
    pool = BufferPool()
    certify_features(ds.X_train, ds.y_train, Y_random=yr, method=method, buffers=pool)
    got = certify_features(F, ds.y_train, Y_random=yr, method=method, buffers=pool)
    ref = certify_features(F, ds.y_train, Y_random=yr, method=method)
    assert got.lambda_min == ref.lambda_min and got.bound == ref.bound
