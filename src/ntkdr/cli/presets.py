"""Presets of the command line: the ``--quick`` run and how parsed arguments become a :class:`~ntkdr.experiment.RunConfig`."""

from __future__ import annotations

import argparse
from dataclasses import fields
from typing import Any

from ntkdr.experiment import RunConfig

__all__ = ["QUICK", "QUICK_MNIST", "run_config"]

#: What ``--quick`` shrinks (only where the user did not set a value): a seconds-long run.
QUICK: dict[str, Any] = dict(width=256, steps=30, ks=(16, 64), seeds=2, inference_repeats=2)
#: ... and, on the bundled MNIST subset, the split sizes.
QUICK_MNIST: dict[str, Any] = dict(n_train=300, n_test=200)


def run_config(args: argparse.Namespace) -> RunConfig:
    """A validated :class:`RunConfig` from the arguments of ``ntkdr run`` / ``certify``."""
    given = {
        f.name: getattr(args, f.name)
        for f in fields(RunConfig)
        if getattr(args, f.name, None) is not None
    }
    cfg = RunConfig(**given)
    if cfg.quick:
        quick = dict(QUICK)
        if cfg.data is None and cfg.dataset == "mnist":
            quick.update(QUICK_MNIST)
        for key, value in quick.items():
            if key not in given:
                setattr(cfg, key, value)
    cfg.sketches = tuple(cfg.sketches)
    cfg.ks = tuple(cfg.ks)
    cfg.validate()
    return cfg
