"""Deliveries per second to slow receivers, against the bound set by deliveries in flight.

Both systems' receivers respond after ``DELAY_S``. At most ``in_flight``
deliveries can wait on them at once, so no sender can exceed
``in_flight / DELAY_S`` deliveries per second. ``in_flight`` is the
smallest of the worker threads, and per system of ``max_in_flight`` and
the per-process thread share (half of a process's threads when more than
one system is configured) times the processes.
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from bench.common import (
    DELIVERIES_PER_EVENT,
    EXAMPLE_EVENT,
    REDIS_URL,
    build_engine,
    copy_config,
    delete_namespace,
    load_example,
    new_namespace,
    ue_flow_worker_environment,
)
from bench.receiver import Receiver
from bench.throughput import WorkerPool
from ue_flow.logs import configure_logging

#: How long each POST waits before its 200 response, in seconds.
DELAY_S = 0.2

#: The goal: deliveries per second at least this fraction of the bound.
BOUND_FRACTION_GOAL = 0.9

#: The shipped config's systems, which the example event reaches.
SYSTEMS = ("mitxonline", "learn")

#: The arrivals between these fractions of a phase's deliveries give the
#: steady rate, leaving out the ramp-up and the last wave.
STEADY_FROM, STEADY_TO = 0.1, 0.9


@dataclass(frozen=True)
class Setting:
    """Worker threads per process and each system's max_in_flight (None: the default, 8)."""

    name: str
    threads: int
    max_in_flight: int | None


def in_flight_bound(processes: int, threads: int, max_in_flight: int) -> int:
    """Return how many deliveries can wait on the receivers at once."""
    share = threads // 2 if len(SYSTEMS) > 1 else threads
    per_system = min(max_in_flight, processes * max(1, share))
    return min(processes * threads, per_system * len(SYSTEMS))


def measure_slow(
    work: Path, settings: list[Setting], *, processes: int, seconds: float, timeout_s: float
) -> dict[str, Any]:
    """Run one phase per setting; each sends about ``seconds`` of work at its bound."""
    configure_logging(logging.INFO, json_lines=True)
    receiver = Receiver(2, delay_s=DELAY_S)
    phases = {}
    try:
        for setting in settings:
            print(f"slow receivers: {setting.name} ...", file=sys.stderr, flush=True)
            phases[setting.name] = _run_phase(
                work, receiver, setting, processes, seconds, timeout_s
            )
    finally:
        receiver.stop()

    return {
        "delay_ms": DELAY_S * 1000,
        "worker_processes": processes,
        "bound_fraction_goal": BOUND_FRACTION_GOAL,
        "phases": phases,
    }


def _run_phase(
    work: Path,
    receiver: Receiver,
    setting: Setting,
    processes: int,
    seconds: float,
    timeout_s: float,
) -> dict[str, Any]:
    changes = {}
    if setting.max_in_flight is not None:
        changes = {slug: {"delivery": {"max_in_flight": setting.max_in_flight}} for slug in SYSTEMS}
    config_dir = copy_config(work / f"slow-{setting.name}", system_changes=changes)
    max_in_flight = setting.max_in_flight or 8
    in_flight = in_flight_bound(processes, setting.threads, max_in_flight)
    bound = in_flight / DELAY_S
    events = max(10, round(bound * seconds / DELIVERIES_PER_EVENT))
    expected = events * DELIVERIES_PER_EVENT

    namespace = new_namespace(f"slow_{setting.name}")
    urls = {slug: receiver.url(f"/{slug}/") for slug in SYSTEMS}
    env = ue_flow_worker_environment(config_dir, namespace, urls)
    pool = WorkerPool("ue_flow", env, processes, setting.threads, work / f"worker-{namespace}.log")
    engine = build_engine(config_dir, namespace, env)
    payload = load_example()
    samples: list[tuple[float, int]] = []
    try:
        pool.wait_ready()
        receiver.reset()
        started = time.monotonic()
        for _ in range(events):
            engine.emit(EXAMPLE_EVENT, user=payload["user"], data=payload["data"])
        deadline = started + timeout_s
        while time.monotonic() < deadline:
            received, _ = receiver.snapshot()
            samples.append((time.monotonic(), received))
            if received >= expected:
                break
            time.sleep(0.05)
        received, last = receiver.snapshot()
        retries_waiting = sum(engine.stores.scheduler.count(f"deliver.{slug}") for slug in SYSTEMS)
    finally:
        pool.stop()
        delete_namespace(redis.Redis.from_url(REDIS_URL), namespace)

    if received < expected:
        raise RuntimeError(
            f"slow receivers, {setting.name}: only {received} of {expected} deliveries arrived "
            f"within {timeout_s} s; see {pool.log_path}"
        )
    whole = expected / (last - started)
    steady = _steady_rate(samples, expected)
    return {
        "worker_threads": setting.threads,
        "max_in_flight": max_in_flight,
        "in_flight_bound": in_flight,
        "bound_per_second": bound,
        "events": events,
        "deliveries": expected,
        "seconds": last - started,
        "per_second": whole,
        "steady_per_second": steady,
        "fraction_of_bound": whole / bound,
        "steady_fraction_of_bound": steady / bound,
        "retries_waiting_at_end": retries_waiting,
        "worker_log": str(pool.log_path),
    }


def _steady_rate(samples: list[tuple[float, int]], expected: int) -> float:
    """Return deliveries per second between STEADY_FROM and STEADY_TO of ``expected``."""
    low = next(sample for sample in samples if sample[1] >= STEADY_FROM * expected)
    high = next(sample for sample in samples if sample[1] >= STEADY_TO * expected)
    return (high[1] - low[1]) / (high[0] - low[0])
