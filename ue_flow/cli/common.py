"""Exit statuses and helpers shared by the command modules."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from ..config import Config
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


def positive_int(text: str) -> int:
    """Parse an argparse value that must be an integer of 1 or more."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        message = f"invalid value {text!r}; expected a positive integer, such as 50"
        raise argparse.ArgumentTypeError(message)
    return value


def plural(count: int, singular: str, plural_form: str) -> str:
    """Return ``count`` followed by the singular or plural noun, such as ``1 error``."""
    return f"{count} {singular if count == 1 else plural_form}"


def unknown_name_problem(config: Config, event: str | None, systems: Iterable[str]) -> str | None:
    """Return why ``event`` or one of ``systems`` is not in ``config``, or None when all are.

    ``event`` None skips the event check. The message names the bad value
    and the valid ones, for a usage error.
    """
    if event is not None and event not in config.events:
        return f"unknown event {event!r}; valid events: {', '.join(config.events)}"
    for slug in systems:
        if slug not in config.systems:
            return f"unknown system {slug!r}; valid systems: {', '.join(config.systems)}"
    return None


def usage_error(message: str) -> int:
    """Print ``error: message`` on stderr and return EXIT_USAGE."""
    print(f"error: {message}", file=sys.stderr)
    return EXIT_USAGE


def print_problems(problems: Sequence[ConfigProblem]) -> None:
    """Print each problem on stderr as ``file:line:col: error: message``.

    A problem of unknown position prints as ``file: error: message``.
    """
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
