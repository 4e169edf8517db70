"""The ``ue-flow`` command line.

Each module of this package adds a family of commands with ``register``.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from . import authoring_commands, config_commands, event_commands, operate_commands
from .common import EXIT_OK, EXIT_USAGE

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line and return its exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE

    try:
        status: int = args.run(args)
    except BrokenPipeError:
        # The reader of the output went away, as `| head` does. Standard
        # output goes to /dev/null so that flushing it at exit cannot fail
        # again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK
    return status


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ue-flow",
        description="Deliver Unified Ecommerce events to integrated systems as webhooks.",
    )
    parser.set_defaults(command=None)
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")
    for module in (config_commands, event_commands, operate_commands, authoring_commands):
        module.register(commands)
    return parser


if __name__ == "__main__":
    sys.exit(main())
