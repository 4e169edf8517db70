"""Fixtures of the fault tests: a private Redis server, restartable receivers, delivery tallies."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.conftest import (
    REDIS_URL,
    Receiver,
    Request,
    free_port,
    load_example,
    start_receiver,
    wait_until,
    write_config,
)
from ue_flow.engine import Engine
from ue_flow.loader import load_config
from ue_flow.routing import route

#: Worker settings short enough that a killed worker's messages are queued
#: again within about 4 s: the 3 s heartbeat timeout plus one 500 ms sweep.
FAST_WORKERS = {"heartbeat_timeout": "3s", "sweep_interval": "500ms", "scheduler_interval": "50ms"}

#: Delivery settings of the fault tests. The schedule is long enough (40
#: retries, about 74 s in all before jitter) that no delivery runs out of
#: retries while a fault lasts. The short cooldown lets a recovered
#: receiver's circuit close about a second after it comes back.
FAULT_DELIVERY = {
    "connect_timeout": "1s",
    "read_timeout": "3s",
    "retry": {"schedule": ["100ms", "200ms", "400ms", "800ms"] + ["2s"] * 36, "jitter": 0.2},
    "circuit_breaker": {"failure_threshold": 5, "cooldown": "1s"},
}

#: The example payloads emitted in turn: one or both systems each.
EXAMPLES = [
    ("basket_add", "add_course"),
    ("post_sale", "two_systems"),
    ("post_sale", "one_system"),
    ("post_refund", "partial"),
]

#: The maximum wait for a private redis-server to reply to PING after it starts, in seconds.
REDIS_START_TIMEOUT_S = 15.0


def fault_env(worker_env: dict[str, str], directory: Path) -> dict[str, str]:
    """Return ``worker_env`` with the fault tests' delivery and worker settings."""
    config = write_config(
        directory,
        events_changes={"delivery": FAULT_DELIVERY, "workers": FAST_WORKERS},
    )
    return {**worker_env, "UE_FLOW_CONFIG": str(config)}


def engine_for(env: dict[str, str], url: str = REDIS_URL) -> Engine:
    """Return the application's engine for ``env``, on the Redis at ``url``."""
    return Engine.for_redis(load_config(env["UE_FLOW_CONFIG"]), url, env["UE_FLOW_NAMESPACE"])


def emit_example(engine: Engine, number: int, **options: Any) -> tuple[str, set[str]]:
    """Emit the ``number``-th example in turn; return its event id and receiving systems."""
    event_name, example = EXAMPLES[number % len(EXAMPLES)]
    payload = load_example(event_name, example)
    systems = expected_systems(engine, event_name, payload)
    return engine.emit(event_name, **payload, **options), systems


def expected_systems(engine: Engine, event_name: str, payload: dict[str, Any]) -> set[str]:
    """Return the slugs that routing sends ``payload`` to."""
    normalized = engine.validate(event_name, **payload)
    return set(route(engine.config, engine.config.events[event_name], normalized))


@dataclass
class Tally:
    """What the receivers got, compared with the events that emit accepted.

    ``expected`` maps each accepted event id to the systems it concerns;
    ``received`` maps (event id, system) to the bodies of every request.
    """

    expected: dict[str, set[str]]
    received: dict[tuple[str, str], list[bytes]] = field(default_factory=dict)

    @property
    def missing(self) -> list[tuple[str, str]]:
        """The (event id, system) pairs that no request delivered yet."""
        return sorted(
            (event_id, slug)
            for event_id, slugs in self.expected.items()
            for slug in slugs
            if (event_id, slug) not in self.received
        )

    @property
    def unexpected(self) -> list[tuple[str, str]]:
        """The (event id, system) pairs received that no accepted event concerns."""
        return sorted(
            pair for pair in self.received if pair[1] not in self.expected.get(pair[0], set())
        )

    @property
    def deliveries(self) -> int:
        return sum(len(bodies) for bodies in self.received.values())

    @property
    def duplicates(self) -> int:
        """Requests beyond the first for the same event and system."""
        return self.deliveries - len(self.received)

    def report(self, title: str) -> str:
        per_system = Counter(slug for _, slug in self.received)
        return (
            f"{title}: events={len(self.expected)} "
            f"expected deliveries={sum(len(slugs) for slugs in self.expected.values())} "
            f"requests={self.deliveries} duplicates={self.duplicates} "
            f"missing={len(self.missing)} per system={dict(sorted(per_system.items()))}"
        )


def tally(expected: dict[str, set[str]], requests: dict[str, list[Request]]) -> Tally:
    """Group ``requests`` (by system slug) by their ``webhook-id``."""
    received: dict[tuple[str, str], list[bytes]] = defaultdict(list)
    for slug, system_requests in requests.items():
        for request in list(system_requests):
            received[(request.headers["webhook-id"], slug)].append(request.body)
    return Tally(expected, dict(received))


def wait_delivered(
    expected: dict[str, set[str]],
    collect: Callable[[], dict[str, list[Request]]],
    timeout: float,
) -> Tally:
    """Wait until every expected delivery arrived, or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    current = tally(expected, collect())
    while current.missing and time.monotonic() < deadline:
        time.sleep(0.2)
        current = tally(expected, collect())
    return current


def assert_delivered_once_or_more(result: Tally) -> None:
    """Assert the at-least-once invariants: nothing missing, nothing foreign, duplicates equal."""
    assert not result.missing, f"{len(result.missing)} missing, e.g. {result.missing[:5]}"
    assert not result.unexpected, f"requests no accepted event explains: {result.unexpected[:5]}"
    for (event_id, slug), bodies in result.received.items():
        envelopes = [json.loads(body) for body in bodies]
        assert all(envelope["system_slug"] == slug for envelope in envelopes), event_id
        # Every copy of one delivery carries the same webhook-id (the key of
        # this grouping) and the same envelope, so a receiver can drop it.
        assert all(envelope == envelopes[0] for envelope in envelopes), (event_id, slug)


def serve_receiver(receiver: Receiver, port: int = 0) -> Receiver:
    """Serve ``receiver`` on 127.0.0.1:``port``, as the shared fixtures do."""
    return start_receiver(receiver, port)


def shut_receiver(receiver: Receiver) -> None:
    """Stop serving and close the listening socket, so connections are refused."""
    assert receiver.server is not None
    receiver.server.shutdown()
    receiver.server.server_close()


class RedisServer:
    """A private redis-server on 127.0.0.1 with an append-only file fsynced on every write."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start the server on its port and directory; wait until it replies to PING."""
        self.starts += 1
        log = self.directory / f"redis-{self.starts}.log"
        self.process = subprocess.Popen(
            [
                shutil.which("redis-server") or "redis-server",
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--appendonly", "yes",
                "--appendfsync", "always",
                "--dir", str(self.directory),
                "--save", "",
                "--logfile", str(log),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        client = redis.Redis.from_url(self.url)
        try:
            ready = wait_until(lambda: _replies_to_ping(client), timeout=REDIS_START_TIMEOUT_S)
        finally:
            client.close()
        if not ready:
            self.kill()
            text = log.read_text(errors="replace") if log.exists() else "no log written"
            message = (
                f"private redis-server on port {self.port} did not reply to PING "
                f"within {REDIS_START_TIMEOUT_S} s; its log:\n{text}"
            )
            pytest.fail(message)

    def kill(self) -> None:
        """SIGKILL the server, as a crash would.

        With ``appendfsync always`` every acknowledged write is already on disk.
        """
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    def shutdown(self) -> None:
        """Stop the server with SHUTDOWN, which flushes the append-only file first."""
        client = redis.Redis.from_url(self.url)
        try:
            client.shutdown()
        except redis.ConnectionError:
            pass  # The server closes the connection as it exits.
        finally:
            client.close()
        if self.process is not None:
            self.process.wait(timeout=10)


def _replies_to_ping(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test's own, started, and killed after the test."""
    directory = tmp_path / "redis"
    directory.mkdir()
    server = RedisServer(directory)
    server.start()
    yield server
    server.kill()
