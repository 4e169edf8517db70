"""A healthy system's emit-to-delivered latency with and without a hanging peer.

Real ``dramatiq ue_flow`` workers deliver post_sale events routed to both
shipped systems. mitxonline's receiver responds at once in every phase.
In the baseline phase learn's receiver does too, and in the hanging phases
it sleeps past learn's read timeout. Each phase has its own worker pool and
Redis key prefix, so circuit state and waiting retries do not carry over.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from bench.common import (
    EXAMPLE_EVENT,
    REDIS_URL,
    build_engine,
    copy_config,
    delete_namespace,
    load_example,
    new_namespace,
    ue_flow_worker_environment,
)
from bench.receiver import Arrival, RecordingReceiver
from bench.throughput import WorkerPool
from ue_flow.actors import delivery_queue
from ue_flow.engine import Engine
from ue_flow.logs import configure_logging

#: The system whose latency is measured, and the one that hangs.
HEALTHY = "mitxonline"
HANGING = "learn"

#: learn's read timeout in every phase, and how long its receiver sleeps
#: when hanging: long enough that every hanging delivery times out.
HANGING_READ_TIMEOUT = "2s"
HANG_SECONDS = 5.0

#: The goal: the healthy system's p99 with a hanging peer is at most twice
#: its p99 without one.
P99_RATIO_GOAL = 2.0

#: A failure threshold no phase reaches, which keeps learn's circuit closed.
UNREACHABLE_FAILURE_THRESHOLD = 1_000_000


@dataclass(frozen=True)
class Phase:
    """One measured phase: how long learn's receiver sleeps, and learn's delivery overrides."""

    name: str
    hang_seconds: float
    learn_delivery: dict[str, Any]


BASELINE = Phase("baseline", 0.0, {"read_timeout": HANGING_READ_TIMEOUT})
HANGING_PHASE = Phase("hanging", HANG_SECONDS, {"read_timeout": HANGING_READ_TIMEOUT})
# The circuit never opens here, so for the whole phase the in-flight limit
# alone keeps the hanging system from taking every worker thread.
HANGING_BREAKER_OFF = Phase(
    "hanging_breaker_off",
    HANG_SECONDS,
    {
        "read_timeout": HANGING_READ_TIMEOUT,
        "circuit_breaker": {"failure_threshold": UNREACHABLE_FAILURE_THRESHOLD},
    },
)
PHASES = (BASELINE, HANGING_PHASE, HANGING_BREAKER_OFF)


def measure_isolation(
    work: Path,
    *,
    rate: float,
    seconds: float,
    processes: int,
    threads: int,
    timeout_s: float,
) -> dict[str, Any]:
    """Run every phase in ``PHASES`` order; return latencies in ms and the p99 and p50 ratios.

    Each phase emits ``rate`` events per second for ``seconds`` seconds,
    then waits at most ``timeout_s`` seconds for the healthy system's
    deliveries. ``work`` receives the config copies and the worker logs.
    """
    configure_logging(logging.INFO, json_lines=True)
    receiver = RecordingReceiver(hanging_slug=HANGING)
    urls = {slug: receiver.url(f"/{slug}/") for slug in (HEALTHY, HANGING)}
    count = round(rate * seconds)
    results: dict[str, Any] = {}
    try:
        for phase in PHASES:
            config_dir = copy_config(
                work / f"isolation-{phase.name}",
                system_changes={HANGING: {"delivery": phase.learn_delivery}},
            )
            results[phase.name] = _run_phase(
                phase, receiver, config_dir, urls, count, rate, processes, threads, timeout_s, work
            )
    finally:
        receiver.stop()

    return {
        "rate_per_second": rate,
        "seconds": seconds,
        "events_per_phase": count,
        "worker_processes": processes,
        "worker_threads": threads,
        "hang_seconds": HANG_SECONDS,
        "phases": results,
        "p99_ratio": _ratio(results, "hanging", "baseline", "p99_ms"),
        "p50_ratio": _ratio(results, "hanging", "baseline", "p50_ms"),
        "p99_ratio_breaker_off": _ratio(results, "hanging_breaker_off", "baseline", "p99_ms"),
        "p99_ratio_goal": P99_RATIO_GOAL,
    }


def _run_phase(
    phase: Phase,
    receiver: RecordingReceiver,
    config_dir: Path,
    urls: dict[str, str],
    count: int,
    rate: float,
    processes: int,
    threads: int,
    timeout_s: float,
    log_dir: Path,
) -> dict[str, Any]:
    namespace = new_namespace(f"iso_{phase.name}")
    env = ue_flow_worker_environment(config_dir, namespace, urls)
    pool = WorkerPool("ue_flow", env, processes, threads, log_dir / f"worker-{namespace}.log")
    client = redis.Redis.from_url(REDIS_URL)
    print(f"isolation: {phase.name} ...", flush=True, file=sys.stderr)
    try:
        pool.wait_ready()
        engine = build_engine(config_dir, namespace, env)
        receiver.set_delay(phase.hang_seconds)
        receiver.drain()
        emitted, max_lag_ms = _emit_steadily(engine, count, rate)
        arrivals = receiver.wait_for(HEALTHY, set(emitted), timeout_s)
        learn = engine.config.systems[HANGING]
        health = engine.stores.systems.health(
            HANGING, learn.delivery.circuit_breaker, int(time.time() * 1000)
        )
        learn_waiting = engine.stores.scheduler.count(delivery_queue(HANGING))
    finally:
        receiver.set_delay(0.0)
        pool.stop()
        delete_namespace(client, namespace)

    latencies = _latencies_ms(emitted, arrivals, HEALTHY)
    missing = len(emitted) - len(latencies)
    return {
        "events": len(emitted),
        "healthy_delivered": len(latencies),
        "healthy_missing": missing,
        "p50_ms": _percentile(latencies, missing, 0.50),
        "p99_ms": _percentile(latencies, missing, 0.99),
        "max_ms": max(latencies) if latencies and not missing else None,
        "emit_max_lag_ms": max_lag_ms,
        "learn_arrivals": sum(1 for arrival in arrivals if arrival[0] == HANGING),
        "learn_waiting_retries_at_end": learn_waiting,
        "learn_circuit_at_end": health.circuit,
        "learn_failures_at_end": health.failures,
        "delivery_settings": {
            slug: _plain(dataclasses.asdict(system.delivery))
            for slug, system in engine.config.systems.items()
        },
        "worker_log": str(pool.log_path),
    }


def _emit_steadily(engine: Engine, count: int, rate: float) -> tuple[dict[str, float], float]:
    """Emit ``count`` events at ``rate`` per second; return each id's monotonic emit time.

    Also returns how far, in ms, the latest emit started behind its schedule.
    """
    payload = load_example()
    user, data = payload["user"], payload["data"]
    emitted: dict[str, float] = {}
    max_lag = 0.0
    started = time.monotonic()
    for index in range(count):
        due = started + index / rate
        wait = due - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        emitted_at = time.monotonic()
        max_lag = max(max_lag, emitted_at - due)
        emitted[engine.emit(EXAMPLE_EVENT, user=user, data=data)] = emitted_at
    return emitted, max_lag * 1000


def _latencies_ms(emitted: dict[str, float], arrivals: list[Arrival], slug: str) -> list[float]:
    # A delivery that arrives twice, such as after a worker restart, counts
    # once, at its first arrival.
    first: dict[str, float] = {}
    for arrival_slug, event_id, arrived in arrivals:
        if arrival_slug == slug and event_id in emitted and event_id not in first:
            first[event_id] = arrived
    return sorted((arrived - emitted[event_id]) * 1000 for event_id, arrived in first.items())


def _percentile(latencies: list[float], missing: int, fraction: float) -> float | None:
    """Return the nearest-rank percentile, counting missing deliveries as infinitely late.

    Returns None when the rank falls on a missing delivery.
    """
    ranked = sorted(latencies) + [math.inf] * missing
    if not ranked:
        return None
    value = ranked[max(math.ceil(fraction * len(ranked)) - 1, 0)]
    return None if math.isinf(value) else value


def _plain(value: Any) -> Any:
    """Return ``value`` with its sets turned into sorted lists, so that json can write it."""
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, set | frozenset):
        return sorted(value)
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value


def _ratio(results: dict[str, Any], over: str, under: str, figure: str) -> float | None:
    numerator, denominator = results[over][figure], results[under][figure]
    if numerator is None or not denominator:
        return None
    return float(numerator / denominator)
