"""Certificate at scale: accuracy against exact eigh / Cholesky, and time / memory ratios.

    python benchmarks/certificate_scale.py accuracy [--n 2500]      # every sketch kind vs exact
    python benchmarks/certificate_scale.py scale --n 12000 [--dataset lowrank]
        [--kinds gaussian,srht] [--ks 64,256] [--seeds 2] [--method auto] [--max-memory BYTES]

``scale`` prints (and appends to ``--record`` as one JSON line) the total certify time of the
dense kernel plus the (kind, k, seed) grid divided by the time to form one dense n x n NTK (the
faster of two formations), and
the peak RSS divided by n^2 x 8 bytes, in one run.  Pin the cores with ``taskset -c 0,1`` and
the threads with ``OMP_NUM_THREADS=2`` for the two-core figures of the README.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import sys
import time

import numpy as np
import scipy.linalg as sl
import torch


def _peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _load(dataset: str, n: int, n_test: int, seed: int = 0):
    from ntkdr.data import load_dataset

    opts = {} if dataset == "mnist" else {"d": 784}
    return load_dataset(dataset, n_train=n, n_test=n_test, seed=seed, **opts)


def accuracy(args: argparse.Namespace) -> dict:
    """Max relative deviation from the exact path over every kind, k and data set."""
    from ntkdr.kernels import two_layer_ntk
    from ntkdr.sketches import make_sketch
    from ntkdr.theory.certificate import certify_matrix

    worst = {"lambda_min": 0.0, "bound": 0.0}
    rows = []
    for dataset in ("mnist", "lowrank", "sphere"):
        ds = _load(dataset, args.n, 200)
        yr = np.random.default_rng(1).choice([-1.0, 1.0], size=args.n)
        configs = [(None, None)] + [
            (kind, k) for kind in ("gaussian", "sparse", "srht", "pca") for k in (16, 64, 256)
        ]
        for kind, k in configs:
            F = ds.X_train
            if kind is not None:
                F = make_sketch(kind, F.shape[1], k, seed=0, renormalize=True).fit(F)(F)
            K = two_layer_ntk(np.ascontiguousarray(F))
            ev = sl.eigh(K, eigvals_only=True)
            L = sl.cholesky(K, lower=True)
            cert = certify_matrix(K, ds.y_train, yr, method=args.method)
            for key, y in (("true", ds.y_train), ("random", yr)):
                z = sl.solve_triangular(L, y, lower=True)
                b = math.sqrt(2 * float(z @ z) / args.n)
                worst["bound"] = max(worst["bound"], abs(cert.bound[key]["value"] / b - 1))
            dl = abs(cert.lambda_min["value"] / ev[0] - 1)
            worst["lambda_min"] = max(worst["lambda_min"], dl)
            rows.append(
                {
                    "dataset": dataset,
                    "kind": kind or "dense",
                    "k": k,
                    "lambda_min_rel_err": dl,
                    "lambda_min_interval_rel_width": (
                        cert.lambda_min["upper"] - cert.lambda_min["lower"]
                    )
                    / ev[0],
                    "status": cert.lambda_min["status"],
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    return {"n": args.n, "method": args.method, "max_rel_err": worst}


def scale(args: argparse.Namespace) -> dict:
    from ntkdr.experiment.certify import certify_grid, grid_jobs
    from ntkdr.kernels import two_layer_ntk
    from ntkdr.sketches import make_sketch

    ds = _load(args.dataset, args.n, args.n_test)
    X = ds.X_train
    n = X.shape[0]
    # the faster of two formations: the first pays the first-touch page faults of a fresh n x n
    # result, which on a VM whose host has reclaimed the memory took up to 3x the kernel itself
    t_kernel = math.inf
    for _ in range(2):
        t0 = time.perf_counter()
        H = two_layer_ntk(X)
        t_kernel = min(t_kernel, time.perf_counter() - t0)
        del H
    yr = np.random.default_rng(1).choice([-1.0, 1.0], size=n)
    jobs = grid_jobs(args.kinds, args.ks, args.seeds)  # as `ntkdr run` / `ntkdr certify`

    def feats(kind, k, s):
        sk = make_sketch(kind, X.shape[1], k, seed=s, renormalize=True).fit(X)
        return sk(X), sk(ds.X_test)

    lines: list[str] = []

    def log(line: str) -> None:
        lines.append(line)
        print(f"[{time.perf_counter() - t1:8.1f} s] {line}", flush=True)

    t1 = time.perf_counter()
    res = certify_grid(
        X,
        ds.y_train,
        Y_random=yr,
        X_test=ds.X_test,
        Y_test=ds.y_test,
        jobs=jobs,
        make_features=feats,
        method=args.method,
        max_memory=args.max_memory,
        progress=False,
        log=log,
        lower_bound=args.lower_bound,
    )
    total = time.perf_counter() - t1
    out = {
        "n": n,
        "d": X.shape[1],
        "dataset": args.dataset,
        "configs": len(res),
        "threads": torch.get_num_threads(),
        "one_dense_kernel_s": t_kernel,
        "certify_total_s": total,
        "ratio_total_over_kernel": total / t_kernel,
        "peak_rss_bytes": _peak_rss_bytes(),
        "peak_rss_over_n2x8": _peak_rss_bytes() / (8.0 * n * n),
        "methods": sorted({r["method"] for r in res.values()}),
        "lambda_min_status": sorted({r["lambda_min"]["status"] for r in res.values()}),
        "lower_bound": args.lower_bound,
        "per_config_s": {cid: r["seconds"] for cid, r in res.items()},
        "timings": {cid: r["details"].get("timings") for cid, r in res.items()},
    }
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("what", choices=("accuracy", "scale"))
    p.add_argument("--n", type=int, default=2500)
    p.add_argument("--n-test", type=int, default=500)
    p.add_argument("--dataset", default="lowrank")
    p.add_argument("--kinds", type=lambda s: s.split(","), default=["gaussian", "srht"])
    p.add_argument("--ks", type=lambda s: [int(v) for v in s.split(",")], default=[64, 256])
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--method", default="auto")
    p.add_argument("--max-memory", type=float, default=None)
    p.add_argument("--lower-bound", choices=("auto", "proven", "none"), default="auto")
    p.add_argument("--record", help="append the result as one JSON line to this file")
    args = p.parse_args(argv)
    if args.what == "accuracy" and args.method == "auto":
        args.method = "cholesky"
    out = accuracy(args) if args.what == "accuracy" else scale(args)
    print(json.dumps(out, indent=1))
    if args.record:
        with open(args.record, "a") as fh:
            fh.write(json.dumps(out) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
