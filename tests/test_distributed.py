"""Tests of data-parallel training (ntkdr.distributed + fit under torch.distributed).

Reference: the single-process :func:`ntkdr.train.fit` with the same seed and arguments.  Two
gloo ranks on loopback (``file://`` rendezvous in tmp_path), spawned once for the whole module:
each rank runs every scenario and saves its results; the tests compare them with single-process
runs in this process.  Since the loss is a sum, the all-reduced shard gradients equal the full
gradient up to round-off, so weights and histories agree to float round-off (float64: rtol
1e-10; float32: 1e-4 relative to the largest entry).
"""

from __future__ import annotations

import datetime
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from _spawn import run_torchrun, spawn_ranks
from ntkdr import distributed as D
from ntkdr.models import TwoLayerReLU
from ntkdr.train import fit

WORLD = 2
SPAWN_TIMEOUT_S = 90  # a hang fails the module instead of blocking CI
TOL = {torch.float64: 1e-10, torch.float32: 1e-4}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ------------------------------------------------------------------------------------------
# scenarios: each is run by every rank (data parallel) and by one process (reference)
# ------------------------------------------------------------------------------------------
def _data(n=37, d=10, n_test=11, seed=0, classes=1):
    g = np.random.default_rng(seed)
    X = g.standard_normal((n + n_test, d))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    if classes == 1:
        Y = np.sign(g.standard_normal(n + n_test))
    else:
        Y = -np.ones((n + n_test, classes))
        Y[np.arange(n + n_test), g.integers(0, classes, n + n_test)] = 1.0
    return X[:n], Y[:n], X[n:], Y[n:]


SCENARIOS = {
    # name: (model kwargs, data kwargs, fit kwargs)
    "dense_gd_auto_lr": (dict(m=64), {}, dict(steps=6, lr=None, ntk_every=2)),
    "factorized_two_params": (
        dict(m=48, sketch="gaussian", k=5, train_output=True, out_dim=2),
        dict(classes=2),
        dict(steps=5, lr=0.05),
    ),
    "sgd_batches": (dict(m=32), {}, dict(steps=9, lr=0.1, optimizer="sgd", batch_size=10)),
    "adam_batch1_empty_shard": (dict(m=32), {}, dict(steps=5, optimizer="adam", batch_size=1)),
    "autograd": (dict(m=32), dict(n=9, n_test=1), dict(steps=4, lr=0.1, grad="autograd")),
    "theory_lr": (dict(m=32), {}, dict(steps=3, lr="theory")),
    "float32": (dict(m=64, dtype=torch.float32), {}, dict(steps=6, lr=None)),
}


def _run(name, **extra):
    mk, dk, fk = SCENARIOS[name]
    mk = dict(mk)
    X, Y, Xs, Ys = _data(**dk)
    model = TwoLayerReLU(
        X.shape[1], mk.pop("m"), seed=3, dtype=mk.pop("dtype", torch.float64), **mk
    )
    fk = dict(fk)
    steps = fk.pop("steps")
    h = fit(model, X, Y, steps, X_test=Xs, y_test=Ys, progress=False, seed=5, **fk, **extra)
    return {k: v.clone() for k, v in model.state_dict().items()}, h.to_dict()


def _worker(rank: int, tmp: str) -> None:
    """One rank: every scenario, the checkpoint / resume checks, the error checks."""
    torch.set_num_threads(1)
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    torch.distributed.init_process_group(
        "gloo",
        init_method=f"file://{tmp}/rendezvous",
        rank=rank,
        world_size=WORLD,
        timeout=datetime.timedelta(seconds=SPAWN_TIMEOUT_S),
    )
    out = {name: _run(name) for name in SCENARIOS}
    out["alone"] = _run("dense_gd_auto_lr", distributed=False)

    # rank 0 alone writes the checkpoint (each rank names its own path here, so a write by
    # rank 1 would be visible)
    _run("sgd_batches", checkpoint=os.path.join(tmp, f"own-{rank}.pt"), checkpoint_every=2)

    # interrupted + resumed == uninterrupted; the stop is decided by rank 1's callback alone
    shared = os.path.join(tmp, "shared.pt")
    stop = _run("sgd_batches", checkpoint=shared, callback=lambda t, m, h: rank == 1 and t == 4)
    torch.distributed.barrier()
    resumed = _run("sgd_batches", checkpoint=shared, resume=True)
    out["stopped"], out["resumed"] = stop, resumed

    # different data on the ranks: an error on every rank, not a hang or a silent mix
    X, Y, _, _ = _data()
    try:
        fit(TwoLayerReLU(10, 8, dtype=torch.float64), X + rank, Y, 1, lr=0.1, progress=False)
        out["mismatch"] = "no error"
    except ValueError as exc:
        out["mismatch"] = str(exc)
    torch.save(out, os.path.join(tmp, f"rank{rank}.pt"))
    torch.distributed.destroy_process_group()


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    """Results of the two ranks (spawned once for the module, bounded in time)."""
    tmp = spawn_ranks(_worker, tmp_path_factory, "dist", WORLD, SPAWN_TIMEOUT_S)
    res = [torch.load(os.path.join(tmp, f"rank{r}.pt"), weights_only=False) for r in range(WORLD)]
    return tmp, res


def _close(a, b, dtype, what):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    assert a.shape == b.shape, what
    tol = TOL[dtype]
    scale = max(np.abs(b).max(initial=0.0), 1e-300)
    err = np.abs(a - b).max(initial=0.0)
    ok = (
        err <= tol * scale
        if dtype == torch.float32
        else np.allclose(a, b, rtol=tol, atol=tol * scale)
    )
    assert ok, f"{what}: max |diff| = {err:.3e} (scale {scale:.3e})"


def _nan_close(a, b, dtype, what):
    a = np.array([np.nan if v is None else v for v in a], dtype=np.float64)
    b = np.array([np.nan if v is None else v for v in b], dtype=np.float64)
    assert np.array_equal(np.isnan(a), np.isnan(b)), what
    _close(a[~np.isnan(a)], b[~np.isnan(b)], dtype, what)


def _compare(dist_out, ref_out, dtype):
    (ws, hd), (wr, hr) = dist_out, ref_out
    assert ws.keys() == wr.keys()
    for k in wr:
        _close(ws[k], wr[k], dtype, f"weights {k}")
    assert hd["step"] == hr["step"]
    assert hd["n_train"] == hr["n_train"] and hd["lr_rule"] == hr["lr_rule"]
    _close(hd["lr"], hr["lr"], dtype, "lr")
    for key in (
        "train_loss",
        "test_loss",
        "weight_change_fro",
        "weight_change_max_row",
        "initial_outputs",
    ):
        _close(hd[key], hr[key], dtype, key)
    for key in ("pattern_flip_fraction", "ntk_drift"):
        _nan_close(hd[key], hr[key], dtype, key)
    assert hd["test_accuracy"] == hr["test_accuracy"]


# ------------------------------------------------------------------------------------------
# two ranks == one process
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_two_ranks_match_single_process(ranks, name):
    _, res = ranks
    ref = _run(name)
    dtype = ref[0]["W"].dtype
    for r in range(WORLD):
        _compare(res[r][name], ref, dtype)
    # the ranks hold the same (replicated) model, bit for bit
    for k, v in res[0][name][0].items():
        assert torch.equal(v, res[1][name][0][k]), k


def test_the_reference_is_not_trivially_equal(ranks):
    """The comparison can fail: training moved the weights and losses decreased."""
    _, res = ranks
    w, h = res[0]["dense_gd_auto_lr"]
    w0 = TwoLayerReLU(10, 64, seed=3, dtype=torch.float64).W
    assert float((w["W"] - w0.detach()).norm()) > 1e-3
    assert h["train_loss"][-1] < 0.9 * h["train_loss"][0]
    assert any(f > 0 for f in h["pattern_flip_fraction"][1:])


def test_distributed_false_trains_alone_inside_a_group(ranks):
    _, res = ranks
    ref = _run("dense_gd_auto_lr")
    for r in range(WORLD):
        for k, v in ref[0].items():
            assert torch.equal(res[r]["alone"][0][k], v), k


def test_only_rank_zero_writes_checkpoints(ranks):
    tmp, _ = ranks
    assert os.path.exists(os.path.join(tmp, "own-0.pt"))
    assert not os.path.exists(os.path.join(tmp, "own-1.pt"))
    assert not [f for f in os.listdir(tmp) if f.startswith(".tmp-")]  # atomic: no leftovers


def test_stop_on_one_rank_and_resume_bit_exact(ranks):
    _, res = ranks
    for r in range(WORLD):
        _, hs = res[r]["stopped"]
        assert hs["stopped_early"] and hs["step"][-1] == 4
        ws, _ = res[r]["resumed"]
        wu, _ = res[r]["sgd_batches"]
        for k in wu:  # same world size: bit for bit
            assert torch.equal(ws[k], wu[k]), k


def test_different_data_on_ranks_is_an_error(ranks):
    _, res = ranks
    for r in range(WORLD):
        assert "differ between ranks" in res[r]["mismatch"]


# ------------------------------------------------------------------------------------------
# helpers without a process group
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("n, world", [(0, 1), (1, 2), (7, 2), (10, 3), (5, 8), (37, 2)])
def test_shard_indices_partition(n, world):
    shards = [D.shard_indices(n, r, world) for r in range(world)]
    assert [i for s in shards for i in s] == list(range(n))
    sizes = [len(s) for s in shards]
    assert max(sizes) - min(sizes) <= 1
    assert [D.shard_slice(n, r, world) for r in range(world)] == [
        slice(s.start, s.stop) for s in shards
    ]


def test_shard_indices_validation():
    with pytest.raises(ValueError, match="world"):
        D.shard_indices(5, 0, 0)
    with pytest.raises(ValueError, match="rank"):
        D.shard_indices(5, 2, 2)
    with pytest.raises(ValueError, match="n must"):
        D.shard_indices(-1, 0, 1)


def test_single_process_helpers(monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert D.init_from_env() == (0, 1)
    assert not D.is_distributed() and D.rank() == 0 and D.world_size() == 1
    t = torch.arange(3.0)
    assert D.all_reduce_sum(t) is t and torch.equal(t, torch.arange(3.0))
    assert D.broadcast_object({"a": 1}) == {"a": 1}
    D.barrier()
    D.cleanup()
    with pytest.raises(ValueError, match="backend"):
        D.init_from_env(backend="mpi-ish")
    with pytest.raises(ValueError, match="timeout"):
        D.init_from_env(timeout=0)
    with pytest.raises(ValueError, match="all_reduce_sum needs a torch.Tensor"):
        D.all_reduce_sum(np.zeros(2))


def test_bad_torchrun_environment(monkeypatch):
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ValueError, match="RANK = 3"):
        D.init_from_env()
    monkeypatch.setenv("RANK", "x")
    with pytest.raises(ValueError, match="RANK / WORLD_SIZE must be integers"):
        D.init_from_env()


def test_fit_distributed_true_needs_a_group():
    X, Y, _, _ = _data()
    with pytest.raises(ValueError, match="distributed=True needs an initialised"):
        fit(TwoLayerReLU(10, 8), X, Y, 1, lr=0.1, distributed=True, progress=False)
    with pytest.raises(ValueError, match="distributed must be"):
        fit(TwoLayerReLU(10, 8), X, Y, 1, lr=0.1, distributed="yes", progress=False)


# ------------------------------------------------------------------------------------------
# end to end: torchrun -m ntkdr train == python -m ntkdr train
# ------------------------------------------------------------------------------------------
def test_torchrun_cli_matches_single_process(tmp_path):
    """README: ``torchrun --nproc_per_node=2 -m ntkdr train`` equals one process to round-off.

    Run in the default suite (about 12 s); a transient rendezvous failure is retried once on a
    fresh port (tests/_spawn.py).
    """
    flags = [
        "train",
        "--dataset",
        "digits",
        "--classes",
        "3,5",
        "--width",
        "64",
        "--steps",
        "5",
        "--dtype",
        "float64",
        "--quiet",
        "--checkpoint-every",
        "2",
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1", GLOO_SOCKET_IFNAME="lo")
    env.pop("RANK", None)
    env.pop("WORLD_SIZE", None)
    one, two = tmp_path / "one", tmp_path / "two"
    single = subprocess.Popen(
        [sys.executable, "-m", "ntkdr", *flags, "--out", str(one)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    dist = run_torchrun(
        ["-m", "ntkdr", *flags, "--out", two], nproc=2, env=env, timeout_s=SPAWN_TIMEOUT_S
    )
    s_out, _ = single.communicate(timeout=SPAWN_TIMEOUT_S)
    assert single.returncode == 0, s_out
    assert dist.returncode == 0, dist.stdout + dist.stderr
    assert (
        sorted(os.listdir(two))
        == sorted(os.listdir(one))
        == ["checkpoint.pt", "history.json", "model.pt"]
    )
    a = torch.load(one / "model.pt", weights_only=True)
    b = torch.load(two / "model.pt", weights_only=True)
    assert (
        float((b["W"] - TwoLayerReLU(64, 64, seed=0, dtype=torch.float64).W.detach()).norm()) > 1e-6
    )
    for k in a:
        _close(b[k], a[k], torch.float64, k)
    import json

    ha, hb = (
        json.loads((one / "history.json").read_text()),
        json.loads((two / "history.json").read_text()),
    )
    _close(hb["train_loss"], ha["train_loss"], torch.float64, "train_loss")
    _close(hb["test_loss"], ha["test_loss"], torch.float64, "test_loss")
