"""Command-line entry point: lists the subcommands of `sertune.commands` and dispatches to them.

A command NAME is the module `sertune/commands/NAME.py`: its docstring is the command's description,
`register(parser)` adds its options and sets `func` to the callable that runs it, and
`sertune.commands.SUMMARIES` holds its one-line help. Only the command being run is imported, and
it imports torch, transformers, sklearn or matplotlib only when it runs, so that `sertune --help`,
`sertune COMMAND --help` and `sertune --version` start fast. This file has no logic of its own.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from sertune import __version__
from sertune.commands import SUMMARIES
from sertune.commands._help import CommandParser
from sertune.errors import SertuneError

TYPE_CHECKING = False  # see sertune.commands._help: typing is not imported at start-up
if TYPE_CHECKING:
    from collections.abc import Iterable


def build_parser(commands: Iterable[str] | None = None) -> argparse.ArgumentParser:
    """The `sertune` parser with every subcommand; those in `commands` (default: all) get their full parser.

    The others are listed with their one-line help only, so that their modules are not imported.
    """
    parser = CommandParser(
        prog="sertune",
        description="Parameter-efficient fine-tuning of speech encoders for speech emotion recognition.",
    )
    parser.add_argument("--version", action="version", version=f"sertune {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    full = set(SUMMARIES if commands is None else commands)
    for name, summary in SUMMARIES.items():
        if name in full:
            module = importlib.import_module(f"sertune.commands.{name}")
            module.register(subparsers.add_parser(name, help=summary, description=module.__doc__))
        else:
            subparsers.add_parser(name, help=summary)
    return parser


def main(argv: list[str] | None = None) -> None:
    """Run the command line; user errors print one clear message and exit with status 2."""
    argv = sys.argv[1:] if argv is None else argv
    # The top-level parser takes no option with a value, so the first other word names the command.
    command = next((word for word in argv if not word.startswith("-")), None)
    parser = build_parser([command] if command else [])
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        sys.exit(0)
    try:
        status = args.func(args)
    except SertuneError as error:
        print(f"sertune {args.command}: error: {error}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    sys.exit(status or 0)
