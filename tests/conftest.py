"""Fixtures: real Redis under a private key prefix, real HTTP receivers, real workers."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml

ROOT = Path(__file__).resolve().parent.parent
REDIS_URL = os.environ.get("UE_FLOW_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="session")
def redis_client() -> redis.Redis:
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except redis.ConnectionError as error:
        pytest.fail(f"Redis is not answering at {REDIS_URL}: {error}; .ci/run starts it")
    return client


@pytest.fixture
def namespace(redis_client: redis.Redis) -> Iterator[str]:
    """A key prefix of this test's own; its keys are deleted afterwards."""
    prefix = f"ue_flow_test_{uuid.uuid4().hex[:12]}"
    yield prefix
    keys = list(redis_client.scan_iter(match=f"{prefix}*", count=1000))
    if keys:
        redis_client.delete(*keys)


@dataclass
class Request:
    headers: dict[str, str]
    body: bytes

    @property
    def envelope(self) -> dict[str, Any]:
        return json.loads(self.body)


#: One scripted answer: a status, a status with headers, ("hang", seconds)
#: to answer 200 only after that long, or "close" to drop the connection.
Answer = int | tuple[int, dict[str, str]] | tuple[str, float] | str


@dataclass
class Receiver:
    """An HTTP server on 127.0.0.1 that answers from a script, then with 200."""

    statuses: list[Answer] = field(default_factory=list)
    requests: list[Request] = field(default_factory=list)
    arrivals: list[float] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}/webhook/"

    def wait_for(self, count: int, timeout: float = 30.0) -> list[Request]:
        deadline = time.monotonic() + timeout
        while len(self.requests) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        return list(self.requests)


def _start_receiver(receiver: Receiver) -> Receiver:
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            headers = {name.lower(): value for name, value in self.headers.items()}
            with lock:
                receiver.requests.append(Request(headers, body))
                receiver.arrivals.append(time.monotonic())
                answer = receiver.statuses.pop(0) if receiver.statuses else 200
            self._answer(answer)

        def _answer(self, answer: Answer) -> None:
            extra: dict[str, str] = {}
            if answer == "close":
                self.close_connection = True
                self.connection.shutdown(2)
                return
            if isinstance(answer, tuple) and answer[0] == "hang":
                time.sleep(float(answer[1]))
                answer = 200
            if isinstance(answer, tuple):
                answer, extra = answer  # type: ignore[assignment]
            self.send_response(int(answer))  # type: ignore[arg-type]
            for name, value in extra.items():
                self.send_header(name, value)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    receiver.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=receiver.server.serve_forever, daemon=True).start()
    return receiver


@pytest.fixture
def receivers() -> Iterator[dict[str, Receiver]]:
    """One scripted receiver per shipped system, keyed by slug."""
    started = {slug: _start_receiver(Receiver()) for slug in ("mitxonline", "learn")}
    yield started
    for receiver in started.values():
        assert receiver.server is not None
        receiver.server.shutdown()
        receiver.server.server_close()


def write_config(
    directory: Path,
    *,
    schedule: list[str] | None = None,
    events_changes: dict[str, Any] | None = None,
    system_changes: dict[str, dict[str, Any]] | None = None,
) -> Path:
    """Copy the shipped config, schemas and examples into ``directory``.

    ``schedule`` sets the retry schedule without jitter; ``events_changes``
    replaces top-level sections of events.yaml; ``system_changes`` updates
    the entries of systems.yaml by slug.
    """
    for name in ("config", "schemas", "examples"):
        shutil.copytree(ROOT / name, directory / name)

    # The files are rewritten only when changed, so that tests of line
    # numbers see the shipped layout.
    events_file = directory / "config" / "events.yaml"
    if schedule is not None or events_changes:
        events = yaml.safe_load(events_file.read_text(encoding="utf-8"))
        if schedule is not None:
            events["delivery"]["retry"] = {"schedule": schedule, "jitter": 0}
        events.update(events_changes or {})
        events_file.write_text(yaml.safe_dump(events, sort_keys=False), encoding="utf-8")

    systems_file = directory / "config" / "systems.yaml"
    if system_changes:
        systems = yaml.safe_load(systems_file.read_text(encoding="utf-8"))
        for entry in systems["systems"]:
            entry.update(system_changes.get(entry["slug"], {}))
        systems_file.write_text(yaml.safe_dump(systems, sort_keys=False), encoding="utf-8")
    return directory / "config"


@pytest.fixture
def worker_env(tmp_path: Path, namespace: str, receivers: dict[str, Receiver]) -> dict[str, str]:
    """The environment of an application and its workers for one test."""
    config = write_config(
        tmp_path,
        schedule=["100ms", "200ms", "300ms"],
        events_changes={
            "workers": {
                "heartbeat_timeout": "3s",
                "sweep_interval": "500ms",
                "scheduler_interval": "50ms",
            }
        },
    )
    env = dict(os.environ)
    env.update(
        UE_FLOW_CONFIG=str(config),
        UE_FLOW_BROKER_URL=REDIS_URL,
        UE_FLOW_NAMESPACE=namespace,
        UE_FLOW_KEY_MITXONLINE="key-mitxonline-" + uuid.uuid4().hex,
        UE_FLOW_KEY_LEARN="key-learn-" + uuid.uuid4().hex,
        MITXONLINE_WEBHOOK_URL=receivers["mitxonline"].url,
        LEARN_WEBHOOK_URL=receivers["learn"].url,
    )
    # Each test's workers serve metrics on a free port from their own
    # multiprocess directory, so that tests never read each other's metrics.
    metrics_dir = tmp_path / "prometheus"
    metrics_dir.mkdir()
    env.update(
        dramatiq_prom_host="127.0.0.1",
        dramatiq_prom_port=str(free_port()),
        dramatiq_prom_db=str(metrics_dir),
    )
    env.pop("UE_FLOW_SECRET_MITXONLINE", None)
    env.pop("UE_FLOW_SECRET_LEARN", None)
    return env


class Worker:
    """A real ``dramatiq ue_flow`` process."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "dramatiq", "ue_flow", "-p", "1", "-t", "4"],
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            # Its own process group, so that kill() reaches the worker
            # processes Dramatiq forks, not only their parent.
            start_new_session=True,
        )

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if b"Worker process is ready" in self.log_path.read_bytes():
                return
            if self.process.poll() is not None:
                break
            time.sleep(0.1)
        pytest.fail(f"worker did not start:\n{self.output()}")

    def output(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def kill(self) -> None:
        """SIGKILL the whole worker process group, as a crash would."""
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self._log.close()


@pytest.fixture
def start_worker(tmp_path: Path) -> Iterator[Any]:
    """Start ``dramatiq ue_flow`` workers; each is stopped after the test."""
    workers: list[Worker] = []

    def start(env: dict[str, str], *, wait: bool = True) -> Worker:
        worker = Worker(env, tmp_path / f"worker-{len(workers)}.log")
        workers.append(worker)
        if wait:
            worker.wait_ready()
        return worker

    yield start
    for worker in workers:
        worker.stop()


def load_example(event_name: str, name: str) -> dict[str, Any]:
    path = ROOT / "examples" / event_name / f"{name}.json"
    payload: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return payload
