"""PNG plots of a width study (:func:`ntkdr.studies.width.width_study`): deviation from the NTK limit
vs width on log-log axes with the tolerance band, and the training cost to reach the tolerance.
matplotlib (Agg backend) is imported lazily."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

_LABELS = {
    "kernel_deviation": "(a) ‖Θ_m(0) − Θ_∞‖_F / ‖Θ_∞‖_F",
    "trajectory_deviation": "(b) GD residual vs linear prediction",
}
_STYLE = {
    "two_layer_dense": ("tab:blue", "-"),
    "two_layer_factorized": ("tab:blue", "--"),
    "deep_dense": ("tab:red", "-"),
    "deep_factorized": ("tab:red", "--"),
}


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_deviation(study: dict[str, Any], path: str | os.PathLike) -> None:
    """Deviation (a) and (b) vs m, log-log, one line per network (mean +- std over seeds), the
    fitted ``C m^(-1/2)`` dotted, the band below the tolerance shaded."""
    plt = _plt()
    tol = study["config"]["tolerance"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, metric in zip(axes, _LABELS):
        for name, net in study["networks"].items():
            color, ls = _STYLE.get(name, ("black", "-"))
            m = np.asarray(net["widths"], dtype=float)
            mean = np.asarray(net["metrics"][metric]["mean"], dtype=float)
            std = np.asarray(net["metrics"][metric]["std"], dtype=float)
            ax.errorbar(m, mean, yerr=std, color=color, ls=ls, marker="o", ms=3, label=name)
            c = net["fit"][metric]["c_half"]
            if c:
                ax.plot(m, c / np.sqrt(m), color=color, ls=":", lw=1)
        vals = [v for net in study["networks"].values() for v in net["metrics"][metric]["mean"]]
        vals = [v for v in vals if v is not None and np.isfinite(v) and v > 0] + [tol]
        lo, hi = min(vals) / 2, max(vals) * 2
        ax.axhspan(lo, tol, color="green", alpha=0.12, label=f"≤ tolerance {tol}")
        ax.set_ylim(lo, hi)
        ax.axhline(tol, color="green", lw=1)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("width m")
        ax.set_title(_LABELS[metric], fontsize=9)
        ax.grid(alpha=0.3, which="both")
    axes[0].legend(fontsize=7, title="dotted: C m^-1/2 fit", title_fontsize=7)
    _save(fig, path)


def plot_cost(study: dict[str, Any], path: str | os.PathLike) -> None:
    """Multiply-adds per GD step at the width each network needs for the tolerance on (a)."""
    plt = _plt()
    names, macs, notes, colors = [], [], [], []
    for name, net in study["networks"].items():
        c = net["cost"]
        if c["macs_per_step"]:
            names.append(name.replace("_", "\n"))
            macs.append(c["macs_per_step"])
            notes.append(f"m={c['m']}" + (" (fit)" if c["extrapolated"] else ""))
            colors.append(_STYLE.get(name, ("gray", "-"))[0])
    fig, ax = plt.subplots(figsize=(6, 3.8))
    if macs:
        bars = ax.bar(range(len(macs)), macs, color=colors, alpha=0.8)
        for bar, note in zip(bars, notes):
            ax.annotate(note, (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                        ha="center", va="bottom", fontsize=8)  # fmt: skip
        ax.set_xticks(range(len(macs)), names, fontsize=8)
        ax.set_yscale("log")
    tol = study["config"]["tolerance"]
    ax.set_ylabel("multiply-adds per GD step")
    ax.set_title(f"training cost at the width reaching kernel deviation ≤ {tol}", fontsize=9)
    ax.grid(alpha=0.3, axis="y", which="both")
    _save(fig, path)


def _save(fig, path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=110, format="png")
    _plt().close(fig)


def plot_width_study(study: dict[str, Any], directory: str | os.PathLike) -> list[str]:
    """Write ``width_deviation.png`` and ``width_cost.png`` into ``directory``; return the paths."""
    os.makedirs(directory, exist_ok=True)
    paths = [os.path.join(directory, f) for f in ("width_deviation.png", "width_cost.png")]
    plot_deviation(study, paths[0])
    plot_cost(study, paths[1])
    return paths
