"""Tests of ntkdr.tiles: resumable, distributed, out-of-core kernel files.

References: an independent float64 numpy evaluation of H1 and the in-memory
``two_layer_ntk`` (round-off agreement), and the same command run uninterrupted in one
process (bit-for-bit agreement after crashes, resumes and two-rank gloo runs).
"""

from __future__ import annotations

import datetime
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from ntkdr.kernels import NTK, fc_relu_kernels, two_layer_ntk
from ntkdr.kernels.tiles import (
    ResumeWarning,
    choose_tile_rows,
    compute_kernel_to_file,
    partial_paths,
)

TOL = {np.float32: 2e-6, np.float64: 1e-13}  # relative to max |K|


def _X(n=120, d=7, seed=0, dtype=np.float64):
    return np.random.default_rng(seed).standard_normal((n, d)).astype(dtype)


def _h1_reference(X, Z):
    """H1(x, z) = x.z (pi - theta) / (2 pi), float64, arccos form (independent of kernels.py)."""
    X, Z = X.astype(np.float64), Z.astype(np.float64)
    g = X @ Z.T
    nx, nz = np.linalg.norm(X, axis=1), np.linalg.norm(Z, axis=1)
    theta = np.arccos(np.clip(g / np.outer(nx, nz), -1.0, 1.0))
    return g * (math.pi - theta) / (2 * math.pi)


def _scratch_bytes(m, item):
    """The analytic kernels' elementwise working set, as tiles.py budgets it."""
    return 2 * item * max(m, 2**16 * max(2, torch.get_num_threads()))


def _leftovers(out: Path) -> list[str]:
    return sorted(
        p.name for p in out.parent.iterdir() if p.name != out.name and p.name.startswith(out.name)
    )


class Counting:
    """Wraps a kernel; counts tiles (calls with the same block twice) and can fail after some."""

    def __init__(self, kernel, fail_after: int | None = None):
        self.kernel, self.fail_after = kernel, fail_after
        self.tiles = 0
        self.rows: list[int] = []

    def __call__(self, a, b):
        if a is b:
            if self.fail_after is not None and self.tiles >= self.fail_after:
                raise RuntimeError("simulated crash")
            self.tiles += 1
            self.rows.append(a.shape[0])
        return self.kernel(a, b)


def _record(out: Path) -> dict:
    return json.loads(partial_paths(out)["record"].read_text())


# ----------------------------------------------------------------------------- correctness


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("as_tensor", [False, True])
def test_matches_in_memory_kernel(tmp_path, dtype, as_tensor):
    X = _X(dtype=dtype)
    out = tmp_path / "sub" / "K.npy"
    path = compute_kernel_to_file(torch.from_numpy(X) if as_tensor else X, out, tile_rows=25)
    assert path == out.absolute() and out.exists()
    assert _leftovers(out) == []  # partial, records and lock are gone
    K = np.load(out)
    assert K.dtype == dtype and K.shape == (120, 120)
    assert np.array_equal(K, K.T)  # exactly symmetric
    scale = np.abs(K).max()
    np.testing.assert_allclose(K, two_layer_ntk(X), rtol=0, atol=TOL[dtype] * scale)
    off = ~np.eye(120, dtype=bool)  # arccos loses sqrt(eps) at theta = 0: diagonal checked below
    np.testing.assert_allclose(
        K[off], _h1_reference(X, X)[off], rtol=0, atol=max(TOL[dtype], 1e-12) * scale
    )
    # the diagonal comes from the closed form at theta = 0: |x|^2 / 2
    np.testing.assert_allclose(
        np.diag(K), (X.astype(np.float64) ** 2).sum(1) / 2, rtol=4 * np.finfo(dtype).eps
    )


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_rectangular_and_fc_kernels(tmp_path, dtype):
    X, Z = _X(90, 6, 1, dtype), _X(37, 6, 2, dtype)
    K = np.load(
        compute_kernel_to_file(
            X, tmp_path / "K.npy", NTK(layers="both", kappa=0.7), Z=Z, tile_rows=16
        )
    )
    assert K.shape == (90, 37) and K.dtype == dtype
    ref = two_layer_ntk(X, Z, "both", kappa=0.7)
    np.testing.assert_allclose(K, ref, rtol=0, atol=TOL[dtype] * np.abs(ref).max())
    ntk = NTK(kind="fc", depth=3, b_std=0.1, output="nngp")
    K = np.load(compute_kernel_to_file(X, tmp_path / "F.npy", ntk, tile_rows=32))
    ref = fc_relu_kernels(X, depth=3, b_std=0.1)[1]
    np.testing.assert_allclose(K, ref, rtol=0, atol=TOL[dtype] * np.abs(ref).max())
    assert np.array_equal(K, K.T)


def test_plain_callable_is_mirrored_and_numpy_results_accepted(tmp_path):
    X = _X(50, 3)

    def rbf(a, b):  # returns numpy, so the callable's output kind does not matter
        return np.exp(-(torch.cdist(a, b).numpy() ** 2))

    K = np.load(compute_kernel_to_file(X, tmp_path / "K.npy", rbf, tile_rows=8))
    ref = np.exp(-((X[:, None, :] - X[None, :, :]) ** 2).sum(-1))
    np.testing.assert_allclose(K, ref, rtol=1e-12, atol=1e-14)
    assert np.array_equal(K, K.T)


def test_tile_sizes_agree_to_roundoff_and_repeat_bitwise(tmp_path):
    X = _X(100, 9, 3, np.float32)
    a = np.load(compute_kernel_to_file(X, tmp_path / "a.npy", tile_rows=7))
    b = np.load(compute_kernel_to_file(X, tmp_path / "b.npy", tile_rows=64))
    c = np.load(compute_kernel_to_file(X, tmp_path / "c.npy", tile_rows=7))
    np.testing.assert_allclose(a, b, rtol=0, atol=TOL[np.float32] * np.abs(a).max())
    assert a.tobytes() == c.tobytes()


def test_tile_rows_from_memory_budget(tmp_path):
    X = _X(300, 4)
    budget = _scratch_bytes(300, 8) + 40.5 * (2 * 300 * 8)  # room for 40 rows of 300 float64
    rows = choose_tile_rows(300, 300, 8, max_memory=budget)
    assert rows == 40
    with pytest.raises(ValueError, match="too small"):
        choose_tile_rows(300, 300, 8, max_memory=_scratch_bytes(300, 8))
    k = Counting(NTK())
    K = np.load(
        compute_kernel_to_file(X, tmp_path / "K.npy", k, max_memory=budget, kernel_id="ntk")
    )
    assert max(k.rows) == rows and k.tiles == math.ceil(300 / rows)
    np.testing.assert_allclose(K, two_layer_ntk(X), rtol=0, atol=1e-13 * np.abs(K).max())
    # without max_memory: about 32 tiles, never below 128 rows
    assert choose_tile_rows(20_000, 20_000, 4) == 625
    assert choose_tile_rows(1000, 1000, 4) == 128
    assert choose_tile_rows(50, 50, 4) == 50


# ----------------------------------------------------------------------------- resume


def test_resume_after_exception_skips_finished_tiles(tmp_path):
    X = _X(100, 5, 4, np.float32)
    ref = np.load(compute_kernel_to_file(X, tmp_path / "ref.npy", tile_rows=12))
    out = tmp_path / "K.npy"
    with pytest.raises(RuntimeError, match="simulated crash"):
        compute_kernel_to_file(X, out, Counting(NTK(), fail_after=4), tile_rows=12, kernel_id="ntk")
    assert not out.exists()  # never a torn file at the output path
    p = partial_paths(out)
    assert p["partial"].exists() and not p["lock"].exists()
    rec = _record(out)
    assert rec["n_done"] == 4 and rec["n_tiles"] == 9 and rec["tile_rows"] == 12
    k = Counting(NTK())
    compute_kernel_to_file(X, out, k, kernel_id="ntk")  # tile_rows=None: keeps the recorded 12
    assert k.tiles == 9 - 4 and set(k.rows) <= {12, 4}
    assert np.load(out).tobytes() == ref.tobytes()
    assert _leftovers(out) == []


def test_resume_after_sigkill(tmp_path):
    """A real kill -9 mid-run: the output never appears torn, the rerun completes bit for bit."""
    X = _X(400, 8, 5, np.float32)
    np.save(tmp_path / "X.npy", X)
    out = tmp_path / "K.npy"
    script = tmp_path / "run.py"
    script.write_text(
        "import sys, time, numpy as np, torch\n"
        "torch.set_num_threads(int(sys.argv[3]))\n"
        "from ntkdr.kernels import NTK\n"
        "from ntkdr.kernels.tiles import compute_kernel_to_file\n"
        "ntk = NTK()\n"
        "def slow(a, b):\n"
        "    time.sleep(0.15)\n"
        "    return ntk(a, b)\n"
        "compute_kernel_to_file(np.load(sys.argv[1]), sys.argv[2], slow, tile_rows=40, kernel_id='ntk')\n"
    )
    proc = subprocess.Popen(
        [
            sys.executable,
            str(script),
            str(tmp_path / "X.npy"),
            str(out),
            str(torch.get_num_threads()),
        ]
    )
    record = partial_paths(out)["record"]
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            if record.exists() and json.loads(record.read_text())["n_done"] >= 1:
                break
            time.sleep(0.02)
        assert proc.poll() is None, "the run finished (or died) before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not out.exists() and partial_paths(out)["partial"].exists()
    n_done = _record(out)["n_done"]
    assert 1 <= n_done < 10
    k = Counting(NTK())
    compute_kernel_to_file(X, out, k, tile_rows=40, kernel_id="ntk")
    assert k.tiles == 10 - n_done
    ref = np.load(compute_kernel_to_file(X, tmp_path / "ref.npy", tile_rows=40))
    assert np.load(out).tobytes() == ref.tobytes()
    assert _leftovers(out) == []


@pytest.mark.parametrize(
    "change, reason",
    [
        ("data", r"the data in X \(SHA-256\) differs"),
        ("kernel", "kernel differs"),
        ("tile_rows", "tile_rows differs"),
        ("dtype", "dtype differs"),
        ("corrupt", "malformed|unreadable"),
    ],
)
def test_changed_inputs_start_over_with_warning(tmp_path, change, reason):
    X = _X(60, 4, 6)
    out = tmp_path / "K.npy"
    with pytest.raises(RuntimeError):
        compute_kernel_to_file(X, out, Counting(NTK(), fail_after=2), tile_rows=10, kernel_id="ntk")
    X2, kern, kid, rows, dt = X, NTK(), "ntk", 10, None
    if change == "data":
        X2 = X.copy()
        X2[3, 1] += 1.0
    elif change == "kernel":
        kern, kid = NTK(layers="both"), None
    elif change == "tile_rows":
        rows = 20
    elif change == "dtype":
        dt = "float32"
    else:
        partial_paths(out)["record"].write_text('{"format": "ntkdr-kernel-tiles", "version": 1}')
    k = Counting(kern)
    with pytest.warns(ResumeWarning, match=reason):
        compute_kernel_to_file(X2, out, k, tile_rows=rows, kernel_id=kid, dtype=dt)
    assert k.tiles == math.ceil(60 / rows)  # nothing was skipped
    ref = np.load(compute_kernel_to_file(X2, tmp_path / "ref.npy", kern, tile_rows=rows, dtype=dt))
    assert np.load(out).tobytes() == ref.tobytes()


def test_concurrent_run_is_refused(tmp_path):
    fcntl = pytest.importorskip("fcntl")
    out = tmp_path / "K.npy"
    with open(partial_paths(out)["lock"], "w") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        with pytest.raises(ValueError, match="another process is computing"):
            compute_kernel_to_file(_X(10, 2), out)
    assert not out.exists()


# ----------------------------------------------------------------------------- distributed


def _rank_worker(rank, world, init_file, x_path, outs, counts_dir):
    import torch.distributed as dist

    torch.set_num_threads(1)
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    dist.init_process_group(
        "gloo",
        init_method=f"file://{init_file}",
        rank=rank,
        world_size=world,
        timeout=datetime.timedelta(seconds=60),
    )
    try:
        X = np.load(x_path)
        for out in outs:
            k = Counting(NTK())
            assert compute_kernel_to_file(X, out, k, tile_rows=16, kernel_id="ntk") == Path(out)
            Path(counts_dir, f"{Path(out).name}.{rank}").write_text(str(k.tiles))
    finally:
        dist.destroy_process_group()


def test_two_rank_gloo_matches_one_process(tmp_path):
    import torch.multiprocessing as mp

    X = _X(150, 6, 7, np.float32)
    np.save(tmp_path / "X.npy", X)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # bitwise equality assumes the same thread count everywhere
    try:
        ref = np.load(compute_kernel_to_file(X, tmp_path / "ref.npy", tile_rows=16))
        resumed = tmp_path / "resumed.npy"  # interrupted in one process, finished by two ranks
        with pytest.raises(RuntimeError):
            compute_kernel_to_file(
                X, resumed, Counting(NTK(), fail_after=3), tile_rows=16, kernel_id="ntk"
            )
    finally:
        torch.set_num_threads(threads)
    fresh = tmp_path / "fresh.npy"
    counts = tmp_path / "counts"
    counts.mkdir()
    ctx = mp.start_processes(
        _rank_worker,
        args=(
            2,
            str(tmp_path / "init"),
            str(tmp_path / "X.npy"),
            [str(fresh), str(resumed)],
            str(counts),
        ),
        nprocs=2,
        join=False,
        start_method="spawn",
    )
    deadline = time.monotonic() + 120
    try:
        while not ctx.join(timeout=1):
            assert time.monotonic() < deadline, "two-rank run timed out"
    finally:
        for p in ctx.processes:
            if p.is_alive():
                p.kill()
    n_tiles = math.ceil(150 / 16)
    for out, expected in ((fresh, n_tiles), (resumed, n_tiles - 3)):
        done = [int((counts / f"{out.name}.{r}").read_text()) for r in range(2)]
        assert sum(done) == expected and min(done) >= expected // 2  # shared, nothing twice
        assert np.load(out).tobytes() == ref.tobytes()
        assert _leftovers(out) == []


def test_world_size_needs_process_group(tmp_path):
    with pytest.raises(ValueError, match="need an initialised torch.distributed process group"):
        compute_kernel_to_file(_X(10, 2), tmp_path / "K.npy", world_size=2, rank=1)
    with pytest.raises(ValueError, match="rank must be >= 0"):
        compute_kernel_to_file(_X(10, 2), tmp_path / "K.npy", rank=-1)


# ----------------------------------------------------------------------------- validation


def test_validation_messages(tmp_path):
    X = _X(20, 3)
    with pytest.raises(ValueError, match="out_path must be a .npy file"):
        compute_kernel_to_file(X, tmp_path / "K.txt")
    with pytest.raises(ValueError, match="out_path must be a path"):
        compute_kernel_to_file(X, 3)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="cannot create output directory"):
        compute_kernel_to_file(X, tmp_path / "file" / "K.npy")
    (tmp_path / "dir.npy").mkdir()
    with pytest.raises(ValueError, match="is a directory"):
        compute_kernel_to_file(X, tmp_path / "dir.npy")
    with pytest.raises(ValueError, match="tile_rows must be >= 1"):
        compute_kernel_to_file(X, tmp_path / "K.npy", tile_rows=0)
    with pytest.raises(ValueError, match="max_memory must be > 0"):
        compute_kernel_to_file(X, tmp_path / "K.npy", max_memory=-1)
    with pytest.raises(ValueError, match="max_memory = .* is too small"):
        compute_kernel_to_file(X, tmp_path / "K.npy", max_memory=1000)
    with pytest.raises(ValueError, match="tile_rows = 20 does not fit max_memory"):
        compute_kernel_to_file(
            _X(20, 3), tmp_path / "K.npy", tile_rows=20, max_memory=_scratch_bytes(20, 8) + 3000
        )
    with pytest.raises(ValueError, match="kernel must be an ntkdr.kernels.NTK or a callable"):
        compute_kernel_to_file(X, tmp_path / "K.npy", kernel="ntk")
    with pytest.raises(ValueError, match="X contains NaN or Inf"):
        compute_kernel_to_file(np.full((3, 2), np.nan), tmp_path / "K.npy")
    with pytest.raises(ValueError, match="X must be 2-D"):
        compute_kernel_to_file(np.ones(3), tmp_path / "K.npy")
    with pytest.raises(ValueError, match="same number of features"):
        compute_kernel_to_file(X, tmp_path / "K.npy", Z=_X(5, 4))
    with pytest.raises(ValueError, match="progress must be True or False"):
        compute_kernel_to_file(X, tmp_path / "K.npy", progress="yes")
    with pytest.raises(
        ValueError, match=r"kernel returned shape \(3, 3\) for a tile of shape \(10, 10\)"
    ):
        compute_kernel_to_file(X, tmp_path / "K.npy", lambda a, b: np.ones((3, 3)), tile_rows=10)
    assert not (tmp_path / "K.npy").exists()
