"""Large-n NTK regression by matrix-free conjugate gradients.

    python benchmarks/large_n_regression.py --n 20000 [--d 100] [--ridge 1e-2] [--tol 1e-4]
        [--max-memory 512MiB] [--json out.json]
    torchrun --standalone --nproc_per_node=2 benchmarks/large_n_regression.py --n-train 20000

Fits the two-layer NTK (``H1``, unit-norm rows) ridge regressor ``alpha = (H + ridge I)^-1 y``
on a synthetic set (``ntkdr.data.load_dataset``: ``sphere`` or ``lowrank``, +-1 teacher labels)
with :func:`ntkdr.regression.kernel_cg_fit`: every CG iteration streams all ``n^2`` kernel
entries through tiles bounded by ``--max-memory`` and never forms the ``n x n`` matrix.  Under
``torchrun`` each rank computes its row shard of every kernel-vector product and an all-reduce
assembles it (gloo on CPU, NCCL on CUDA); all ranks run the same iterations.

``--ridge`` is relative to the kernel scale (the mean kernel diagonal, 1/2 for ``H1`` on unit
rows): the absolute ridge is ``ridge * scale``.  Printed (and written by ``--json``): n, d,
ranks, iterations, final true relative residual, residual history, solve and total wall time,
peak resident memory (``VmHWM`` of /proc/self/status; max over ranks) next to the size of the
``n x n`` float64 matrix that was not formed, and the test error.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

import numpy as np
import torch

from ntkdr import distributed as D
from ntkdr.data import load_dataset
from ntkdr.kernels import NTK, KernelOptions
from ntkdr.memory import parse_bytes
from ntkdr.regression import kernel_cg_fit


def _proc_status_bytes(key: str) -> int | None:
    """``VmHWM`` / ``VmRSS`` of this process in bytes (None where /proc is not available)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024  # reported in kB
    except OSError:
        return None
    return None


def _positive_int(s: str) -> int:
    v = int(s)
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {s!r}")
    return v


def _positive_float(s: str) -> float:
    v = float(s)
    if not (v > 0 and math.isfinite(v)):
        raise argparse.ArgumentTypeError(f"must be a positive finite number, got {s!r}")
    return v


def _memory(s: str) -> int:
    try:
        return int(parse_bytes(s, "--max-memory"))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    # --n-train / --dim: aliases for torchrun, whose own parser takes "--n" / "--d" for
    # abbreviations of its options even after the script name
    p.add_argument(
        "--n",
        "--n-train",
        dest="n",
        type=_positive_int,
        default=20000,
        help="training points (default 20000)",
    )
    p.add_argument(
        "--n-test", type=_positive_int, default=None, help="test points (default min(2000, n // 5))"
    )
    p.add_argument(
        "--d",
        "--dim",
        dest="d",
        type=_positive_int,
        default=100,
        help="input dimension (default 100)",
    )
    p.add_argument("--dataset", choices=("sphere", "lowrank"), default="sphere")
    p.add_argument(
        "--ridge",
        type=_positive_float,
        default=1e-2,
        help="ridge relative to the kernel scale (1e-2)",
    )
    p.add_argument(
        "--tol", type=_positive_float, default=1e-4, help="CG relative residual tolerance (1e-4)"
    )
    p.add_argument("--max-iter", type=_positive_int, default=500, help="CG iteration cap (500)")
    p.add_argument(
        "--max-memory",
        type=_memory,
        default=_memory("512MiB"),
        help="kernel tile budget per rank, bytes or a size like 512MiB (default)",
    )
    p.add_argument(
        "--dtype", choices=("float32", "float64"), default="float64", help="kernel dtype"
    )
    p.add_argument(
        "--device", default="cpu", help="cpu or cuda[:i] (under torchrun: cuda = cuda:LOCAL_RANK)"
    )
    p.add_argument(
        "--threads",
        type=_positive_int,
        default=None,
        help="torch threads per rank (default: cpu count / ranks on this node)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true", help="no tqdm bar")
    p.add_argument("--json", default=None, help="write the results as JSON here (rank 0)")
    a = p.parse_args(argv)
    if a.seed < 0:
        p.error(f"--seed must be >= 0, got {a.seed}")
    return a


def run(a: argparse.Namespace) -> dict:
    t_start = time.perf_counter()
    rank, world = D.init_from_env(backend=None, device=a.device)
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", world))
    threads = a.threads or max(1, (os.cpu_count() or 1) // local_world)
    torch.set_num_threads(threads)
    device = torch.device(a.device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    dtype = getattr(torch, a.dtype)

    n_test = a.n_test or max(1, min(2000, a.n // 5))
    ds = load_dataset(
        a.dataset, n=a.n + n_test, n_train=a.n, n_test=n_test, d=a.d, seed=a.seed, task="binary"
    )
    Xtr = torch.as_tensor(ds.X_train, dtype=dtype, device=device)
    Xte = torch.as_tensor(ds.X_test, dtype=dtype, device=device)
    ytr = torch.as_tensor(ds.y_train, dtype=torch.float64, device=device)
    yte = ds.y_test.astype(np.float64)

    kern = NTK(kind="two_layer", layers="first", options=KernelOptions(max_memory=a.max_memory))
    scale = float(torch.as_tensor(kern.diag(Xtr)).to(torch.float64).mean())
    ridge = a.ridge * scale
    rss_before = _proc_status_bytes("VmRSS")
    D.barrier()

    t0 = time.perf_counter()
    res = kernel_cg_fit(
        kern,
        Xtr,
        ytr,
        ridge,
        tol=a.tol,
        max_iter=a.max_iter,
        progress=not a.no_progress,
    )
    solve_s = time.perf_counter() - t0

    # test predictions H(X*, X) alpha, the test rows split over the ranks like the training rows
    alpha = res.x.to(dtype)
    pred = torch.zeros(n_test, dtype=torch.float64, device=device)
    rows = D.shard_slice(n_test, rank, world) if world > 1 else slice(0, n_test)
    if rows.stop > rows.start:
        pred[rows] = torch.as_tensor(kern.matvec(Xte[rows], alpha, Z=Xtr)).to(pred)
    D.all_reduce_sum(pred)
    pred_np = pred.cpu().numpy()
    test_error = float(np.mean(np.sign(pred_np) != yte))
    test_mse = float(np.mean((pred_np - yte) ** 2))

    hwm = _proc_status_bytes("VmHWM")
    stats = torch.tensor(
        [float(hwm or 0), float(hwm or 0), float(rss_before or 0)],
        dtype=torch.float64,
        device=device,
    )
    if world > 1:
        mx = stats[[0, 2]].clone()
        torch.distributed.all_reduce(mx, op=torch.distributed.ReduceOp.MAX)
        total = stats[1:2].clone()
        D.all_reduce_sum(total)
        stats = torch.stack([mx[0], total[0], mx[1]])
    hist = [float(h) for h in res.history]
    return {
        "n": a.n,
        "n_test": n_test,
        "d": a.d,
        "dataset": a.dataset,
        "dtype": a.dtype,
        "device": str(device),
        "ranks": world,
        "threads_per_rank": threads,
        "ridge_relative": a.ridge,
        "ridge_absolute": ridge,
        "kernel_scale": scale,
        "tol": a.tol,
        "iterations": res.n_iter,
        "converged": bool(res.converged),
        "final_relative_residual": float(np.max(res.residual)),
        "residual_history": hist,
        "solve_s": solve_s,
        "s_per_iteration": solve_s / max(res.n_iter + 1, 1),
        "total_s": time.perf_counter() - t_start,
        "max_memory_bytes": a.max_memory,
        "peak_rss_bytes": int(stats[0]) if hwm is not None else None,
        "peak_rss_bytes_all_ranks": int(stats[1]) if hwm is not None else None,
        "rss_before_solve_bytes": int(stats[2]) if rss_before is not None else None,
        "dense_float64_bytes": a.n * a.n * 8,
        "test_error": test_error,
        "test_mse": test_mse,
    }


def _fmt_bytes(b: int | None) -> str:
    return "n/a" if b is None else f"{b / 2**30:.3f} GiB" if b >= 2**30 else f"{b / 2**20:.1f} MiB"


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    try:
        out = run(a)
        if D.rank() == 0:
            print(
                f"n = {out['n']} (d = {out['d']}, {out['dataset']}, {out['dtype']}, {out['device']}), "
                f"{out['ranks']} rank(s) x {out['threads_per_rank']} thread(s)\n"
                f"CG: {out['iterations']} iterations, final relative residual "
                f"{out['final_relative_residual']:.3e} (tol {out['tol']:g}, converged {out['converged']})\n"
                f"time: solve {out['solve_s']:.1f} s ({out['s_per_iteration']:.2f} s per kernel pass), "
                f"total {out['total_s']:.1f} s\n"
                f"memory: peak RSS {_fmt_bytes(out['peak_rss_bytes'])} per rank (before the solve "
                f"{_fmt_bytes(out['rss_before_solve_bytes'])}, tile budget {_fmt_bytes(out['max_memory_bytes'])}) "
                f"vs the n x n float64 matrix {_fmt_bytes(out['dense_float64_bytes'])} not formed\n"
                f"test: error {out['test_error']:.4f}, mse {out['test_mse']:.4f} on {out['n_test']} points",
                flush=True,
            )
            if a.json:
                with open(a.json, "w") as fh:
                    json.dump(out, fh, indent=2)
    finally:
        D.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
