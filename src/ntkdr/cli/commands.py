"""Bodies of the ``ntkdr run``, ``certify``, ``train`` and ``kernel`` commands (the parser is :mod:`ntkdr.cli.parser`)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from ntkdr import experiment
from ntkdr import validation as V
from ntkdr.cli.output import print_summary
from ntkdr.cli.presets import run_config
from ntkdr.cli.report import json_clean, write_report
from ntkdr.io import atomic_path, make_output_dir, write_text_atomic


def _sketch_from_args(args: argparse.Namespace, d: int, X: np.ndarray):
    from ntkdr.sketches import make_sketch

    if args.sketch is None:
        if args.k is not None:
            raise ValueError("--k given without --sketch")
        return None
    if args.k is None:
        raise ValueError(f"--sketch {args.sketch} needs --k")
    return make_sketch(args.sketch, d, args.k, seed=args.seed, renormalize=True).fit(X)


def _parse_lr(text: str | None):
    if text is None or text == "auto":
        return None
    if text == "theory":
        return "theory"
    try:
        return V.check_real(float(text), "--lr", positive=True)
    except ValueError:
        raise ValueError(
            f"--lr must be a positive number, 'auto' or 'theory', got {text!r}"
        ) from None


def run_command(args: argparse.Namespace) -> None:
    """The main job: dense vs factorized networks, the report files and the summary table."""
    cfg = run_config(args)
    make_output_dir(args.output)  # fail before the work, not after it
    report = experiment.run_experiment(cfg)
    from ntkdr.cli.studies import run_width_section

    report["width"] = run_width_section(cfg)  # "how wide is wide enough here"
    paths = write_report(report, args.output)
    if not args.quiet:
        print_summary(report, paths)


def certify_command(args: argparse.Namespace) -> None:
    """The main job without training: the guarantees and a recommended k, as JSON.

    With ``--output FILE.json`` every finished configuration is written atomically to
    ``FILE.json.parts/``; ``--resume`` continues from there after an interruption (the same
    JSON, timings aside); without ``--resume`` old parts are discarded.  The parts are removed
    once ``FILE.json`` is written.  Under ``torchrun`` (gloo) the ranks share the kernel's row
    blocks (the matrix-free method, the single-process numbers); rank 0 writes and prints.
    """
    import shutil

    from ntkdr.training import distributed as D

    owned = not D.is_distributed()  # a group made here is destroyed here
    rank, _ = D.init_from_env(backend="gloo")
    try:
        args.train = False
        cfg = run_config(args)
        parts = None
        if args.output:  # fail before the work, not after it
            make_output_dir(Path(args.output).parent)
            parts = Path(str(args.output) + ".parts")
            if not args.resume and parts.exists() and rank == 0:
                shutil.rmtree(parts)
            D.barrier()
            cfg.parts_dir = str(parts)
        elif args.resume:
            raise ValueError(
                "--resume needs --output FILE.json (finished configurations are kept beside it)"
            )
        report = experiment.run_experiment(cfg)
        if rank != 0:
            return
        if args.output:
            write_text_atomic(args.output, json.dumps(json_clean(report), indent=1) + "\n")
            if parts is not None and parts.exists():
                shutil.rmtree(parts)
        if not args.quiet:
            print_summary(report, {"markdown": args.output or "(not written)"})
    finally:
        if owned:
            D.cleanup()


def train_command(args: argparse.Namespace) -> None:
    """Train one network; writes model.pt, history.json (atomically) and checkpoints to --out.

    Under ``torchrun`` (RANK / WORLD_SIZE set) the process group is initialised here (gloo on
    CPU, NCCL on CUDA) and training is data parallel (:mod:`ntkdr.training.distributed`); only rank 0
    prints and writes files, the other ranks take part in every step.
    """
    from ntkdr.nets.models import TwoLayerReLU
    from ntkdr.training import distributed as D
    from ntkdr.training.loop import fit

    owned = not D.is_distributed()  # a group made here is destroyed here
    rank, _ = D.init_from_env(device=args.device)
    try:
        V.check_int(args.width, "--width", min_value=1)
        V.check_int(args.steps, "--steps", min_value=0, max_value=V.MAX_STEPS)
        V.check_int(args.checkpoint_every, "--checkpoint-every", min_value=1)
        lr = _parse_lr(args.lr)
        dtype = V.resolve_dtype(args.dtype)
        device = V.resolve_device(args.device)
        out = make_output_dir(args.out)
        task = experiment.load_task(
            args.data, args.dataset, args.classes, args.n_train, args.n_test, args.seed
        )
        d = task.X.shape[1]
        sketch = _sketch_from_args(args, d, task.X)
        out_dim = 1 if task.Y.ndim == 1 else task.Y.shape[1]
        model = TwoLayerReLU(
            d,
            args.width,
            sketch=sketch,
            train_output=args.train_output,
            seed=args.seed,
            dtype=dtype,
            out_dim=out_dim,
        ).to(device)

        def t(a):
            return torch.as_tensor(a, dtype=dtype, device=device)

        ckpt = out / "checkpoint.pt"
        if args.resume and not ckpt.exists():
            raise ValueError(f"--resume given but {ckpt} does not exist")
        hist = fit(
            model,
            t(task.X),
            t(task.Y),
            args.steps,
            lr=lr,
            optimizer=args.optimizer,
            batch_size=args.batch_size,
            X_test=t(task.X_test),
            y_test=t(task.Y_test),
            seed=args.seed,
            progress=not args.quiet and rank == 0,
            checkpoint=str(ckpt),
            checkpoint_every=args.checkpoint_every,
            resume=args.resume,
        )
        if rank == 0:  # the weights are replicated: one writer
            with atomic_path(out / "model.pt") as tmp:
                torch.save(model.state_dict(), tmp)
            write_text_atomic(
                out / "history.json", json.dumps(json_clean(hist.to_dict()), indent=1) + "\n"
            )
            if not args.quiet:
                last = hist.train_loss[-1]
                print(
                    f"trained {args.steps} steps, lr {hist.lr:.4g} ({hist.lr_rule}); final loss {last:.4g}; wrote {out}"
                )
        D.barrier()  # the files exist when any rank returns
    finally:
        if owned:
            D.cleanup()


def _kernel_inputs(args: argparse.Namespace) -> np.ndarray:
    """All rows of the data (a file's X, or a data set's train + test rows), normalised to unit norm."""
    from ntkdr import data as D

    if args.data is not None:
        X, _ = D.load_file(args.data)
        V.check_nonzero_rows(torch.as_tensor(X), f"X of {args.data}")
    else:
        ds = D.load_dataset(
            args.dataset or "mnist",
            classes=args.classes,
            n_train=args.n_train,
            n_test=args.n_test,
            seed=args.seed,
        )
        X = np.concatenate([ds.X_train, ds.X_test])
    return D.normalize_rows(X)


def kernel_command(args: argparse.Namespace) -> None:
    """K(X, X) of the (optionally sketched) inputs into ``--out`` (.npy), tile by tile.

    Tiles go to ``OUT.partial.npy`` with a record of finished tiles, so a rerun after a crash
    resumes; under ``torchrun`` the ranks share the tiles.  ``OUT`` appears only when complete.
    """
    from ntkdr.kernels import AnalyticNTK
    from ntkdr.kernels.tiles import compute_kernel_to_file
    from ntkdr.training.distributed import init_from_env

    out = Path(args.out)
    if out.suffix != ".npy":
        raise ValueError(f"--out must be a .npy file, got {str(out)!r}")
    make_output_dir(out.parent if str(out.parent) else ".")
    if args.tile is not None:
        V.check_int(args.tile, "--tile", min_value=1)
    if args.depth is not None:
        V.check_int(args.depth, "--depth", min_value=1, max_value=V.MAX_DEPTH)
    dtype = V.resolve_dtype(args.dtype)
    device = V.resolve_device(args.device)
    X = _kernel_inputs(args)
    sketch = _sketch_from_args(args, X.shape[1], X)
    if sketch is not None:
        X = sketch(X)
    fc_opts = {
        "--activation": args.activation,
        "--act-param": args.act_param,
        "--w-std": args.w_std,
        "--b-std": args.b_std,
        "--w-out": args.w_out,
    }
    if args.depth is None:
        given = [name for name, value in fc_opts.items() if value is not None]
        if given:
            raise ValueError(f"{given[0]} needs --depth (the default two-layer kernel H1 is ReLU)")
        kernel = AnalyticNTK(layers=args.layers)
    else:
        fc: dict = {"w_std": args.w_std, "b_std": args.b_std, "w_out": args.w_out}
        kernel = AnalyticNTK(
            kind="fc",
            depth=args.depth,
            output=args.which,
            activation=args.activation or "relu",
            activation_params=dict(args.act_param or []),
            **{k: v for k, v in fc.items() if v is not None},
        )
    rank, _ = init_from_env(device=args.device)
    compute_kernel_to_file(
        X,
        out,
        kernel,
        tile_rows=args.tile,
        max_memory=args.max_memory,
        dtype=dtype,
        device=device,
        progress=not args.quiet and rank == 0,
    )
    if not args.quiet and rank == 0:
        print(f"wrote {X.shape[0]} x {X.shape[0]} kernel to {out}")
