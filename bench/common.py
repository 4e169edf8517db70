"""Shared pieces of the benchmarks: paths, the example event, Redis namespaces."""

from __future__ import annotations

import json
import os
import shutil
import socket
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import redis
import yaml

from ue_flow.engine import Engine
from ue_flow.signing import generate_secret

ROOT = Path(__file__).resolve().parent.parent
REDIS_URL = "redis://127.0.0.1:6379/0"

#: The event every benchmark sends: three order lines, two owned by
#: mitxonline and one by learn, so each event becomes two deliveries.
EXAMPLE_EVENT = "post_sale"
EXAMPLE_FILE = ROOT / "examples" / "post_sale" / "two_systems.json"
DELIVERIES_PER_EVENT = 2


def load_example() -> dict[str, Any]:
    """Return the example payload file as ``{"user": ..., "data": ...}``."""
    payload: dict[str, Any] = json.loads(EXAMPLE_FILE.read_text(encoding="utf-8"))
    return payload


def new_namespace(label: str) -> str:
    """Return a Redis key prefix that no other run or test uses."""
    return f"ue_flow_bench_{label}_{uuid.uuid4().hex[:12]}"


def delete_namespace(client: redis.Redis, namespace: str) -> int:
    """Delete the keys under ``namespace`` (never anything else); return how many."""
    # Every key Dramatiq's RedisBroker writes starts with "<namespace>:".
    keys = list(client.scan_iter(match=f"{namespace}:*", count=1000))
    if keys:
        client.delete(*keys)
    return len(keys)


def copy_config(
    directory: Path,
    *,
    events_changes: Mapping[str, Any] | None = None,
    system_changes: Mapping[str, Mapping[str, Any]] | None = None,
) -> Path:
    """Copy the shipped config, schemas and examples into ``directory``; return the config dir.

    ``events_changes`` replaces top-level sections of events.yaml, and
    ``system_changes`` updates the entries of systems.yaml by slug, such as
    ``{"learn": {"delivery": {"read_timeout": "2s"}}}``.
    """
    for name in ("config", "schemas", "examples"):
        shutil.copytree(ROOT / name, directory / name)
    config_dir = directory / "config"

    if events_changes:
        events_file = config_dir / "events.yaml"
        events = yaml.safe_load(events_file.read_text(encoding="utf-8"))
        events.update(events_changes)
        events_file.write_text(yaml.safe_dump(events, sort_keys=False), encoding="utf-8")

    if system_changes:
        systems_file = config_dir / "systems.yaml"
        systems = yaml.safe_load(systems_file.read_text(encoding="utf-8"))
        for entry in systems["systems"]:
            entry.update(system_changes.get(entry["slug"], {}))
        systems_file.write_text(yaml.safe_dump(systems, sort_keys=False), encoding="utf-8")
    return config_dir


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def ue_flow_worker_environment(
    config_dir: Path, namespace: str, urls: Mapping[str, str]
) -> dict[str, str]:
    """Return the environment of ``dramatiq ue_flow`` workers for one benchmark phase.

    ``urls`` maps each shipped system's slug to the URL its deliveries go
    to. Keys and signing secrets are random. Dramatiq's Prometheus exposition
    server listens on a free port of 127.0.0.1 instead of 0.0.0.0:9191.
    """
    env = dict(os.environ)
    env.update(
        UE_FLOW_CONFIG=str(config_dir),
        UE_FLOW_BROKER_URL=REDIS_URL,
        UE_FLOW_REDIS_URL=REDIS_URL,
        UE_FLOW_NAMESPACE=namespace,
        UE_FLOW_KEY_MITXONLINE="bench-key-mitxonline-" + uuid.uuid4().hex,
        UE_FLOW_KEY_LEARN="bench-key-learn-" + uuid.uuid4().hex,
        MITXONLINE_WEBHOOK_URL=urls["mitxonline"],
        LEARN_WEBHOOK_URL=urls["learn"],
        dramatiq_prom_host="127.0.0.1",
        dramatiq_prom_port=str(free_port()),
    )
    # Workers refuse to start without the signing secrets systems.yaml names,
    # so ue-flow signs where the bare baseline does not; an HMAC of a
    # delivery body costs a few microseconds.
    env["UE_FLOW_SECRET_MITXONLINE"] = generate_secret()
    env["UE_FLOW_SECRET_LEARN"] = generate_secret()
    return env


def build_engine(config_dir: Path, namespace: str, environ: Mapping[str, str]) -> Engine:
    """Build an engine the way applications do, from the environment.

    ``Engine.from_environment`` reads UE_FLOW_CONFIG, UE_FLOW_BROKER_URL,
    UE_FLOW_REDIS_URL and UE_FLOW_NAMESPACE; they are set to this run's
    values, with ``environ`` for the URL templates, and restored afterwards.
    """
    settings = {
        **environ,
        "UE_FLOW_CONFIG": str(config_dir),
        "UE_FLOW_BROKER_URL": REDIS_URL,
        "UE_FLOW_REDIS_URL": REDIS_URL,
        "UE_FLOW_NAMESPACE": namespace,
    }
    saved = {name: os.environ.get(name) for name in settings}
    os.environ.update(settings)
    try:
        return Engine.from_environment()
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
