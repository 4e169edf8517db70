"""The cost of ``Engine.emit`` against a bare ``actor.send``, per event, on real Redis."""

from __future__ import annotations

import contextlib
import logging
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis
from dramatiq.brokers.redis import RedisBroker

from bench.bare import declare_bare_actors
from bench.common import (
    EXAMPLE_EVENT,
    REDIS_URL,
    build_engine,
    delete_namespace,
    load_example,
    new_namespace,
)
from ue_flow.actors import delivery_message
from ue_flow.engine import new_event_id
from ue_flow.loader import load_config
from ue_flow.logs import configure_logging
from ue_flow.payload import normalize
from ue_flow.publishing import TogetherQueue
from ue_flow.routing import owners, route

#: Each step: a name and a function that runs it once.
Steps = list[tuple[str, Callable[[], Any]]]


def measure_emit(
    config_dir: Path, environ: dict[str, str], *, calls: int, rounds: int
) -> dict[str, Any]:
    """Time emit, bare send and the parts of emit, interleaved, in microseconds per call.

    Each round runs every step ``calls`` times, in an order rotated from
    round to round, and the figure of a step is its median over rounds.
    The namespace's queues are emptied after every round so that Redis
    memory stays small. Nothing consumes the queued messages.
    """
    client = redis.Redis.from_url(REDIS_URL)
    namespace = new_namespace("emit")
    engine = build_engine(config_dir, namespace, environ)
    loaded = load_config(config_dir, environ)
    # The baseline is a plain RedisBroker, as a bare Dramatiq application
    # has, under the same key prefix; ue-flow's middleware is not on it.
    _, bare_send = declare_bare_actors(RedisBroker(url=REDIS_URL, namespace=namespace))
    payload = load_example()
    user, data = payload["user"], payload["data"]
    event = loaded.config.events[EXAMPLE_EVENT]
    validator = loaded.validators[EXAMPLE_EVENT]
    normalized = normalize(EXAMPLE_EVENT, {"user": user, "data": data})

    slugs = owners(loaded.config, event, normalized)
    together = TogetherQueue(engine.broker)

    def route_and_enqueue() -> None:
        # What emit does after validation on Redis: one message per system,
        # queued in one script call.
        event_id = new_event_id()
        emitted_at_ms = int(time.time() * 1000)
        parts = route(loaded.config, event, normalized, slugs=slugs)
        together.enqueue(
            [
                delivery_message(
                    engine.deliverers[slug],
                    event_id,
                    EXAMPLE_EVENT,
                    part["user"],
                    part["data"],
                    emitted_at_ms,
                )
                for slug, part in parts.items()
            ]
        )

    steps: Steps = [
        ("emit", lambda: engine.emit(EXAMPLE_EVENT, user=user, data=data)),
        ("bare_send", lambda: bare_send.send(EXAMPLE_EVENT, user, data)),
        ("normalize", lambda: normalize(EXAMPLE_EVENT, {"user": user, "data": data})),
        ("validate", lambda: validator.validate(normalized)),
        ("owners", lambda: owners(loaded.config, event, normalized)),
        ("route_enqueue", route_and_enqueue),
    ]
    try:
        # The first pass runs with structlog's defaults, as in an application
        # that never configures structlog: emit's debug line is then printed.
        # Standard output goes to /dev/null meanwhile, so the figure is the
        # cost of formatting and writing, not of a terminal.
        with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
            unconfigured = _run_rounds(steps[:2], calls, rounds, client, namespace)
        configure_logging(logging.INFO, json_lines=True)
        configured = _run_rounds(steps, calls, rounds, client, namespace)
    finally:
        delete_namespace(client, namespace)

    return {
        "calls_per_round": calls,
        "rounds": rounds,
        "microseconds": {name: statistics.median(values) for name, values in configured.items()},
        "rounds_microseconds": configured,
        "structlog_unconfigured_microseconds": {
            name: statistics.median(values) for name, values in unconfigured.items()
        },
    }


def _run_rounds(
    steps: Steps, calls: int, rounds: int, client: redis.Redis, namespace: str
) -> dict[str, list[float]]:
    for _, step in steps:
        step()
    results: dict[str, list[float]] = {name: [] for name, _ in steps}
    for round_index in range(rounds):
        shift = round_index % len(steps)
        for name, step in steps[shift:] + steps[:shift]:
            started = time.perf_counter()
            for _ in range(calls):
                step()
            elapsed = time.perf_counter() - started
            results[name].append(elapsed / calls * 1e6)
        delete_namespace(client, namespace)
        print(f"  emit round {round_index + 1}/{rounds} done", file=sys.stderr, flush=True)

    return results
