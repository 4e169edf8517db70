"""Worker memory over a long run: RSS of each ``dramatiq ue_flow`` worker process.

Events are emitted in batches that keep the backlog small, so the soak
measures the workers, not a queue growing in Redis. RSS is VmRSS from
/proc/PID/status of each forked worker process, sampled every few
seconds.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import redis

from bench.common import (
    DELIVERIES_PER_EVENT,
    EXAMPLE_EVENT,
    REDIS_URL,
    build_engine,
    delete_namespace,
    load_example,
    new_namespace,
    ue_flow_worker_environment,
)
from bench.throughput import WorkerPool, _child_pids
from ue_flow.logs import configure_logging

#: The goal: each worker process stays under this RSS, in MiB.
RSS_LIMIT_MIB = 100.0

#: RSS after this fraction of the deliveries is the warmed-up baseline.
WARM_UP_FRACTION = 0.1

#: Events emitted per batch, and the most deliveries allowed to wait.
BATCH_EVENTS = 250
MAX_BACKLOG = 2_000


def rss_kib(pid: int) -> int | None:
    """Return VmRSS of ``pid`` in KiB, or None when the process is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except FileNotFoundError:
        return None
    return None


def measure_memory(
    receiver: Any,
    config_dir: Path,
    work: Path,
    *,
    deliveries: int,
    processes: int,
    threads: int,
    sample_every_s: float,
    timeout_s: float,
) -> dict[str, Any]:
    """Deliver ``deliveries`` example deliveries; return RSS samples and per-process growth."""
    configure_logging(logging.INFO, json_lines=True)
    namespace = new_namespace("memory")
    urls = {slug: receiver.url(f"/{slug}/") for slug in ("mitxonline", "learn")}
    env = ue_flow_worker_environment(config_dir, namespace, urls)
    engine = build_engine(config_dir, namespace, env)
    payload = load_example()
    events = deliveries // DELIVERIES_PER_EVENT
    pool = WorkerPool("ue_flow", env, processes, threads, work / f"worker-{namespace}.log")
    samples: list[dict[str, Any]] = []
    try:
        pool.wait_ready()
        children = _child_pids(pool.process.pid)
        receiver.reset()
        started = time.monotonic()
        deadline = started + timeout_s
        emitted = 0
        next_sample = started
        received = 0
        while time.monotonic() < deadline:
            received, _ = receiver.snapshot()
            now = time.monotonic()
            if now >= next_sample or received >= deliveries:
                rss = {str(pid): rss_kib(pid) for pid in children}
                samples.append({"seconds": now - started, "delivered": received, "rss_kib": rss})
                next_sample = now + sample_every_s
            if received >= deliveries:
                break
            if emitted < events and emitted * DELIVERIES_PER_EVENT - received < MAX_BACKLOG:
                for _ in range(min(BATCH_EVENTS, events - emitted)):
                    engine.emit(EXAMPLE_EVENT, user=payload["user"], data=payload["data"])
                emitted += min(BATCH_EVENTS, events - emitted)
            else:
                time.sleep(0.05)
        elapsed = time.monotonic() - started
    finally:
        pool.stop()
        delete_namespace(redis.Redis.from_url(REDIS_URL), namespace)

    if received < deliveries:
        raise RuntimeError(
            f"memory: only {received} of {deliveries} deliveries within {timeout_s} s; "
            f"see {pool.log_path}"
        )
    return {
        "deliveries": deliveries,
        "events": events,
        "seconds": elapsed,
        "per_second": deliveries / elapsed,
        "worker_processes": processes,
        "worker_threads": threads,
        "sample_every_s": sample_every_s,
        "warm_up_deliveries": int(deliveries * WARM_UP_FRACTION),
        "rss_limit_mib": RSS_LIMIT_MIB,
        "processes": _summaries(samples, children, deliveries, processes),
        "samples": samples,
        "worker_log": str(pool.log_path),
    }


def _summaries(
    samples: list[dict[str, Any]], children: list[int], deliveries: int, processes: int
) -> dict[str, dict[str, Any]]:
    warm = next(s for s in samples if s["delivered"] >= deliveries * WARM_UP_FRACTION)
    end = samples[-1]
    # Dramatiq forks the worker processes first, then one process for each
    # fork function, such as the Prometheus middleware's exposition server.
    summaries = {}
    for index, pid in enumerate(map(str, children)):
        values = [s["rss_kib"][pid] for s in samples if s["rss_kib"][pid] is not None]
        warm_mib = warm["rss_kib"][pid] / 1024
        end_mib = end["rss_kib"][pid] / 1024
        summaries[pid] = {
            "role": "worker" if index < processes else "fork function",
            "start_mib": values[0] / 1024,
            "warm_mib": warm_mib,
            "end_mib": end_mib,
            "max_mib": max(values) / 1024,
            "growth_after_warm_up_mib": end_mib - warm_mib,
        }
    return summaries
