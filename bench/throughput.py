"""End-to-end deliveries per second: ue-flow workers against bare Dramatiq workers."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import redis
from dramatiq.brokers.redis import RedisBroker

from bench.bare import declare_bare_actors
from bench.common import (
    DELIVERIES_PER_EVENT,
    EXAMPLE_EVENT,
    REDIS_URL,
    ROOT,
    build_engine,
    delete_namespace,
    load_example,
    new_namespace,
    ue_flow_worker_environment,
)
from ue_flow.envelope import envelope_body
from ue_flow.loader import load_config
from ue_flow.logs import configure_logging
from ue_flow.routing import route

#: How long a worker pool may take to log that every process is ready.
WORKER_START_TIMEOUT_S = 60.0

#: How long a stopped worker pool may take to exit before it is killed.
WORKER_STOP_TIMEOUT_S = 30.0


class WorkerPool:
    """One ``dramatiq MODULE -p P -t T`` command, its output kept in a log file."""

    def __init__(
        self, module: str, env: dict[str, str], processes: int, threads: int, log_path: Path
    ) -> None:
        self.processes = processes
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        command = [
            sys.executable,
            "-m",
            "dramatiq",
            module,
            "-p",
            str(processes),
            "-t",
            str(threads),
        ]
        self.process = subprocess.Popen(
            command, env=env, cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT
        )

    def wait_ready(self) -> None:
        """Wait until every worker process logged that it is ready; raise otherwise."""
        deadline = time.monotonic() + WORKER_START_TIMEOUT_S
        while time.monotonic() < deadline:
            ready = self.log_path.read_bytes().count(b"Worker process is ready")
            if ready >= self.processes:
                return
            if self.process.poll() is not None:
                break
            time.sleep(0.1)
        self.stop()
        tail = self.log_path.read_text(encoding="utf-8", errors="replace")[-2000:]
        raise RuntimeError(f"workers did not start within {WORKER_START_TIMEOUT_S} s:\n{tail}")

    def pids(self) -> list[int]:
        """Return the ids of the main process and of the worker processes it forked."""
        return [self.process.pid, *_child_pids(self.process.pid)]

    def stop(self) -> None:
        """Send SIGTERM to the pool's main process; kill it if it does not exit in time."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=WORKER_STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


def run_ue_flow(
    receiver: Any,
    config_dir: Path,
    events: int,
    processes: int,
    threads: int,
    timeout_s: float,
    log_dir: Path,
) -> dict[str, Any]:
    """Emit ``events`` events up front to running ``dramatiq ue_flow`` workers; time deliveries."""
    # emit logs at debug level. With structlog's defaults every event would
    # print a line here, which an application at INFO does not pay for.
    configure_logging(logging.INFO, json_lines=True)
    namespace = new_namespace("ue")
    urls = {slug: receiver.url(f"/{slug}/") for slug in ("mitxonline", "learn")}
    env = ue_flow_worker_environment(config_dir, namespace, urls)

    engine = build_engine(config_dir, namespace, env)
    payload = load_example()
    user, data = payload["user"], payload["data"]

    def emit_all() -> None:
        for _ in range(events):
            engine.emit(EXAMPLE_EVENT, user=user, data=data)

    log_path = log_dir / f"worker-{namespace}.log"
    pool = WorkerPool("ue_flow", env, processes, threads, log_path)
    return timed_phase(
        pool, receiver, emit_all, events * DELIVERIES_PER_EVENT, timeout_s, namespace
    )


def run_bare(
    receiver: Any,
    config_dir: Path,
    events: int,
    processes: int,
    threads: int,
    timeout_s: float,
    log_dir: Path,
) -> dict[str, Any]:
    """Send one bare message per delivery up front to ``dramatiq bench.bare_worker``; time them.

    The bodies are the envelopes ue-flow would send for the example event,
    built before the clock starts.
    """
    namespace = new_namespace("bare")
    env = dict(os.environ)
    env.update(BENCH_REDIS_URL=REDIS_URL, BENCH_NAMESPACE=namespace)
    broker = RedisBroker(url=REDIS_URL, namespace=namespace)
    deliver, _ = declare_bare_actors(broker)
    deliveries = example_deliveries(receiver, config_dir)

    def send_all() -> None:
        for _ in range(events):
            for url, body in deliveries:
                deliver.send(url, body)

    log_path = log_dir / f"worker-{namespace}.log"
    pool = WorkerPool("bench.bare_worker", env, processes, threads, log_path)
    return timed_phase(pool, receiver, send_all, events * len(deliveries), timeout_s, namespace)


def example_deliveries(receiver: Any, config_dir: Path) -> list[tuple[str, str]]:
    loaded = load_config(config_dir, {})
    event = loaded.config.events[EXAMPLE_EVENT]
    parts = route(loaded.config, event, load_example())
    bodies = []
    for slug, part in parts.items():
        key = f"bench-key-{slug}-{uuid.uuid4().hex}"
        body = envelope_body(slug, key, event.type, part["user"], part["data"])
        bodies.append((receiver.url(f"/{slug}/"), body.decode("utf-8")))
    if len(bodies) != DELIVERIES_PER_EVENT:
        raise RuntimeError(f"the example event routes to {len(bodies)} systems, not 2")
    return bodies


def timed_phase(
    pool: Any,
    receiver: Any,
    send_all: Any,
    expected: int,
    timeout_s: float,
    namespace: str,
) -> dict[str, Any]:
    client = redis.Redis.from_url(REDIS_URL)
    try:
        pool.wait_ready()
        receiver.reset()
        cpu_before = _cpu_seconds(client, pool, receiver)
        started = time.monotonic()
        send_all()
        sent = time.monotonic()
        received, last = receiver.wait_for(expected, timeout_s)
        cpu_after = _cpu_seconds(client, pool, receiver)
    finally:
        pool.stop()
        delete_namespace(client, namespace)

    if received < expected:
        raise RuntimeError(
            f"only {received} of {expected} deliveries arrived within {timeout_s} s; "
            f"see {pool.log_path}"
        )
    seconds = last - started
    return {
        "deliveries": received,
        "expected": expected,
        "enqueue_seconds": sent - started,
        "seconds": seconds,
        "per_second": expected / seconds,
        "cpu_us_per_delivery": {
            name: (cpu_after[name] - cpu_before[name]) / expected * 1e6 for name in cpu_before
        },
        "worker_log": str(pool.log_path),
    }


def _cpu_seconds(client: redis.Redis, pool: Any, receiver: Any) -> dict[str, float]:
    """Return the CPU seconds used so far by each party of a phase.

    Redis reports its whole server, so other clients of a shared Redis
    count too; the sender is this process, which only sends while timed.
    """
    info = client.info("cpu")
    workers = pool.pids()
    return {
        "sender": time.process_time(),
        "workers": sum(_process_cpu_seconds(pid) for pid in workers),
        "receiver": sum(_process_cpu_seconds(pid) for pid in receiver.pids),
        "redis": float(info["used_cpu_sys"]) + float(info["used_cpu_user"]),
    }


def _child_pids(pid: int) -> list[int]:
    children = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(child) for child in children.read_text().split()] if children.exists() else []


def _process_cpu_seconds(pid: int) -> float:
    # Fields 14 and 15 of /proc/PID/stat are user and system time in clock
    # ticks; the command name in field 2 may hold spaces, so split after it.
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
