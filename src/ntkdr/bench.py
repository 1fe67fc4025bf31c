"""Benchmark runner for the performance goals of SPEC section 6 (``ntkdr bench``).

Every case is measured in ONE process, in one run, on the same seeded data (Gaussian rows
normalised to ``|x| = 1``), in float32, with all of torch's intra-op threads
(``torch.get_num_threads()`` unless ``threads`` is given).  Each case reports a *ratio* of two
times measured side by side (e.g. the NTK against the bare GEMM it is built on), because on a
shared or throttled machine absolute seconds move while the ratios are stable; the seconds are
kept as context.

Timing protocol: ``warmup`` untimed calls of every timed function, then ``repeats`` rounds in
which each function of the case runs once, alternating the order between rounds, so the
reference (GEMM) and the measured code see the same machine state.  A time is the median over
the rounds and a ratio is the ratio of medians; the ratio of the minima over the rounds is
reported next to it (``ratio_min``): on a machine shared with other jobs the minimum is the
time least disturbed by them, and the two differ when the run was disturbed.  The memory case runs in a subprocess (CPU):
its peak resident set size (``VmHWM``, reset through ``/proc/self/clear_refs`` just before
the call; ``ru_maxrss`` where that is unavailable) minus the resident size before the call,
divided by the size of the result.  On CUDA it uses ``torch.cuda.max_memory_allocated``.

The goals, limits and peers are SPEC section 6's; a missed goal is reported, not raised.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from .validation import check_choice, check_int, resolve_device

__all__ = [
    "CASES",
    "run_benchmarks",
    "environment",
    "format_table",
    "markdown_table",
    "write_json",
    "main",
]

SCHEMA = "ntkdr-bench/1"
_DTYPE = torch.float32


@dataclass(frozen=True)
class _Case:
    name: str
    title: str
    metric: str
    op: str  # "<=" (ratio must not exceed goal) or ">=" (speed-up must reach goal)
    goal: float
    full: dict[str, int]
    quick: dict[str, int]


_CASE_LIST = [
    _Case(
        "two_layer_ntk",
        "analytic two-layer NTK H1+H2",
        "time / X X^T GEMM time",
        "<=",
        1.5,
        {"n": 4000, "d": 784},
        {"n": 1000, "d": 784},
    ),
    _Case(
        "deep_ntk",
        "analytic depth-3 FC NTK (+NNGP)",
        "time / X X^T GEMM time",
        "<=",
        2.0,
        {"n": 4000, "d": 784, "depth": 3},
        {"n": 1000, "d": 784, "depth": 3},
    ),
    _Case(
        "sketched_vs_dense_ntk",
        "SRHT-sketched NTK vs dense NTK (sketch included)",
        "speed-up",
        ">=",
        8.0,
        {"n": 4000, "d": 8192, "k": 256},
        {"n": 1000, "d": 8192, "k": 256},
    ),
    _Case(
        "gd_step",
        "full-batch GD step, factorized vs dense",
        "speed-up",
        ">=",
        6.0,
        {"n": 2000, "d": 784, "m": 4096, "k": 64},
        {"n": 500, "d": 784, "m": 1024, "k": 64},
    ),
    _Case(
        "inference",
        "inference, SRHT + factorized vs dense",
        "speed-up",
        ">=",
        10.0,
        {"batch": 256, "d": 4096, "m": 16384, "k": 256},
        {"batch": 64, "d": 4096, "m": 4096, "k": 256},
    ),
    _Case(
        "empirical_closed",
        "closed-form empirical NTK",
        "time / (X W^T + A A^T GEMMs)",
        "<=",
        1.3,
        {"n": 1000, "d": 784, "m": 4096},
        {"n": 250, "d": 784, "m": 1024},
    ),
    _Case(
        "empirical_vs_torchfunc",
        "closed-form vs torch.func empirical NTK",
        "speed-up",
        ">=",
        20.0,
        {"n": 200, "d": 784, "m": 1024},
        {"n": 50, "d": 784, "m": 256},
    ),
    _Case(
        "tiled_memory",
        "tiled analytic NTK, peak memory",
        "peak memory / result size",
        "<=",
        1.2,
        {"n": 20000, "d": 784},
        {"n": 5000, "d": 784},
    ),
]
#: Case name -> definition, in run order.
CASES: dict[str, _Case] = {c.name: c for c in _CASE_LIST}


# ----------------------------------------------------------------------------- helpers
def _make_data(n: int, d: int, seed: int, device: torch.device) -> torch.Tensor:
    """``n`` Gaussian rows in R^d normalised to unit norm, float32, from ``manual_seed(seed)``."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + d)  # one stream per dimension
    X = torch.randn(n, d, generator=g, dtype=_DTYPE)
    X /= X.norm(dim=1, keepdim=True)
    return X.to(device)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _measure(
    fns: dict[str, Callable[[], Any]],
    repeats: int,
    warmup: int,
    device: torch.device,
    self_timed: bool = False,
) -> dict[str, list[float]]:
    """Seconds of each call of each function over ``repeats`` rounds (interleaved, the order
    alternating between rounds) after ``warmup`` untimed rounds.  ``self_timed``: the functions
    return their own measured seconds (e.g. :func:`ntkdr.train.time_gd_step`)."""
    names = list(fns)
    for _ in range(warmup):
        for name in names:
            fns[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        for name in names if r % 2 == 0 else names[::-1]:
            _sync(device)
            t0 = time.perf_counter()
            out = fns[name]()
            _sync(device)
            times[name].append(float(out) if self_timed else time.perf_counter() - t0)
            del out
    return times


class _Context:
    def __init__(self, device: torch.device, repeats: int, warmup: int, seed: int, threads: int):
        self.device, self.repeats, self.warmup, self.seed, self.threads = (
            device,
            repeats,
            warmup,
            seed,
            threads,
        )
        self._data: dict[int, torch.Tensor] = {}

    def data(self, n: int, d: int) -> torch.Tensor:
        """The shared data set of dimension d (its first n rows)."""
        X = self._data.get(d)
        if X is None or X.shape[0] < n:
            X = self._data[d] = _make_data(n, d, self.seed, self.device)
        return X[:n]

    def labels(self, n: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.seed + 7)
        return (torch.randint(0, 2, (n,), generator=g).to(_DTYPE) * 2 - 1).to(self.device)

    def measure(
        self, fns: dict[str, Callable[[], Any]], self_timed: bool = False
    ) -> dict[str, list[float]]:
        return _measure(fns, self.repeats, self.warmup, self.device, self_timed)


# ----------------------------------------------------------------------------- the cases
# Each returns (samples, ratio, limit, limit_note, extra): ``samples`` maps a timed function to
# its seconds per round; ``ratio(t)`` and ``limit(t)`` (a callable, a number or None) map one
# summary time per function (median, or minimum) to the case's ratio / limit.
def _case_two_layer_ntk(s, ctx):
    from .kernels import two_layer_ntk

    X = ctx.data(s["n"], s["d"])
    t = ctx.measure({"gemm": lambda: X @ X.T, "ntk": lambda: two_layer_ntk(X, layers="both")})
    return (
        t,
        lambda t: t["ntk"] / t["gemm"],
        None,
        "neural-tangents (JAX, CPU) ~1.9 (SPEC, not measured)",
        {},
    )


def _case_deep_ntk(s, ctx):
    from .kernels import fc_relu_kernels

    X = ctx.data(s["n"], s["d"])
    t = ctx.measure({"gemm": lambda: X @ X.T, "ntk": lambda: fc_relu_kernels(X, depth=s["depth"])})
    return t, lambda t: t["ntk"] / t["gemm"], None, "-", {}


def _case_sketched(s, ctx):
    from .kernels import two_layer_ntk
    from .sketches import make_sketch

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
    from .models import TwoLayerReLU
    from .sketches import make_sketch
    from .train import time_gd_step

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


def _case_inference(s, ctx):
    from .models import TwoLayerReLU
    from .sketches import make_sketch

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


def _case_empirical_closed(s, ctx):
    from .empirical import ntk
    from .models import TwoLayerReLU

    X = ctx.data(s["n"], s["d"])
    model = TwoLayerReLU(s["d"], s["m"], seed=ctx.seed, device=ctx.device)
    W = model.W.detach()
    A = (X @ W.T >= 0).to(_DTYPE)
    t = ctx.measure(
        {
            "closed": lambda: ntk(model, X, method="closed"),
            "gemm_XW": lambda: X @ W.T,
            "gemm_AA": lambda: A @ A.T,
        }
    )
    return t, lambda t: t["closed"] / (t["gemm_XW"] + t["gemm_AA"]), None, "-", {}


def _case_empirical_vs_torchfunc(s, ctx):
    from .empirical import ntk
    from .models import TwoLayerReLU

    X = ctx.data(s["n"], s["d"])
    model = TwoLayerReLU(s["d"], s["m"], seed=ctx.seed, device=ctx.device)
    t = ctx.measure(
        {
            "closed": lambda: ntk(model, X, method="closed"),
            "torch_func": lambda: ntk(model, X, method="jacobian"),
        }
    )
    return t, lambda t: t["torch_func"] / t["closed"], None, "-", {}


def _memory_probe(n: int, d: int, seed: int, device: str) -> dict[str, Any]:
    """Peak extra memory of ``two_layer_ntk(X)`` (X: n x d) in this process (run it in a fresh one)."""
    from .kernels import two_layer_ntk

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
            base, method = _proc_status()["VmRSS"], "VmHWM after clear_refs - VmRSS before"
            read_peak = lambda: _proc_status()["VmHWM"]  # noqa: E731
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
            "import json, sys, torch; from ntkdr.bench import _memory_probe; "
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
    "inference": _case_inference,
    "empirical_closed": _case_empirical_closed,
    "empirical_vs_torchfunc": _case_empirical_vs_torchfunc,
    "tiled_memory": _case_tiled_memory,
}


# ----------------------------------------------------------------------------- the runner
def _resolve_sizes(case: _Case, quick: bool, override: dict[str, Any] | None) -> dict[str, int]:
    sizes = dict(case.quick if quick else case.full)
    for key, val in (override or {}).items():
        if key not in sizes:
            raise ValueError(
                f"sizes[{case.name!r}] has unknown key {key!r}; allowed: {', '.join(sizes)}"
            )
        sizes[key] = check_int(val, f"sizes[{case.name!r}][{key!r}]", min_value=1)
    if "k" in sizes and sizes["k"] > sizes["d"]:
        raise ValueError(f"sizes[{case.name!r}]: k = {sizes['k']} must not exceed d = {sizes['d']}")
    return sizes


def run_benchmarks(
    quick: bool = False,
    cases: Sequence[str] | None = None,
    repeats: int = 5,
    warmup: int = 1,
    threads: int | None = None,
    device: Any = "cpu",
    progress: bool = True,
    *,
    sizes: dict[str, dict[str, int]] | None = None,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Run the SPEC section 6 benchmark cases and return one result dict per case.

    ``quick`` shrinks n, the batch and the width m about 4x (d and k are kept, so the d / k
    limits stay the same); ``cases`` picks a subset of :data:`CASES` (default all);
    ``repeats`` timed rounds after ``warmup`` untimed ones; ``threads`` sets
    ``torch.set_num_threads`` for the run (default: leave torch's default, all cores);
    ``sizes`` overrides sizes per case, e.g. ``{"gd_step": {"n": 100}}``.

    Each result has ``case``, ``title``, ``metric``, ``ratio`` (from median times), ``ratio_min``
    (from minimum times), ``goal``, ``op`` (``"<="`` or ``">="``), ``passed`` (judged on
    ``ratio``), ``limit`` (a number or None), ``limit_note``, ``seconds`` / ``seconds_min``
    (median / minimum seconds of every timed function), ``samples`` (all timed seconds),
    ``sizes``, ``load_average`` (at the start of the case), ``wall_seconds`` and ``error``
    (None, or the message of an exception the case raised; such a case has ``ratio`` None and
    ``passed`` False).
    """
    repeats = check_int(repeats, "repeats", min_value=1)
    warmup = check_int(warmup, "warmup", min_value=0)
    seed = check_int(seed, "seed", min_value=0)
    if threads is not None:
        threads = check_int(threads, "threads", min_value=1)
    dev = resolve_device(device) or torch.device("cpu")
    names = list(CASES) if cases is None else [check_choice(c, "case", CASES) for c in cases]
    if not names:
        raise ValueError("cases is empty; choose from: " + ", ".join(CASES))
    sizes = dict(sizes or {})
    for key in sizes:
        check_choice(key, "sizes key (a case name)", CASES)
    plan = [(CASES[nm], _resolve_sizes(CASES[nm], quick, sizes.get(nm))) for nm in names]

    old_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    ctx = _Context(dev, repeats, warmup, seed, torch.get_num_threads())
    results = []
    try:
        for i, (case, sz) in enumerate(plan, 1):
            if progress:
                print(f"bench [{i}/{len(plan)}] {case.name} {sz} ...", file=sys.stderr, flush=True)
            t0 = time.perf_counter()
            res: dict[str, Any] = {
                "case": case.name,
                "title": case.title,
                "metric": case.metric,
                "goal": case.goal,
                "op": case.op,
                "sizes": sz,
                "ratio": None,
                "ratio_min": None,
                "passed": False,
                "limit": None,
                "limit_note": "",
                "seconds": {},
                "seconds_min": {},
                "samples": {},
                "error": None,
                "load_average": _loadavg(),
            }
            try:
                samples, ratio_of, limit, note, extra = _RUNNERS[case.name](sz, ctx)
                med = {k: statistics.median(v) for k, v in samples.items()}
                low = {k: min(v) for k, v in samples.items()}
                ratio = _finite(ratio_of(med))
                if callable(limit):
                    limit = limit(med)
                res.update(
                    ratio=ratio,
                    ratio_min=_finite(ratio_of(low)),
                    passed=ratio is not None
                    and (ratio <= case.goal if case.op == "<=" else ratio >= case.goal),
                    limit=None if limit is None else _finite(limit),
                    limit_note=note,
                    seconds=med,
                    seconds_min=low,
                    samples=samples,
                    **extra,
                )
            except (
                RuntimeError,
                ValueError,
                MemoryError,
            ) as exc:  # report the case, run the others
                res["error"] = f"{type(exc).__name__}: {exc}"
            res["wall_seconds"] = time.perf_counter() - t0
            results.append(res)
            if progress:
                print(
                    f"bench [{i}/{len(plan)}] {case.name}: {_ratio_text(res)} "
                    f"({res['wall_seconds']:.1f} s)",
                    file=sys.stderr,
                    flush=True,
                )
    finally:
        torch.set_num_threads(old_threads)
    return results


def _finite(x: Any) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


def _loadavg() -> list[float] | None:
    return list(os.getloadavg()) if hasattr(os, "getloadavg") else None


# ----------------------------------------------------------------------------- reporting
def _cpu_model() -> str:
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def environment(device: Any = "cpu", threads: int | None = None) -> dict[str, Any]:
    """Versions, CPU / GPU model, threads and load average, for the JSON report."""
    from . import __version__

    dev = resolve_device(device) or torch.device("cpu")
    env = {
        "ntkdr": __version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_model": _cpu_model(),
        "logical_cpus": os.cpu_count(),
        "threads": threads if threads is not None else torch.get_num_threads(),
        "device": str(dev),
        "dtype": "float32",
        "load_average": _loadavg(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    if dev.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(dev)
    return env


def _ratio_text(r: dict[str, Any], key: str = "ratio") -> str:
    if r.get("error"):
        return "ERROR " + r["error"] if key == "ratio" else "-"
    x = r[key]
    return "n/a" if x is None else f"{x:.3g}x" if r["op"] == ">=" else f"{x:.3g}"


def _limit_text(r: dict[str, Any]) -> str:
    if r["limit"] is None:
        return r["limit_note"] or "-"
    return f"{r['limit']:.3g} ({r['limit_note']})"


def _seconds_text(r: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v:.3g}" for k, v in r["seconds"].items()) or "-"


def _rows(results: list[dict[str, Any]]) -> list[list[str]]:
    rows = []
    for r in results:
        sizes = " ".join(f"{k}={v}" for k, v in r["sizes"].items())
        rows.append(
            [
                f"{r['case']} ({sizes})",
                f"{_ratio_text(r)} [{r['metric']}]",
                _ratio_text(r, "ratio_min"),
                f"{r['op']} {r['goal']:g}",
                _limit_text(r),
                "error" if r.get("error") else ("yes" if r["passed"] else "NO"),
                _seconds_text(r),
            ]
        )
    return rows


_HEADER = [
    "case",
    "measured ratio (medians)",
    "from minima",
    "goal",
    "limit / peer",
    "pass",
    "seconds (median)",
]


def format_table(results: list[dict[str, Any]]) -> str:
    """The results as a plain-text table (one line per case)."""
    rows = [_HEADER] + _rows(results)
    widths = [max(len(row[i]) for row in rows) for i in range(len(_HEADER))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def markdown_table(results: list[dict[str, Any]]) -> str:
    """The results as a Markdown table (header, separator, one row per case) for the README."""
    lines = ["| " + " | ".join(_HEADER) + " |", "|" + "---|" * len(_HEADER)]
    lines += [
        "| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in _rows(results)
    ]
    return "\n".join(lines)


def write_json(
    path: str,
    results: list[dict[str, Any]],
    env: dict[str, Any] | None = None,
    settings: dict[str, Any] | None = None,
) -> None:
    """Write ``{"schema", "environment", "settings", "results"}`` to ``path`` atomically."""
    doc = {
        "schema": SCHEMA,
        "environment": env or environment(),
        "settings": settings or {},
        "results": results,
    }
    text = json.dumps(doc, indent=1, allow_nan=False) + "\n"
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".bench-", suffix=".json.tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


# ----------------------------------------------------------------------------- command line
class _Parser(argparse.ArgumentParser):
    # bad arguments: one line and exit code 2 (SPEC section 5), not argparse's usage block
    def error(self, message: str) -> None:  # type: ignore[override]
        raise ValueError(message)


def build_parser(prog: str = "ntkdr bench") -> argparse.ArgumentParser:
    p = _Parser(prog=prog, description="Measure the SPEC section 6 performance ratios.")
    p.add_argument(
        "--quick",
        action="store_true",
        help="about 4x smaller n / batch / width (runs in well under a minute)",
    )
    p.add_argument(
        "--cases",
        type=lambda s: [c.strip() for c in s.split(",") if c.strip()],
        default=None,
        help="comma-separated subset of: " + ", ".join(CASES),
    )
    p.add_argument(
        "--repeats", type=int, default=5, help="timed rounds per case (median; default 5)"
    )
    p.add_argument("--warmup", type=int, default=1, help="untimed rounds first (default 1)")
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads (default: torch's default, all cores)",
    )
    p.add_argument("--device", default="cpu", help="cpu or cuda[:i] (default cpu)")
    p.add_argument("--seed", type=int, default=0, help="data and weight seed (default 0)")
    p.add_argument(
        "--json",
        default=None,
        metavar="PATH",
        help="also write the results and environment as JSON",
    )
    p.add_argument(
        "--markdown", action="store_true", help="print the table as Markdown (README rows)"
    )
    p.add_argument("--quiet", action="store_true", help="no per-case progress lines")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """``ntkdr bench [--quick] [--cases a,b] [--repeats R] [--warmup W] [--threads T] [--device D] [--json PATH]``.

    Prints the table; returns 0 (goals missed are reported, not failures), 1 if a case raised,
    2 for bad arguments.
    """
    try:
        args = build_parser().parse_args(list(argv) if argv is not None else None)
        results = run_benchmarks(
            quick=args.quick,
            cases=args.cases,
            repeats=args.repeats,
            warmup=args.warmup,
            threads=args.threads,
            device=args.device,
            progress=not args.quiet,
            seed=args.seed,
        )
        env = environment(args.device, args.threads)
        if args.json:
            settings = {
                k: getattr(args, k)
                for k in ("quick", "cases", "repeats", "warmup", "threads", "seed")
            }
            write_json(args.json, results, env, settings)
    except (ValueError, OSError) as exc:
        print(
            f"ntkdr bench: error: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}",
            file=sys.stderr,
        )
        return 2
    print(
        f"# torch {env['torch']}, {env['threads']} threads, {env['cpu_model']}, device {env['device']}, float32"
    )
    print(markdown_table(results) if args.markdown else format_table(results))
    return 1 if any(r.get("error") for r in results) else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
