r"""Training of wide ReLU networks by GD / SGD / Adam, with the tracking the NTK analysis needs.

**Loss convention** (the one of Du et al., ICLR 2019, and Arora et al., ICML 2019, shared with
:mod:`ntkdr.theory` and :mod:`ntkdr.regression`): the training loss is the *sum*

    L(W) = 1/2 * sum_i ||y_i - f(x_i)||^2          (not the mean)

and full-batch gradient descent is ``W <- W - lr * dL/dW``.  In the linearised (NTK) regime the
outputs then move as ``u(t+1) - y = (I - lr Theta)(u(t) - y)``, which is what
:func:`ntkdr.theory.predicted_trajectory` computes.  Dividing the loss by ``n`` is the same as
using ``lr / n``.

**Mini-batches** (``optimizer="sgd"`` / ``"adam"``): one *step* is one parameter update on the
batch loss ``1/2 sum_{i in B} ||y_i - f(x_i)||^2`` (summed over the batch, not rescaled by
``n / |B|``: with ``|B| = n`` it is the GD step, and a step size that is stable for GD,
``lr <= 1 / lambda_max(Theta)``, stays stable for every batch since
``lambda_max(Theta_BB) <= lambda_max(Theta)``).  Each epoch visits the training set in a fresh
random order drawn from a ``torch.Generator`` seeded with ``seed``; the last batch of an epoch
may be smaller.  Whatever the optimizer, the loss recorded in :class:`History` is the full
training-set ``L``.

**Step size.** ``lr=None`` picks ``1 / lambda_max(Theta_0)``, ``Theta_0`` the empirical NTK of
the model at initialisation on the training set (linearised GD on the sum-loss is stable for
``lr < 2 / lambda_max``); for Adam, whose steps do not scale with the kernel, ``lr=None`` is
torch's default ``1e-3``.  ``lr="theory"`` is Du et al. (2019) Thm 4.1's ``lambda_0 / n^2`` with
``lambda_0 = lambda_min(H1(F, F))`` of the (sketched) features -- tiny, as the theory is.
The value and the rule are recorded (``History.lr``, ``History.lr_rule``).

**Gradients.** For :class:`~ntkdr.models.TwoLayerReLU` with a fixed sketch (the dense net and
the factorized net ``W = U S`` with S not trained), ``fit`` computes the features
``F = model.features(X)`` once and never touches the raw ``d``-dimensional inputs again, and
uses the closed-form gradient (``grad="auto"``/``"closed_form"``)

    P = F W^T,   r = u - y,   dL/dW = ((r a^T / sqrt(m)) o 1[P > 0])^T F,   dL/da = relu(P)^T r / sqrt(m)

which is two GEMMs of size ``n x m x d_in`` and a few elementwise passes over ``n x m``, and
gives the training loss of the step for free.  ``grad="autograd"`` (and every other model,
including ``train_sketch=True``) differentiates the loss with ``torch.autograd``.

**Tracked quantities** (TwoLayerReLU; other modules get losses and times only), each recorded at
steps ``0, track_every, 2 track_every, ...`` and at the last step, for the state *before* the
update of that step (step 0 is the initialisation; the last entry is the final model):
training loss, test loss and accuracy, ``||W(t) - W(0)||_F``, ``max_r ||w_r(t) - w_r(0)||``, the
fraction of activation patterns ``1[F W^T >= 0]`` on the training set that differ from
initialisation, and ``||Theta(t) - Theta(0)||_2 / ||Theta(0)||_2`` every ``ntk_every`` steps.

**Checkpoints.** With ``checkpoint=path`` the model, optimizer state, step, history, torch RNG
state and the batch-order generator's state are saved atomically (temporary file in the same
folder + ``os.replace``) every ``checkpoint_every`` steps and at the end; ``resume=True`` continues
from that file and ends with exactly (bit for bit) the model of an uninterrupted run.

**Data parallelism** (:mod:`ntkdr.training.distributed`).  When a ``torch.distributed``
process group is initialised (``torchrun``, or :func:`torch.distributed.init_process_group`
before calling :func:`fit`) every rank passes the *same* full ``(X, y)`` (checked by a hash) and
the same model; ``fit`` broadcasts rank 0's parameters as a guard, and each rank works on its
contiguous shard :func:`ntkdr.distributed.shard_indices` of the training set (GD) or of each
global mini-batch (SGD / Adam; the global batch order is the single-process one).  Because the
loss is a sum, the all-reduced (summed) shard gradients are the full-batch gradient, so every
rank takes the single-process step up to float round-off and the weights stay replicated.
Losses, test metrics and flip counts are summed over ranks; ``lr=None`` / ``"theory"`` and the
NTK drift (``n x n`` kernels) are computed on rank 0 and broadcast.  Only rank 0 writes
checkpoints; on resume every rank reads the same file (bit-exact resume holds for the same
world size; another world size continues up to round-off).  ``History.wall_time`` is rank-local.
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
from collections.abc import Callable
from numbers import Real
from typing import Any

import torch
from torch import nn

from ntkdr.memory import check_memory
from ntkdr.training import distributed as D
from ntkdr.training.checkpoints import (
    _NAN,
    CHECKPOINT_FORMAT,
    Checkpointer,
    History,
    _check_resume_config,
    _load_checkpoint,
    _truncate_history,
)

# History / checkpoints, collectives, closed-form gradients and step-size rules live in their
# own modules; the public names are re-exported here (``ntkdr.train.History`` etc.).
from ntkdr.training.collectives import _Comm
from ntkdr.training.gradients import InitPatterns, _is_two_layer, _sketch_trained
from ntkdr.training.stepsize import LR_RULES, _empirical_kernel, _resolve_lr, _resume_lr
from ntkdr.training.tracker import Tracker, _spectral_norm_sym
from ntkdr.training.trainer import (
    GRAD_METHODS,
    _check_model,
    _match_output_shape,
    _prepare_inputs,
    _Trainer,
    time_gd_step,
)
from ntkdr.validation import (
    MAX_STEPS,
    ArrayLike,
    check_choice,
    check_int,
    check_real,
)

__all__ = ["History", "fit", "time_gd_step", "OPTIMIZERS", "LR_RULES", "CHECKPOINT_FORMAT"]

OPTIMIZERS = ("gd", "sgd", "adam")


# ============================================================================ helpers
def _fingerprint(*tensors: torch.Tensor) -> str:
    h = hashlib.sha256()
    for t in tensors:
        a = t.detach().cpu().contiguous().numpy()
        h.update(str((a.shape, a.dtype.str)).encode())
        h.update(a.tobytes())
    return h.hexdigest()


# ============================================================================ fit
def fit(
    model: nn.Module,
    X: ArrayLike,
    y: ArrayLike,
    steps: int,
    lr: float | str | None = None,
    optimizer: str = "gd",
    batch_size: int | None = None,
    *,
    X_test: ArrayLike | None = None,
    y_test: ArrayLike | None = None,
    track_every: int = 1,
    ntk_every: int | None = None,
    seed: int = 0,
    progress: bool = True,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_every: int | None = None,
    resume: bool = False,
    callback: Callable[[int, nn.Module, History], Any] | None = None,
    grad: str = "auto",
    distributed: bool | None = None,
) -> History:
    """Train ``model`` in place on ``(X, y)`` for ``steps`` updates and return its :class:`History`.

    Parameters
    ----------
    model : a :class:`~ntkdr.models.TwoLayerReLU` (full tracking) or any ``nn.Module`` mapping
        ``(n, d)`` inputs to ``(n,)`` or ``(n, c)`` outputs (losses and times only).
    X, y : training inputs ``(n, d)`` and targets ``(n,)`` or ``(n, c)`` (numpy or torch); cast
        to the model's dtype and device.
    steps : number of parameter updates (``>= 0``).
    lr : ``None`` (``1 / lambda_max`` of the empirical NTK at init; Adam: ``1e-3``),
        ``"theory"`` (``lambda_0 / n^2``, Du et al. Thm 4.1) or a positive number.
    optimizer : ``"gd"`` (full batch), ``"sgd"`` (mini-batch, no momentum) or ``"adam"``.
    batch_size : mini-batch size for sgd / adam, ``1..n`` (default: full batch); gd accepts only
        ``None`` or ``n``.
    X_test, y_test : optional test set (both or neither).
    track_every : record the history every this many steps (and always at the first and last).
    ntk_every : relative NTK drift every this many steps and at the last step (``None`` or
        ``0``: never, the default -- each costs an ``n x n`` kernel and its top eigenvalue, and
        the one at step 0 needs the kernel at init even when only the last step is wanted).
    seed : seed of the mini-batch order (the model's weights come from the model's own seed).
    progress : tqdm bar on stderr (only when stderr is a terminal).
    checkpoint, checkpoint_every, resume : see the module docstring; ``checkpoint_every``
        defaults to ``max(1, steps // 10)``.  With ``resume=True`` and no file at ``checkpoint``
        training starts from scratch.
    callback : ``callback(step, model, history)`` after each recorded step; returning ``True``
        stops training there (``History.stopped_early``).
    grad : ``"auto"`` (closed form when applicable), ``"closed_form"`` or ``"autograd"``.
    distributed : data-parallel over the default ``torch.distributed`` process group (see the
        module docstring).  ``None``: when one is initialised with more than one rank;
        ``True``: require one; ``False``: train alone even inside a group.  Every rank must
        call ``fit`` with the same arguments and the same full ``(X, y)``.
    """
    # ---- validation
    dtype, device = _check_model(model)
    steps = check_int(steps, "steps", min_value=0, max_value=MAX_STEPS)
    optimizer = check_choice(optimizer, "optimizer", OPTIMIZERS)
    grad = check_choice(grad, "grad", GRAD_METHODS)
    track_every = check_int(track_every, "track_every", min_value=1)
    if ntk_every is not None:
        ntk_every = check_int(ntk_every, "ntk_every", min_value=0)
    seed = check_int(seed, "seed")
    if checkpoint_every is not None:
        checkpoint_every = check_int(checkpoint_every, "checkpoint_every", min_value=1)
    if resume and checkpoint is None:
        raise ValueError("resume=True needs a checkpoint path")
    if callback is not None and not callable(callback):
        raise ValueError(f"callback must be callable, got {type(callback).__name__}")
    if lr is not None and not isinstance(lr, str):
        if isinstance(lr, bool) or not isinstance(lr, Real):
            raise ValueError(f"lr must be a positive number, None or 'theory', got {lr!r}")
        check_real(lr, "lr", positive=True)
    elif isinstance(lr, str) and lr != "theory":
        raise ValueError(f"lr must be a positive number, None or 'theory', got {lr!r}")
    if distributed is not None and not isinstance(distributed, bool):
        raise ValueError(f"distributed must be None, True or False, got {distributed!r}")
    if distributed and not D.is_distributed():
        raise ValueError(
            "distributed=True needs an initialised torch.distributed process group "
            "(launch with torchrun, or call ntkdr.distributed.init_from_env / init_process_group first)"
        )
    use_dist = (
        D.is_distributed() and D.world_size() > 1
        if distributed is None
        else distributed and D.world_size() > 1
    )
    comm = _Comm(device) if use_dist else None
    root = comm is None or comm.rank == 0

    Xt, yt = _prepare_inputs(model, X, y)
    n = Xt.shape[0]
    if batch_size is None:
        batch_size = n
    else:
        batch_size = check_int(batch_size, "batch_size", min_value=1, max_value=n)
        if optimizer == "gd" and batch_size != n:
            raise ValueError(
                f"optimizer 'gd' is full-batch: batch_size must be None or n = {n}, got {batch_size} "
                "(use optimizer='sgd' for mini-batches)"
            )
    if (X_test is None) != (y_test is None):
        raise ValueError("give both X_test and y_test, or neither")
    Xs = ys = None
    if X_test is not None:
        Xs, ys = _prepare_inputs(model, X_test, y_test, "X_test", "y_test")

    two_layer = _is_two_layer(model)
    if two_layer:  # pre-activations, patterns and their copies: about 4 n x m arrays per pass
        check_memory(
            4 * batch_size * model.m * Xt.element_size(),
            f"training width m = {model.m} on {batch_size} rows",
            "use a smaller width or fewer rows",
            device,
        )
    if ntk_every is None:
        ntk_every = 0  # drift tracking costs n x n kernels and their top eigenvalues: opt-in
    ck = None
    ck_path = os.fspath(checkpoint) if checkpoint is not None else None
    if resume and os.path.exists(ck_path):
        ck = _load_checkpoint(ck_path, model)

    if comm is not None:  # a guard: the seeded inits agree already (the resumed ones too)
        comm.broadcast_params(model)

    # ---- initial state (the model is at its initialisation here, also when resuming)
    # (a copy of it only for a checkpoint file: nothing else reads it)
    init_state = (
        {k: v.detach().clone() for k, v in model.state_dict().items()}
        if ck_path is not None
        else {}
    )
    with torch.no_grad():
        if two_layer and not _sketch_trained(model):
            if comm is None:
                F0 = model.features(Xt)
                u0 = model.forward_features(F0)
            else:  # features and outputs of this rank's shard, assembled on every rank (exact)
                sl = comm.shard(n)
                rows = sl.stop > sl.start
                Fl = (
                    model.features(Xt[sl])
                    if rows
                    else torch.zeros(0, model.d_in, dtype=dtype, device=device)
                )
                F0 = comm.gather_rows(Fl, n, sl)
                u0 = comm.gather_rows(model.forward_features(F0[sl]), n, sl)
        else:
            F0 = None
            u0 = model(Xt)
    yt = _match_output_shape(u0, yt, "y")
    # the data's hash guards checkpoints and data-parallel ranks only (a full pass over X)
    fp = _fingerprint(Xt, yt) if (ck_path is not None or comm is not None) else ""
    if ys is not None:
        with torch.no_grad():
            us = model(Xs[:1])
        ys = _match_output_shape(us.expand(ys.shape[0], *us.shape[1:]), ys, "y_test")
    if comm is not None:
        comm.check_same(fp + (_fingerprint(Xs, ys) if Xs is not None else ""))

    # The NTK drift needs Theta(0) (on rank 0 only when data parallel: n x n kernels and their
    # eigenvalues are computed once there and the scalars broadcast).
    track_ntk = two_layer and (ntk_every is None or ntk_every > 0)
    if ck is not None:
        lr_value, lr_key, K0 = _resume_lr(ck, lr, optimizer)
    elif comm is not None and ((lr is None and optimizer != "adam") or isinstance(lr, str)):

        def lr_on_root():
            v, key, K = _resolve_lr(lr, optimizer, model, Xt, F0, n)
            return (v, key), K

        (lr_value, lr_key), K0 = comm.root_call(lr_on_root)
    else:
        lr_value, lr_key, K0 = _resolve_lr(lr, optimizer, model, Xt, F0, n)
    if not track_ntk:
        K0 = None
    elif K0 is None and root:
        K0 = _empirical_kernel(model, Xt, F0)
    K0_norm = _spectral_norm_sym(K0) if K0 is not None else _NAN

    trainer = _Trainer(model, Xt, yt, optimizer, batch_size, lr_value, seed, grad, F=F0, comm=comm)
    W0 = model.W.detach().clone() if two_layer else None
    sl = trainer.shard if comm is not None else slice(0, n)
    mask0 = None
    if two_layer:  # patterns at init of this rank's rows (all rows without data parallelism)
        with torch.no_grad():
            if trainer.F is not None:
                Fm = trainer.F[sl]
            elif sl.stop > sl.start:
                Fm = model.features(Xt[sl])
            else:
                Fm = torch.zeros(0, model.d_in, dtype=dtype, device=device)
            mask0 = InitPatterns(Fm, W0)

    hist = History(
        lr=float(lr_value),
        lr_rule=LR_RULES[lr_key],
        optimizer=optimizer,
        batch_size=int(batch_size),
        seed=seed,
        steps=steps,
        initial_outputs=u0.detach().cpu().tolist(),
        grad=trainer.grad_method,
        n_train=n,
        dtype=str(dtype).replace("torch.", ""),
    )
    config = {
        "optimizer": optimizer,
        "batch_size": int(batch_size),
        "seed": seed,
        "n": n,
        "track_every": track_every,
        "ntk_every": -1 if ntk_every is None else ntk_every,
        "grad": trainer.grad_method,
        "data": fp,
        # informational: resuming with another world size is allowed (equal up to round-off)
        "world_size": 1 if comm is None else comm.world,
    }
    start = 0
    wall = 0.0
    if ck is not None:
        _check_resume_config(ck, config, steps, ck_path)
        trainer.load_state(ck)
        torch.set_rng_state(ck["torch_rng"].cpu())
        if ck.get("cuda_rng") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all([s.cpu() for s in ck["cuda_rng"]])
        start = int(ck["step"])
        old = History.from_dict(ck["history"])
        hist = _truncate_history(old, start)
        hist.steps = steps
        hist.stopped_early = False
        wall = float(ck["wall"])

    if checkpoint_every is None:
        checkpoint_every = max(1, steps // 10)

    checkpointer = Checkpointer(
        ck_path if root else None,  # replicated state: rank 0 writes it
        trainer,
        init_state=init_state,
        config=config,
        cuda=device.type == "cuda",
    )

    tracker = Tracker(
        hist,
        trainer,
        Xs,
        ys,
        W0=W0,
        K0=K0,
        K0_norm=K0_norm,
        track_ntk=track_ntk,
        ntk_every=ntk_every,
        steps=steps,
        callback=callback,
    )

    bar = None
    if progress and root and steps > start and sys.stderr.isatty():
        from tqdm.auto import tqdm

        bar = tqdm(
            total=steps, initial=start, desc=f"fit ({optimizer})", file=sys.stderr, leave=False
        )
    tracker.bar = bar

    try:
        t = start
        stop = False
        # full-batch closed form: the step's own forward pass gives the loss of state t
        fused = trainer.closed_form and optimizer == "gd"
        while True:
            track = t == steps or t % track_every == 0
            if t == steps:  # the final model is always recorded
                loss, flips = trainer.train_eval(mask0)
                tracker.record(t, loss, flips, wall)
                break
            if track and not fused:
                loss, flips = trainer.train_eval(mask0)
                if tracker.record(t, loss, flips, wall):
                    stop = True
                    break
            idx = trainer.next_batch()  # after a possible stop: the batch order state stays at t
            t0 = time.perf_counter()
            bloss, bflips, t_track = trainer.compute_grads(
                idx, mask0 if (track and fused) else None, stats=track and fused
            )
            dt = time.perf_counter() - t0 - t_track
            if track and fused:
                # full-batch closed form: the step's forward pass is the training loss of state t
                if tracker.record(t, bloss, bflips, wall):
                    trainer.opt.zero_grad(set_to_none=True)  # the step is not taken
                    stop = True
                    break
            t0 = time.perf_counter()
            trainer.apply()
            wall += dt + (time.perf_counter() - t0)
            t += 1
            if bar is not None:
                bar.update(1)
            if ck_path is not None and (t % checkpoint_every == 0 or t == steps):
                checkpointer.save(t, hist, wall)
        if stop:
            hist.stopped_early = True
            if ck_path is not None:
                checkpointer.save(t, hist, wall)
        if comm is not None:  # rank 0's last checkpoint is on disk before any rank returns
            D.barrier()
    finally:
        if bar is not None:
            bar.close()

    done = hist.step[-1] if hist.step else 0
    hist.seconds_per_step = wall / done if done > 0 else _NAN
    return hist
