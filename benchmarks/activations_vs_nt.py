"""Deep FC kernels of every activation: ntkdr vs neural-tangents vs the bare GEMM, one process.

    python benchmarks/activations_vs_nt.py [--n 2000,4000] [--dtypes float32,float64]
        [--depth 3] [--repeats 3] [--threads T] [--markdown] [--json PATH]

(``--threads 1`` runs torch and XLA single-threaded: on a shared machine the ratios then
measure the code rather than the load.)

Needs torch 2.13.0, ntkdr and neural-tangents 0.6.5 (jax 0.4.30) in the same environment, e.g.

    python3 -m venv /tmp/ntbench
    /tmp/ntbench/bin/pip install 'jax==0.4.30' 'jaxlib==0.4.30' 'neural-tangents==0.6.5' \\
        'tf2jax==0.3.6' torch==2.13.0 && /tmp/ntbench/bin/pip install --no-deps -e .

For each activation, n and dtype, on the same Gaussian rows (d = 784, normalised to |x| = 1):
``ntkdr.kernels.fc_kernels(X, None, depth, act, b_std=0.1)`` (NTK and NNGP, symmetric),
neural-tangents' jitted ``kernel_fn(X, None, ("ntk", "nngp"))`` of
``serial(Dense(sqrt 2, 0.1), Act, ..., Dense(1, 0.1))`` (NTK parameterization; compile time
excluded by the warm-up; ``block_until_ready``), and ``X @ X.T`` in torch.  Protocol: one
warm-up call of each, then ``repeats`` rounds in which each runs once in alternating order;
ratios are ratios of the medians (the minima in parentheses).  The ntkdr and neural-tangents
results are compared too (max |difference| / max |K|), so a fast wrong kernel cannot pass.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
if "--threads" in sys.argv:  # XLA reads its thread count when jax is imported
    _t = sys.argv[sys.argv.index("--threads") + 1]
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "")
        + f" --xla_cpu_multi_thread_eigen={'false' if _t == '1' else 'true'}"
        + f" intra_op_parallelism_threads={_t}"
    )

import jax
import numpy as np
import torch

jax.config.update("jax_enable_x64", True)

from neural_tangents import stax as nts  # noqa: E402

from ntkdr.kernels.activations import fc_kernels  # noqa: E402

W, B, W_OUT = 2**0.5, 0.1, 1.0
# (ntkdr name, params, neural-tangents layer)
CASES = [
    ("relu", {}, lambda: nts.Relu()),
    ("leaky_relu", {"alpha": 0.1}, lambda: nts.LeakyRelu(0.1)),
    ("abrelu", {"a": 0.5, "b": -1.2}, lambda: nts.ABRelu(0.5, -1.2)),
    ("abs", {}, lambda: nts.Abs()),
    ("erf", {}, lambda: nts.Erf()),
    ("gelu", {}, lambda: nts.Gelu()),
    ("sign", {}, lambda: nts.Sign()),
    ("identity", {}, lambda: nts.Identity()),
]


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def nt_kernel_fn(layer, depth: int):
    layers = []
    for _ in range(depth):
        layers += [nts.Dense(1, W_std=W, b_std=B, parameterization="ntk"), layer()]
    layers.append(nts.Dense(1, W_std=W_OUT, b_std=B, parameterization="ntk"))
    _, _, kernel_fn = nts.serial(*layers)
    return jax.jit(kernel_fn, static_argnames="get")


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def run(args) -> list[dict]:
    rng = np.random.default_rng(0)
    rows = []
    for n in args.n:
        X64 = rng.standard_normal((n, args.d))
        X64 /= np.linalg.norm(X64, axis=1, keepdims=True)
        for dt in args.dtypes:
            Xn = X64.astype(dt)
            Xt = torch.from_numpy(Xn)
            Xj = jax.device_put(Xn)
            for name, params, layer in CASES:
                if args.activations and name not in args.activations:
                    continue
                kfn = nt_kernel_fn(layer, args.depth)

                def ours(name=name, params=params, Xt=Xt):
                    return fc_kernels(Xt, None, args.depth, name, W, B, W_OUT, **params)

                def nt(kfn=kfn, Xj=Xj):
                    k = kfn(Xj, None, get=("ntk", "nngp"))
                    return jax.block_until_ready(k)

                def gemm(Xt=Xt):
                    return Xt @ Xt.T

                fns = {"ntkdr": ours, "nt": nt, "gemm": gemm}
                res_ours, res_nt = ours(), nt()  # warm-up (jit compile) + correctness
                gemm()
                err = max(
                    float(np.abs(a.numpy() - np.asarray(b)).max() / np.abs(np.asarray(b)).max())
                    for a, b in zip(res_ours, (res_nt.ntk, res_nt.nngp))
                )
                del res_ours, res_nt
                times: dict[str, list[float]] = {k: [] for k in fns}
                for r in range(args.repeats):
                    order = list(fns) if r % 2 == 0 else list(fns)[::-1]
                    for k in order:
                        times[k].append(timed(fns[k]))
                med = {k: statistics.median(v) for k, v in times.items()}
                mn = {k: min(v) for k, v in times.items()}
                row = {
                    "activation": name,
                    "n": n,
                    "dtype": dt,
                    "ntkdr_s": med["ntkdr"],
                    "nt_s": med["nt"],
                    "gemm_s": med["gemm"],
                    "vs_nt": med["ntkdr"] / med["nt"],
                    "vs_nt_min": mn["ntkdr"] / mn["nt"],
                    "vs_gemm": med["ntkdr"] / med["gemm"],
                    "nt_vs_gemm": med["nt"] / med["gemm"],
                    "max_rel_diff": err,
                }
                rows.append(row)
                if not args.quiet:
                    print(
                        f"{name:10s} n={n} {dt}: ntkdr {row['ntkdr_s']:.3f}s nt {row['nt_s']:.3f}s "
                        f"gemm {row['gemm_s']:.3f}s -> {row['vs_nt']:.2f}x NT "
                        f"({row['vs_nt_min']:.2f}x from minima), {row['vs_gemm']:.1f}x GEMM, "
                        f"diff {err:.1e}",
                        file=sys.stderr,
                        flush=True,
                    )
    return rows


def markdown(rows: list[dict]) -> str:
    out = [
        "| activation | n | dtype | ntkdr (s) | neural-tangents (s) | GEMM (s) | ntkdr / NT "
        "(minima) | ntkdr / GEMM | NT / GEMM | max rel. diff |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        out.append(
            f"| {r['activation']} | {r['n']} | {r['dtype']} | {r['ntkdr_s']:.3f} | "
            f"{r['nt_s']:.3f} | {r['gemm_s']:.3f} | **{r['vs_nt']:.2f}** ({r['vs_nt_min']:.2f}) "
            f"| {r['vs_gemm']:.1f} | {r['nt_vs_gemm']:.1f} | {r['max_rel_diff']:.0e} |"
        )
    return "\n".join(out)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", default="2000,4000")
    p.add_argument("--d", type=int, default=784)
    p.add_argument("--dtypes", default="float32,float64")
    p.add_argument("--depth", type=int, default=3)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--activations", default="")
    p.add_argument("--threads", type=int, default=None, help="torch and XLA CPU threads")
    p.add_argument("--markdown", action="store_true")
    p.add_argument("--json", default=None)
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    args.n = [int(v) for v in args.n.split(",")]
    args.dtypes = args.dtypes.split(",")
    args.activations = [a for a in args.activations.split(",") if a]
    if args.threads:
        torch.set_num_threads(args.threads)
    env = {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "torch": torch.__version__,
        "jax": jax.__version__,
        "neural_tangents": "0.6.5",
        "loadavg_start": os.getloadavg(),
    }
    print(json.dumps(env), file=sys.stderr)
    rows = run(args)
    env["loadavg_end"] = os.getloadavg()
    if args.markdown:
        print(markdown(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"environment": env, "settings": vars(args), "results": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
