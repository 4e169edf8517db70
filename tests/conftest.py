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
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pika
import pika.exceptions
import pytest
import redis
import yaml

from ue_flow import state
from ue_flow.broker import NOT_FOUND, create_broker
from ue_flow.engine import Engine
from ue_flow.loader import load_config
from ue_flow.signing import generate_secret
from ue_flow.state import StateStores

ROOT = Path(__file__).resolve().parent.parent
REDIS_URL = os.environ.get("UE_FLOW_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")

#: The RabbitMQ server of the tests, without a vhost: each test adds its own.
RABBITMQ_URL = os.environ.get("UE_FLOW_TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672")

#: The user that each test's vhost grants every permission to.
RABBITMQ_USER = os.environ.get("UE_FLOW_TEST_RABBITMQ_USER", "guest")


def wait_until(condition: Callable[[], bool], timeout: float = 30.0) -> bool:
    """Poll ``condition`` every 50 ms until it is true or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


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


@dataclass(frozen=True)
class BrokerSetup:
    """The broker of one test: ``kind`` is ``redis`` or ``rabbitmq``.

    ``vhost`` is the RabbitMQ vhost made for the test, and None on Redis,
    where the ``namespace`` key prefix keeps tests apart.
    """

    kind: str
    url: str
    vhost: str | None = None


#: The broker of tests that do not ask for the ``broker`` fixture.
REDIS_BROKER = BrokerSetup("redis", REDIS_URL)


def rabbitmqctl(*args: str) -> None:
    """Run ``rabbitmqctl`` with ``args``, failing the test with its output on error."""
    try:
        result = subprocess.run(
            ["rabbitmqctl", *args], capture_output=True, text=True, timeout=60, check=False
        )
    except FileNotFoundError:
        pytest.fail("rabbitmqctl is not installed; the RabbitMQ tests need a local RabbitMQ")
    if result.returncode != 0:
        pytest.fail(
            f"rabbitmqctl {' '.join(args)} failed with status {result.returncode}:\n"
            f"{result.stdout}{result.stderr}\n.ci/run starts RabbitMQ when it is not answering"
        )


@pytest.fixture(params=["redis", "rabbitmq"])
def broker(request: pytest.FixtureRequest) -> Iterator[BrokerSetup]:
    """Run the test on Redis, then on RabbitMQ in a vhost of its own, deleted afterwards."""
    if request.param == "redis":
        yield REDIS_BROKER
        return

    vhost = f"ue_flow_test_{uuid.uuid4().hex[:12]}"
    rabbitmqctl("add_vhost", vhost)
    try:
        rabbitmqctl("set_permissions", "-p", vhost, RABBITMQ_USER, ".*", ".*", ".*")
        yield BrokerSetup("rabbitmq", f"{RABBITMQ_URL}/{vhost}", vhost)
    finally:
        # Deleting the vhost also deletes its queues and closes its connections.
        rabbitmqctl("delete_vhost", vhost)


def rabbitmq_queue_length(url: str, queue_name: str) -> int:
    """Return how many ready messages ``queue_name`` holds; 0 when it does not exist."""
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        declared = connection.channel().queue_declare(queue=queue_name, passive=True)
        return int(declared.method.message_count)
    except pika.exceptions.ChannelClosedByBroker as error:
        if error.reply_code == NOT_FOUND:
            return 0
        raise
    finally:
        if connection.is_open:
            connection.close()


def rabbitmq_peek(url: str, queue_name: str) -> list[bytes]:
    """Return the bodies of the ready messages in ``queue_name``, leaving them queued.

    The messages are fetched without acknowledgement, so closing the
    connection returns them to the queue.
    """
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        bodies = []
        while True:
            method, _, body = channel.basic_get(queue_name, auto_ack=False)
            if method is None:
                return bodies
            bodies.append(body)
    finally:
        connection.close()


#: The start of every system's delivery queue name, which ends with the slug.
DELIVERY_QUEUE_PREFIX = "deliver."


def redis_queued(client: redis.Redis, namespace: str, queue_name: str) -> list[dict[str, Any]]:
    """Return the decoded messages ready on the Redis queue ``queue_name``, in queue order.

    Dramatiq's Redis broker keeps the message ids of a queue in the list
    ``<namespace>:<queue_name>`` and each message's JSON body in the hash
    ``<namespace>:<queue_name>.msgs``, keyed by that id.
    """
    queue = f"{namespace}:{queue_name}"
    ids = client.lrange(queue, 0, -1)
    if not ids:
        return []

    bodies = client.hmget(f"{queue}.msgs", ids)
    messages = []
    for message_id, body in zip(ids, bodies, strict=True):
        assert body is not None, f"message {message_id!r} on {queue} has no body in {queue}.msgs"
        messages.append(json.loads(body))
    return messages


def queued_deliveries(client: redis.Redis, namespace: str) -> dict[str, list[dict[str, Any]]]:
    """Return the decoded messages ready on each system's Redis delivery queue, keyed by slug.

    Systems whose queue is empty are left out, so an emit that queued
    nothing gives ``{}``. Delayed messages (the ``.DQ`` queues that retries
    use) are not read.
    """
    prefix = f"{namespace}:{DELIVERY_QUEUE_PREFIX}"
    queued = {}
    for key in sorted(client.scan_iter(match=f"{prefix}*")):
        slug = key.decode().removeprefix(prefix)
        # Slugs contain no dot, so a name with one is a queue's .msgs hash
        # or its delay queue.
        if "." in slug:
            continue
        messages = redis_queued(client, namespace, DELIVERY_QUEUE_PREFIX + slug)
        if messages:
            queued[slug] = messages
    return queued


def build_engine(env: dict[str, str]) -> Engine:
    """Return an application-side engine on the broker, Redis and key prefix of ``env``."""
    loaded = load_config(env["UE_FLOW_CONFIG"])
    key_prefix = env["UE_FLOW_NAMESPACE"]
    if env["UE_FLOW_BROKER_URL"] == REDIS_URL:
        return Engine.for_redis(loaded, REDIS_URL, key_prefix)

    broker = create_broker(
        env["UE_FLOW_BROKER_URL"],
        heartbeat_timeout_ms=loaded.config.workers.heartbeat_timeout_ms,
    )
    client = state.connect(env["UE_FLOW_REDIS_URL"])
    return Engine(loaded, broker, StateStores.open(client, key_prefix, loaded.config))


@dataclass
class Request:
    headers: dict[str, str]
    body: bytes

    @property
    def envelope(self) -> dict[str, Any]:
        return json.loads(self.body)


#: One scripted response: a status, a status with headers, ("hang", seconds)
#: to respond 200 only after that long, or "close" to drop the connection.
Answer = int | tuple[int, dict[str, str]] | tuple[str, float] | str


@dataclass
class Receiver:
    """An HTTP server on 127.0.0.1 that responds from a script, then with 200."""

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


def start_receiver(receiver: Receiver, port: int = 0) -> Receiver:
    """Serve ``receiver`` on 127.0.0.1:``port`` (0 picks a free port).

    A fixed port lets a test shut a receiver down and bring it back where
    workers already send.
    """
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

    receiver.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    threading.Thread(target=receiver.server.serve_forever, daemon=True).start()
    return receiver


@pytest.fixture
def receivers() -> Iterator[dict[str, Receiver]]:
    """One scripted receiver per shipped system, keyed by slug."""
    started = {slug: start_receiver(Receiver()) for slug in ("mitxonline", "learn")}
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
def worker_env(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    namespace: str,
    receivers: dict[str, Receiver],
) -> dict[str, str]:
    """The environment of an application and its workers for one test.

    The broker is Redis unless the test requests the ``broker`` fixture,
    which runs it on each broker in turn.
    """
    broker: BrokerSetup = (
        request.getfixturevalue("broker") if "broker" in request.fixturenames else REDIS_BROKER
    )
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
        UE_FLOW_BROKER_URL=broker.url,
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
    # Workers refuse to start without the signing secrets systems.yaml names.
    env["UE_FLOW_SECRET_MITXONLINE"] = generate_secret()
    env["UE_FLOW_SECRET_LEARN"] = generate_secret()
    # The delivery state stays in the test's Redis under ``namespace`` on
    # either broker; on Redis it comes from the broker URL.
    if broker.kind == "rabbitmq":
        env["UE_FLOW_REDIS_URL"] = REDIS_URL
    else:
        env.pop("UE_FLOW_REDIS_URL", None)
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
