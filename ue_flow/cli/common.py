"""Exit statuses and helpers shared by the command modules."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import ConfigProblem
from ..examples import read_payload_file

#: The command did what was asked and everything checked was valid.
EXIT_OK = 0

#: Something checked was invalid, or the command could not do its work.
EXIT_INVALID = 1

#: The command line itself was wrong (argparse also exits with 2).
EXIT_USAGE = 2

#: The object of ``add_subparsers``, to which each module adds its commands.
Commands = Any


def add_config_option(parser: argparse.ArgumentParser) -> None:
    """Add ``--config DIR``."""
    parser.add_argument(
        "--config",
        metavar="DIR",
        help=(
            "directory holding events.yaml and systems.yaml "
            "(default: $UE_FLOW_CONFIG, else ./config)"
        ),
    )


def add_payload_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--config``, ``EVENT`` and ``FILE``."""
    add_config_option(parser)
    parser.add_argument("event", metavar="EVENT", help="event name, such as post_sale")
    parser.add_argument(
        "file", metavar="FILE", help="payload file with the keys user and data; - reads stdin"
    )


def print_problems(problems: Sequence[ConfigProblem]) -> None:
    """Print each problem as ``file:line:col: error: message`` on stderr."""
    for problem in problems:
        print(problem, file=sys.stderr)


def read_payload(args: argparse.Namespace) -> tuple[Path, dict[str, Any]]:
    """Read the payload file named by ``args.file``, or stdin for ``-``."""
    if args.file == "-":
        payload_file = read_payload_file(Path("<stdin>"), sys.stdin.read())
    else:
        payload_file = read_payload_file(Path(args.file))
    payload: dict[str, Any] = payload_file.payload
    return payload_file.path, payload
