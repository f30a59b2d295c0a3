"""Moved to :mod:`effnet.data`; its names stay importable from here for one release."""

from effnet.data import *  # noqa: F403
from effnet.data import __all__  # noqa: F401
