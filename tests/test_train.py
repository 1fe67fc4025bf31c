"""Tests of ntkdr.train: GD against the NTK theory, the closed-form gradient against autograd,
optimizers, history, checkpoints / resume, determinism and input validation."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from ntkdr.empirical import ntk
from ntkdr.kernels import two_layer_ntk
from ntkdr.models import DeepReLU, TwoLayerReLU
from ntkdr.sketches import make_sketch
from ntkdr.theory import lambda_max, lambda_min, predicted_trajectory
from ntkdr.train import LR_RULES, History, fit, time_gd_step


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """These problems are tiny: on a shared, oversubscribed CPU the OpenMP start-up of each small
    op costs more than the op itself, so the module runs single-threaded (restored after)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _unit_rows(n, d, seed=0):
    g = np.random.default_rng(seed)
    X = g.standard_normal((n, d))
    return X / np.linalg.norm(X, axis=1, keepdims=True), np.sign(g.standard_normal(n))


@pytest.fixture(scope="module")
def digits():
    """sklearn's bundled digits, classes 3 vs 8 as -1/+1, rows normalised to unit norm."""
    from sklearn.datasets import load_digits

    data = load_digits()
    keep = np.isin(data.target, (3, 8))
    X = data.data[keep].astype(np.float64)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    y = np.where(data.target[keep] == 8, 1.0, -1.0)
    g = np.random.default_rng(0)
    idx = g.permutation(len(y))
    tr, te = idx[:200], idx[200:]
    return X[tr], y[tr], X[te], y[te]


# ------------------------------------------------------------------------------------------
# GD follows the NTK theory (Arora et al. 2019, Thm 4.1) on a very wide network
# ------------------------------------------------------------------------------------------
def test_gd_follows_predicted_trajectory_with_derived_bound():
    r"""Real GD vs ``predicted_trajectory(K, y, lr, t, u0)`` for K = empirical NTK at init and
    K = analytic H1, with a tolerance *derived* step by step rather than picked.

    Let r(t) = u(t) - y.  For the two-layer net, one GD step ``dW = -lr J(t)^T r(t)`` (sum loss)
    moves the outputs *exactly* by

        u(t+1) - u(t) = J(t) dW + eps(t) = -lr Theta(t) r(t) + eps(t),

    where Theta(t) = J(t) J(t)^T is the empirical NTK at W(t) and eps(t) is the ReLU remainder
    eps_i = m^-1/2 sum_r a_r [relu(P'_ir) - relu(P_ir) - 1[P_ir > 0](P'_ir - P_ir)], P = F W^T,
    non-zero only for patterns that flipped during the step.  The linearised prediction obeys
    r_lin(t+1) = (I - lr K) r_lin(t).  Subtracting, e = r - r_lin satisfies
    e(t+1) = (I - lr K) e(t) - lr (Theta(t) - K) r(t) + eps(t), and since ||I - lr K||_2 <= 1
    (K PSD, lr lambda_max(K) <= 2, asserted below)

        | ||r(t)|| - ||r_lin(t)|| |  <=  B(t) = sum_{s<t} lr ||Theta(s) - K||_2 ||r(s)|| + ||eps(s)||.

    Every term of B is measured, independently of the gradient code: ||r(s)|| from the
    recorded loss, ||Theta(s) - Theta(0)||_2 from ``History.ntk_drift`` (every step),
    ||Theta(0) - H1||_2 directly (triangle inequality for K = H1), and eps(s) exactly from the
    weights W(s), W(s+1) captured by the callback.  The inequality holds only if fit really
    takes the step -lr dL/dW of the *summed* loss with the recorded lr; the drift and the
    remainder are O(1/sqrt(m)) (Du et al. 2019, Lemmas 3.1-3.2; Arora et al. 2019), so B is
    small for a wide net -- small enough that a 10% error in the step size would be detected
    (asserted).  For K = H1 the extra term ||Theta(0) - H1||_2 is itself checked against the
    Hoeffding bound |Theta0_ij - H1_ij| <= |x_i.x_j| sqrt(log(2 n^2 / delta) / (2 m)) (each
    entry of Theta(0) is the mean of m i.i.d. terms in [0, x_i.x_j]), delta = 1e-6.
    """
    n, d, m, steps = 20, 10, 2**14, 150
    X, y = _unit_rows(n, d, seed=0)
    Xt = torch.from_numpy(X)
    model = TwoLayerReLU(d, m, dtype=torch.float64, seed=0)
    K0 = ntk(model, Xt)
    H1 = two_layer_ntk(Xt)
    a = model.a.detach()

    eps_norms, prev = [], {}

    def capture(step, mdl, hist):
        W = mdl.W.detach().clone()
        if "W" in prev:
            P0, P1 = Xt @ prev["W"].T, Xt @ W.T
            rem = torch.relu(P1) - torch.relu(P0) - (P0 > 0).to(P0.dtype) * (P1 - P0)
            eps_norms.append(float((rem @ a).norm() / math.sqrt(m)))
        prev["W"] = W

    hist = fit(model, X, y, steps, ntk_every=1, progress=False, callback=capture)
    lr = hist.lr
    assert lr == pytest.approx(1.0 / lambda_max(K0), rel=1e-12)
    r = np.sqrt(2.0 * np.asarray(hist.train_loss))
    u0 = np.asarray(hist.initial_outputs)
    assert r[-1] < 0.05 * r[0]  # GD converged a long way, so the whole curve is compared
    assert len(eps_norms) == steps

    K0_norm = lambda_max(K0)
    dist_K0_H1 = float(torch.linalg.eigvalsh(K0 - H1).abs().max())
    G = np.abs(X @ X.T)
    hoeffding = math.sqrt(math.log(2 * n * n / 1e-6) / (2 * m)) * np.linalg.norm(G)
    assert dist_K0_H1 <= hoeffding

    drift = np.asarray(hist.ntk_drift) * K0_norm  # ||Theta(s) - Theta(0)||_2
    assert np.isfinite(drift).all()
    for K, offset in ((K0, 0.0), (H1, dist_K0_H1)):
        assert lr * lambda_max(K) <= 2.0 and lambda_min(K, warn=False) > 0
        pred = predicted_trajectory(K, y, lr, steps, u0=u0)
        dev = np.abs(r - pred)
        B = np.concatenate(
            [[0.0], np.cumsum(lr * (drift[:-1] + offset) * r[:-1] + np.asarray(eps_norms))]
        )
        assert np.all(dev <= B + 1e-10 * r[0]), float(np.max(dev - B))
        # The bound is tight enough to matter: the prediction for a step size 10% off would
        # violate it (so would GD on the mean loss, i.e. lr / n, by far).
        wrong = predicted_trajectory(K, y, 1.1 * lr, steps, u0=u0)
        assert np.any(np.abs(r - wrong) > B)
    # With the empirical NTK the linearisation is followed to within about 1% of ||r(0)||.
    dev_emp = np.abs(r - predicted_trajectory(K0, y, lr, steps, u0=u0)).max() / r[0]
    assert dev_emp < 0.01


def test_one_gd_step_is_minus_lr_grad_of_summed_loss():
    X, y = _unit_rows(15, 6, seed=1)
    model = TwoLayerReLU(6, 64, dtype=torch.float64, seed=3)
    W0 = model.W.detach().clone()
    Xt, yt = torch.from_numpy(X), torch.from_numpy(y)
    loss = 0.5 * ((model(Xt) - yt) ** 2).sum()
    (g,) = torch.autograd.grad(loss, model.W)
    hist = fit(model, X, y, 1, lr=0.05, progress=False)
    torch.testing.assert_close(model.W.detach(), W0 - 0.05 * g, rtol=0, atol=1e-13)
    assert hist.train_loss[0] == pytest.approx(loss.detach().item(), rel=1e-13)
    assert hist.step == [0, 1]


# closed form vs autograd differ only by summation order: a few ulps per step, 12 steps
_TOL = {torch.float64: 1e-12, torch.float32: 1e-5}


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("optimizer", ["gd", "sgd", "adam"])
@pytest.mark.parametrize("out_dim,train_output", [(1, False), (1, True), (3, False), (3, True)])
def test_closed_form_gradient_matches_autograd(optimizer, out_dim, train_output, dtype):
    g = np.random.default_rng(2)
    X, y = _unit_rows(40, 8, seed=2)
    Y = y if out_dim == 1 else np.eye(out_dim)[g.integers(0, out_dim, 40)]
    tol = _TOL[dtype]
    runs = []
    for grad in ("closed_form", "autograd"):
        model = TwoLayerReLU(
            8, 300, dtype=dtype, seed=1, out_dim=out_dim, train_output=train_output
        )
        h = fit(
            model,
            X,
            Y,
            12,
            lr=0.01,
            optimizer=optimizer,
            batch_size=None if optimizer == "gd" else 9,
            progress=False,
            grad=grad,
        )
        runs.append((model, h))
    (m1, h1), (m2, h2) = runs
    assert (h1.grad, h2.grad) == ("closed_form", "autograd")
    np.testing.assert_allclose(h1.train_loss, h2.train_loss, rtol=tol)
    torch.testing.assert_close(m1.W, m2.W, rtol=0, atol=tol)
    torch.testing.assert_close(m1.a, m2.a, rtol=0, atol=tol)
    # a pattern can flip differently only if some |w_r . x_i| is within rounding of 0
    np.testing.assert_allclose(
        h1.pattern_flip_fraction, h2.pattern_flip_fraction, atol=2 / (40 * 300)
    )


def test_closed_form_blocks_match_single_block(monkeypatch):
    import ntkdr.nets.models as M

    X, y = _unit_rows(50, 7, seed=4)
    out = []
    for block_bytes in (50 * 8 * 64, 1 << 30):  # 64-neuron blocks vs one block
        monkeypatch.setattr(M, "_BLOCK_BYTES", block_bytes)
        model = TwoLayerReLU(7, 1000, dtype=torch.float64, seed=0)
        h = fit(model, X, y, 5, lr=0.01, progress=False)
        out.append((model.W.detach().clone(), h.train_loss))
    torch.testing.assert_close(out[0][0], out[1][0], rtol=0, atol=1e-13)
    np.testing.assert_allclose(out[0][1], out[1][1], rtol=1e-13)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("grad", ["closed_form", "autograd"])
def test_pattern_flips_equal_a_brute_force_count(monkeypatch, dtype, grad):
    """The blocked float flip count (dot products of 0 / 1 slabs) is the exact number of
    entries of 1[F W^T >= 0] that differ from init, recounted with bool tensors from W."""
    import ntkdr.nets.models as M

    monkeypatch.setattr(M, "_BLOCK_BYTES", 40 * 8 * 64)  # several column blocks
    X, y = _unit_rows(40, 6, seed=8)
    X[3] = 0.0  # a zero row: F W^T = 0 exactly, counted as >= 0 at every step
    model = TwoLayerReLU(6, 300, dtype=dtype, seed=2)
    W0 = model.W.detach().clone()
    Ws = []
    h = fit(
        model,
        X,
        y,
        6,
        lr=0.5,
        progress=False,
        grad=grad,
        callback=lambda t, mod, hist: Ws.append(mod.W.detach().clone()),
    )
    F = model.features(torch.as_tensor(X, dtype=dtype))
    init = (F @ W0.T) >= 0
    ref = [float(((F @ W.T >= 0) != init).sum()) / init.numel() for W in Ws]
    assert h.pattern_flip_fraction == ref  # exact: counts are integers
    assert ref[-1] > 0


# ------------------------------------------------------------------------------------------
# real data, step sizes, history
# ------------------------------------------------------------------------------------------
def test_fit_reduces_loss_on_digits(digits):
    Xtr, ytr, Xte, yte = digits
    model = TwoLayerReLU(64, 1024, dtype=torch.float64, seed=0)
    h = fit(model, Xtr, ytr, 100, X_test=Xte, y_test=yte, progress=False)
    assert h.train_loss[-1] < 0.1 * h.train_loss[0]
    assert np.all(np.diff(h.train_loss) <= 1e-9 * h.train_loss[0])  # stable GD: monotone
    assert h.test_accuracy[-1] >= 0.95
    assert len(h.test_loss) == len(h.step) == 101
    assert h.test_loss[-1] < h.test_loss[0]


def test_lr_none_is_inverse_lambda_max_of_empirical_ntk_at_init():
    X, y = _unit_rows(30, 5, seed=5)
    model = TwoLayerReLU(5, 512, dtype=torch.float64, seed=7)
    expected = 1.0 / lambda_max(ntk(TwoLayerReLU(5, 512, dtype=torch.float64, seed=7), X))
    h = fit(model, X, y, 3, progress=False)
    assert h.lr == pytest.approx(expected, rel=1e-12)
    assert h.lr_rule == "1/lambda_max(empirical NTK at init)" == LR_RULES["ntk"]
    h_adam = fit(TwoLayerReLU(5, 64, seed=7), X, y, 2, optimizer="adam", progress=False)
    assert h_adam.lr == 1e-3 and "Adam" in h_adam.lr_rule


def test_lr_theory_is_lambda0_over_n_squared():
    X, y = _unit_rows(25, 6, seed=6)
    sk = make_sketch("gaussian", 6, 4, seed=1)
    model = TwoLayerReLU(6, 256, sketch=sk, dtype=torch.float64, seed=0)
    lam0 = lambda_min(two_layer_ntk(model.features(torch.from_numpy(X))))
    h = fit(model, X, y, 2, lr="theory", progress=False)
    assert h.lr == pytest.approx(lam0 / 25**2, rel=1e-12)
    assert h.lr_rule.startswith("lambda_0/n^2")


def test_history_fields_are_sane_and_serialise():
    X, y = _unit_rows(30, 8, seed=8)
    Xte, yte = _unit_rows(10, 8, seed=9)
    model = TwoLayerReLU(8, 512, dtype=torch.float64, seed=0)
    h = fit(model, X, y, 40, X_test=Xte, y_test=yte, track_every=5, ntk_every=20, progress=False)
    assert h.step == list(range(0, 41, 5))
    for name in (
        "train_loss",
        "test_loss",
        "test_accuracy",
        "weight_change_fro",
        "weight_change_max_row",
        "pattern_flip_fraction",
        "ntk_drift",
        "wall_time",
    ):
        assert len(getattr(h, name)) == len(h.step), name
    u0 = torch.as_tensor(h.initial_outputs, dtype=torch.float64)
    assert h.train_loss[0] == pytest.approx(
        0.5 * float(((u0 - torch.from_numpy(y)) ** 2).sum()), rel=1e-12
    )
    wc = np.asarray(h.weight_change_fro)
    assert wc[0] == 0 and np.all(np.diff(wc) > 0)
    assert np.all(np.asarray(h.weight_change_max_row) <= wc + 1e-15)
    assert np.all(np.asarray(h.weight_change_max_row)[1:] > 0)
    flips = np.asarray(h.pattern_flip_fraction)
    assert flips[0] == 0 and np.all((flips >= 0) & (flips <= 1)) and flips[-1] > 0
    drift = np.asarray(h.ntk_drift)
    assert drift[0] == 0 and drift[4] > 0 and drift[-1] > 0  # steps 0, 20, 40
    assert np.isnan(drift[[1, 2, 3, 5, 6, 7]]).all()
    acc = np.asarray(h.test_accuracy)
    assert np.all((acc >= 0) & (acc <= 1))
    assert np.all(np.diff(h.wall_time) >= 0) and h.seconds_per_step > 0
    assert (h.optimizer, h.n_train, h.dtype, h.steps) == ("gd", 30, "float64", 40)

    d = json.loads(json.dumps(h.to_dict(), allow_nan=False))  # strict JSON: NaN -> null
    back = History.from_dict(d)
    assert back.step == h.step and back.train_loss == h.train_loss and back.lr == h.lr
    np.testing.assert_array_equal(np.asarray(back.ntk_drift), drift)  # NaN round-trips
    with pytest.raises(ValueError, match="unknown History field"):
        History.from_dict({**d, "bogus": 1})


def test_default_ntk_drift_off_and_generic_module():
    X, y = _unit_rows(20, 6, seed=10)
    # the drift is opt-in (issue 14: no n x n kernel at start that the caller did not ask for)
    h = fit(TwoLayerReLU(6, 128, dtype=torch.float64), X, y, 6, lr=0.01, progress=False)
    assert len(h.ntk_drift) == len(h.step) and np.isnan(h.ntk_drift).all()
    h6 = fit(TwoLayerReLU(6, 128, dtype=torch.float64), X, y, 6, ntk_every=6, progress=False)
    assert h6.ntk_drift[0] == 0 and h6.ntk_drift[-1] > 0 and np.isnan(h6.ntk_drift[1:-1]).all()
    h0 = fit(
        TwoLayerReLU(6, 128, dtype=torch.float64), X, y, 3, lr=0.01, ntk_every=0, progress=False
    )
    assert np.isnan(h0.ntk_drift).all()

    net = DeepReLU(6, 64, depth=2, dtype=torch.float64, seed=0)
    hg = fit(net, X, y, 30, lr=0.01, progress=False)
    assert hg.grad == "autograd" and hg.train_loss[-1] < hg.train_loss[0]
    assert hg.weight_change_fro == [] and hg.pattern_flip_fraction == [] and hg.ntk_drift == []
    seq = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 1), nn.Flatten(0)).double()
    hs = fit(seq, X, y, 20, lr=0.01, optimizer="sgd", batch_size=5, progress=False)
    assert hs.train_loss[-1] < hs.train_loss[0]


def test_factorized_net_trains_only_U_and_sketches_once(digits):
    Xtr, ytr, Xte, yte = digits
    sk = make_sketch("gaussian", 64, 16, seed=3, renormalize=True)
    calls = []

    def run(steps):
        model = TwoLayerReLU(64, 512, sketch=sk, dtype=torch.float64, seed=0)
        orig = model._features
        model._features = lambda X: (calls.append(X.shape[0]), orig(X))[1]
        S0, U0 = model.S.detach().clone(), model.W.detach().clone()
        calls.clear()
        h = fit(model, Xtr, ytr, steps, X_test=Xte, y_test=yte, progress=False)
        return model, h, S0, U0, len(calls)

    model, h, S0, U0, n_calls_short = run(2)
    model, h, S0, U0, n_calls_long = run(60)
    assert n_calls_long == n_calls_short  # raw d-dimensional inputs are not touched per step
    assert torch.equal(model.S, S0)
    assert not torch.equal(model.W, U0) and model.W.shape == (512, 16)
    assert h.train_loss[-1] < 0.2 * h.train_loss[0]
    assert h.test_accuracy[-1] >= 0.9


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_sgd_and_adam_reduce_the_full_training_loss(digits, optimizer):
    Xtr, ytr, _, _ = digits
    model = TwoLayerReLU(64, 512, dtype=torch.float32, seed=0)
    lr = None if optimizer == "sgd" else 0.01
    h = fit(model, Xtr, ytr, 60, lr=lr, optimizer=optimizer, batch_size=32, progress=False)
    assert h.batch_size == 32 and h.optimizer == optimizer
    assert h.train_loss[-1] < 0.3 * h.train_loss[0]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_float32_and_float64(dtype):
    X, y = _unit_rows(30, 8, seed=11)
    model = TwoLayerReLU(8, 256, dtype=dtype, seed=0)
    h = fit(model, X.astype(np.float32), y, 30, progress=False)
    assert h.dtype == str(dtype).replace("torch.", "") and model.W.dtype == dtype
    assert h.train_loss[-1] < 0.5 * h.train_loss[0]


def test_multi_output_one_hot_accuracy_and_lr():
    g = np.random.default_rng(12)
    X, _ = _unit_rows(30, 8, seed=12)
    Y = np.eye(3)[g.integers(0, 3, 30)]
    model = TwoLayerReLU(8, 256, dtype=torch.float64, seed=0, out_dim=3)
    h = fit(model, X, Y, 40, X_test=X, y_test=Y, progress=False)
    # the per-output block of the empirical NTK, (F F^T) o (A A^T) / m (a_rc = +-1)
    Xt = torch.from_numpy(X)
    A = (
        Xt @ TwoLayerReLU(8, 256, dtype=torch.float64, seed=0, out_dim=3).W.detach().T >= 0
    ).double()
    assert h.lr == pytest.approx(1.0 / lambda_max((Xt @ Xt.T) * (A @ A.T) / 256), rel=1e-12)
    assert np.asarray(h.initial_outputs).shape == (30, 3)
    assert h.train_loss[-1] < 0.2 * h.train_loss[0] and h.test_accuracy[-1] > h.test_accuracy[0]


# ------------------------------------------------------------------------------------------
# determinism, checkpoints, resume
# ------------------------------------------------------------------------------------------
def _sgd_run(steps, **kw):
    X, y = _unit_rows(30, 8, seed=13)
    model = TwoLayerReLU(8, 128, dtype=torch.float32, seed=0)
    h = fit(
        model,
        X,
        y,
        steps,
        lr=0.05,
        optimizer=kw.pop("optimizer", "sgd"),
        batch_size=7,
        seed=kw.pop("seed", 0),
        progress=False,
        **kw,
    )
    return model, h


def test_same_seed_same_result_different_seed_differs():
    m1, h1 = _sgd_run(10)
    m2, h2 = _sgd_run(10)
    m3, h3 = _sgd_run(10, seed=1)
    assert h1.train_loss == h2.train_loss and torch.equal(m1.W, m2.W)
    assert not torch.equal(m1.W, m3.W)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_resume_is_bit_for_bit(tmp_path, optimizer):
    ref_model, ref = _sgd_run(10, optimizer=optimizer)
    ck = tmp_path / "run" / "ck.pt"
    m5, h5 = _sgd_run(5, optimizer=optimizer, checkpoint=ck, checkpoint_every=5)
    assert ck.exists() and h5.step[-1] == 5
    m10, h10 = _sgd_run(10, optimizer=optimizer, checkpoint=ck, checkpoint_every=5, resume=True)
    assert torch.equal(m10.W, ref_model.W)
    assert h10.step == ref.step and h10.train_loss == ref.train_loss
    assert h10.weight_change_fro == ref.weight_change_fro
    assert os.listdir(ck.parent) == ["ck.pt"]  # atomic writes leave no temporary files


def test_interrupted_run_resumes_to_the_same_model(tmp_path):
    ref_model, ref = _sgd_run(12)
    ck = tmp_path / "ck.pt"

    def interrupt(step, model, hist):
        if step == 8:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _sgd_run(12, checkpoint=ck, checkpoint_every=3, callback=interrupt)
    saved = torch.load(ck, weights_only=True)
    assert saved["step"] == 6  # the last multiple of checkpoint_every before the interruption
    m, h = _sgd_run(12, checkpoint=ck, checkpoint_every=3, resume=True)
    assert torch.equal(m.W, ref_model.W) and h.train_loss == ref.train_loss
    # resume=True without a file starts from scratch
    m2, h2 = _sgd_run(12, checkpoint=tmp_path / "fresh.pt", resume=True)
    assert torch.equal(m2.W, ref_model.W)


def test_resume_rejects_mismatched_runs_and_bad_files(tmp_path):
    ck = tmp_path / "ck.pt"
    _sgd_run(4, checkpoint=ck)
    with pytest.raises(ValueError, match="batch_size = 7, but this run has batch_size = 5"):
        X, y = _unit_rows(30, 8, seed=13)
        fit(
            TwoLayerReLU(8, 128),
            X,
            y,
            8,
            lr=0.05,
            optimizer="sgd",
            batch_size=5,
            checkpoint=ck,
            resume=True,
            progress=False,
        )
    with pytest.raises(ValueError, match="lr = 0.05, but lr = 0.1 was given"):
        fit(
            TwoLayerReLU(8, 128),
            X,
            y,
            8,
            lr=0.1,
            optimizer="sgd",
            batch_size=7,
            checkpoint=ck,
            resume=True,
            progress=False,
        )
    with pytest.raises(ValueError, match="different training data"):
        fit(
            TwoLayerReLU(8, 128),
            X[::-1].copy(),
            y,
            8,
            lr=0.05,
            optimizer="sgd",
            batch_size=7,
            checkpoint=ck,
            resume=True,
            progress=False,
        )
    with pytest.raises(ValueError, match="beyond steps = 2"):
        fit(
            TwoLayerReLU(8, 128),
            X,
            y,
            2,
            lr=0.05,
            optimizer="sgd",
            batch_size=7,
            checkpoint=ck,
            resume=True,
            progress=False,
        )
    with pytest.raises(
        ValueError,
        match=r"holds a different model: W has shape \(128, 8\) there and \(64, 8\) here \(width 128 in the checkpoint, 64 asked\)",
    ):
        fit(
            TwoLayerReLU(8, 64),
            X,
            y,
            8,
            lr=0.05,
            optimizer="sgd",
            batch_size=7,
            checkpoint=ck,
            resume=True,
            progress=False,
        )
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="is corrupt or not an ntkdr training checkpoint") as err:
        fit(TwoLayerReLU(8, 128), X, y, 2, lr=0.05, checkpoint=bad, resume=True, progress=False)
    assert "weights_only" not in str(err.value)  # never advise loading untrusted pickles
    # a truncated real checkpoint is reported the same way
    bad.write_bytes(Path(ck).read_bytes()[:200])
    with pytest.raises(ValueError, match="is corrupt or not an ntkdr training checkpoint") as err:
        fit(TwoLayerReLU(8, 128), X, y, 2, lr=0.05, checkpoint=bad, resume=True, progress=False)
    assert "weights_only" not in str(err.value)


def test_callback_can_stop_early():
    X, y = _unit_rows(20, 5, seed=14)
    model = TwoLayerReLU(5, 64, dtype=torch.float64)
    h = fit(model, X, y, 50, lr=0.01, progress=False, callback=lambda step, mdl, hist: step >= 4)
    assert h.stopped_early and h.step == [0, 1, 2, 3, 4]
    assert h.weight_change_fro[-1] > 0


def test_early_stop_then_resume_matches_uninterrupted_run(tmp_path):
    ref_model, ref = _sgd_run(10)
    ck = tmp_path / "ck.pt"
    _, h = _sgd_run(10, checkpoint=ck, callback=lambda step, mdl, hist: step == 4)
    assert h.stopped_early and h.step[-1] == 4
    m, h2 = _sgd_run(10, checkpoint=ck, resume=True)
    assert (
        torch.equal(m.W, ref_model.W) and h2.train_loss == ref.train_loss and not h2.stopped_early
    )


def test_time_gd_step_leaves_model_unchanged():
    X, y = _unit_rows(50, 16, seed=15)
    model = TwoLayerReLU(16, 256, seed=0)
    W0 = model.W.detach().clone()
    t = time_gd_step(model, X, y, repeats=2)
    assert t > 0 and torch.equal(model.W, W0)


# ------------------------------------------------------------------------------------------
# validation
# ------------------------------------------------------------------------------------------
def test_validation_messages():
    X, y = _unit_rows(20, 10, seed=16)
    model = TwoLayerReLU(10, 32)

    def bad(match, *args, **kw):
        with pytest.raises(ValueError, match=match):
            fit(model, *args, progress=False, **kw)

    bad("X and y have different numbers of samples: 20 and 19", X, y[:19], 1)
    Xn = X.copy()
    Xn[3, 2] = np.nan
    bad(r"X contains NaN or Inf \(first at row 3, column 2\)", Xn, y, 1)
    yn = y.copy()
    yn[0] = np.inf
    bad("y contains NaN or Inf", X, yn, 1)
    bad("steps must be >= 0, got -1", X, y, -1)
    bad("steps must be an integer, got 2.5", X, y, 2.5)
    bad(
        "unknown optimizer 'momentum'; expected one of 'gd', 'sgd', 'adam'",
        X,
        y,
        1,
        optimizer="momentum",
    )
    bad("lr must be > 0, got 0.0", X, y, 1, lr=0.0)
    bad("lr must be > 0, got -0.1", X, y, 1, lr=-0.1)
    bad("lr must be a finite number", X, y, 1, lr=float("nan"))
    bad("lr must be a positive number, None or 'theory', got 'fast'", X, y, 1, lr="fast")
    bad("batch_size must be >= 1, got 0", X, y, 1, optimizer="sgd", batch_size=0)
    bad("batch_size must be <= 20, got 21", X, y, 1, optimizer="sgd", batch_size=21)
    bad(
        "optimizer 'gd' is full-batch: batch_size must be None or n = 20, got 5",
        X,
        y,
        1,
        batch_size=5,
    )
    bad("X has 7 features but the model expects d = 10", X[:, :7], y, 1)
    bad("X_test has 7 features but the model expects d = 10", X, y, 1, X_test=X[:, :7], y_test=y)
    bad("give both X_test and y_test, or neither", X, y, 1, X_test=X)
    bad(r"y has shape \(20, 2\) but the model outputs shape \(20,\)", X, np.stack([y, y], 1), 1)
    bad("resume=True needs a checkpoint path", X, y, 1, resume=True)
    bad("unknown grad 'numeric'", X, y, 1, grad="numeric")
    bad("track_every must be >= 1, got 0", X, y, 1, track_every=0)
    with pytest.raises(ValueError, match="model must be a torch.nn.Module, got str"):
        fit("net", X, y, 1)
    with pytest.raises(ValueError, match="lr='theory' .* is defined for TwoLayerReLU only"):
        fit(
            nn.Sequential(nn.Linear(10, 1), nn.Flatten(0)),
            X.astype(np.float32),
            y,
            1,
            lr="theory",
            progress=False,
        )
    with pytest.raises(ValueError, match="grad='closed_form' needs a TwoLayerReLU"):
        fit(
            nn.Sequential(nn.Linear(10, 1), nn.Flatten(0)),
            X.astype(np.float32),
            y,
            1,
            lr=0.1,
            grad="closed_form",
            progress=False,
        )


def test_steps_zero_records_initial_state_only():
    X, y = _unit_rows(10, 4, seed=17)
    model = TwoLayerReLU(4, 32, dtype=torch.float64)
    W0 = model.W.detach().clone()
    h = fit(model, X, y, 0, lr=0.1, progress=False)
    assert h.step == [0] and torch.equal(model.W, W0) and math.isnan(h.seconds_per_step)


def test_progress_bar_only_on_a_terminal(monkeypatch):
    import io
    import sys

    class Term(io.StringIO):
        def isatty(self):
            return True

    X, y = _unit_rows(10, 4, seed=18)
    for stream, shown in ((Term(), True), (io.StringIO(), False)):
        monkeypatch.setattr(sys, "stderr", stream)
        fit(TwoLayerReLU(4, 32, dtype=torch.float64), X, y, 3, lr=0.1)
        assert ("fit (gd)" in stream.getvalue()) is shown
    stream = Term()
    monkeypatch.setattr(sys, "stderr", stream)
    fit(TwoLayerReLU(4, 32, dtype=torch.float64), X, y, 3, lr=0.1, progress=False)
    assert stream.getvalue() == ""
