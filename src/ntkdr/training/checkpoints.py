"""The record of a training run and its checkpoint files (used by :func:`ntkdr.training.fit`).

:class:`History` holds what ``fit`` measured (losses, test metrics, weight movement, pattern
flips, NTK drift, times) and converts to / from JSON (NaN <-> ``None``; schema
:data:`HISTORY_SCHEMA`).  Checkpoints (format :data:`CHECKPOINT_FORMAT`) are written atomically
(temporary file in the same folder + ``os.replace``), read back with ``weights_only=True`` and
checked against the run that resumes from them; every problem raises ``ValueError`` naming the
file.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import torch
from torch import nn

from ntkdr.io import atomic_path

__all__ = ["History", "HISTORY_SCHEMA", "CHECKPOINT_FORMAT"]

CHECKPOINT_FORMAT = "ntkdr.train.checkpoint/1"
HISTORY_SCHEMA = "ntkdr.train.History/1"

_NAN = float("nan")


@dataclass
class History:
    """What :func:`fit` measured.  Per-step lists are aligned with ``step``.

    ``train_loss`` is ``1/2 sum_i ||y_i - f(x_i)||^2`` on the full training set, for the model
    *before* the update of that step (``step[0] = 0`` is the initial model, the last entry the
    final one).  ``test_loss`` uses the same summed formula on the test set (divide by the test
    size for the mean); ``test_accuracy`` is the sign agreement for +-1 labels, the argmax
    agreement for one-hot labels, and empty for other targets.  The weight / pattern / kernel
    lists are filled for :class:`~ntkdr.models.TwoLayerReLU` only (empty otherwise);
    ``ntk_drift`` is NaN at steps where it was not computed.  ``wall_time`` is the cumulative
    time spent in training steps (tracking excluded), ``seconds_per_step`` its mean per step.
    ``initial_outputs`` are the outputs ``u0`` on the training set at initialisation (what
    :func:`ntkdr.theory.predicted_trajectory` needs as ``u0``).
    """

    step: list = field(default_factory=list)
    train_loss: list = field(default_factory=list)
    test_loss: list = field(default_factory=list)
    test_accuracy: list = field(default_factory=list)
    weight_change_fro: list = field(default_factory=list)
    weight_change_max_row: list = field(default_factory=list)
    pattern_flip_fraction: list = field(default_factory=list)
    ntk_drift: list = field(default_factory=list)
    wall_time: list = field(default_factory=list)
    lr: float = _NAN
    lr_rule: str = ""
    optimizer: str = "gd"
    batch_size: int = 0
    seed: int = 0
    steps: int = 0
    seconds_per_step: float = _NAN
    initial_outputs: list = field(default_factory=list)
    grad: str = ""
    n_train: int = 0
    dtype: str = ""
    stopped_early: bool = False

    _LISTS = (
        "step",
        "train_loss",
        "test_loss",
        "test_accuracy",
        "weight_change_fro",
        "weight_change_max_row",
        "pattern_flip_fraction",
        "ntk_drift",
        "wall_time",
    )

    def __len__(self) -> int:
        return len(self.step)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (NaN becomes ``None``); inverse of :meth:`from_dict`."""
        out: dict[str, Any] = {"schema": HISTORY_SCHEMA}
        for f in fields(self):
            out[f.name] = _jsonable(getattr(self, f.name))
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> History:
        if not isinstance(data, dict):
            raise ValueError(f"History.from_dict needs a dict, got {type(data).__name__}")
        schema = data.get("schema", HISTORY_SCHEMA)
        if schema != HISTORY_SCHEMA:
            raise ValueError(f"unsupported History schema {schema!r}; expected {HISTORY_SCHEMA!r}")
        names = {f.name for f in fields(cls)}
        kwargs = {}
        for key, value in data.items():
            if key == "schema":
                continue
            if key not in names:
                raise ValueError(f"unknown History field {key!r}")
            kwargs[key] = _from_json(value)
        h = cls(**kwargs)
        h.step = [int(s) for s in h.step]
        return h


def _jsonable(v: Any) -> Any:
    if isinstance(v, float):
        return None if math.isnan(v) else v
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, (np.floating, np.integer)):
        return _jsonable(v.item())
    return v


def _from_json(v: Any) -> Any:
    if v is None:
        return _NAN
    if isinstance(v, list):
        return [_from_json(x) for x in v]
    return v


def _truncate_history(h: History, upto: int) -> History:
    """Copy of ``h`` keeping the entries of steps ``< upto``."""
    keep = sum(1 for s in h.step if s < upto)
    out = copy.copy(h)
    for name in History._LISTS:
        setattr(out, name, list(getattr(h, name)[:keep]))
    return out


# ============================================================================ checkpoint files
def _atomic_save(obj: Any, path: str) -> None:
    with atomic_path(path, fsync=True, makedirs=True) as tmp:
        torch.save(obj, tmp)


class Checkpointer:
    """Writes the checkpoint of one run (nothing when ``path`` is None, e.g. on ranks > 0).

    A checkpoint holds the trainer's state (model, optimizer, batch order), the history up to
    the step, the RNG states, the model at initialisation and the run's ``config`` (what a
    resume must match), written atomically (:mod:`ntkdr.io`).
    """

    def __init__(
        self, path: str | None, trainer: Any, *, init_state: dict, config: dict, cuda: bool
    ) -> None:
        self.path, self.trainer = path, trainer
        self.init_state, self.config, self.cuda = init_state, config, cuda

    def save(self, step_done: int, hist: History, wall: float) -> None:
        if self.path is None:
            return
        state = self.trainer.state()
        state.update(
            format=CHECKPOINT_FORMAT,
            step=step_done,
            history=_truncate_history(hist, step_done).to_dict(),
            torch_rng=torch.get_rng_state(),
            init_model=self.init_state,
            config=self.config,
            wall=wall,
            cuda_rng=torch.cuda.get_rng_state_all() if self.cuda else None,
        )
        _atomic_save(state, self.path)


def _load_checkpoint(ck_path: str, model: nn.Module) -> dict:
    """Read a checkpoint written by ``fit`` and restore the model's *initial* weights from it."""
    try:
        # CPU first: generator / RNG states must stay on the CPU; load_state_dict moves the rest
        ck = torch.load(ck_path, map_location="cpu", weights_only=True)
    except Exception:  # torch's message advises weights_only=False: never pass that on
        raise ValueError(
            f"checkpoint {ck_path!r} is corrupt or not an ntkdr training checkpoint "
            "(it cannot be read as one); delete it to start afresh"
        ) from None
    if not isinstance(ck, dict) or ck.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{ck_path!r} is not an ntkdr training checkpoint ({CHECKPOINT_FORMAT})")
    saved = ck.get("init_model")
    if not isinstance(saved, dict):
        raise ValueError(f"checkpoint {ck_path!r} is corrupt: it holds no initial model")
    _check_same_architecture(saved, model, ck_path)
    try:  # restore the initial weights first: W(0) and Theta(0) refer to them
        model.load_state_dict(saved)
    except (RuntimeError, KeyError) as exc:
        raise ValueError(f"checkpoint {ck_path!r} does not match this model: {exc}") from exc
    return ck


def _check_same_architecture(saved: dict, model: nn.Module, path: str) -> None:
    """Name the setting that differs between the checkpoint's model and ``model``."""
    here = model.state_dict()
    missing = sorted(set(here) - set(saved))
    extra = sorted(set(saved) - set(here))
    if missing or extra:
        what = []
        if "S" in missing or "S" in extra:
            what.append(
                "the checkpoint's network is factorized (W = U S) and this one is dense"
                if "S" in extra
                else "the checkpoint's network is dense and this one is factorized (W = U S)"
            )
        if missing and not what:
            what.append(f"this model has parameters {missing} that the checkpoint lacks")
        if extra and not what:
            what.append(f"the checkpoint has parameters {extra} that this model lacks")
        raise ValueError(f"checkpoint {path!r} holds a different model: {'; '.join(what)}")
    for key, t in here.items():
        s = saved[key]
        if not isinstance(s, torch.Tensor) or tuple(s.shape) != tuple(t.shape):
            shape = tuple(s.shape) if isinstance(s, torch.Tensor) else type(s).__name__
            hint = _setting_hint(key, shape, tuple(t.shape))
            raise ValueError(
                f"checkpoint {path!r} holds a different model: {key} has shape {shape} there "
                f"and {tuple(t.shape)} here{hint}"
            )


def _setting_hint(key: str, saved: Any, here: tuple) -> str:
    """The TwoLayerReLU setting behind a shape mismatch: W is m x d_in, a is (m,) or (m, c)."""
    if not isinstance(saved, tuple) or len(saved) != len(here) or key not in ("W", "a"):
        return ""
    if saved[0] != here[0]:
        return f" (width {saved[0]} in the checkpoint, {here[0]} asked)"
    if key == "W":
        return f" (input / sketch dimension {saved[1]} in the checkpoint, {here[1]} asked)"
    return f" (output dimension {saved[1]} in the checkpoint, {here[1]} asked)"


def _check_resume_config(ck: dict, config: dict, steps: int, path: str) -> None:
    saved = ck["config"]
    for key in ("optimizer", "batch_size", "seed", "n", "track_every", "ntk_every", "grad"):
        if saved[key] != config[key]:
            raise ValueError(
                f"checkpoint {path!r} was written with {key} = {saved[key]!r}, but this run has {key} = {config[key]!r}"
            )
    if saved["data"] != config["data"]:
        raise ValueError(f"checkpoint {path!r} was written for different training data (X, y)")
    if int(ck["step"]) > steps:
        raise ValueError(
            f"checkpoint {path!r} is at step {int(ck['step'])}, beyond steps = {steps}"
        )
