"""The ``torch.distributed`` helpers, at their original import path (they live in :mod:`ntkdr.training.distributed`)."""

from __future__ import annotations

from ntkdr.training.distributed import *  # noqa: F403
from ntkdr.training.distributed import __all__ as __all__
