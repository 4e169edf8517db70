"""The Celery baseline: Celery workers posting one delivery per task with ``requests.post``.

Celery is optional. ``celery_missing()`` returns the install command, and the
benchmark skips this comparison when it returns a message.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import redis

from bench.common import DELIVERIES_PER_EVENT, REDIS_URL, ROOT, delete_namespace, new_namespace
from bench.throughput import (
    WORKER_START_TIMEOUT_S,
    WORKER_STOP_TIMEOUT_S,
    example_deliveries,
    timed_phase,
)

INSTALL_HINT = "install it with: .venv/bin/pip install 'celery[redis]'"


def celery_missing() -> str | None:
    """Return why the Celery baseline cannot run, or None when it can."""
    if importlib.util.find_spec("celery") is None:
        return f"celery is not installed; {INSTALL_HINT}"
    return None


class CeleryPool:
    """``processes`` separate ``celery worker -P threads -c THREADS`` commands.

    Each command is one process with a pool of threads, so the pool has
    the shape of ``dramatiq -p PROCESSES -t THREADS``.
    """

    def __init__(
        self, env: dict[str, str], processes: int, threads: int, log_dir: Path, label: str
    ) -> None:
        self.log_paths = [log_dir / f"celery-{label}-{index}.log" for index in range(processes)]
        self.log_path = self.log_paths[0]
        self._logs = [open(path, "wb") for path in self.log_paths]  # noqa: SIM115 - closed in stop()
        self.processes = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "celery",
                    "-A",
                    "bench.celery_app",
                    "worker",
                    "-P",
                    "threads",
                    "-c",
                    str(threads),
                    "-n",
                    f"bench{index}-{label}@127.0.0.1",
                    "--without-gossip",
                    "--without-mingle",
                    "--without-heartbeat",
                    "-l",
                    "info",
                ],
                env=env,
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            for index, log in enumerate(self._logs)
        ]

    def wait_ready(self) -> None:
        """Wait until every worker logged ``ready.``; raise otherwise."""
        deadline = time.monotonic() + WORKER_START_TIMEOUT_S
        while time.monotonic() < deadline:
            if all(b" ready." in path.read_bytes() for path in self.log_paths):
                return
            if any(process.poll() is not None for process in self.processes):
                break
            time.sleep(0.1)
        self.stop()
        tail = self.log_paths[0].read_text(encoding="utf-8", errors="replace")[-2000:]
        message = f"celery workers did not start within {WORKER_START_TIMEOUT_S} s:\n{tail}"
        raise RuntimeError(message)

    def pids(self) -> list[int]:
        """Return the process ids of the workers."""
        return [process.pid for process in self.processes]

    def stop(self) -> None:
        """Send SIGTERM (Celery's warm shutdown) to every worker; kill those that outlast it."""
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=WORKER_STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for log in self._logs:
            log.close()


def run_celery(
    receiver: Any,
    config_dir: Path,
    events: int,
    processes: int,
    threads: int,
    timeout_s: float,
    log_dir: Path,
) -> dict[str, Any]:
    """Send one task per delivery up front to running Celery workers; time the deliveries.

    The bodies are the envelopes ue-flow would send for the example event,
    built before the clock starts, as for the bare Dramatiq baseline.
    """
    from celery import Celery

    namespace = new_namespace("celery")
    # Every key kombu writes starts with "<namespace>:", so delete_namespace
    # removes them all; the queue name is unique per run as well.
    env = dict(os.environ)
    env.update(
        BENCH_CELERY_BROKER=REDIS_URL,
        BENCH_CELERY_PREFIX=f"{namespace}:",
        BENCH_CELERY_QUEUE=f"{namespace}-deliveries",
        # requests.post reads proxy variables; deliveries go to 127.0.0.1 only.
        NO_PROXY="127.0.0.1,localhost",
    )
    client = Celery("bench_celery_sender", broker=REDIS_URL)
    client.conf.update(
        broker_transport_options={"global_keyprefix": env["BENCH_CELERY_PREFIX"]},
        task_default_queue=env["BENCH_CELERY_QUEUE"],
        task_ignore_result=True,
    )
    deliveries = example_deliveries(receiver, config_dir)

    def send_all() -> None:
        with client.producer_or_acquire() as producer:
            for _ in range(events):
                for url, body in deliveries:
                    client.send_task(
                        "bench_celery_deliver",
                        args=(url, body),
                        queue=env["BENCH_CELERY_QUEUE"],
                        producer=producer,
                    )

    pool = CeleryPool(env, processes, threads, log_dir, namespace)
    try:
        return timed_phase(
            pool, receiver, send_all, events * DELIVERIES_PER_EVENT, timeout_s, namespace
        )
    finally:
        client.close()
        delete_namespace(redis.Redis.from_url(REDIS_URL), namespace)
