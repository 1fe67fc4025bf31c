"""The benchmark harness of ``ntkdr bench``: runs the cases of :mod:`ntkdr.cli.bench_runs`, tables, JSON and the command line.

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

The goals, limits and peers are listed with each case (benchmarks/README.md); a missed goal is
reported, not raised.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Sequence
from typing import Any

import torch

from ntkdr.cli.bench_cases import CASES, CaseSkipped, _Case, _Context
from ntkdr.cli.bench_runs import _RUNNERS
from ntkdr.io import write_text_atomic
from ntkdr.validation import check_choice, check_int, resolve_device

__all__ = [
    "CASES",
    "SCHEMA",
    "run_benchmarks",
    "environment",
    "format_table",
    "markdown_table",
    "write_json",
    "main",
]

SCHEMA = "ntkdr-bench/1"


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
    """Run the benchmark cases (benchmarks/README.md) and return one result dict per case.

    ``quick`` shrinks n, the batch and the width m about 4x (d and k are kept, so the d / k
    limits stay the same); ``cases`` picks a subset of :data:`CASES` (default all);
    ``repeats`` timed rounds after ``warmup`` untimed ones; ``threads`` sets
    ``torch.set_num_threads`` for the run (default: leave torch's default, all cores);
    ``sizes`` overrides sizes per case, e.g. ``{"gd_step": {"n": 100}}``.

    Each result has ``case``, ``title``, ``metric``, ``ratio`` (from median times), ``ratio_min``
    (from minimum times), ``goal``, ``op`` (``"<="`` or ``">="``), ``passed`` (judged on
    ``ratio``), ``limit`` (a number or None), ``limit_note``, ``seconds`` / ``seconds_min``
    (median / minimum seconds of every timed function), ``samples`` (all timed seconds),
    ``sizes``, ``load_average`` (at the start of the case), ``wall_seconds``, ``error``
    (None, or the message of an exception the case raised; such a case has ``ratio`` None and
    ``passed`` False) and ``skipped`` (None, or why the case could not run here, e.g. an optional
    peer that is not installed; such a case has ``ratio`` and ``passed`` None).
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
                "skipped": None,
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
            except CaseSkipped as exc:  # an optional peer is missing: not measured, not failed
                res.update(skipped=str(exc), passed=None)
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
    from ntkdr import __version__
    from ntkdr.kernels.fused import describe

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
        "elementwise": describe(dev),
        "load_average": _loadavg(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    if dev.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(dev)
    return env


def _ratio_text(r: dict[str, Any], key: str = "ratio") -> str:
    if r.get("error"):
        return "ERROR " + r["error"] if key == "ratio" else "-"
    if r.get("skipped"):
        return "not measured: " + r["skipped"] if key == "ratio" else "-"
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
                "error"
                if r.get("error")
                else "skipped"
                if r.get("skipped")
                else ("yes" if r["passed"] else "NO"),
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
    write_text_atomic(path, text, fsync=True, makedirs=True)


# ----------------------------------------------------------------------------- command line
class _Parser(argparse.ArgumentParser):
    # bad arguments: one line and exit code 2, not argparse's usage block
    def error(self, message: str) -> None:  # type: ignore[override]
        raise ValueError(message)


def build_parser(prog: str = "ntkdr bench") -> argparse.ArgumentParser:
    p = _Parser(
        prog=prog,
        description="Measure the performance ratios of ntkdr's kernels, sketches and training.",
    )
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
        f"# torch {env['torch']}, {env['threads']} threads, {env['cpu_model']}, "
        f"device {env['device']}, float32, elementwise {env.get('elementwise', 'torch')}"
    )
    print(markdown_table(results) if args.markdown else format_table(results))
    return 1 if any(r.get("error") for r in results) else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
