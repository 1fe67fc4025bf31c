"""The main job behind ``ntkdr run`` as a library: :class:`RunConfig` in, a report dict out.

Dense vs factorized (W = U S) two-layer ReLU networks on one data set, same width and
seed: analytic-kernel guarantees (lambda_0 = lambda_min(H1), Arora et al. 2019 Thm 5.1
bound with true and random labels) over several sketch seeds; one trained network per
configuration with its loss curve next to the predicted trajectory (Arora et al. 2019
Thm 4.1, linearised around the initial outputs); test errors of the trained network and
of NTK regression; parameter / multiply-add counts and measured seconds; a recommended k.

The kernel side of every configuration -- lambda_min, lambda_max, y^T H^-1 y and the bounds, the
NTK-regression test error, with proven intervals where a proof exists -- comes from the
certificate engine (:mod:`ntkdr.theory.certificate`), driven over the (kind, k, seed) grid by
:mod:`ntkdr.experiment.certify` (method chosen by size, per-configuration progress and parts on
disk for ``ntkdr certify --resume``).

The result is a plain JSON-serialisable dict (schema in the README, ``SCHEMA_VERSION``).
"""

from __future__ import annotations

import os
import platform
import time
import warnings
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from ntkdr import validation as V
from ntkdr.experiment.certify import LOWER_BOUNDS, grid_jobs, lower_bound_policy, task_error
from ntkdr.theory.certificate import METHODS

SCHEMA_VERSION = "1.3"
DEFAULT_SKETCHES = ("gaussian", "sparse", "srht", "pca")
DEFAULT_KS = (16, 32, 64, 128, 256)


@dataclass
class RunConfig:
    """Everything ``ntkdr run`` varies (``quick`` records that the command line's quick preset was used)."""

    dataset: str = "mnist"
    data: str | None = None
    classes: tuple[int, int] | None = None
    n_train: int | None = None
    n_test: int | None = None
    width: int = 1024
    steps: int = 100
    sketches: tuple[str, ...] = DEFAULT_SKETCHES
    ks: tuple[int, ...] = DEFAULT_KS
    seeds: int = 3
    tolerance: float = 0.1
    seed: int = 0
    device: str = "cpu"
    dtype: str = "float64"
    quick: bool = False
    quiet: bool = False
    inference_repeats: int = 5
    train: bool = True
    method: str = "auto"
    max_memory: float | None = None
    verbose: bool = False
    parts_dir: str | None = None
    lower_bound: str = "auto"

    def validate(self) -> None:
        from ntkdr.sketches import SKETCH_KINDS

        V.check_int(self.width, "width", min_value=1)
        V.check_int(self.steps, "steps", min_value=0, max_value=V.MAX_STEPS)
        V.check_int(self.seeds, "seeds", min_value=1, max_value=1000)
        V.check_int(self.seed, "seed", min_value=0)
        V.check_real(self.tolerance, "tolerance", positive=True)
        for kind in self.sketches:
            V.check_choice(kind, "sketch kind", SKETCH_KINDS)
        for k in self.ks:
            V.check_int(k, "k", min_value=1)
        for name in ("n_train", "n_test"):
            if getattr(self, name) is not None:
                V.check_int(getattr(self, name), name, min_value=1)
        V.resolve_dtype(self.dtype)
        V.resolve_device(self.device)
        V.check_choice(self.method, "certificate method", ("auto", *METHODS))
        V.check_choice(self.lower_bound, "lower bound", LOWER_BOUNDS)
        if self.max_memory is not None:
            V.check_real(self.max_memory, "max_memory", positive=True)


@dataclass
class _Task:
    name: str
    X: np.ndarray
    Y: np.ndarray  # (n,) for a +-1 task, (n, c) one-hot for multiclass
    X_test: np.ndarray
    Y_test: np.ndarray
    task: str
    classes: list = field(default_factory=list)


def load_task(
    data: str | None, dataset: str | None, classes=None, n_train=None, n_test=None, seed: int = 0
) -> _Task:
    """Load a file (``data``) or a named data set as a +-1 or one-hot task with a test split."""
    from ntkdr import data as D

    if data is not None:
        ds = D.dataset_from_file(data, n_train=n_train, n_test=n_test, classes=classes, seed=seed)
    else:
        ds = D.load_dataset(
            dataset or "mnist", n_train=n_train, n_test=n_test, classes=classes, seed=seed
        )
    if ds.task == "multiclass":
        idx = list(range(len(ds.classes)))
        Y, Yt = D.one_hot(ds.y_train, idx), D.one_hot(ds.y_test, idx)
        classes = list(ds.classes)
    else:
        classes = list(ds.classes) if ds.classes is not None else []
        Y, Yt = np.asarray(ds.y_train, dtype=np.float64), np.asarray(ds.y_test, dtype=np.float64)
    return _Task(ds.name, ds.X_train, Y, ds.X_test, Yt, ds.task, classes)


def _stats(values: list[float]) -> dict[str, Any]:
    arr = np.asarray(values, dtype=np.float64)
    finite = arr[np.isfinite(arr)]
    return {
        "mean": float(finite.mean()) if finite.size else float("nan"),
        "std": float(finite.std(ddof=1)) if finite.size > 1 else 0.0,
        "min": float(finite.min()) if finite.size else float("nan"),
        "max": float(finite.max()) if finite.size else float("nan"),
        "values": [float(v) for v in arr],
    }


def _train_one(task: _Task, cfg: RunConfig, sketch, dtype: torch.dtype, device) -> dict[str, Any]:
    from ntkdr.kernels import two_layer_ntk
    from ntkdr.nets.models import TwoLayerReLU
    from ntkdr.theory import predicted_trajectory
    from ntkdr.training.loop import fit

    d = task.X.shape[1]
    out_dim = 1 if task.Y.ndim == 1 else task.Y.shape[1]
    model = TwoLayerReLU(d, cfg.width, sketch=sketch, seed=cfg.seed, dtype=dtype, out_dim=out_dim)
    if device is not None:
        model = model.to(device)
    X = torch.as_tensor(task.X, dtype=dtype, device=device)
    Y = torch.as_tensor(task.Y, dtype=dtype, device=device)
    Xt = torch.as_tensor(task.X_test, dtype=dtype, device=device)
    # No per-step test tracking: only the final test error is reported.
    hist = fit(
        model, X, Y, cfg.steps, lr=None, seed=cfg.seed, progress=False, ntk_every=0
    )  # drift not reported
    with torch.no_grad():
        F = model.features(X)
        H = two_layer_ntk(F)
        u0 = torch.as_tensor(np.asarray(hist.initial_outputs), dtype=H.dtype, device=H.device)
        predicted = predicted_trajectory(H, Y.to(H.dtype), hist.lr, cfg.steps, u0=u0)
        pred_test = model(Xt).cpu().numpy()
        # Inference: the sketch applied to raw inputs plus the network, per example.
        model(Xt)
        t0 = time.perf_counter()
        for _ in range(cfg.inference_repeats):
            model(Xt)
        infer = (time.perf_counter() - t0) / (cfg.inference_repeats * Xt.shape[0])
    return {
        "lr": float(hist.lr),
        "lr_rule": hist.lr_rule,
        "loss": [float(v) for v in hist.train_loss],
        "predicted_loss": [float(0.5 * v * v) for v in np.asarray(predicted)],
        "final_train_loss": float(hist.train_loss[-1]),
        "test_error": task_error(pred_test, task.Y_test, task.task),
        "seconds_per_step": float(hist.seconds_per_step),
        "seconds_per_inference_example": float(infer),
        "weight_change_fro": float(hist.weight_change_fro[-1])
        if hist.weight_change_fro
        else float("nan"),
        "pattern_flip_fraction": float(hist.pattern_flip_fraction[-1])
        if hist.pattern_flip_fraction
        else float("nan"),
    }


def _recommend(dense: dict, sketched: list[dict], tol: float) -> dict[str, Any]:
    """Smallest k per kind whose mean lambda_min ratio and bound ratio are within tol of 1.

    Across kinds: the smallest such k; ties go to the kind whose ratios are closest to 1.
    """

    def deviation(e: dict) -> float:
        return max(abs(e["lambda_min_ratio"]["mean"] - 1), abs(e["bound_ratio"]["mean"] - 1))

    per_kind: dict[str, int | None] = {}
    candidates = []
    for kind in dict.fromkeys(e["kind"] for e in sketched):
        # A configuration with a non-PD kernel for any seed has no bound there: never recommended.
        ok = sorted(
            (e["k"], deviation(e), kind)
            for e in sketched
            if e["kind"] == kind and e.get("all_pd", True) and deviation(e) <= tol
        )
        per_kind[kind] = ok[0][0] if ok else None
        candidates += ok[:1]
    best = min(candidates) if candidates else None
    best = (best[0], best[2]) if best else None
    return {
        "tolerance": tol,
        "rule": "smallest k with |mean lambda_min ratio - 1| <= tol and |mean bound ratio - 1| <= tol "
        "(ties: the kind closest to the dense values)",
        "k": best[0] if best else None,
        "kind": best[1] if best else None,
        "per_kind": per_kind,
    }


def _environment(device) -> dict[str, Any]:
    import scipy
    import sklearn

    from ntkdr import __version__
    from ntkdr.kernels.fused import describe

    return {
        "ntkdr": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "scikit_learn": sklearn.__version__,
        "platform": platform.platform(),
        "device": str(device or "cpu"),
        "elementwise": describe(device or "cpu"),
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
    }


def _logger(cfg: RunConfig):
    """``--verbose`` lines (method, per-configuration seconds) to stderr (also with ``--quiet``,
    which silences progress bars and tables), else nothing."""
    import sys

    def log(line: str) -> None:
        if cfg.verbose:
            print(f"ntkdr: {line}", file=sys.stderr, flush=True)

    return log


def run_experiment(cfg: RunConfig) -> dict[str, Any]:
    """Run the main job and return the report dict (see the README for its schema)."""
    from tqdm.auto import tqdm

    from ntkdr.experiment.certify import certify_grid, config_id, kernel_quantities
    from ntkdr.sketches import make_sketch
    from ntkdr.theory import cost, jl_min_dim, width_requirements
    from ntkdr.theory.certificate import ASSUMPTIONS, choose_method
    from ntkdr.training.distributed import world_size

    start = time.perf_counter()
    dtype = V.resolve_dtype(cfg.dtype) or torch.float64  # validated: never None
    device = V.resolve_device(cfg.device)
    task = load_task(cfg.data, cfg.dataset, cfg.classes, cfg.n_train, cfg.n_test, cfg.seed)
    n, d = task.X.shape
    if cfg.train:  # the dense net's weights and ~4 n x m training arrays, refused before any work
        V.check_memory(
            cfg.width * (d + 1) * (8 + dtype.itemsize) + 4 * n * cfg.width * dtype.itemsize,
            f"width m = {cfg.width} (a {cfg.width} x {d} first layer, trained on {n} rows)",
            "use a smaller width",
            device,
        )
    notes: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", V.ParallelRowsWarning)
        V.warn_parallel_rows(torch.as_tensor(task.X), "X_train")
    notes += [str(w.message) for w in caught]

    rng = np.random.default_rng(cfg.seed + 1)
    Y_random = rng.permutation(task.Y) if task.Y.ndim == 2 else rng.choice([-1.0, 1.0], size=n)

    ks = [k for k in cfg.ks if k <= d]
    if len(ks) < len(cfg.ks):
        notes.append(f"skipped k > d = {d}: {[k for k in cfg.ks if k > d]}")
    if not ks:
        raise ValueError(f"every k in {list(cfg.ks)} exceeds the data dimension d = {d}")
    jobs = grid_jobs(cfg.sketches, ks, cfg.seeds)
    # the method for this n, or a one-line ValueError before any work (budget too small)
    method, reason = choose_method(n, cfg.max_memory, world_size())
    if cfg.method != "auto":
        method, reason = cfg.method, f"method {cfg.method!r} requested"
    log = _logger(cfg)
    log(f"certificate: {method} for n = {n} ({reason}); {1 + len(jobs)} kernels")
    proven, proof_reason = lower_bound_policy(cfg.lower_bound, n)
    if method == "cholesky":
        log(f"lower bounds: {proof_reason}")

    sketches: dict[tuple[str, int, int], Any] = {}

    def sketch(kind: str, k: int, s: int):
        if (kind, k, s) not in sketches:
            sk = make_sketch(kind, d, k, seed=cfg.seed + s, renormalize=True).fit(task.X)
            sketches[(kind, k, s)] = sk
        return sketches[(kind, k, s)]

    def features(kind: str, k: int, s: int):
        sk = sketch(kind, k, s)
        return sk(task.X), sk(task.X_test)

    grid = certify_grid(
        task.X,
        task.Y,
        Y_random=Y_random,
        X_test=task.X_test,
        Y_test=task.Y_test,
        task=task.task,
        jobs=jobs,
        make_features=features,
        method=cfg.method,
        max_memory=cfg.max_memory,
        dtype=dtype,
        parts_dir=cfg.parts_dir,
        settings={"seed": cfg.seed, "dtype": cfg.dtype, "tolerance": cfg.tolerance},
        progress=not cfg.quiet,
        log=log if cfg.verbose else None,
        lower_bound=cfg.lower_bound,
    )
    n_train_jobs = (1 + len(cfg.sketches) * len(ks)) if cfg.train else 0
    bar = tqdm(
        total=n_train_jobs, desc="ntkdr run", disable=True if cfg.quiet else None, leave=False
    )
    dense = kernel_quantities(grid[config_id(None, None, None)])
    dense["cost"] = cost(d, cfg.width, None, None, n)
    if cfg.train:
        dense["net"] = _train_one(task, cfg, None, dtype, device)
        bar.update()

    per_cfg: dict[tuple[str, int], list[dict]] = {}
    for kind, k, s in jobs:
        per_cfg.setdefault((kind, k), []).append(kernel_quantities(grid[config_id(kind, k, s)]))

    sketched = []
    for (kind, k), runs in per_cfg.items():
        sk0 = sketch(kind, k, 0)
        entry: dict[str, Any] = {
            "kind": kind,
            "k": k,
            "seeds": [cfg.seed + s for s in range(len(runs))],
            "lambda_min": _stats([r["lambda_min"] for r in runs]),
            "lambda_min_ratio": _stats([r["lambda_min"] / dense["lambda_min"] for r in runs]),
            "bound_true": _stats([r["bound_true"] for r in runs]),
            "bound_ratio": _stats([r["bound_true"] / dense["bound_true"] for r in runs]),
            "bound_random": _stats([r["bound_random"] for r in runs]),
            "regression_test_error": _stats([r["regression_test_error"] for r in runs]),
            "all_pd": all(r["is_pd"] for r in runs),
            "spectrum": runs[0]["spectrum"],
            "certificate": [r["certificate"] for r in runs],
            "cost": cost(d, cfg.width, k, kind, n, s=sk0.s if kind == "sparse" else None),
        }
        for i, r in enumerate(runs):
            if not r["is_pd"]:
                notes.append(f"{kind} k = {k} seed {cfg.seed + i}: {r['pd_message']}")
        if cfg.train:
            entry["net"] = _train_one(task, cfg, sk0, dtype, device)
            bar.update()
        sketched.append(entry)
    bar.close()

    lam0 = dense["lambda_min"]
    if not dense["is_pd"]:
        notes.append(
            "the dense NTK Gram matrix is not numerically positive definite: lambda_min ratios "
            "and bound ratios against it are not meaningful. " + (dense.get("pd_message") or "")
        )
    config = asdict(cfg)
    return {
        "schema_version": SCHEMA_VERSION,
        "dataset": {
            "name": task.name,
            "n_train": n,
            "n_test": int(task.X_test.shape[0]),
            "d": d,
            "task": task.task,
            "classes": [c.item() if hasattr(c, "item") else c for c in task.classes],
        },
        "config": config,
        "dense": dense,
        "sketched": sketched,
        "recommended_k": _recommend(dense, sketched, cfg.tolerance),
        "theory": {
            "width_requirements": width_requirements(lam0, n) if lam0 > 0 else None,
            "jl_min_dim_eps_0.5": jl_min_dim(n, 0.5),
            "note": "constants hidden in O(.) are set to 1; bounds are Arora et al. 2019 Thm 5.1 "
            "(sqrt(2 y^T H^-1 y / n)) and widths Du et al. 2019 / Arora et al. 2019 Thm 4.1",
        },
        "certificate": {
            "method": method,
            "reason": reason,
            "lower_bound": {
                "choice": cfg.lower_bound,
                "proven": proven if method == "cholesky" else method != "matrix-free",
                "reason": proof_reason
                if method == "cholesky"
                else "exact / cholesky-inplace always prove; matrix-free never does",
            },
            "assumptions": ASSUMPTIONS,
            "status_meaning": "certified: [lower, upper] is proven for the computed float64 "
            "kernel matrix; estimate: no proof, the interval (if any) is indicative",
        },
        "notes": notes,
        "environment": _environment(device),
        "wall_seconds": time.perf_counter() - start,
    }
