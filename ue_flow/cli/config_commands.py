"""Commands that check the configuration and payloads: validate, check."""

from __future__ import annotations

import argparse
import json
import sys

from ..errors import ConfigError, ConfigProblem, PayloadError
from ..examples import check_examples
from ..loader import load_config
from .common import (
    EXIT_INVALID,
    EXIT_OK,
    Commands,
    add_config_option,
    add_payload_arguments,
    plural,
    print_problems,
    read_payload,
    unknown_name_problem,
    usage_error,
)


def register(commands: Commands) -> None:
    """Add the validate and check commands."""
    validate = commands.add_parser(
        "validate", help="check the YAML, every schema and every example"
    )
    add_config_option(validate)
    validate.add_argument(
        "--format", choices=("text", "json"), default="text", help="output format (default text)"
    )
    validate.set_defaults(command="validate", run=run_validate)

    check = commands.add_parser("check", help="validate one payload file against its event")
    add_payload_arguments(check)
    check.set_defaults(command="check", run=run_check)


def run_validate(args: argparse.Namespace) -> int:
    """Validate the configuration directory and print every problem."""
    problems: list[ConfigProblem] = []
    directory = None
    try:
        loaded = load_config(args.config)
        directory = loaded.config.directory
        problems.extend(check_examples(loaded))
    except ConfigError as error:
        problems.extend(error.problems)
        if error.partial is not None:
            problems.extend(check_examples(error.partial))

    if args.format == "json":
        report = {
            "valid": not problems,
            "errors": [
                {"file": str(p.path), "line": p.line, "column": p.column, "message": p.message}
                for p in problems
            ],
        }
        print(json.dumps(report, indent=2))
    elif problems:
        print_problems(problems)
        print(f"{plural(len(problems), 'error', 'errors')} found", file=sys.stderr)
    else:
        print(f"ok: {directory} is valid")
    return EXIT_INVALID if problems else EXIT_OK


def run_check(args: argparse.Namespace) -> int:
    """Validate one payload file against its event."""
    from ..engine import validate_event

    try:
        loaded = load_config(args.config)
        unknown = unknown_name_problem(loaded.config, args.event, ())
        if unknown is not None:
            return usage_error(unknown)

        path, payload = read_payload(args)
        validate_event(
            loaded, args.event, user=payload.get("user", {}), data=payload.get("data", {})
        )
    except ConfigError as error:
        print_problems(error.problems)
        return EXIT_INVALID
    except PayloadError as error:
        print(f"{args.file}: error: {error}", file=sys.stderr)
        return EXIT_INVALID

    print(f"ok: {path} is a valid {args.event} payload")
    return EXIT_OK
