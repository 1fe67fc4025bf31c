"""Training (``fit``, ``History``), at its original import path (it lives in :mod:`ntkdr.training`)."""

from __future__ import annotations

from ntkdr.training import *  # noqa: F403
from ntkdr.training import __all__ as __all__
