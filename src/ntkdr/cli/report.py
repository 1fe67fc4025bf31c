"""The report files of ``ntkdr run``: ``report.json``, ``report.md``, the summary rows and PNG plots.

Everything is written atomically (:mod:`ntkdr.io`) so an interrupted run never leaves a torn report.  matplotlib is
imported lazily with the Agg backend (no display needed).
"""

from __future__ import annotations

import json
import math
import os
from typing import Any

from ntkdr.io import atomic_path, make_output_dir, write_text_atomic

PLOTS = ("loss", "guarantees", "error", "cost", "spectrum")


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "item"):
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, tuple):
        return list(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def json_clean(obj: Any) -> Any:
    """``obj`` with NaN / Infinity replaced by None (JSON has neither; null keeps the file valid)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): json_clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_clean(v) for v in obj]
    return obj


def write_report(report: dict[str, Any], outdir: str | os.PathLike) -> dict[str, str]:
    """Write report.json, the plots and report.md into ``outdir``; return their paths."""
    out = make_output_dir(outdir)
    paths = {"json": str(out / "report.json"), "markdown": str(out / "report.md")}
    write_text_atomic(
        paths["json"], json.dumps(json_clean(report), indent=1, default=_json_default) + "\n"
    )
    from ntkdr.cli import plots

    for name in PLOTS:
        target = out / f"{name}.png"
        with atomic_path(target, suffix=".png") as tmp:
            getattr(plots, f"plot_{name}")(report, tmp)
        paths[name] = str(target)
    if report.get("width", {}).get("networks"):
        from ntkdr.cli.studies import write_width_plots

        paths.update(write_width_plots(report["width"], out))
    write_text_atomic(paths["markdown"], render_markdown(report))
    return paths


def _fmt(x: Any, spec: str = ".3g") -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "n/a"
    return format(x, spec)


def _pm(stats: dict[str, Any], spec: str = ".3f") -> str:
    return f"{_fmt(stats['mean'], spec)} ± {_fmt(stats['std'], spec)}"


def summary_rows(report: dict[str, Any]) -> list[list[str]]:
    """One row per configuration: the headline numbers of the report."""
    dense = report["dense"]
    dnet = dense.get("net", {})
    rows = [
        [
            "dense",
            "-",
            "1 (" + _fmt(dense["lambda_min"], ".3g") + ")",
            "1 (" + _fmt(dense["bound_true"], ".3g") + ")",
            _fmt(dense["bound_random"], ".3f"),
            _fmt(dense.get("regression_test_error"), ".3f"),
            _fmt(dnet.get("test_error"), ".3f"),
            "1",
            "1",
        ]
    ]
    for e in report["sketched"]:
        net = e.get("net", {})
        step = _ratio(dnet.get("seconds_per_step"), net.get("seconds_per_step"))
        infer = _ratio(
            dnet.get("seconds_per_inference_example"), net.get("seconds_per_inference_example")
        )
        rows.append(
            [
                e["kind"],
                str(e["k"]),
                _pm(e["lambda_min_ratio"]),
                _pm(e["bound_ratio"]),
                _fmt(e["bound_random"]["mean"], ".3f"),
                _pm(e["regression_test_error"]),
                _fmt(net.get("test_error"), ".3f"),
                _fmt(step, ".2f"),
                _fmt(infer, ".2f"),
            ]
        )
    return rows


SUMMARY_HEADER = [
    "sketch",
    "k",
    "λmin ratio",
    "bound ratio",
    "bound (random y)",
    "NTK-reg err",
    "net err",
    "step speed-up",
    "infer speed-up",
]


def _ratio(a: Any, b: Any) -> float | None:
    if a is None or b is None or not b:
        return None
    return a / b


def _interval_text(iv: dict[str, Any], spec: str = ".6g") -> str:
    lo = "-inf" if iv["lower"] == float("-inf") else format(iv["lower"], spec)
    return f"{format(iv['value'], spec)} [{lo}, {format(iv['upper'], spec)}] {iv['status']}"


def certificate_lines(report: dict[str, Any]) -> list[str]:
    """The report's certificate section: method, assumptions, intervals per configuration."""
    cert = report.get("certificate")
    if not cert:
        return []
    lines = [
        "## Certificate",
        "",
        f"Method **{cert['method']}**: {cert['reason']}.  ",
        f"Assumptions: {cert['assumptions']}.  ",
        f"Status: {cert['status_meaning']}.",
        "",
        "| kernel | seed | method | λmin [lower, upper] | bound, true labels [lower, upper] "
        "| bound, random labels [lower, upper] |",
        "|---|---|---|---|---|---|",
    ]
    rows = [("dense", "", report["dense"].get("certificate"))]
    for e in report["sketched"]:
        for seed, c in zip(e["seeds"], e.get("certificate") or []):
            rows.append((f"{e['kind']} k = {e['k']}", seed, c))
    for name, seed, c in rows:
        if not c:
            continue
        b = c["bound"]
        rnd = _interval_text(b["random"]) if "random" in b else "—"
        lines.append(
            f"| {name} | {seed} | {c['method']} | {_interval_text(c['lambda_min'])} "
            f"| {_interval_text(b['true'])} | {rnd} |"
        )
    return lines + [""]


def render_markdown(report: dict[str, Any]) -> str:
    ds, cfg, rec = report["dataset"], report["config"], report["recommended_k"]
    lines = [
        "# ntkdr report",
        "",
        f"Data: **{ds['name']}**, task {ds['task']}, n_train = {ds['n_train']}, n_test = {ds['n_test']}, d = {ds['d']}.  ",
        f"Width m = {cfg['width']}, {cfg['steps']} GD steps, sketches {', '.join(cfg['sketches'])}, "
        f"k in {list(cfg['ks'])}, {cfg['seeds']} sketch seeds, dtype {cfg['dtype']}, device {cfg['device']}.",
        "",
        "Ratios are sketched / dense (mean ± std over sketch seeds). λmin = λ_min(H1) of the analytic "
        "NTK Gram matrix of the (sketched, renormalised) training inputs; bound = sqrt(2 yᵀH⁻¹y / n) "
        "(Arora et al. 2019, Thm 5.1, constants set to 1). Speed-ups are measured seconds, dense / factorized.",
        "",
        "## Summary",
        "",
        "| " + " | ".join(SUMMARY_HEADER) + " |",
        "|" + "---|" * len(SUMMARY_HEADER),
    ]
    lines += ["| " + " | ".join(r) + " |" for r in summary_rows(report)]
    lines += ["", "## Recommended k", ""]
    if rec["k"] is not None:
        lines.append(
            f"**k = {rec['k']} ({rec['kind']})**: {rec['rule']}, tol = {rec['tolerance']}."
        )
    else:
        lines.append(
            f"No k in the grid meets the rule ({rec['rule']}, tol = {rec['tolerance']}); try larger k."
        )
    lines += ["", "| sketch | smallest k within tolerance |", "|---|---|"]
    lines += [
        f"| {kind} | {k if k is not None else 'none'} |" for kind, k in rec["per_kind"].items()
    ]
    lines += [""] + certificate_lines(report)
    dense = report["dense"]
    if not dense.get("is_pd", True):
        lines += ["", f"**Warning:** {dense.get('pd_message')}"]
    lines += ["", "## Plots", ""]
    captions = {
        "loss": "Training loss vs GD steps, measured (solid) and predicted by the linearised theory (dashed)",
        "guarantees": "λmin ratio and bound ratio vs k",
        "error": "Test error vs k",
        "cost": "Measured cost vs k",
        "spectrum": "Eigenvalue spectra of the NTK Gram matrix, dense vs sketched",
    }
    lines += [f"![{captions[n]}]({n}.png)\n\n*{captions[n]}.*\n" for n in PLOTS]
    th = report.get("theory", {})
    if th.get("width_requirements"):
        wr = th["width_requirements"]
        lines += ["## Theory", "", f"{th['note']}.", ""]
        lines += [
            f"- {k}: {_fmt(v, '.3g') if isinstance(v, (int, float)) else v}" for k, v in wr.items()
        ]
        lines.append(
            f"- JL minimum dimension for n = {ds['n_train']}, eps = 0.5: {th['jl_min_dim_eps_0.5']}"
        )
    width = report.get("width") or {}
    if width.get("networks"):
        from ntkdr.cli.studies import width_markdown

        lines += ["", width_markdown(width, level=2)]
    elif width.get("skipped"):
        lines += ["", "## How wide is wide enough", "", f"Not run: {width['skipped']}."]
    if report.get("notes"):
        lines += ["", "## Notes", ""] + [f"- {n}" for n in report["notes"]]
    env = report["environment"]
    lines += [
        "",
        f"*ntkdr {env['ntkdr']}, torch {env['torch']}, {env['threads']} threads, {env['device']}; "
        f"wall time {report['wall_seconds']:.1f} s.*",
        "",
    ]
    return "\n".join(lines)
