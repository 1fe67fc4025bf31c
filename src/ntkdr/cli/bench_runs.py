"""The case functions of ``ntkdr bench``: what each measures against which reference, and its physical limit.

Each case is a function ``(sizes, ctx) -> (samples, ratio_of, limit, note, extra)`` (definitions
and the context: :mod:`ntkdr.cli.bench_cases`) run by :func:`ntkdr.cli.bench.run_benchmarks`.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import torch

from ntkdr.cli.bench_cases import _DTYPE, CaseSkipped, _make_data, _sync, _upper_gemm


# ----------------------------------------------------------------------------- the cases
# Each returns (samples, ratio, limit, limit_note, extra): ``samples`` maps a timed function to
# its seconds per round; ``ratio(t)`` and ``limit(t)`` (a callable, a number or None) map one
# summary time per function (median, or minimum) to the case's ratio / limit.
def _gemm_limit(t):
    return t["gemm_upper"] / t["gemm"]


_GEMM_LIMIT_NOTE = "its upper-triangle GEMM / the full GEMM, measured"


def _kernel_vs_gemm(ctx, X, kernel):
    """An analytic kernel of ``X`` against the full GEMM ``X X^T``, with its own upper-triangle
    GEMM (into a fresh result each call, like the kernel's) as the limit."""
    n = X.shape[0]
    t = ctx.measure(
        {
            "gemm": lambda: X @ X.T,
            "gemm_upper": lambda: _upper_gemm(X, torch.empty(n, n, dtype=_DTYPE, device=X.device)),
            "ntk": kernel,
        }
    )
    return t, lambda t: t["ntk"] / t["gemm"], _gemm_limit, _GEMM_LIMIT_NOTE, {}


def _case_two_layer_ntk(s, ctx):
    from ntkdr.kernels import two_layer_ntk

    X = ctx.data(s["n"], s["d"])
    return _kernel_vs_gemm(ctx, X, lambda: two_layer_ntk(X, layers="both"))


def _case_deep_ntk(s, ctx):
    from ntkdr.kernels import fc_relu_kernels

    X = ctx.data(s["n"], s["d"])
    return _kernel_vs_gemm(ctx, X, lambda: fc_relu_kernels(X, depth=s["depth"]))


def _case_sketched(s, ctx):
    from ntkdr.kernels import two_layer_ntk
    from ntkdr.sketches import make_sketch

    n, d, k = s["n"], s["d"], s["k"]
    X = ctx.data(n, d)
    S = make_sketch("srht", d, k, seed=ctx.seed, renormalize=True)
    Y = S(X)
    # "Elementwise" work of the kernel at this n: the same kernel on 8-dimensional rows, whose
    # GEMM (n^2 * 8) is negligible, so what is left is angles, scaling, mirroring.
    E = ctx.data(n, 8)
    t = ctx.measure(
        {
            "dense": lambda: two_layer_ntk(X),
            "sketched": lambda: two_layer_ntk(S(X)),
            "sketch": lambda: S(X),
            "gemm_d": lambda: X @ X.T,
            "gemm_k": lambda: Y @ Y.T,
            "elementwise": lambda: two_layer_ntk(E),
        }
    )

    def limit(t):
        return (t["gemm_d"] + t["elementwise"]) / (t["gemm_k"] + t["elementwise"])

    return (
        t,
        lambda t: t["dense"] / t["sketched"],
        limit,
        "(GEMM_d + E) / (GEMM_k + E), measured",
        {},
    )


def _case_gd_step(s, ctx):
    from ntkdr.nets.models import TwoLayerReLU
    from ntkdr.sketches import make_sketch
    from ntkdr.training.loop import time_gd_step

    n, d, m, k = s["n"], s["d"], s["m"], s["k"]
    X, y = ctx.data(n, d), ctx.labels(n)
    dense = TwoLayerReLU(d, m, seed=ctx.seed, device=ctx.device)
    fact = TwoLayerReLU(
        d, m, sketch=make_sketch("srht", d, k, seed=ctx.seed), seed=ctx.seed, device=ctx.device
    )
    # time_gd_step times one full-batch step (features precomputed) after one untimed step on
    # a copy of the model; calling it once per round interleaves dense and factorized steps.
    t = ctx.measure(
        {
            "dense": lambda: time_gd_step(dense, X, y, repeats=1, warmup=1),
            "factorized": lambda: time_gd_step(fact, X, y, repeats=1, warmup=1),
        },
        self_timed=True,
    )
    return t, lambda t: t["dense"] / t["factorized"], d / k, "d / k", {}


def _fit_nets(s, ctx):
    from ntkdr.nets.models import TwoLayerReLU
    from ntkdr.sketches import make_sketch

    d, m, k = s["d"], s["m"], s["k"]
    return (
        lambda: TwoLayerReLU(d, m, seed=ctx.seed, device=ctx.device),
        lambda: TwoLayerReLU(
            d, m, sketch=make_sketch("srht", d, k, seed=ctx.seed), seed=ctx.seed, device=ctx.device
        ),
    )


def _time_fit(s, ctx, make, lr):
    """Seconds of one ``fit(net, X, y, steps, lr)`` call on a fresh net (built before the clock)."""
    from ntkdr.training.loop import fit

    X, y = ctx.data(s["n"], s["d"]), ctx.labels(s["n"])
    net = make()
    _sync(ctx.device)
    t0 = time.perf_counter()
    fit(net, X, y, s["steps"], lr=lr, progress=False)
    _sync(ctx.device)
    return time.perf_counter() - t0


def _case_fit(s, ctx):
    """What a user's ``fit(net, X, y, steps, lr=1e-3)`` call costs, start-up included (a fresh
    net per call, built outside the timing); limit: the per-step flop ratio ``d / k``."""
    make_dense, make_fact = _fit_nets(s, ctx)
    t = ctx.measure(
        {
            "dense": lambda: _time_fit(s, ctx, make_dense, 1e-3),
            "factorized": lambda: _time_fit(s, ctx, make_fact, 1e-3),
        },
        self_timed=True,
    )
    return t, lambda t: t["dense"] / t["factorized"], s["d"] / s["k"], "d / k", {}


def _case_fit_auto_lr(s, ctx):
    """Cost of ``lr=None`` (an ``n x n`` empirical NTK and its top eigenvalue); limit 1."""
    _, make_fact = _fit_nets(s, ctx)
    t = ctx.measure(
        {
            "lr_none": lambda: _time_fit(s, ctx, make_fact, None),
            "lr_fixed": lambda: _time_fit(s, ctx, make_fact, 1e-3),
        },
        self_timed=True,
    )
    return t, lambda t: t["lr_none"] / t["lr_fixed"], 1.0, "no extra cost", {}


def _case_inference(s, ctx):
    from ntkdr.nets.models import TwoLayerReLU
    from ntkdr.sketches import make_sketch

    b, d, m, k = s["batch"], s["d"], s["m"], s["k"]
    X = ctx.data(b, d)
    dense = TwoLayerReLU(d, m, seed=ctx.seed, device=ctx.device)
    fact = TwoLayerReLU(
        d, m, sketch=make_sketch("srht", d, k, seed=ctx.seed), seed=ctx.seed, device=ctx.device
    )

    def run(model):
        with torch.no_grad():
            return model(X)

    t = ctx.measure({"dense": lambda: run(dense), "factorized": lambda: run(fact)})
    return t, lambda t: t["dense"] / t["factorized"], d / k, "d / k", {}


def _empirical_gemms(s, ctx, train_output=False):
    """The model, data and the GEMMs the closed form is built on: ``X W^T`` and ``A A^T``
    (``A`` the 0 / 1 patterns), full and upper-triangle (what ``Z=None`` computes)."""
    from ntkdr.nets.models import TwoLayerReLU

    X = ctx.data(s["n"], s["d"])
    model = TwoLayerReLU(
        s["d"], s["m"], seed=ctx.seed, train_output=train_output, device=ctx.device
    )
    W = model.W.detach()
    A = (X @ W.T >= 0).to(_DTYPE)
    n = s["n"]
    fns = {
        "gemm_XW": lambda: X @ W.T,
        "gemm_AA": lambda: A @ A.T,
        "gemm_AA_upper": lambda: _upper_gemm(
            A, torch.empty(n, n, dtype=_DTYPE, device=A.device), 256
        ),
    }
    return model, X, fns


def _case_empirical_closed(s, ctx):
    from ntkdr.nets.empirical import empirical_ntk

    model, X, fns = _empirical_gemms(s, ctx)
    t = ctx.measure({"closed": lambda: empirical_ntk(model, X, method="closed"), **fns})
    return (
        t,
        lambda t: t["closed"] / (t["gemm_XW"] + t["gemm_AA"]),
        lambda t: (t["gemm_XW"] + t["gemm_AA_upper"]) / (t["gemm_XW"] + t["gemm_AA"]),
        "X W^T + upper-triangle A A^T, measured",
        {},
    )


def _case_empirical_vs_torchfunc(s, ctx):
    from ntkdr.nets.empirical import empirical_ntk

    model, X, fns = _empirical_gemms(s, ctx)
    t = ctx.measure(
        {
            "closed": lambda: empirical_ntk(model, X, method="closed"),
            "torch_func": lambda: empirical_ntk(model, X, method="jacobian"),
            "gemm_XW": fns["gemm_XW"],
            "gemm_AA_upper": fns["gemm_AA_upper"],
        }
    )
    return (
        t,
        lambda t: t["torch_func"] / t["closed"],
        lambda t: t["torch_func"] / (t["gemm_XW"] + t["gemm_AA_upper"]),
        "torch.func / the closed form's GEMMs, measured",
        {},
    )


def _nt_empirical(model, X):
    """neural-tangents' jitted empirical NTK (structured derivatives) of the same two-layer
    net, ``stax.serial(Dense(m, W_std=sqrt(d)), Relu(), Dense(1))`` in NTK parameterization with
    ntkdr's weights (so ``f(x) = relu(x W^T) a / sqrt(m)``, both layers trained)."""
    try:
        import jax
        import jax.numpy as jnp
        import neural_tangents as nt
        from neural_tangents import stax
    except ImportError as exc:
        raise CaseSkipped(
            f"neural-tangents is not installed ({exc}); setup: benchmarks/README.md"
        ) from None
    d, m = model.d, model.m
    _, apply_fn, _ = stax.serial(
        stax.Dense(m, W_std=d**0.5, b_std=None), stax.Relu(), stax.Dense(1, b_std=None)
    )
    params = [
        (jnp.asarray(model.W.detach().cpu().numpy().T), None),
        (),
        (jnp.asarray(model.a.detach().cpu().numpy()[:, None]), None),
    ]
    fn = jax.jit(
        nt.empirical_ntk_fn(
            apply_fn,
            trace_axes=(-1,),
            vmap_axes=0,
            implementation=nt.NtkImplementation.STRUCTURED_DERIVATIVES,
        )
    )
    Xj = jnp.asarray(X.cpu().numpy())
    return lambda: fn(Xj, None, params).block_until_ready()


def _case_empirical_vs_nt(s, ctx):
    """Both layers trained; results compared (a fast wrong kernel cannot pass); compile excluded."""
    import numpy as np

    from ntkdr.nets.empirical import empirical_ntk

    if ctx.device.type != "cpu":
        raise CaseSkipped("the neural-tangents comparison runs on the CPU only")
    model, X, fns = _empirical_gemms(s, ctx, train_output=True)
    nt_call = _nt_empirical(model, X)
    ours = empirical_ntk(model, X, method="closed").cpu().numpy()
    theirs = np.asarray(nt_call()).reshape(ours.shape)
    err = float(np.abs(ours - theirs).max() / np.abs(ours).max())
    if not err <= 1e-4:
        raise RuntimeError(f"ntkdr and neural-tangents differ: max |dK| / max |K| = {err:.3g}")
    t = ctx.measure(
        {
            "closed": lambda: empirical_ntk(model, X, method="closed"),
            "neural_tangents": nt_call,
            "gemm_XW": fns["gemm_XW"],
            "gemm_AA_upper": fns["gemm_AA_upper"],
        }
    )
    return (
        t,
        lambda t: t["closed"] / t["neural_tangents"],
        # both layers: A A^T and relu(P) relu(P)^T, each upper-triangle
        lambda t: (t["gemm_XW"] + 2 * t["gemm_AA_upper"]) / t["neural_tangents"],
        "X W^T + 2 upper-triangle n x n x m GEMMs, measured",
        {"max_rel_difference": err},
    )


def _memory_probe(n: int, d: int, seed: int, device: str) -> dict[str, Any]:
    """Peak extra memory of ``two_layer_ntk(X)`` (X: n x d) in this process (run it in a fresh one)."""
    from ntkdr.kernels import two_layer_ntk

    dev = torch.device(device)
    X = _make_data(n, d, seed, dev)
    two_layer_ntk(X[: min(n, 256)])  # start the thread pool, load kernels: not part of the peak
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
        torch.cuda.reset_peak_memory_stats(dev)
        base = torch.cuda.memory_allocated(dev)
        t0 = time.perf_counter()
        K = two_layer_ntk(X)
        torch.cuda.synchronize(dev)
        secs = time.perf_counter() - t0
        peak, method = (
            torch.cuda.max_memory_allocated(dev) - base,
            "torch.cuda.max_memory_allocated",
        )
    else:
        status = _proc_status()
        if status is not None and _reset_hwm():
            base, method = _proc_value("VmRSS"), "VmHWM after clear_refs - VmRSS before"
            read_peak = lambda: _proc_value("VmHWM")  # noqa: E731
        else:  # no /proc: ru_maxrss is a running maximum, so this is a lower bound
            base, method = _ru_maxrss(), "ru_maxrss after - ru_maxrss before (lower bound)"
            read_peak = _ru_maxrss
        t0 = time.perf_counter()
        K = two_layer_ntk(X)
        secs = time.perf_counter() - t0
        peak = read_peak() - base
    result = K.numel() * K.element_size()
    return {"peak_bytes": int(peak), "result_bytes": int(result), "seconds": secs, "method": method}


def _proc_status() -> dict[str, int] | None:
    try:
        with open("/proc/self/status") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    out = {}
    for line in lines:
        key, _, val = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(val.split()[0]) * 1024
    return out if len(out) == 2 else None


def _proc_value(key: str) -> int:
    status = _proc_status()
    if status is None:
        raise RuntimeError("/proc/self/status became unreadable during the memory probe")
    return status[key]


def _reset_hwm() -> bool:
    """Reset the peak RSS (VmHWM) to the current RSS (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _ru_maxrss() -> int:
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(r) if sys.platform == "darwin" else int(r) * 1024  # bytes on macOS, KiB on Linux


def _case_tiled_memory(s, ctx):
    n, d = s["n"], s["d"]
    if ctx.device.type == "cuda":
        res = _memory_probe(n, d, ctx.seed, str(ctx.device))
    else:
        code = (
            "import json, sys, torch; from ntkdr.cli.bench_runs import _memory_probe; "
            f"torch.set_num_threads({ctx.threads}); "
            f"print(json.dumps(_memory_probe({n}, {d}, {ctx.seed}, 'cpu')))"
        )
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        if proc.returncode != 0:
            tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
            raise RuntimeError(f"memory probe subprocess failed (exit {proc.returncode}): {tail}")
        res = json.loads(proc.stdout.strip().splitlines()[-1])
    ratio = res["peak_bytes"] / res["result_bytes"]
    extra = {
        "peak_bytes": res["peak_bytes"],
        "result_bytes": res["result_bytes"],
        "memory_method": res["method"],
    }
    return {"ntk": [res["seconds"]]}, lambda t: ratio, 1.0, "the result itself", extra


_RUNNERS: dict[str, Callable] = {
    "two_layer_ntk": _case_two_layer_ntk,
    "deep_ntk": _case_deep_ntk,
    "sketched_vs_dense_ntk": _case_sketched,
    "gd_step": _case_gd_step,
    "fit_5": _case_fit,
    "fit_100": _case_fit,
    "fit_auto_lr": _case_fit_auto_lr,
    "inference": _case_inference,
    "empirical_closed": _case_empirical_closed,
    "empirical_vs_torchfunc": _case_empirical_vs_torchfunc,
    "empirical_vs_nt": _case_empirical_vs_nt,
    "tiled_memory": _case_tiled_memory,
}
