"""Tests of ntkdr.regression: ridge / GD-time / CG solvers against independent numpy/scipy
references, and the scikit-learn estimators (check_estimator, Pipeline, GridSearchCV, real data)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch
from sklearn.exceptions import ConvergenceWarning

from ntkdr.regression import (
    CGResult,
    conjugate_gradient,
    gd_time_coef,
    gd_time_predict,
    kernel_cg_fit,
    kernel_operator,
    kernel_predict,
    kernel_ridge_fit,
)


# ----------------------------------------------------------------------------------------
# independent numpy reference of the two-layer NTK (Du et al. 2019)
# ----------------------------------------------------------------------------------------
def ref_ntk(X, Z=None, layers="first"):
    X = np.asarray(X, dtype=np.float64)
    Z = X if Z is None else np.asarray(Z, dtype=np.float64)
    G = X @ Z.T
    nx = np.linalg.norm(X, axis=1)[:, None]
    nz = np.linalg.norm(Z, axis=1)[None, :]
    theta = np.arctan2(np.sqrt(np.maximum((nx * nz) ** 2 - G**2, 0.0)), G)
    H = G * (np.pi - theta) / (2 * np.pi)
    if layers == "both":
        H = H + nx * nz * (np.sin(theta) + (np.pi - theta) * np.cos(theta)) / (2 * np.pi)
    return H


def unit_rows(n, d, seed=0):
    X = np.random.default_rng(seed).standard_normal((n, d))
    return X / np.linalg.norm(X, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def problem():
    X = unit_rows(40, 12, seed=1)
    Xs = unit_rows(15, 12, seed=2)
    y = np.random.default_rng(3).standard_normal(40)
    return X, Xs, y, ref_ntk(X), ref_ntk(Xs, X)


# ----------------------------------------------------------------------------------------
# kernel_ridge_fit
# ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("ridge", [0.0, 1e-3, 0.5])
def test_kernel_ridge_fit_matches_numpy_solve(problem, ridge):
    X, Xs, y, H, Hs = problem
    alpha = kernel_ridge_fit(H, y, ridge=ridge)
    assert isinstance(alpha, np.ndarray) and alpha.shape == (40,)
    ref = np.linalg.solve(H + ridge * np.eye(40), y)
    np.testing.assert_allclose(alpha, ref, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(kernel_predict(Hs, alpha), Hs @ ref, rtol=1e-8, atol=1e-10)


def test_kernel_ridge_fit_multi_output_torch_and_float32(problem):
    _, _, y, H, _ = problem
    Y = np.stack([y, -2 * y, y**2], axis=1)
    ref = np.linalg.solve(H + 1e-2 * np.eye(40), Y)
    a64 = kernel_ridge_fit(torch.from_numpy(H), torch.from_numpy(Y), ridge=1e-2)
    assert isinstance(a64, torch.Tensor) and a64.dtype == torch.float64 and a64.shape == (40, 3)
    np.testing.assert_allclose(a64.numpy(), ref, rtol=1e-8, atol=1e-10)
    a32 = kernel_ridge_fit(H.astype(np.float32), Y, ridge=1e-2)
    assert a32.dtype == np.float32
    np.testing.assert_allclose(a32, ref, rtol=1e-3, atol=1e-3)


def test_kernel_ridge_fit_singular_without_ridge_raises(problem):
    X = problem[0]
    Xd = np.vstack([X, X[:3]])  # duplicate inputs: H is singular (lambda_0 = 0)
    H = ref_ntk(Xd)
    y = np.ones(len(Xd))
    with pytest.raises(ValueError, match=r"not numerically positive definite.*set ridge > 0"):
        kernel_ridge_fit(H, y, ridge=0.0)
    alpha = kernel_ridge_fit(H, y, ridge=1e-3)  # a ridge makes it well posed; no jitter otherwise
    np.testing.assert_allclose(alpha, np.linalg.solve(H + 1e-3 * np.eye(len(Xd)), y), rtol=1e-6)


def test_kernel_ridge_fit_validation(problem):
    _, _, y, H, Hs = problem
    with pytest.raises(ValueError, match="ridge must be >= 0"):
        kernel_ridge_fit(H, y, ridge=-1.0)
    with pytest.raises(ValueError, match="ridge must be a finite number"):
        kernel_ridge_fit(H, y, ridge=float("nan"))
    with pytest.raises(ValueError, match="H must be square"):
        kernel_ridge_fit(Hs, y)
    with pytest.raises(ValueError, match="different numbers of samples"):
        kernel_ridge_fit(H, y[:-1])
    with pytest.raises(ValueError, match="symmetric"):
        kernel_ridge_fit(H + np.triu(np.ones_like(H), 1), y, ridge=1.0)
    Hn = H.copy()
    Hn[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN or Inf"):
        kernel_ridge_fit(Hn, y)
    with pytest.raises(ValueError, match="H is not numerically positive definite"):
        kernel_ridge_fit(-H, y)
    with pytest.raises(ValueError, match="H \\+ ridge \\* I is not numerically positive definite"):
        kernel_ridge_fit(-H, y, ridge=1e-3)


# ----------------------------------------------------------------------------------------
# GD-time predictor
# ----------------------------------------------------------------------------------------
def test_gd_time_zero_time_is_zero(problem):
    _, _, y, H, Hs = problem
    for variant in ("continuous", "discrete"):
        np.testing.assert_array_equal(
            gd_time_predict(H, Hs, y, lr=0.1, t=0, variant=variant), np.zeros(15)
        )
        np.testing.assert_array_equal(
            gd_time_predict(H, None, y, lr=0.1, t=0, variant=variant), np.zeros(40)
        )


def test_gd_time_large_t_is_ridgeless_interpolant(problem):
    _, _, y, H, Hs = problem
    lam = np.linalg.eigvalsh(H)
    lr = 1.0 / lam[-1]
    t = 60.0 / (lr * lam[0])  # exp(-lr t lambda_min) = e^-60
    ref = Hs @ np.linalg.solve(H, y)
    for variant in ("continuous", "discrete"):
        tt = np.ceil(t)
        np.testing.assert_allclose(
            gd_time_predict(H, Hs, y, lr, tt, variant=variant), ref, rtol=1e-6, atol=1e-8
        )
        train = gd_time_predict(H, None, y, lr, tt, variant=variant)
        np.testing.assert_allclose(train, y, atol=1e-8)  # interpolates the training targets
        np.testing.assert_allclose(
            gd_time_coef(H, y, lr, tt, variant=variant), np.linalg.solve(H, y), rtol=1e-6
        )


def test_gd_time_discrete_equals_explicit_gd_iteration(problem):
    _, _, y, H, Hs = problem
    lr = 1.5 / np.linalg.eigvalsh(H)[-1]
    u = np.zeros(40)
    c = np.zeros(40)  # kernel model f(x) = H(x, X) c, GD in function space
    steps = [0, 1, 2, 7, 30, 100]
    want_train, want_test = [], []
    for s in range(max(steps) + 1):
        if s in steps:
            want_train.append(u.copy())
            want_test.append(Hs @ c)
        r = y - u
        c = c + lr * r
        u = u + lr * H @ r  # u <- u - lr H (u - y)
    got_test = gd_time_predict(H, Hs, y, lr, steps, variant="discrete")
    got_train = gd_time_predict(H, None, y, lr, np.array(steps), variant="discrete")
    assert got_test.shape == (len(steps), 15) and got_train.shape == (len(steps), 40)
    np.testing.assert_allclose(got_test, np.array(want_test), rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(got_train, np.array(want_train), rtol=1e-9, atol=1e-11)


def test_gd_time_continuous_equals_expm(problem):
    _, _, y, H, Hs = problem
    lr = 0.3
    n = len(y)
    for t in (0.5, 3.0, 17.25):
        E = scipy.linalg.expm(-lr * t * H)
        want = Hs @ np.linalg.solve(H, (np.eye(n) - E) @ y)
        np.testing.assert_allclose(gd_time_predict(H, Hs, y, lr, t), want, rtol=1e-7, atol=1e-9)
        np.testing.assert_allclose(
            gd_time_predict(H, None, y, lr, t), (np.eye(n) - E) @ y, rtol=1e-8, atol=1e-10
        )


def test_gd_time_singular_kernel_and_initial_outputs():
    # duplicate inputs: H singular; the filter's lambda -> 0 limit (lr * t) keeps it finite and exact
    X = unit_rows(20, 6, seed=5)
    X = np.vstack([X, X[:4]])
    H, n = ref_ntk(X), len(X)
    Xs = unit_rows(7, 6, seed=6)
    Hs = ref_ntk(Xs, X)
    rng = np.random.default_rng(0)
    Y = rng.standard_normal((n, 2))
    u0 = rng.standard_normal((n, 2))
    f0 = rng.standard_normal((7, 2))
    lr, steps = 0.5 / np.linalg.eigvalsh(H)[-1], 25
    u, c = u0.copy(), np.zeros((n, 2))
    for _ in range(steps):
        r = Y - u
        c += lr * r
        u += lr * H @ r
    np.testing.assert_allclose(
        gd_time_predict(H, None, Y, lr, steps, u0=u0, variant="discrete"), u, rtol=1e-9, atol=1e-10
    )
    np.testing.assert_allclose(
        gd_time_predict(H, Hs, Y, lr, steps, u0=u0, f0=f0, variant="discrete"),
        f0 + Hs @ c,
        rtol=1e-9,
        atol=1e-10,
    )
    # continuous: compare with expm on the singular matrix (no inverse needed in the reference either:
    # H^-1 (I - e^{-sH}) = s * sum_j (-s H)^j / (j+1)!, here via the augmented-matrix trick)
    s = lr * 4.0
    A = np.zeros((2 * n, 2 * n))
    A[:n, :n] = -s * H
    A[:n, n:] = np.eye(n)
    phi = scipy.linalg.expm(A)[:n, n:]  # = integral_0^1 e^{-s H tau} d tau = (I - e^{-sH}) (sH)^-1
    want = f0 + Hs @ (s * phi @ (Y - u0))
    np.testing.assert_allclose(
        gd_time_predict(H, Hs, Y, lr, 4.0, u0=u0, f0=f0), want, rtol=1e-8, atol=1e-10
    )


@pytest.fixture
def one_thread():
    # small GEMMs: avoid thread start-up / contention costs, restore afterwards
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_gd_time_predictor_matches_wide_network_gd(one_thread):
    """The GD-time predictor against real full-batch GD on a very wide network."""
    from ntkdr.models import TwoLayerReLU

    X, Xs = unit_rows(10, 5, seed=11), unit_rows(6, 5, seed=12)
    y = np.random.default_rng(4).standard_normal(10)
    H, Hs = ref_ntk(X), ref_ntk(Xs, X)
    lr, steps, m = 1.0 / np.linalg.eigvalsh(H)[-1], 20, 2**17
    net = TwoLayerReLU(5, m, seed=0, dtype=torch.float64)  # first layer trained: kernel H1
    Xt, Xst, yt = torch.from_numpy(X), torch.from_numpy(Xs), torch.from_numpy(y)
    with torch.no_grad():
        u0, f0 = net(Xt).numpy(), net(Xst).numpy()
    for _ in range(steps):  # loss 1/2 sum_i (f(x_i) - y_i)^2, W <- W - lr dL/dW
        net.zero_grad()
        (0.5 * ((net(Xt) - yt) ** 2).sum()).backward()
        with torch.no_grad():
            net.W -= lr * net.W.grad
    with torch.no_grad():
        u, f = net(Xt).numpy(), net(Xst).numpy()
    pu = gd_time_predict(H, None, y, lr, steps, u0=u0, variant="discrete")
    pf = gd_time_predict(H, Hs, y, lr, steps, u0=u0, f0=f0, variant="discrete")
    # finite-width deviations (kernel at init, its drift) are O(1/sqrt(m)); measured constants
    # are about 1 (train) and 4 (test), the bounds leave a margin of ~5x
    scale = 1.0 / np.sqrt(m)
    assert np.linalg.norm(u - pu) / np.linalg.norm(u - u0) < 6 * scale
    assert np.linalg.norm(f - pf) / np.linalg.norm(f - f0) < 20 * scale
    # and far closer than the untrained outputs are
    assert np.linalg.norm(f - pf) < 0.1 * np.linalg.norm(f - f0)


def test_gd_time_torch_float32_and_validation(problem):
    _, _, y, H, Hs = problem
    out = gd_time_predict(
        torch.tensor(H, dtype=torch.float32),
        torch.tensor(Hs, dtype=torch.float32),
        torch.tensor(y),
        0.2,
        [1.0, 2.0],
    )
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32 and out.shape == (2, 15)
    np.testing.assert_allclose(
        out.numpy(), gd_time_predict(H, Hs, y, 0.2, [1.0, 2.0]), rtol=1e-4, atol=1e-5
    )
    with pytest.raises(ValueError, match="t must be >= 0"):
        gd_time_predict(H, Hs, y, 0.1, -1.0)
    with pytest.raises(ValueError, match="whole number of steps"):
        gd_time_predict(H, Hs, y, 0.1, 2.5, variant="discrete")
    with pytest.raises(ValueError, match="lr must be > 0"):
        gd_time_predict(H, Hs, y, 0.0, 1.0)
    with pytest.raises(ValueError, match="unknown variant"):
        gd_time_predict(H, Hs, y, 0.1, 1.0, variant="euler")
    with pytest.raises(ValueError, match="H_test_train must have n = 40 columns"):
        gd_time_predict(H, Hs[:, :5], y, 0.1, 1.0)
    with pytest.warns(RuntimeWarning, match="diverges"):
        gd_time_predict(H, Hs, y, 3.0 / np.linalg.eigvalsh(H)[-1], 3, variant="discrete")


# ----------------------------------------------------------------------------------------
# conjugate gradient
# ----------------------------------------------------------------------------------------
def test_cg_matches_cholesky_multi_column(problem):
    _, _, y, H, _ = problem
    ridge = 1e-2
    Y = np.stack([y, np.cos(np.arange(40.0))], axis=1)
    Ht = torch.from_numpy(H)
    seen = []
    res = conjugate_gradient(
        lambda v: Ht @ v + ridge * v,
        Y,
        tol=1e-10,
        preconditioner=np.diag(H) + ridge,
        callback=lambda it, r: seen.append((it, r.copy())),
    )
    assert isinstance(res, CGResult) and res.converged and isinstance(res.x, np.ndarray)
    assert res.x.shape == (40, 2) and 1 <= res.n_iter <= 40 and len(seen) == res.n_iter
    assert np.all(res.residual <= 1e-9)
    np.testing.assert_allclose(res.x, kernel_ridge_fit(H, Y, ridge=ridge), rtol=1e-7, atol=1e-8)
    # 1-D b, no preconditioner, torch in -> torch out
    r1 = conjugate_gradient(
        lambda v: Ht @ v + ridge * v, torch.from_numpy(y), tol=1e-10, max_iter=200
    )
    assert isinstance(r1.x, torch.Tensor) and r1.x.shape == (40,)
    np.testing.assert_allclose(
        r1.x.numpy(), np.linalg.solve(H + ridge * np.eye(40), y), rtol=1e-7, atol=1e-8
    )


def test_cg_non_convergence_and_not_pd(problem):
    _, _, y, H, _ = problem
    Ht = torch.from_numpy(H)
    with pytest.warns(ConvergenceWarning, match="did not converge in 2 iterations"):
        res = conjugate_gradient(lambda v: Ht @ v, y, tol=1e-12, max_iter=2)
    assert not res.converged and res.n_iter == 2
    with pytest.raises(ValueError, match="not positive definite"):
        conjugate_gradient(lambda v: -(Ht @ v), y)
    with pytest.raises(ValueError, match="tol must be > 0"):
        conjugate_gradient(lambda v: Ht @ v, y, tol=0)
    zero = conjugate_gradient(lambda v: Ht @ v, np.zeros(40))
    assert zero.converged and zero.n_iter == 0 and np.all(zero.x == 0)


def _exact_diagonal(H, X, layers="first"):
    """``ref_ntk`` with the closed form at theta = 0 on the diagonal (its arctan2 of the
    round-off in ``|x|^2 |x|^2 - (x . x)^2`` puts ``sqrt(eps)`` noise there)."""
    H = H.copy()
    sq = np.sum(np.asarray(X, dtype=np.float64) ** 2, axis=1)
    np.fill_diagonal(H, sq / 2 if layers == "first" else sq)  # H1(x, x) = |x|^2 / 2 = H2(x, x)
    return H


def test_kernel_operator_is_the_dense_operator(problem):
    from ntkdr.kernels import NTK, KernelOptions

    X, _, y, H, _ = problem
    H = _exact_diagonal(H, X)
    V = np.stack([y, np.sin(np.arange(40.0))], axis=1)
    op = kernel_operator(NTK(options=KernelOptions(max_memory=2048)), X, ridge=0.3)
    out = op(torch.from_numpy(V))
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float64 and out.shape == (40, 2)
    np.testing.assert_allclose(out.numpy(), H @ V + 0.3 * V, rtol=1e-10, atol=1e-12)
    both = kernel_operator(NTK(layers="both"), X)(torch.from_numpy(y))
    np.testing.assert_allclose(
        both.numpy(),
        _exact_diagonal(ref_ntk(X, layers="both"), X, "both") @ y,
        rtol=1e-10,
        atol=1e-12,
    )


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_kernel_cg_fit_matches_cholesky_and_follows_input_kind(problem, dtype):
    from ntkdr.kernels import NTK

    X, _, y, H, _ = problem
    H = _exact_diagonal(H, X)
    ridge = 0.05
    ref = np.linalg.solve(H + ridge * np.eye(40), y)
    tol = 1e-10 if dtype == np.float64 else 1e-5
    res = kernel_cg_fit(NTK(), X.astype(dtype), y, ridge, tol=tol)
    assert (
        isinstance(res.x, np.ndarray)
        and res.x.dtype == dtype
        and res.converged
        and res.world_size == 1
    )
    assert len(res.history) == res.n_iter and np.all(res.residual <= tol)
    # |x - x*| <= tol |y| / lambda_min(A), lambda_min >= ridge; float32: the kernel's own round-off
    bound = (
        1.01 * tol * np.linalg.norm(y) / ridge
        if dtype == np.float64
        else 1e-4 * np.linalg.norm(ref)
    )
    assert np.linalg.norm(res.x - ref) <= bound
    t = kernel_cg_fit(NTK(), torch.as_tensor(X.astype(dtype)), torch.from_numpy(y), ridge, tol=tol)
    assert isinstance(t.x, torch.Tensor) and t.x.dtype == torch.from_numpy(X.astype(dtype)).dtype
    warm = kernel_cg_fit(
        NTK(), X, y, ridge, x0=ref, tol=1e-8
    )  # started at the solution: no iteration
    assert warm.n_iter == 0 and warm.converged
    with pytest.raises(ValueError, match="X and y have different numbers of samples: 40 and 39"):
        kernel_cg_fit(NTK(), X, y[:39], ridge)
    with pytest.raises(ValueError, match="progress must be True or False"):
        conjugate_gradient(lambda v: v, y, progress="yes")


# ----------------------------------------------------------------------------------------
# scikit-learn estimators
# ----------------------------------------------------------------------------------------
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.model_selection import GridSearchCV  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

import ntkdr.kernels.operator as kernels  # noqa: E402
from ntkdr.regression import NTKClassifier, NTKRegressor  # noqa: E402


def ref_fc_ntk(X, Z, depth, w=2**0.5, b=0.0, w_out=1.0):
    """The deep FC recursion (ntkdr.kernels.relu docstring), written out independently in numpy."""
    d = X.shape[1]
    nngp = w**2 * (X @ Z.T) / d + b**2
    qx = w**2 * np.sum(X**2, 1) / d + b**2
    qz = w**2 * np.sum(Z**2, 1) / d + b**2
    ntk = nngp.copy()
    for layer in range(1, depth + 1):
        wl = w_out if layer == depth else w
        prod = qx[:, None] * qz[None, :]
        theta = np.arctan2(np.sqrt(np.maximum(prod - nngp**2, 0.0)), nngp)
        relu_nngp = (np.sqrt(prod) * np.sin(theta) + (np.pi - theta) * nngp) / (2 * np.pi)
        relu_dot = (np.pi - theta) / (2 * np.pi)
        qx, qz = wl**2 * qx / 2 + b**2, wl**2 * qz / 2 + b**2
        nngp = wl**2 * relu_nngp + b**2
        ntk = nngp + wl**2 * ntk * relu_dot
    return ntk


def normalized(X):
    return X / np.linalg.norm(X, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def reg_data():
    rng = np.random.default_rng(7)
    X = rng.standard_normal((60, 10)) * rng.uniform(0.5, 3.0, size=(60, 1))  # rows of varying norm
    Xs = rng.standard_normal((20, 10))
    w = rng.standard_normal(10)
    y = np.sin(normalized(X) @ w) + 0.1 * rng.standard_normal(60)
    return X, Xs, y


def _expected_failures(estimator):
    # check_fit2d_1feature fits 1-feature data, so a sketched instance must use k = 1; a rank-1
    # sketch of the 10-feature data of check_regressors_train cannot reach its R^2 > 0.5 bar.
    if getattr(estimator, "sketch", None) == "gaussian" and estimator.k == 1:
        return {
            "check_regressors_train": "a k = 1 sketch of 10-feature data cannot reach R^2 > 0.5"
        }
    return {}


@parametrize_with_checks(
    [
        NTKRegressor(),
        NTKClassifier(),
        NTKRegressor(sketch="identity", t=50.0),
        NTKRegressor(sketch="gaussian", k=1),
        NTKClassifier(depth=2, layers="both", solver="cg", ridge=0.1),
    ],
    expected_failed_checks=_expected_failures,
)
def test_sklearn_compatible(estimator, check, one_thread):
    check(estimator)


@pytest.mark.parametrize("layers", ["first", "both"])
@pytest.mark.parametrize("ridge", [0.0, 1e-2])
def test_regressor_equals_closed_form(reg_data, layers, ridge):
    X, Xs, y = reg_data
    est = NTKRegressor(layers=layers, ridge=ridge).fit(X, y)
    H = ref_ntk(normalized(X), layers=layers)
    Hs = ref_ntk(normalized(Xs), normalized(X), layers=layers)
    want = Hs @ np.linalg.solve(H + ridge * np.eye(len(y)), y)
    assert est.solver_ == "cholesky" and est.cg_n_iter_ is None
    np.testing.assert_allclose(est.predict(Xs), want, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(est.X_fit_, normalized(X), rtol=1e-12)
    if ridge == 0:  # the ridge-less NTK predictor interpolates
        np.testing.assert_allclose(est.predict(X), y, atol=1e-6)


def test_regressor_deep_kernel_multi_output_and_unnormalized(reg_data):
    X, Xs, y = reg_data
    Y = np.stack([y, y**2], axis=1)
    est = NTKRegressor(
        depth=2, normalize=False, ridge=1e-2, kernel_params={"b_std": 0.3, "w_out": 1.5}
    ).fit(X, Y)
    H = ref_fc_ntk(X, X, 2, b=0.3, w_out=1.5)
    Hs = ref_fc_ntk(Xs, X, 2, b=0.3, w_out=1.5)
    want = Hs @ np.linalg.solve(H + 1e-2 * np.eye(len(y)), Y)
    pred = est.predict(Xs)
    assert pred.shape == (20, 2)
    np.testing.assert_allclose(pred, want, rtol=1e-6, atol=1e-8)


def test_regressor_gd_time(reg_data):
    X, Xs, y = reg_data
    H = ref_ntk(normalized(X))
    Hs = ref_ntk(normalized(Xs), normalized(X))
    est = NTKRegressor(t=40.0).fit(X, y)
    lr = 1.0 / np.linalg.eigvalsh(H)[-1]
    assert est.lr_ == pytest.approx(lr, rel=1e-8)
    E = scipy.linalg.expm(-lr * 40.0 * H)
    np.testing.assert_allclose(
        est.predict(Xs), Hs @ np.linalg.solve(H, (np.eye(60) - E) @ y), rtol=1e-6, atol=1e-8
    )
    assert np.allclose(NTKRegressor(t=0.0).fit(X, y).predict(Xs), 0.0)
    late = NTKRegressor(t=1e12, lr=1.0).fit(X, y)
    np.testing.assert_allclose(
        late.predict(Xs), NTKRegressor(ridge=0.0).fit(X, y).predict(Xs), rtol=1e-5, atol=1e-7
    )


def test_cg_path_is_matrix_free_and_matches_cholesky(reg_data, monkeypatch):
    X, Xs, y = reg_data
    Y = np.stack([y, np.cos(y)], axis=1)
    dense = NTKRegressor(ridge=1e-3).fit(X, Y)

    def no_dense(*args, **kwargs):
        raise AssertionError("an n x n kernel was formed on the matrix-free path")

    monkeypatch.setattr(kernels, "two_layer_ntk", no_dense)
    monkeypatch.setattr(kernels, "fc_relu_kernels", no_dense)
    monkeypatch.setattr(kernels.NTK, "__call__", no_dense)
    budget = 60 * 60 * 8  # smaller than the dense solve needs (about n^2 * 24 bytes)
    est = NTKRegressor(ridge=1e-3, max_memory=budget, cg_tol=1e-10).fit(X, Y)
    assert est.solver_ == "cg" and est.cg_n_iter_ >= 1 and est.cg_residual_ <= 1e-9
    np.testing.assert_allclose(est.predict(Xs), dense.predict(Xs), rtol=1e-6, atol=1e-8)
    with pytest.raises(ValueError, match="dense solve needs about .* over max_memory"):
        NTKRegressor(solver="cholesky", max_memory=budget).fit(X, y)
    est_t = NTKRegressor(depth=3, solver="cg", ridge=1e-2).fit(X, y)
    assert est_t.solver_ == "cg"


def test_float32_close_to_float64(reg_data):
    X, Xs, y = reg_data
    p64 = NTKRegressor(ridge=1e-2).fit(X, y).predict(Xs)
    e32 = NTKRegressor(ridge=1e-2, dtype="float32").fit(X.astype(np.float32), y)
    p32 = e32.predict(Xs.astype(np.float32))
    assert e32.X_fit_.dtype == np.float32 and p32.dtype == np.float32
    np.testing.assert_allclose(p32, p64, rtol=1e-3, atol=1e-3)
    c32 = NTKRegressor(ridge=1e-2, dtype="float32", solver="cg").fit(X, y)
    np.testing.assert_allclose(c32.predict(Xs), p64, rtol=1e-3, atol=1e-3)


def _digits_pair(a=3, b=8):
    X, y = load_digits(return_X_y=True)
    keep = (y == a) | (y == b)
    X, y = X[keep], y[keep]
    perm = np.random.default_rng(0).permutation(len(y))
    return X[perm], y[perm]


def test_classifier_digits_two_classes():
    X, y = _digits_pair()
    clf = NTKClassifier().fit(X[:150], y[:150])
    assert list(clf.classes_) == [3, 8]
    acc = clf.score(X[150:], y[150:])
    assert acc > 0.95
    dec = clf.decision_function(X[150:])
    assert dec.shape == (len(y) - 150,)
    np.testing.assert_array_equal(clf.predict(X[150:]), np.where(dec > 0, 8, 3))
    # string labels round-trip; the +-1 coding is symmetric, so decisions just flip sign
    ys = np.where(y == 3, "three", "eight")
    clf_s = NTKClassifier().fit(X[:150], ys[:150])
    assert set(clf_s.predict(X[150:])) <= {"three", "eight"}
    assert clf_s.score(X[150:], ys[150:]) == pytest.approx(acc)


def test_classifier_multiclass_digits():
    X, y = load_digits(return_X_y=True)
    clf = NTKClassifier(depth=2).fit(X[:600], y[:600])
    assert clf.decision_function(X[600:]).shape == (len(y) - 600, 10)
    assert clf.score(X[600:], y[600:]) > 0.9


def test_pipeline_and_grid_search():
    X, y = _digits_pair(1, 7)
    pipe = make_pipeline(StandardScaler(), NTKClassifier(sketch="gaussian", k=8))
    grid = GridSearchCV(
        pipe, {"ntkclassifier__k": [4, 16], "ntkclassifier__ridge": [1e-3, 1.0]}, cv=3
    )
    grid.fit(X[:240], y[:240])
    assert grid.best_params_["ntkclassifier__k"] in (4, 16)
    assert grid.score(X[240:], y[240:]) > 0.9
    reg = GridSearchCV(NTKRegressor(), {"ridge": [1e-4, 1e-1]}, cv=3).fit(
        X[:120], (y[:120] == 7).astype(float)
    )
    assert reg.best_estimator_.ridge in (1e-4, 1e-1)


@pytest.mark.parametrize("kind", ["gaussian", "srht", "sparse", "pca", "identity"])
def test_sketched_estimators(kind):
    from ntkdr.sketches import make_sketch

    X, y = _digits_pair()
    k = 64 if kind == "identity" else 24
    clf = NTKClassifier(sketch=kind, k=k, seed=3).fit(X[:150], y[:150])
    assert clf.X_fit_.shape == (150, k)
    assert clf.score(X[150:], y[150:]) > 0.9
    # the features are the renormalised sketch of the normalised inputs, with the same seed
    S = make_sketch(kind, 64, k, seed=3)
    S.fit(normalized(X[:150]))
    F = np.asarray(S(normalized(X[:150])))
    np.testing.assert_allclose(clf.X_fit_, normalized(F), rtol=1e-10, atol=1e-12)
    # (kernel values of nearly parallel sketched rows carry an O(sqrt(eps)) angle error, hence atol)
    reg = NTKRegressor(sketch=kind, k=k, seed=3, ridge=1e-2).fit(
        X[:150], (y[:150] == 8).astype(float)
    )
    Fs = normalized(np.asarray(S(normalized(X[150:]))))
    want = ref_ntk(Fs, reg.X_fit_) @ np.linalg.solve(
        ref_ntk(reg.X_fit_) + 1e-2 * np.eye(150), (y[:150] == 8)
    )
    np.testing.assert_allclose(reg.predict(X[150:]), want, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize(
    "params, message",
    [
        (
            {"sketch": "gaussian", "k": 20},
            r"k must be <= d = 10 \(a sketch reduces dimension\), got 20",
        ),
        ({"sketch": "gaussian", "k": 0}, "k must be >= 1, got 0"),
        ({"sketch": "gaussian"}, "k is required with sketch='gaussian'"),
        ({"sketch": "fourier", "k": 3}, "unknown sketch 'fourier'"),
        ({"sketch": "identity", "k": 4}, "k must equal d = 10 for sketch='identity'"),
        ({"ridge": -1.0}, r"ridge must be >= 0(\.0)?, got -1.0"),
        ({"ridge": "big"}, "ridge must be a finite number"),
        ({"depth": 0}, "depth must be >= 1, got 0"),
        ({"depth": 1.5}, "depth must be an integer"),
        ({"t": -1.0}, r"t must be >= 0(\.0)?, got -1.0"),
        ({"lr": 0.0}, "lr must be > 0"),
        ({"t": 1.0, "solver": "cg"}, "needs an eigendecomposition"),
        ({"solver": "cg", "distributed": "yes"}, "distributed must be None, True or False"),
        ({"layers": "all"}, "unknown layers 'all'"),
        ({"solver": "lu"}, "unknown solver 'lu'"),
        ({"dtype": "float16"}, "dtype must be float32 or float64"),
        ({"max_memory": -5}, "max_memory must be a positive number of bytes"),
        ({"max_memory": "lots"}, "max_memory must be a positive number of bytes"),
        (
            {"kernel_params": {"w_std": 1.0}},
            r"unknown kernel_params \['w_std'\] for the two-layer NTK",
        ),
        ({"normalize": "yes"}, "normalize must be True or False"),
        ({"seed": -1}, "seed must be >= 0"),
    ],
)
def test_estimator_parameter_validation(reg_data, params, message):
    X, _, y = reg_data
    for Est, target in ((NTKRegressor, y), (NTKClassifier, (y > 0).astype(int))):
        est = Est(**params)  # __init__ stores verbatim and never raises
        assert est.get_params()[next(iter(params))] is params[next(iter(params))]
        with pytest.raises(ValueError, match=message):
            est.fit(X, target)


def test_zero_rows_warn_and_singular_ridgeless_fit(reg_data):
    X, Xs, y = reg_data
    Xz = X.copy()
    Xz[3] = 0.0
    with pytest.warns(UserWarning, match=r"zero-norm rows \(indices \[3\]\)"):
        est = NTKRegressor().fit(Xz, y)
    assert np.all(est.X_fit_[3] == 0)
    # one feature: normalised rows are +-1, so H1 has rank 2 exactly (entries 1/2 or 0)
    X1 = np.linspace(-2.0, 2.0, 12)[:, None] + 0.05
    with pytest.raises(ValueError, match="not numerically positive definite.*set ridge > 0"):
        NTKRegressor(ridge=0.0).fit(X1, np.arange(12.0))
    assert np.isfinite(NTKRegressor(ridge=1e-3).fit(X1, np.arange(12.0)).predict(X1)).all()
    with pytest.raises(ValueError, match="at least 2 classes"):
        NTKClassifier().fit(X, np.ones(len(X)))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_estimators_on_cuda_match_cpu(reg_data):
    X, Xs, y = reg_data
    for params in ({}, {"solver": "cg", "cg_tol": 1e-10}, {"t": 20.0}, {"sketch": "srht", "k": 6}):
        cpu = NTKRegressor(**params).fit(X, y).predict(Xs)
        gpu = NTKRegressor(device="cuda", **params).fit(X, y).predict(Xs)
        np.testing.assert_allclose(gpu, cpu, rtol=1e-6, atol=1e-7)


def test_predict_uses_fitted_configuration(reg_data):
    X, Xs, y = reg_data
    est = NTKRegressor(ridge=1e-2).fit(X, y)
    before = est.predict(Xs)
    est.set_params(depth=3, normalize=False)  # takes effect at the next fit, not at predict
    np.testing.assert_array_equal(est.predict(Xs), before)
    assert not np.allclose(est.fit(X, y).predict(Xs), before)


@pytest.mark.parametrize(
    "H_scale,y_scale,dtype",
    [(1e-300, 1e300, np.float64), (1e-200, 1e200, np.float64), (1e-30, 1e30, np.float32)],
)
def test_kernel_ridge_fit_unrepresentable_alpha_raises(problem, H_scale, y_scale, dtype):
    """alpha ~ y / H beyond the dtype's range: a ValueError naming alpha, never NaN / inf."""
    _, _, y, H, _ = problem
    with pytest.raises(ValueError, match=r"the solution alpha = \(H \+ ridge I\)\^-1 y overflows"):
        kernel_ridge_fit((H * H_scale).astype(dtype), y * y_scale)


def test_kernel_ridge_fit_extreme_but_representable_alpha(problem):
    """Scaling H and y by powers of two scales alpha exactly (no spurious overflow error)."""
    _, _, y, H, _ = problem
    a = kernel_ridge_fit(H, y, ridge=1e-3)
    b = kernel_ridge_fit(H * 2.0**-500, y * 2.0**500, ridge=1e-3 * 2.0**-500)
    np.testing.assert_allclose(b, a * 2.0**1000, rtol=1e-10)
    assert np.isfinite(b).all()
