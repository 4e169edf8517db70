"""Commands for operators: deliveries, dead letters, replays and system health."""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import sys
import time
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

import redis
from dramatiq.errors import BrokerError as DramatiqBrokerError

from ..actors import send_delivery
from ..broker import count_queued, describe_broker_error
from ..config import parse_duration
from ..engine import Engine
from ..errors import BrokerError, ConfigError
from ..queues import delivery_queue
from ..sending import DISABLED_REASON
from ..state.attempts import DELIVERED, FAILED, PENDING
from ..state.dead_letters import DeadLetter
from .common import (
    EXIT_INVALID,
    EXIT_OK,
    EXIT_USAGE,
    Commands,
    add_config_option,
    plural,
    positive_int,
    print_problems,
    unknown_name_problem,
    usage_error,
)


def register(commands: Commands) -> None:
    """Add deliveries, redeliver, dead-letters, replay and systems."""
    deliveries = commands.add_parser("deliveries", help="list recent deliveries and their attempts")
    add_config_option(deliveries)
    deliveries.add_argument("--system", metavar="SLUG", help="only this system")
    deliveries.add_argument(
        "--status",
        choices=(PENDING, DELIVERED, FAILED),
        help=(
            "only this status: pending (waiting for an attempt or a retry), "
            "delivered (a 2xx response), failed (gave up, kept as a dead letter)"
        ),
    )
    deliveries.add_argument("--event", metavar="ID", help="only this event id, with every attempt")
    deliveries.add_argument(
        "--limit", type=positive_int, default=50, metavar="N", help="at most N (default 50)"
    )
    deliveries.add_argument("--json", action="store_true", help="print JSON lines")
    deliveries.set_defaults(command="deliveries", run=run_deliveries)

    redeliver = commands.add_parser("redeliver", help="send one event to one system again")
    add_config_option(redeliver)
    redeliver.add_argument("event_id", metavar="EVENT_ID")
    redeliver.add_argument("--system", metavar="SLUG", required=True)
    redeliver.set_defaults(command="redeliver", run=run_redeliver)

    dead = commands.add_parser("dead-letters", help="list deliveries that stopped retrying")
    _add_selection(dead)
    dead.add_argument("--json", action="store_true", help="print JSON lines")
    dead.set_defaults(command="dead-letters", run=run_dead_letters)

    replay = commands.add_parser(
        "replay", help="queue dead letters again, with the same webhook-id"
    )
    _add_selection(replay)
    replay.add_argument("--all", action="store_true", help="replay every dead letter")
    replay.set_defaults(command="replay", run=run_replay)

    systems = commands.add_parser(
        "systems", help="show each system's health, or enable or disable one"
    )
    add_config_option(systems)
    systems.add_argument("action", nargs="?", choices=("enable", "disable"), help="change a system")
    systems.add_argument("slug", nargs="?", metavar="SLUG", help="the system to change")
    systems.add_argument("--json", action="store_true", help="print JSON lines")
    systems.set_defaults(command="systems", run=run_systems)


def _add_selection(parser: argparse.ArgumentParser) -> None:
    add_config_option(parser)
    parser.add_argument("--system", metavar="SLUG", help="only this system")
    parser.add_argument("--event", metavar="ID", help="only this event id")
    parser.add_argument(
        "--since",
        metavar="TIME",
        help="only those since TIME: an ISO 8601 time such as 2026-12-01T08:00Z, "
        "or a duration back from now such as 2h or 3d",
    )


def parse_since(text: str | None, now_ms: int) -> int | None:
    """Return TIME as Unix milliseconds: an ISO 8601 time, or a duration before now."""
    if text is None:
        return None
    if re.fullmatch(r"[0-9]+(ms|s|m|h|d)", text):
        return now_ms - parse_duration(text)

    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        message = (
            f"invalid --since {text!r}: use an ISO 8601 time such as 2026-12-01T08:00Z "
            "or a duration such as 2h"
        )
        raise ValueError(message) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return int(when.timestamp() * 1000)


def _engine(args: argparse.Namespace) -> Engine | int:
    """Return the engine, or an exit status when the configuration or --system is invalid."""
    try:
        engine = Engine.from_environment(args.config)
    except ConfigError as error:
        print_problems(error.problems)
        return EXIT_INVALID

    system = getattr(args, "system", None)
    unknown = unknown_name_problem(engine.config, None, [system] if system else [])
    if unknown is not None:
        return usage_error(unknown)
    return engine


def _now_ms() -> int:
    return int(time.time() * 1000)


def _when(ms: int | None) -> str:
    if ms is None:
        return "-"
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _print_table(rows: Sequence[tuple[str, ...]]) -> None:
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    for row in rows:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )


def _guarded(run: Any) -> Any:
    # Every operator command reads Redis: an unreachable server is a clear
    # error and exit status 1, not a traceback.
    def guarded(args: argparse.Namespace) -> int:
        try:
            status: int = run(args)
        except (redis.RedisError, BrokerError) as error:
            print(
                f"error: cannot reach Redis: {type(error).__name__}: {str(error).rstrip('.')}; "
                "check that it runs and that UE_FLOW_REDIS_URL, or else UE_FLOW_BROKER_URL, "
                "names it",
                file=sys.stderr,
            )
            return EXIT_INVALID
        except DramatiqBrokerError as error:
            # Replays and redeliveries queue messages, and `systems` counts them.
            text = (
                f"error: cannot reach the broker: {describe_broker_error(error)}; "
                "check UE_FLOW_BROKER_URL"
            )
            print(text, file=sys.stderr)
            return EXIT_INVALID
        except ValueError as error:
            print(f"error: {error}", file=sys.stderr)
            return EXIT_USAGE
        return status

    return guarded


@_guarded
def run_deliveries(args: argparse.Namespace) -> int:
    """List delivery records, newest first, and the attempts of one event."""
    engine = _engine(args)
    if isinstance(engine, int):
        return engine

    log = engine.stores.attempts
    records = log.deliveries(
        system=args.system, status=args.status, event_id=args.event, limit=args.limit
    )
    attempts = log.attempts(event_id=args.event, limit=args.limit * 10) if args.event else []
    if args.system:
        attempts = [attempt for attempt in attempts if attempt.system == args.system]
    if args.json:
        for record in records:
            print(json.dumps({"kind": "delivery", **_without_payload(dataclasses.asdict(record))}))
        for attempt in attempts:
            print(
                json.dumps({"kind": "attempt", **dataclasses.asdict(attempt)}, ensure_ascii=False)
            )
        return EXIT_OK

    rows: list[tuple[str, ...]] = [
        ("EVENT-ID", "SYSTEM", "EVENT", "STATUS", "ATTEMPTS", "LAST", "UPDATED")
    ]
    for record in records:
        last = record.last_error or (str(record.last_status) if record.last_status else "-")
        rows.append(
            (
                record.event_id,
                record.system,
                record.event_name,
                record.status,
                str(record.attempts),
                last,
                _when(record.updated_ms),
            )
        )
    if records:
        _print_table(rows)
    else:
        # A header alone reads like a broken command.
        print("0 deliveries")
        if args.event or not (args.status or args.system):
            subject = f"no delivery of {args.event}" if args.event else "no delivery"
            print(
                f"{subject} is on record: a delivery has a record from its first attempt, "
                "so none is listed before a worker has tried it, and records are kept "
                "for the attempt retention period",
                file=sys.stderr,
            )
    if attempts:
        print()
        rows = [("SYSTEM", "ATTEMPT", "TIME", "DURATION-MS", "RESULT", "RESPONSE")]
        # In time order: a replay or redeliver numbers its attempts from 1 again.
        for attempt in sorted(attempts, key=lambda found: (found.system, found.time_ms)):
            result = attempt.error or str(attempt.status)
            response = attempt.response[:60].replace("\n", " ")
            rows.append(
                (
                    attempt.system,
                    str(attempt.attempt),
                    _when(attempt.time_ms),
                    str(attempt.duration_ms),
                    result,
                    response,
                )
            )
        _print_table(rows)
    return EXIT_OK


def _without_payload(record: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in record.items() if key not in ("user", "data")}


@_guarded
def run_redeliver(args: argparse.Namespace) -> int:
    """Send one event to one system again, whatever its status."""
    engine = _engine(args)
    if isinstance(engine, int):
        return engine

    record = engine.stores.attempts.get(args.event_id, args.system)
    if record is None or record.user is None or record.data is None:
        print(
            f"error: no delivery of {args.event_id} to {args.system} is on record; "
            "records are kept for the attempt retention period (default 7 days)",
            file=sys.stderr,
        )
        return EXIT_INVALID

    # Pending first: a worker may deliver it and write its record before
    # this command gets to the record again.
    engine.stores.attempts.update(
        record.event_id, record.system, status=PENDING, updated_ms=_now_ms()
    )
    send_delivery(
        engine.deliverers[args.system],
        record.event_id,
        record.event_name,
        record.user,
        record.data,
        record.emitted_at_ms,
    )
    print(f"queued {record.event_id} for {record.system}")
    if record.status == PENDING:
        print(
            f"note: {record.event_id} was still pending for {record.system}, so its retry "
            "stays scheduled and the system may receive it twice, with the same webhook-id",
            file=sys.stderr,
        )
    return EXIT_OK


def _selected(engine: Engine, args: argparse.Namespace) -> list[DeadLetter]:
    since = parse_since(args.since, _now_ms())
    return list(
        engine.stores.dead_letters.select(system=args.system, event_id=args.event, since_ms=since)
    )


@_guarded
def run_dead_letters(args: argparse.Namespace) -> int:
    """List dead letters, oldest first."""
    engine = _engine(args)
    if isinstance(engine, int):
        return engine

    letters = _selected(engine, args)
    if args.json:
        for letter in letters:
            print(json.dumps(dataclasses.asdict(letter), ensure_ascii=False))
        return EXIT_OK

    rows = [("EVENT-ID", "SYSTEM", "EVENT", "ATTEMPTS", "LAST", "REASON", "DEAD-AT")]
    for letter in letters:
        rows.append(
            (
                letter.event_id,
                letter.system,
                letter.event_name,
                str(letter.attempts),
                letter.last_error or "-",
                letter.reason,
                _when(letter.dead_at_ms),
            )
        )
    _print_table(rows)
    print(plural(len(letters), "dead letter", "dead letters"))
    return EXIT_OK


@_guarded
def run_replay(args: argparse.Namespace) -> int:
    """Queue the selected dead letters again and forget them."""
    if not (args.all or args.system or args.event or args.since):
        print(
            "error: choose what to replay with --system, --event or --since, or pass --all",
            file=sys.stderr,
        )
        return EXIT_USAGE
    engine = _engine(args)
    if isinstance(engine, int):
        return engine

    letters = _selected(engine, args)
    # A disabled system would park them again at once, and enabling it replays them.
    systems = {letter.system for letter in letters if letter.system in engine.deliverers}
    disabled = {slug for slug in systems if engine.stores.systems.is_disabled(slug)}
    for slug in sorted(disabled):
        parked = sum(1 for letter in letters if letter.system == slug)
        print(
            f"skipped {plural(parked, 'dead letter', 'dead letters')} of {slug}: the system "
            f"is disabled; run: ue-flow systems enable {slug}, which replays them",
            file=sys.stderr,
        )
    replayed = replay(engine, [letter for letter in letters if letter.system not in disabled])
    print(f"replayed {plural(replayed, 'dead letter', 'dead letters')}")
    return EXIT_OK


def replay(engine: Engine, letters: Iterable[DeadLetter]) -> int:
    """Queue ``letters`` again with their event ids; return how many were queued.

    A dead letter of a system that is no longer configured stays kept.
    """
    replayed = 0
    for letter in letters:
        actor = engine.deliverers.get(letter.system)
        if actor is None:
            print(
                f"skipped {letter.id}: system {letter.system!r} is no longer configured",
                file=sys.stderr,
            )
            continue
        # Pending first: a worker may deliver it and write its record
        # before this command gets to the record again.
        engine.stores.attempts.update(
            letter.event_id, letter.system, status=PENDING, updated_ms=_now_ms()
        )
        send_delivery(
            actor,
            letter.event_id,
            letter.event_name,
            letter.user,
            letter.data,
            letter.emitted_at_ms,
        )
        engine.stores.dead_letters.remove(letter)
        replayed += 1
    return replayed


@_guarded
def run_systems(args: argparse.Namespace) -> int:
    """Show each system's health, or enable or disable one."""
    engine = _engine(args)
    if isinstance(engine, int):
        return engine
    if args.action is not None:
        return _change_system(engine, args.action, args.slug)

    rows = [
        ("SLUG", "NAME", "ENABLED", "CIRCUIT", "LAST-SUCCESS", "LAST-FAILURE", "PENDING", "DEAD")
    ]
    now = _now_ms()
    for slug, system in engine.config.systems.items():
        health = engine.stores.systems.health(slug, system.delivery.circuit_breaker, now)
        pending = _pending(engine, slug)
        dead = engine.stores.dead_letters.count(slug)
        if args.json:
            print(
                json.dumps(
                    {
                        "slug": slug,
                        "name": system.name,
                        **dataclasses.asdict(health),
                        "pending": pending,
                        "dead_letters": dead,
                    }
                )
            )
            continue
        enabled = "yes" if health.enabled else f"no ({health.disabled_reason})"
        rows.append(
            (
                slug,
                system.name,
                enabled,
                health.circuit,
                _when(health.last_success_ms),
                _when(health.last_failure_ms),
                str(pending),
                str(dead),
            )
        )
    if not args.json:
        _print_table(rows)
    return EXIT_OK


def _pending(engine: Engine, slug: str) -> int:
    # Scheduled retries plus the messages waiting in the broker's queue;
    # messages a worker has fetched but not acknowledged are not counted.
    queue = delivery_queue(slug)
    return engine.stores.scheduler.count(queue) + (count_queued(engine.broker, queue) or 0)


def _change_system(engine: Engine, action: str, slug: str | None) -> int:
    if slug is None:
        valid = ", ".join(engine.config.systems)
        return usage_error(f"systems {action} needs a SLUG; valid systems: {valid}")
    unknown = unknown_name_problem(engine.config, None, [slug])
    if unknown is not None:
        return usage_error(f"systems {action}: {unknown}")

    if action == "disable":
        engine.stores.systems.disable(slug, f"{DISABLED_REASON} by an operator", _now_ms())
        print(f"disabled {slug}; its deliveries become dead letters until it is enabled again")
        return EXIT_OK

    engine.stores.systems.enable(slug)
    parked = [
        letter
        for letter in engine.stores.dead_letters.select(system=slug)
        if letter.reason.startswith(DISABLED_REASON)
    ]
    replayed = replay(engine, parked)
    parked_text = plural(replayed, "delivery", "deliveries")
    print(f"enabled {slug}; replayed {parked_text} parked while it was disabled")
    return EXIT_OK
