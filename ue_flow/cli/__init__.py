"""The ``ue-flow`` command line."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from .errors import BrokerError, ConfigError, ConfigProblem, PayloadError
from .examples import check_examples, read_payload_file
from .loader import load_config

#: The command did what was asked and everything checked was valid.
EXIT_OK = 0

#: Something checked was invalid, or the event could not be queued.
EXIT_INVALID = 1

#: The command line itself was wrong (argparse also exits with 2).
EXIT_USAGE = 2


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line and return its exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE

    status: int = args.run(args)
    return status


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ue-flow",
        description="Deliver Unified Ecommerce events to integrated systems as webhooks.",
    )
    parser.set_defaults(command=None)
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")

    validate = commands.add_parser("validate", help="check the YAML, every schema and every example")
    _add_config_option(validate)
    validate.add_argument(
        "--format", choices=("text", "json"), default="text", help="output format (default text)"
    )
    validate.set_defaults(command="validate", run=_validate)

    check = commands.add_parser("check", help="validate one payload file against its event")
    _add_payload_arguments(check)
    check.set_defaults(command="check", run=_check)

    emit = commands.add_parser("emit", help="queue a payload file for delivery")
    _add_payload_arguments(emit)
    emit.add_argument("--system", action="append", dest="systems", metavar="SLUG",
                      help="deliver only to this system; repeat for several")
    emit.set_defaults(command="emit", run=_emit)

    demo = commands.add_parser("demo", help="run every example through an in-process broker, worker and receivers")
    _add_config_option(demo)
    demo.set_defaults(command="demo", run=_demo)
    return parser


def _add_config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", metavar="DIR", help="directory holding events.yaml and systems.yaml "
        "(default: $UE_FLOW_CONFIG, else ./config)"
    )


def _add_payload_arguments(parser: argparse.ArgumentParser) -> None:
    _add_config_option(parser)
    parser.add_argument("event", metavar="EVENT", help="event name, such as post_sale")
    parser.add_argument("file", metavar="FILE", help="payload file with the keys user and data; - reads stdin")


def _print_problems(problems: Sequence[ConfigProblem]) -> None:
    for problem in problems:
        print(problem, file=sys.stderr)


def _validate(args: argparse.Namespace) -> int:
    problems: list[ConfigProblem] = []
    try:
        loaded = load_config(args.config)
        problems.extend(check_examples(loaded))
    except ConfigError as error:
        problems.extend(error.problems)

    if args.format == "json":
        report = {
            "valid": not problems,
            "errors": [
                {"file": str(p.path), "line": p.line, "column": p.column, "message": p.message}
                for p in problems
            ],
        }
        print(json.dumps(report, indent=2))
    else:
        _print_problems(problems)
        if not problems:
            print(f"ok: {loaded.config.directory} is valid")
        else:
            print(f"{len(problems)} error(s) found", file=sys.stderr)
    return EXIT_INVALID if problems else EXIT_OK


def _read_payload(args: argparse.Namespace) -> tuple[Path, dict[str, object]]:
    if args.file == "-":
        payload_file = read_payload_file(Path("<stdin>"), sys.stdin.read())
    else:
        payload_file = read_payload_file(Path(args.file))
    return payload_file.path, payload_file.payload


def _check(args: argparse.Namespace) -> int:
    from .engine import validate_event

    try:
        loaded = load_config(args.config)
        path, payload = _read_payload(args)
        validate_event(loaded, args.event, user=payload.get("user", {}), data=payload.get("data", {}))
    except ConfigError as error:
        _print_problems(error.problems)
        return EXIT_INVALID
    except PayloadError as error:
        print(f"{args.file}: error: {error}", file=sys.stderr)
        return EXIT_INVALID

    print(f"ok: {path} is a valid {args.event} payload")
    return EXIT_OK


def _emit(args: argparse.Namespace) -> int:
    from .broker import create_broker
    from .engine import Engine

    try:
        loaded = load_config(args.config)
        _, payload = _read_payload(args)
        engine = Engine(loaded, create_broker())
        event_id = engine.emit(
            args.event, user=payload.get("user", {}), data=payload.get("data", {}),
            systems=args.systems,
        )
    except ConfigError as error:
        _print_problems(error.problems)
        return EXIT_INVALID
    except PayloadError as error:
        print(f"{args.file}: error: {error}", file=sys.stderr)
        return EXIT_INVALID
    except BrokerError as error:
        print(f"error: {error}; nothing was queued, so running the command again is safe",
              file=sys.stderr)
        return EXIT_INVALID

    print(event_id)
    return EXIT_OK


def _demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    try:
        return run_demo(args.config)
    except ConfigError as error:
        _print_problems(error.problems)
        return EXIT_INVALID


if __name__ == "__main__":
    sys.exit(main())
