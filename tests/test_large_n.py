"""Large-n NTK regression: matrix-free CG, distributed over ranks, and the
benchmark script benchmarks/large_n_regression.py.

References: the dense float64 solve ``np.linalg.solve(H + ridge I, y)`` on an independent numpy
NTK (small n), and the single-process CG.  Two gloo ranks on loopback (``file://`` rendezvous
in tmp_path), spawned once for the module with a time limit: each rank computes its rows of
every kernel-vector product and all-reduces, so the distributed CG runs the same iterations as
one process and its solution agrees to round-off (float64: rtol 1e-10; float32: 1e-4 of the
largest entry), and the two ranks hold the same solution bit for bit.
"""

from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from _spawn import run_torchrun, spawn_ranks
from ntkdr.kernels import NTK, KernelOptions
from ntkdr.kernels import operator as kernels
from ntkdr.regression import NTKRegressor, conjugate_gradient, kernel_cg_fit, kernel_operator

WORLD = 2
SPAWN_TIMEOUT_S = 90  # a hang fails the module instead of blocking CI
TOL = {torch.float64: 1e-10, torch.float32: 1e-4}
ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "large_n_regression.py"


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def ref_h1(X):
    """Independent numpy H1: (x . z)(pi - theta) / (2 pi)."""
    G = X @ X.T
    nrm = np.linalg.norm(X, axis=1)
    theta = np.arctan2(np.sqrt(np.maximum(np.outer(nrm, nrm) ** 2 - G**2, 0.0)), G)
    np.fill_diagonal(theta, 0.0)  # exact at x = z (the formula above has sqrt(eps) noise there)
    return G * (np.pi - theta) / (2 * np.pi)


def _data(n=61, d=7, c=1, seed=0):
    g = np.random.default_rng(seed)
    X = g.standard_normal((n, d))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    y = g.standard_normal((n, c)) if c > 1 else g.standard_normal(n)
    return X, y


# A ridge of 0.2 of the kernel scale (diagonal 1/2) keeps the condition number ~ 10: CG then
# amplifies the round-off difference between the sharded and the single-process products
# (different GEMM shapes) by little, and both runs take the same iterations.
RIDGE = 1e-1
CG_TOL = {torch.float64: 1e-10, torch.float32: 1e-5}
# name: (kernel kwargs, data kwargs, dtype, max_memory): each run on every rank and alone
SCENARIOS = {
    "h1_float64": ({}, {}, torch.float64, 4096),  # a 4 KiB budget: tiles of a few rows
    "both_two_outputs": (dict(layers="both"), dict(c=2), torch.float64, None),
    "fc_depth2": (dict(kind="fc", depth=2), {}, torch.float64, None),
    "h1_float32": ({}, {}, torch.float32, None),
}


def _solve(name):
    kw, dk, dtype, mem = SCENARIOS[name]
    X, y = _data(**dk)
    kern = NTK(**kw, options=KernelOptions(max_memory=mem))
    res = kernel_cg_fit(
        kern,
        torch.as_tensor(X, dtype=dtype),
        torch.as_tensor(y),
        RIDGE,
        tol=CG_TOL[dtype],
        max_iter=200,
    )
    return {
        "x": res.x.clone(),
        "n_iter": res.n_iter,
        "history": list(res.history),
        "world": res.world_size,
        "residual": float(np.max(res.residual)),
    }


def _worker(rank: int, tmp: str) -> None:
    torch.set_num_threads(1)
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    torch.distributed.init_process_group(
        "gloo",
        init_method=f"file://{tmp}/rendezvous",
        rank=rank,
        world_size=WORLD,
        timeout=datetime.timedelta(seconds=SPAWN_TIMEOUT_S),
    )
    out = {name: _solve(name) for name in SCENARIOS}
    X, y = _data()
    # the estimator's CG path (distributed=None: the group is used), and distributed=False
    out["regressor"] = NTKRegressor(solver="cg", ridge=RIDGE, cg_tol=1e-10).fit(X, y).dual_coef_
    out["regressor_alone"] = (
        NTKRegressor(solver="cg", ridge=RIDGE, cg_tol=1e-10, distributed=False).fit(X, y).dual_coef_
    )
    # the operator alone: each rank's rows, assembled
    op = kernel_operator(NTK(), torch.as_tensor(X), ridge=RIDGE)
    out["operator"] = op(torch.as_tensor(y)[:, None])[:, 0]
    out["operator_calls"] = op.n_calls
    # fewer rows than ranks: one rank has an empty shard
    out["tiny"] = kernel_cg_fit(
        NTK(), torch.as_tensor(X[:1]), torch.as_tensor(y[:1]), RIDGE, tol=1e-10
    ).x
    # different data on the ranks: an error on every rank, not a hang or a silent mix
    for what, args in (("X", (X + rank, y)), ("y", (X, y + rank))):
        try:
            kernel_cg_fit(NTK(), *args, RIDGE)
            out[f"mismatch_{what}"] = "no error"
        except ValueError as exc:
            out[f"mismatch_{what}"] = str(exc)
    torch.save(out, os.path.join(tmp, f"rank{rank}.pt"))
    torch.distributed.destroy_process_group()


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    tmp = spawn_ranks(_worker, tmp_path_factory, "dist_cg", WORLD, SPAWN_TIMEOUT_S)
    return [torch.load(os.path.join(tmp, f"rank{r}.pt"), weights_only=False) for r in range(WORLD)]


def _close(a, b, dtype):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    assert a.shape == b.shape
    scale = np.abs(b).max()
    assert np.abs(a - b).max() <= TOL[dtype] * scale, (
        f"max |diff| {np.abs(a - b).max():.3e}, scale {scale:.3e}"
    )


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_two_ranks_match_single_process_cg(ranks, name):
    """Sharded + all-reduced products equal the single-process ones to ~1e-16 relative, but CG
    amplifies round-off in its late iterations, so the two runs are compared through what CG
    guarantees: both residuals are below ``tol``, hence (``lambda_min(A) >= ridge``)
    ``|x_dist - x_one| <= 2 tol |y| / ridge`` (float64).  A float32 kernel differs by its own
    round-off (relative 1e-7) between the two GEMM shapes: 1e-4 of ``|x|``."""
    dtype = SCENARIOS[name][2]
    X, y = _data(**SCENARIOS[name][1])
    ref = _solve(name)
    assert ref["world"] == 1 and ref["residual"] <= CG_TOL[dtype]
    bound = (
        2 * CG_TOL[torch.float64] * np.linalg.norm(y) / RIDGE * (1 + 1e-6)
        if dtype == torch.float64
        else TOL[dtype] * float(ref["x"].norm())
    )
    for r in range(WORLD):
        got = ranks[r][name]
        assert got["world"] == WORLD and got["residual"] <= CG_TOL[dtype]
        assert abs(got["n_iter"] - ref["n_iter"]) <= 2
        err = float((got["x"].double() - ref["x"].double()).norm())
        assert err <= bound, f"|x_dist - x_one| = {err:.3e} > {bound:.3e}"
        # the first iterations, before round-off is amplified, agree closely
        np.testing.assert_allclose(got["history"][:5], ref["history"][:5], rtol=TOL[dtype] * 1e2)
    # every rank ran the same iterations and holds the same solution, bit for bit
    assert ranks[0][name]["history"] == ranks[1][name]["history"]
    assert torch.equal(ranks[0][name]["x"], ranks[1][name]["x"])


def test_single_process_cg_is_the_dense_solution():
    """The reference above is itself right: CG == dense solve with an independent kernel."""
    X, y = _data()
    ref = np.linalg.solve(ref_h1(X) + RIDGE * np.eye(len(y)), y)
    np.testing.assert_allclose(_solve("h1_float64")["x"].numpy(), ref, rtol=1e-8, atol=1e-10)


def test_distributed_estimator_operator_and_edge_cases(ranks):
    X, y = _data()
    dense = np.linalg.solve(ref_h1(X) + RIDGE * np.eye(len(y)), y)
    for r in range(WORLD):
        np.testing.assert_allclose(ranks[r]["regressor"], dense, rtol=1e-8, atol=1e-10)
        np.testing.assert_allclose(ranks[r]["regressor_alone"], dense, rtol=1e-8, atol=1e-10)
        np.testing.assert_allclose(
            ranks[r]["operator"].numpy(), ref_h1(X) @ y + RIDGE * y, rtol=1e-10, atol=1e-12
        )
        assert ranks[r]["operator_calls"] == 1
        np.testing.assert_allclose(ranks[r]["tiny"].numpy(), y[:1] / (0.5 + RIDGE), rtol=1e-12)
        for what in ("X", "y"):
            assert f"{what} differs between ranks" in ranks[r][f"mismatch_{what}"]


# ------------------------------------------------------------------------------------------
# matrix-free: no n x n kernel, tiles within the budget
# ------------------------------------------------------------------------------------------
def test_cg_path_never_builds_the_n_by_n_kernel(monkeypatch):
    X, y = _data(n=150, d=9)
    n = len(y)
    dense = np.linalg.solve(ref_h1(X) + RIDGE * np.eye(n), y)
    budget = 16 * 2**10  # 16 KiB: an n x n float64 kernel would be 176 KiB

    def no_dense(*args, **kwargs):
        raise AssertionError("an n x n kernel was formed on the matrix-free path")

    tiles = []
    real_run = kernels._run

    def spy_run(plan, Xt, Zt, symmetric, outs, tile, max_memory, sink=None):
        assert sink is not None, "kernel computed into a stored matrix instead of a sink"
        assert max_memory == budget

        def spy_sink(a, b, dsts):
            tiles.append(sum(d.numel() * d.element_size() for d in dsts))
            sink(a, b, dsts)

        return real_run(plan, Xt, Zt, symmetric, outs, tile, max_memory, sink=spy_sink)

    monkeypatch.setattr(kernels, "two_layer_ntk", no_dense)
    monkeypatch.setattr(kernels, "fc_relu_kernels", no_dense)
    monkeypatch.setattr(kernels.NTK, "__call__", no_dense)
    monkeypatch.setattr(kernels, "_run", spy_run)
    res = kernel_cg_fit(NTK(options=KernelOptions(max_memory=budget)), X, y, RIDGE, tol=1e-10)
    assert isinstance(res.x, np.ndarray) and res.converged
    np.testing.assert_allclose(res.x, dense, rtol=1e-8, atol=1e-10)
    assert tiles and max(tiles) <= budget and max(tiles) < n * n * 8
    tiles.clear()
    est = NTKRegressor(ridge=RIDGE, max_memory=budget, cg_tol=1e-10).fit(X, y)  # auto -> cg
    assert est.solver_ == "cg"
    np.testing.assert_allclose(est.dual_coef_, dense, rtol=1e-8, atol=1e-10)
    assert tiles and max(tiles) <= budget


def test_progress_bar_shows_iteration_and_residual(capsys):
    X, y = _data()
    res = kernel_cg_fit(NTK(), X, y, RIDGE, tol=1e-8, progress=True)
    err = capsys.readouterr().err
    assert "CG" in err and f"iteration={res.n_iter}" in err and "residual=" in err
    assert len(res.history) == res.n_iter and res.history[-1] <= 1e-8 < res.history[0]


def test_distributed_flag_validation():
    X, y = _data()
    with pytest.raises(ValueError, match="distributed=True needs an initialised torch.distributed"):
        kernel_cg_fit(NTK(), X, y, RIDGE, distributed=True)
    with pytest.raises(ValueError, match="distributed must be None, True or False"):
        conjugate_gradient(lambda v: v, y, distributed="yes")
    with pytest.raises(ValueError, match="distributed must be None, True or False"):
        NTKRegressor(solver="cg", distributed=1).fit(X, y)
    with pytest.raises(ValueError, match="kernel must be a kernel object"):
        kernel_cg_fit(np.eye(3), X, y, RIDGE)
    with pytest.raises(ValueError, match="ridge must be >= 0"):
        kernel_operator(NTK(), X, ridge=-1.0)


# ------------------------------------------------------------------------------------------
# the benchmark script
# ------------------------------------------------------------------------------------------
def _script_env():
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = str(ROOT / "src") + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _check_json(out, n):
    assert out["n"] == n and out["converged"] and out["final_relative_residual"] <= out["tol"]
    assert out["iterations"] == len(out["residual_history"]) >= 1
    assert out["dense_float64_bytes"] == n * n * 8
    assert out["peak_rss_bytes"] > 0 and out["solve_s"] > 0
    assert 0.0 <= out["test_error"] < 0.5  # better than chance on the teacher labels


def test_script_runs_end_to_end_and_writes_json(tmp_path):
    path = tmp_path / "out.json"
    cmd = [
        sys.executable,
        str(SCRIPT),
        "--n",
        "300",
        "--d",
        "20",
        "--threads",
        "1",
        "--no-progress",
        "--max-memory",
        "1MiB",
        "--json",
        str(path),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=_script_env())
    assert done.returncode == 0, done.stderr
    assert "iterations" in done.stdout and "peak RSS" in done.stdout
    out = json.loads(path.read_text())
    _check_json(out, 300)
    assert out["ranks"] == 1 and out["max_memory_bytes"] == 2**20
    bad = subprocess.run(
        [sys.executable, str(SCRIPT), "--n", "0"],
        capture_output=True,
        text=True,
        timeout=60,
        env=_script_env(),
    )
    assert bad.returncode != 0 and "--n" in bad.stderr


def test_script_under_torchrun_matches_one_process(tmp_path):
    """Two torchrun ranks solve the same CG problem as one process (default suite, ~12 s; a
    transient rendezvous failure is retried once on a fresh port, tests/_spawn.py)."""
    outs = []
    for ranks in (1, 2):
        path = tmp_path / f"out{ranks}.json"
        args = [SCRIPT, "--n-train", "400", "--dim", "20", "--no-progress", "--json", path]
        if ranks == 1:
            cmd = [sys.executable, *map(str, args)]
            done = subprocess.run(
                cmd, capture_output=True, text=True, timeout=180, env=_script_env()
            )
        else:
            env = dict(_script_env(), GLOO_SOCKET_IFNAME="lo")
            done = run_torchrun(args, nproc=2, env=env, timeout_s=180)
        assert done.returncode == 0, done.stdout + done.stderr
        outs.append(json.loads(path.read_text()))
    one, two = outs
    _check_json(two, 400)
    assert (
        two["ranks"] == 2 and one["ranks"] == 1 and abs(one["iterations"] - two["iterations"]) <= 2
    )
    _check_json(one, 400)
    # both solutions meet the CG tolerance, so they (and the test mse) agree to about tol, not
    # to round-off: CG amplifies the round-off difference of the sharded products
    np.testing.assert_allclose(two["test_mse"], one["test_mse"], rtol=10 * one["tol"])
