"""Fan-out: the cost of one post_sale event delivered to 1, 10 or 100 systems.

A generated systems.yaml contains N systems, ``s001`` to ``sNNN``, each
subscribed to post_sale. The event carries N lines, line i owned by
system i, so each system receives one delivery holding its own line.
"""

from __future__ import annotations

import copy
import logging
import os
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import redis
import yaml

from bench.common import (
    EXAMPLE_EVENT,
    REDIS_URL,
    build_engine,
    copy_config,
    delete_namespace,
    free_port,
    load_example,
    new_namespace,
)
from bench.throughput import WorkerPool, timed_phase
from ue_flow.logs import configure_logging
from ue_flow.signing import generate_secret


def slug(index: int) -> str:
    """Return the slug of generated system ``index``, counted from 1."""
    return f"s{index:03d}"


def write_config(directory: Path, systems: int, receiver: Any) -> tuple[Path, dict[str, str]]:
    """Copy the shipped config with ``systems`` generated systems; return it and their env."""
    config_dir = copy_config(directory)
    entries = []
    environ: dict[str, str] = {}
    for index in range(1, systems + 1):
        name = slug(index)
        key_env, secret_env = f"BENCH_KEY_{name.upper()}", f"BENCH_SECRET_{name.upper()}"
        entries.append(
            {
                "slug": name,
                "name": f"Benchmark system {index}",
                "id": index,
                "url": receiver.url(f"/{name}/"),
                "allow_http": True,
                "allow_private_network": True,
                "events": [EXAMPLE_EVENT],
                "key_env": key_env,
                "secret_env": secret_env,
            }
        )
        environ[key_env] = f"bench-key-{name}-{uuid.uuid4().hex}"
        environ[secret_env] = generate_secret()
    systems_file = config_dir / "systems.yaml"
    systems_file.write_text(yaml.safe_dump({"systems": entries}, sort_keys=False), "utf-8")
    return config_dir, environ


def fanout_payload(systems: int) -> dict[str, Any]:
    """Return the example post_sale payload with one line per generated system."""
    example = load_example()
    template = example["data"]["lines"][0]
    lines = []
    for index in range(1, systems + 1):
        line = copy.deepcopy(template)
        line["id"] = 1000 + index
        line["product"]["system"] = slug(index)
        lines.append(line)
    data = {**example["data"], "lines": lines}
    return {"user": example["user"], "data": data}


def measure_fanout(
    receiver: Any,
    work: Path,
    *,
    system_counts: list[int],
    deliveries: int,
    emit_calls: int,
    emit_rounds: int,
    processes: int,
    threads: int,
    timeout_s: float,
) -> dict[str, Any]:
    """Measure, for each N in ``system_counts``, emit cost and end-to-end time per event.

    Each N delivers about ``deliveries`` deliveries, ``deliveries // N`` events.
    """
    configure_logging(logging.INFO, json_lines=True)
    results = {}
    for systems in system_counts:
        print(f"fan-out: {systems} systems ...", file=sys.stderr, flush=True)
        config_dir, environ = write_config(work / f"fanout-{systems}", systems, receiver)
        payload = fanout_payload(systems)
        emit_us = _emit_microseconds(config_dir, environ, payload, emit_calls, emit_rounds)
        events = max(2, deliveries // systems)
        end_to_end = _end_to_end(
            receiver,
            config_dir,
            environ,
            payload,
            systems,
            events,
            processes,
            threads,
            timeout_s,
            work,
        )
        results[str(systems)] = {
            "systems": systems,
            "emit_us_per_event": emit_us,
            "events": events,
            "deliveries": events * systems,
            "seconds": end_to_end["seconds"],
            "ms_per_event": end_to_end["seconds"] / events * 1000,
            "us_per_delivery": end_to_end["seconds"] / (events * systems) * 1e6,
            "deliveries_per_second": end_to_end["per_second"],
            "cpu_us_per_delivery": end_to_end["cpu_us_per_delivery"],
            "worker_log": end_to_end["worker_log"],
        }
    return {"worker_processes": processes, "worker_threads": threads, "phases": results}


def _worker_environment(
    config_dir: Path, namespace: str, environ: dict[str, str]
) -> dict[str, str]:
    env = dict(os.environ)
    env.update(environ)
    env.update(
        UE_FLOW_CONFIG=str(config_dir),
        UE_FLOW_BROKER_URL=REDIS_URL,
        UE_FLOW_REDIS_URL=REDIS_URL,
        UE_FLOW_NAMESPACE=namespace,
        dramatiq_prom_host="127.0.0.1",
        dramatiq_prom_port=str(free_port()),
    )
    return env


def _emit_microseconds(
    config_dir: Path, environ: dict[str, str], payload: dict[str, Any], calls: int, rounds: int
) -> float:
    client = redis.Redis.from_url(REDIS_URL)
    namespace = new_namespace("fanout_emit")
    engine = build_engine(config_dir, namespace, environ)
    user, data = payload["user"], payload["data"]
    figures = []
    try:
        engine.emit(EXAMPLE_EVENT, user=user, data=data)
        for _ in range(rounds):
            started = time.perf_counter()
            for _ in range(calls):
                engine.emit(EXAMPLE_EVENT, user=user, data=data)
            figures.append((time.perf_counter() - started) / calls * 1e6)
            delete_namespace(client, namespace)
    finally:
        delete_namespace(client, namespace)
    return statistics.median(figures)


def _end_to_end(
    receiver: Any,
    config_dir: Path,
    environ: dict[str, str],
    payload: dict[str, Any],
    systems: int,
    events: int,
    processes: int,
    threads: int,
    timeout_s: float,
    work: Path,
) -> dict[str, Any]:
    namespace = new_namespace(f"fanout_{systems}")
    env = _worker_environment(config_dir, namespace, environ)
    engine = build_engine(config_dir, namespace, env)
    user, data = payload["user"], payload["data"]

    def emit_all() -> None:
        for _ in range(events):
            engine.emit(EXAMPLE_EVENT, user=user, data=data)

    pool = WorkerPool("ue_flow", env, processes, threads, work / f"worker-{namespace}.log")
    return timed_phase(pool, receiver, emit_all, events * systems, timeout_s, namespace)
