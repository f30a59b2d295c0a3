"""The ``effnet`` command: one entry point, one subcommand per task."""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
import threading

from effnet.cli.args import Parser
from effnet.errors import UserError

#: Modules that add subcommands, each with a ``register(subparsers)`` function.
COMMAND_MODULES = [
    "effnet.cli.describe_cmds",
    "effnet.cli.search_cmds",
    "effnet.cli.nas_cmds",
    "effnet.cli.weights_cmds",
    "effnet.cli.train_cmds",
]


def build_parser() -> Parser:
    parser = Parser(prog="effnet", description="EfficientNet and compound model scaling.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def flag_message(err: UserError, command: argparse.ArgumentParser | None) -> str:
    """The error's message with its field (a library argument, e.g. ``grid_step``) written as the
    command's flag for it (``--grid-step``), where the command has one."""
    text = str(err)
    if err.field is None or command is None or not text.startswith(err.field):
        return text
    for action in command._actions:
        if action.dest == err.field and action.option_strings:
            flag = next((s for s in action.option_strings if s.startswith("--")), action.option_strings[0])
            return flag + text[len(err.field) :]
    return text


def _subcommand(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser | None:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action.choices.get(name)
    return None


def _forgiving_output() -> None:
    """Text the terminal's encoding cannot show (a non-ASCII file name under ``PYTHONIOENCODING=ascii``, a
    name that is not valid UTF-8) is printed as backslash escapes instead of failing the command."""
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if callable(reconfigure) and getattr(stream, "errors", None) == "strict":
            try:
                reconfigure(errors="backslashreplace")
            except (ValueError, OSError):  # a stream that cannot change: left as it is
                pass


def _interruptible() -> None:
    """SIGINT interrupts (exit 130) even where it was inherited ignored, as by a job a shell starts with
    ``&``: ``kill -INT`` stops effnet as Ctrl-C does, after the file being written."""
    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; user mistakes print one line on stderr and return 2, an interrupt returns 130."""
    _forgiving_output()
    _interruptible()
    try:
        parser = build_parser()
    except KeyboardInterrupt:  # while the commands are imported
        print("effnet: interrupted", file=sys.stderr)
        return 130
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except UserError as err:
        print(f"effnet {args.command}: error: {flag_message(err, _subcommand(parser, args.command))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"effnet {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
