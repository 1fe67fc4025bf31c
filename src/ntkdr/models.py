"""The network classes, at their original import path (they live in :mod:`ntkdr.nets.models`)."""

from __future__ import annotations

from ntkdr.nets.models import *  # noqa: F403
from ntkdr.nets.models import __all__ as __all__
