"""The empirical (finite-width) NTK, at its original import path (it lives in :mod:`ntkdr.nets.empirical`)."""

from __future__ import annotations

from ntkdr.nets.empirical import *  # noqa: F403
from ntkdr.nets.empirical import __all__ as __all__
