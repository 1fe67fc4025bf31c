"""Training of the networks: the step loop (:func:`fit`), what is recorded (:class:`History`), checkpoints, step sizes, gradients and collectives."""

from __future__ import annotations

from ntkdr.training.checkpoints import CHECKPOINT_FORMAT, History
from ntkdr.training.loop import OPTIMIZERS, fit, time_gd_step
from ntkdr.training.stepsize import LR_RULES

__all__ = [
    "History",
    "fit",
    "train_network",
    "time_gd_step",
    "OPTIMIZERS",
    "LR_RULES",
    "CHECKPOINT_FORMAT",
]

#: :func:`fit` under a name that says what it fits (``ntkdr.train_network``).
train_network = fit
