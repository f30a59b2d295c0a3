"""The command-line interface."""

from effnet.cli.main import main

__all__ = ["main"]
