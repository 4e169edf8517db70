"""Commands that send events: emit, demo."""

from __future__ import annotations

import argparse
import sys

from ..errors import BrokerError, ConfigError, PayloadError
from .common import (
    EXIT_INVALID,
    EXIT_OK,
    Commands,
    add_config_option,
    add_payload_arguments,
    print_problems,
    read_payload,
    unknown_name_problem,
    usage_error,
)


def register(commands: Commands) -> None:
    """Add the emit and demo commands."""
    emit = commands.add_parser("emit", help="queue a payload file for delivery")
    add_payload_arguments(emit)
    emit.add_argument(
        "--system",
        action="append",
        dest="systems",
        metavar="SLUG",
        help="deliver only to this system; repeat for several",
    )
    emit.add_argument(
        "--idempotency-key",
        metavar="KEY",
        help="queue the event at most once for KEY in 24 hours, and print the first event id",
    )
    emit.set_defaults(command="emit", run=run_emit)

    demo = commands.add_parser(
        "demo", help="run every example through an in-process broker, worker and receivers"
    )
    add_config_option(demo)
    demo.set_defaults(command="demo", run=run_demo)


def run_emit(args: argparse.Namespace) -> int:
    """Queue one payload file on the broker named by UE_FLOW_BROKER_URL."""
    from ..engine import Engine
    from ..logs import configure_logging

    # Unconfigured structlog prints every level to standard output, which
    # must carry only the event id.
    configure_logging()
    try:
        engine = Engine.from_environment(args.config)
        unknown = unknown_name_problem(engine.config, args.event, args.systems or ())
        if unknown is not None:
            return usage_error(unknown)

        _, payload = read_payload(args)
        event_id = engine.emit(
            args.event,
            user=payload.get("user", {}),
            data=payload.get("data", {}),
            systems=args.systems,
            idempotency_key=args.idempotency_key,
        )
    except ConfigError as error:
        print_problems(error.problems)
        return EXIT_INVALID
    except PayloadError as error:
        print(f"{args.file}: error: {error}", file=sys.stderr)
        return EXIT_INVALID
    except BrokerError as error:
        # The broker's description may end with a full stop of its own.
        reason = str(error).rstrip(".")
        print(f"error: {reason}; {_retry_advice(error, args.idempotency_key)}", file=sys.stderr)
        return EXIT_INVALID

    print(event_id)
    return EXIT_OK


def _retry_advice(error: BrokerError, idempotency_key: str | None) -> str:
    if not error.maybe_queued:
        return "nothing was queued, so running the command again is safe"
    if idempotency_key is not None:
        return (
            "the connection broke while the broker was taking the event, so it may be "
            "queued; running the command again with the same --idempotency-key queues it "
            "only if the first run did not, under the same event id"
        )
    return (
        "the connection broke while the broker was taking the event, so it may be queued; "
        "running the command again may deliver it twice, under two event ids, unless "
        "both runs pass the same --idempotency-key"
    )


def run_demo(args: argparse.Namespace) -> int:
    """Run the in-process demo."""
    from ..demo import run_demo as run

    try:
        return run(args.config)
    except ConfigError as error:
        print_problems(error.problems)
        return EXIT_INVALID
