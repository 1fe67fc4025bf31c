"""PNG plots of an ``ntkdr run`` report (matplotlib, Agg backend, imported lazily)."""

from __future__ import annotations

from typing import Any

import numpy as np


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _kinds(report: dict[str, Any]) -> list[str]:
    return list(dict.fromkeys(e["kind"] for e in report["sketched"]))


def _entries(report: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return sorted((e for e in report["sketched"] if e["kind"] == kind), key=lambda e: e["k"])


def _save(fig, path: str) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=110, format="png")
    _plt().close(fig)


def _nan(x: Any) -> float:
    return float("nan") if x is None else float(x)


def plot_loss(report: dict[str, Any], path: str) -> None:
    """Measured training loss (solid) and the predicted trajectory (dashed), one panel per kind."""
    plt = _plt()
    kinds = _kinds(report)
    fig, axes = plt.subplots(
        1, max(len(kinds), 1), figsize=(4.2 * max(len(kinds), 1), 3.6), sharey=True, squeeze=False
    )
    dense = report["dense"].get("net")
    for ax, kind in zip(axes[0], kinds or ["dense"]):
        if dense:
            ax.semilogy(dense["loss"], color="black", lw=2, label="dense")
            ax.semilogy(dense["predicted_loss"], color="black", lw=1, ls="--")
        entries = [e for e in _entries(report, kind) if e.get("net")]
        colors = plt.cm.viridis(np.linspace(0, 0.9, max(len(entries), 1)))
        for c, e in zip(colors, entries):
            ax.semilogy(e["net"]["loss"], color=c, lw=1.5, label=f"k={e['k']}")
            ax.semilogy(e["net"]["predicted_loss"], color=c, lw=1, ls="--")
        ax.set_title(f"{kind}: loss vs GD step")
        ax.set_xlabel("GD step")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7, title="solid: measured\ndashed: theory", title_fontsize=7)
    axes[0][0].set_ylabel("training loss ½Σ(y−f)²")
    _save(fig, path)


def plot_guarantees(report: dict[str, Any], path: str) -> None:
    """λ_min ratio and bound ratio (sketched / dense) vs k, mean ± std over seeds."""
    plt = _plt()
    tol = report["recommended_k"]["tolerance"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for key, ax, title in (
        ("lambda_min_ratio", axes[0], "λ_min(H̃) / λ_min(H)"),
        ("bound_ratio", axes[1], "generalization bound ratio (true labels)"),
    ):
        plotted = False
        for kind in _kinds(report):
            # Non-PD kernels give infinite / undefined ratios: leave those points out.
            es = [e for e in _entries(report, kind) if np.isfinite(_nan(e[key]["mean"]))]
            plotted = plotted or bool(es)
            ax.errorbar(
                [e["k"] for e in es],
                [_nan(e[key]["mean"]) for e in es],
                yerr=[np.nan_to_num(_nan(e[key]["std"])) for e in es],
                marker="o",
                capsize=3,
                label=kind,
            )
        ax.axhspan(1 - tol, 1 + tol, color="green", alpha=0.12, label=f"1 ± {tol}")
        ax.axhline(1, color="black", lw=0.8)
        if plotted:  # log scale needs at least one finite point
            ax.set_xscale("log", base=2)
        ax.set_xlabel("sketch dimension k")
        ax.set_title(title if plotted else title + ": undefined (kernel not PD)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    _save(fig, path)


def plot_error(report: dict[str, Any], path: str) -> None:
    """Test error of NTK regression and of the trained network vs k; dense as horizontal lines."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 4))
    dense = report["dense"]
    ax.axhline(
        _nan(dense.get("regression_test_error")),
        color="black",
        ls="--",
        lw=1,
        label="dense NTK regression",
    )
    if dense.get("net"):
        ax.axhline(
            _nan(dense["net"]["test_error"]), color="black", lw=1.5, label="dense trained net"
        )
    for kind in _kinds(report):
        es = _entries(report, kind)
        ks = [e["k"] for e in es]
        line = ax.errorbar(
            ks,
            [_nan(e["regression_test_error"]["mean"]) for e in es],
            yerr=[_nan(e["regression_test_error"]["std"]) for e in es],
            ls="--",
            marker="o",
            capsize=3,
            label=f"{kind} NTK regression",
        )
        if all(e.get("net") for e in es):
            ax.plot(
                ks,
                [e["net"]["test_error"] for e in es],
                marker="s",
                color=line[0].get_color(),
                label=f"{kind} trained net",
            )
    ax.set_xscale("log", base=2)
    ax.set_xlabel("sketch dimension k")
    ax.set_ylabel("test error")
    ax.set_title("Test error vs k")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    _save(fig, path)


def plot_cost(report: dict[str, Any], path: str) -> None:
    """Measured seconds per GD step and per inference example vs k (log-log), dense dashed."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    dense = report["dense"].get("net") or {}
    for ax, key, title in (
        (axes[0], "seconds_per_step", "seconds per full-batch GD step"),
        (axes[1], "seconds_per_inference_example", "seconds per inference example"),
    ):
        if key in dense:
            ax.axhline(dense[key], color="black", ls="--", label="dense")
        for kind in _kinds(report):
            es = [e for e in _entries(report, kind) if e.get("net")]
            ax.plot([e["k"] for e in es], [e["net"][key] for e in es], marker="o", label=kind)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("sketch dimension k")
        ax.set_title(title)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    _save(fig, path)


def plot_spectrum(report: dict[str, Any], path: str) -> None:
    """Eigenvalues (descending, log scale) of H1 for dense and, per kind, the smallest and largest k."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 4))
    ax.semilogy(
        np.clip(report["dense"]["spectrum"], 1e-300, None), color="black", lw=2, label="dense"
    )
    for kind in _kinds(report):
        es = _entries(report, kind)
        for e, ls in ((es[0], ":"), (es[-1], "-")) if len(es) > 1 else ((es[0], "-"),):
            ax.semilogy(
                np.clip(e["spectrum"], 1e-300, None), ls=ls, lw=1, label=f"{kind} k={e['k']}"
            )
    ax.set_xlabel("index i")
    ax.set_ylabel("eigenvalue λ_i of H1")
    ax.set_title("NTK Gram spectrum, dense vs sketched")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, ncol=2)
    _save(fig, path)
