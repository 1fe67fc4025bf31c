"""The ``ntkdr compare`` and ``ntkdr width`` commands and the width section of ``ntkdr run``: a user's model against its factorized copy, and the width study written to a folder.

``compare`` imports the model factory ``package.module:function`` (called with no arguments, or
with ``d=`` when it takes a parameter ``d``), factorizes a copy and prints the comparison of
their empirical NTKs on the data (``--json PATH`` also writes it atomically).  ``width`` runs
:func:`ntkdr.studies.width.width_study` and writes ``width.json``, ``width.md`` and two PNG plots
into ``--output`` atomically; :func:`run_width_section` is the small grid that ``ntkdr run`` adds
to its report.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ntkdr import validation as V
from ntkdr.cli.output import format_table
from ntkdr.cli.report import json_clean
from ntkdr.io import atomic_path, make_output_dir, write_text_atomic

WIDTH_PLOTS = ("width_deviation", "width_cost")


def _xy(
    data: str | None, dataset: str | None, classes, n_train, n_test, seed: int
) -> tuple[np.ndarray, np.ndarray | None, str]:
    """Training rows (norm 1) of a file or a named data set, with +-1 labels for a binary task
    (``None`` otherwise, or when the file has no labels), as ``ntkdr run`` loads them."""
    from ntkdr import data as D

    kw = {"classes": classes, "n_train": n_train, "n_test": n_test, "seed": seed}
    if data:
        X, y = D.load_file(data)
        if y is None:  # a file of rows only: no labels, no bound
            V.check_nonzero_rows(torch.as_tensor(X), f"X of {data}")
            return D.normalize_rows(X), None, Path(data).name
    ds = D.dataset_from_file(data, **kw) if data else D.load_dataset(dataset or "mnist", **kw)
    y = np.asarray(ds.y_train, dtype=np.float64) if ds.task == "binary" else None
    return ds.X_train, y, ds.name


def _args_xy(args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray | None, str]:
    return _xy(args.data, args.dataset, args.classes, args.n_train, args.n_test, args.seed)


def load_factory(spec: str):
    """``package.module:function`` -> the callable (``ValueError`` naming what is wrong)."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"--model must be package.module:function, got {spec!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"--model: cannot import {module_name!r}: {exc}") from None
    fn = module
    for part in attr.split("."):
        fn = getattr(fn, part, None)
        if fn is None:
            raise ValueError(f"--model: {module_name!r} has no attribute {attr!r}")
    if not callable(fn):
        raise ValueError(f"--model: {spec!r} is not callable")
    return fn


def _build(fn, d: int):
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):  # builtins without a signature
        params = {}
    try:
        model = fn(d=d) if "d" in params else fn()
    except Exception as exc:  # the user's code: one line, not a traceback
        raise ValueError(f"--model: the factory raised {type(exc).__name__}: {exc}") from exc
    if not isinstance(model, torch.nn.Module):
        raise ValueError(f"--model must return a torch.nn.Module, got {type(model).__name__}")
    return model


def compare_command(args: argparse.Namespace) -> None:
    """The model from ``--model`` against its factorized copy: their empirical NTKs on the data."""
    from ntkdr.nets.factorize import factorization_summary, factorize
    from ntkdr.studies import compare

    fn = load_factory(args.model)
    X, y, name = _args_xy(args)
    n = V.check_int(args.n, "--n", min_value=2)
    X, y = X[:n], None if y is None else y[:n]
    torch.manual_seed(args.seed)
    model = _build(fn, X.shape[1]).to(device=args.device, dtype=getattr(torch, args.dtype))
    fact = factorize(model, args.k, args.kind, seed=args.seed, init=args.init)
    try:
        c = compare(model, fact, X, y, k_proj=args.k_proj, seed=args.seed)
    except RuntimeError as exc:  # e.g. the model expects another number of features
        raise ValueError(
            f"--model failed on the data ({X.shape[0]} x {X.shape[1]}): {exc}".splitlines()[0]
        ) from exc
    result = {"model": args.model, "data": name, "k": args.k, "kind": args.kind,
              "comparison": c.as_dict(), "factorization": factorization_summary(fact).as_dict()}  # fmt: skip
    if args.json:
        write_text_atomic(args.json, json.dumps(json_clean(result), indent=1) + "\n", makedirs=True)
    if not args.quiet:
        print(factorization_summary(fact))
        r = c.as_dict()
        rows = [["quantity", "model", "factorized", "ratio / value"]]
        rows.append(
            [
                "lambda_min",
                f"{r['lambda_min_a']:.4g}",
                f"{r['lambda_min_b']:.4g}",
                f"{r['lambda_min_ratio']:.3f}",
            ]
        )
        if "bound_ratio" in r:
            rows.append(
                ["bound", f"{r['bound_a']:.4g}", f"{r['bound_b']:.4g}", f"{r['bound_ratio']:.3f}"]
            )
        rows.append(
            [
                "trained parameters",
                str(r["params_a"]),
                str(r["params_b"]),
                f"{r['params_b'] / r['params_a']:.3f}",
            ]
        )
        rows.append(
            ["s / forward", f"{r['seconds_forward_a']:.3g}", f"{r['seconds_forward_b']:.3g}", ""]
        )
        rows.append(
            ["s / backward", f"{r['seconds_backward_a']:.3g}", f"{r['seconds_backward_b']:.3g}", ""]
        )
        rows.append(["relative Frobenius distance", "", "", f"{r['relative_frobenius']:.4f}"])
        rows.append(["kernel alignment", "", "", f"{r['alignment']:.4f}"])
        print(format_table(rows))
        print(
            f"kernels: {r['method_a']} / {r['method_b']} on {r['n']} rows; {r['trace_convention']}"
        )


def write_width_plots(study: dict[str, Any], outdir: str | Path) -> dict[str, str]:
    """``width_deviation.png`` and ``width_cost.png`` into ``outdir``, each atomically."""
    from ntkdr.cli import width_plots

    out = Path(outdir)
    paths = {}
    for name in WIDTH_PLOTS:
        target = out / f"{name}.png"
        with atomic_path(target, suffix=".png") as tmp:
            getattr(width_plots, f"plot_{name.split('_', 1)[1]}")(study, tmp)
        paths[name] = str(target)
    return paths


def write_width(study: dict[str, Any], outdir: str | Path) -> dict[str, str]:
    """``width.json``, ``width.md`` and the plots into ``outdir``, each atomically."""
    out = make_output_dir(outdir)
    paths = {"json": str(out / "width.json"), "markdown": str(out / "width.md")}
    write_text_atomic(paths["json"], json.dumps(json_clean(study), indent=1) + "\n")
    paths.update(write_width_plots(study, out))
    write_text_atomic(paths["markdown"], "# Width study\n\n" + width_markdown(study, level=2))
    return paths


def width_rows(study: dict[str, Any]) -> list[list[str]]:
    """One row per network: deviations at the grid's ends, fit, reach, theory, cost."""
    tol = study["config"]["tolerance"]
    rows = [["network", "kernel dev (first / last m)", "slope", f"m reaching {tol}",
             "Du et al. m", "MACs / GD step there", "traj dev (last m)"]]  # fmt: skip
    for name, net in study["networks"].items():
        kd = net["metrics"]["kernel_deviation"]["mean"]
        fit = net["fit"]["kernel_deviation"]
        cost = net["cost"]
        m = (
            "not reached"
            if cost["m"] is None
            else (f"{cost['m']} (fit)" if cost["extrapolated"] else str(cost["m"]))
        )
        du = net["theory"]["du_width_log10"]
        rows.append([
            name,
            f"{kd[0]:.3f} / {kd[-1]:.3f}",
            "n/a" if fit["slope"] is None else f"{fit['slope']:.2f}",
            m,
            "n/a" if du is None or not np.isfinite(du) else f"10^{du:.1f}",
            "n/a" if cost["macs_per_step"] is None else f"{cost['macs_per_step']:.3g}",
            f"{net['metrics']['trajectory_deviation']['mean'][-1]:.3f}",
        ])  # fmt: skip
    return rows


def width_markdown(study: dict[str, Any], level: int = 2) -> str:
    """The width study as Markdown: the table, the cost ratios, what the numbers mean."""
    cfg = study["config"]
    h = "#" * level
    lines = [
        f"{h} How wide is wide enough\n",
        f"n = {cfg['n']} rows, widths {cfg['widths']}, {cfg['seeds']} seed(s) per width, sketch {cfg['kind']} k = {cfg['k']}, "
        f"{cfg['steps']} GD steps (lr = 1 / lambda_max of the limit kernel), tolerance {cfg['tolerance']}. "
        "Kernel dev = ||Theta_m(0) - Theta_inf||_F / ||Theta_inf||_F against each network's own limit; "
        "traj dev = max_t | ||u(t) - y|| - linear prediction | / ||u(0) - y||; Du et al.'s width "
        "n^6 / (lambda_0^4 delta^3) with O(.) constants set to 1.\n",
    ]
    rows = width_rows(study)
    lines.append("| " + " | ".join(rows[0]) + " |")
    lines.append("|" + "---|" * len(rows[0]))
    lines += ["| " + " | ".join(r) + " |" for r in rows[1:]]
    for fam, ratio in study.get("cost_ratio", {}).items():
        if ratio is not None:
            lines.append(
                f"\n{fam.replace('_', '-')}: factorized / dense multiply-adds per GD step at equal kernel fidelity: {ratio:.3g}."
            )
    for name, net in study["networks"].items():
        if name.endswith("factorized"):
            lines.append(
                f"\n{name}: its limit is {net['limit_gap']:.3f} (relative Frobenius) from the dense limit (the sketch's error, which no width removes)."
            )
    lines.append(
        "\n![deviation vs width](width_deviation.png)\n\n![cost to reach the tolerance](width_cost.png)\n"
    )
    return "\n".join(lines) + "\n"


def width_command(args: argparse.Namespace) -> None:
    """The width study on the data: width.json, width.md and plots into ``--output``."""
    from ntkdr.studies.width import NETWORKS, width_study

    make_output_dir(args.output)  # fail before the work, not after it
    X, y, name = _args_xy(args)
    if y is None:
        raise ValueError("the width study needs a binary task (+-1 labels): pass --classes A,B")
    tty = not args.quiet and sys.stderr.isatty()  # progress lines only on a terminal
    say = (lambda msg: print(msg, file=sys.stderr, flush=True)) if tty else None
    study = width_study(
        X, y, widths=args.widths, seeds=args.seeds, k=args.k,
        kind=args.kind, depth=args.depth, steps=args.steps, tolerance=args.tolerance,
        n_max=args.n_max, seed=args.seed, networks=args.networks or NETWORKS,
        dtype=getattr(torch, args.dtype), device=args.device, progress=say,
    ).as_dict()  # fmt: skip
    study["config"]["data"] = name
    paths = write_width(study, args.output)
    if not args.quiet:
        print(format_table(width_rows(study)))
        print(f"report: {paths['markdown']} ({study['seconds']:.1f} s)")


#: the grid of the width section of ``ntkdr run`` (two-layer nets only; ``ntkdr width`` does more)
RUN_GRID = {"widths": (64, 256, 1024), "seeds": 2, "steps": 10, "n_max": 96}
QUICK_GRID = {"widths": (32, 128), "seeds": 1, "steps": 5, "n_max": 48}


def run_width_section(cfg: Any) -> dict[str, Any]:
    """The small width study of ``ntkdr run`` on the run's own training rows (two-layer dense and
    factorized; k = min(64, d // 4)); ``{"skipped": reason}`` for targets that are not one real
    number per row (multiclass)."""
    from ntkdr.studies.width import width_study

    X, y, _ = _xy(cfg.data, cfg.dataset, cfg.classes, cfg.n_train, cfg.n_test, cfg.seed)
    if y is None:
        return {"skipped": "the width study needs a binary task (+-1 labels)"}
    grid = QUICK_GRID if cfg.quick else RUN_GRID
    k = max(1, min(64, X.shape[1] // 4))
    return width_study(
        X, y, k=k, seed=cfg.seed, time_steps=False,
        networks=("two_layer_dense", "two_layer_factorized"), **grid,
    ).as_dict()  # fmt: skip
