"""Attacks on real ``dramatiq ue_flow`` workers: kept slots, batched bookkeeping, requeues."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pika
import pytest
import redis

from tests.conftest import (
    ROOT,
    BrokerSetup,
    Request,
    Worker,
    build_engine,
    free_port,
    load_example,
    rabbitmq_queue_length,
    rabbitmqctl,
    write_config,
)
from tests.conftest import (
    wait_until as poll_until,
)
from ue_flow.cli import main, operate_commands
from ue_flow.engine import Engine
from ue_flow.state.attempts import DELIVERED, FAILED, AttemptLog

pytestmark = pytest.mark.slow

#: Delivery settings of these tests: a read timeout longer than any gate is
#: held closed, and retries short enough to end within a test.
DELIVERY = {
    "connect_timeout": "3s",
    "read_timeout": "60s",
    "retry": {"schedule": ["100ms", "200ms", "300ms"], "jitter": 0},
}

#: Worker settings of these tests, as the shared ``worker_env`` sets them.
WORKERS = {"heartbeat_timeout": "3s", "sweep_interval": "500ms", "scheduler_interval": "50ms"}


class Endpoint:
    """An HTTP receiver on 127.0.0.1 that counts the requests it has open at once.

    Each request waits ``hold_s`` seconds, or until ``gate`` is set when a
    gate is given, then gets ``status``. Both can change while it runs.
    """

    def __init__(self, hold_s: float = 0.0, status: int = 200) -> None:
        self.hold_s = hold_s
        self.status = status
        self.gate: threading.Event | None = None
        self.requests: list[Request] = []
        self.active = 0
        self.max_active = 0
        self._lock = threading.Lock()
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                headers = {name.lower(): value for name, value in self.headers.items()}
                status = endpoint._hold(Request(headers, body))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/webhook/"

    def _hold(self, request: Request) -> int:
        with self._lock:
            self.requests.append(request)
            self.active += 1
            self.max_active = max(self.max_active, self.active)
            gate = self.gate
        try:
            if gate is not None:
                gate.wait(timeout=120)
            elif self.hold_s:
                time.sleep(self.hold_s)
            return self.status
        finally:
            with self._lock:
                self.active -= 1

    def ids(self) -> list[str]:
        """Return the webhook-id of every request so far, in arrival order."""
        with self._lock:
            return [request.headers["webhook-id"] for request in self.requests]

    def close(self) -> None:
        if self.gate is not None:
            self.gate.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def endpoints() -> Iterator[dict[str, Endpoint]]:
    """One Endpoint per shipped system, keyed by slug."""
    started = {slug: Endpoint() for slug in ("mitxonline", "learn")}
    yield started
    for endpoint in started.values():
        endpoint.close()


def attack_env(
    worker_env: dict[str, str],
    directory: Path,
    endpoints: dict[str, Endpoint],
    system_changes: dict[str, dict[str, Any]] | None = None,
) -> dict[str, str]:
    """Return ``worker_env`` sending to ``endpoints``, with this file's delivery settings."""
    config = write_config(
        directory,
        events_changes={"delivery": DELIVERY, "workers": WORKERS},
        system_changes=system_changes,
    )
    return {
        **worker_env,
        "UE_FLOW_CONFIG": str(config),
        "MITXONLINE_WEBHOOK_URL": endpoints["mitxonline"].url,
        "LEARN_WEBHOOK_URL": endpoints["learn"].url,
    }


class DramatiqWorker(Worker):
    """A ``dramatiq ue_flow`` command with the given options, on metrics of its own."""

    def __init__(self, env: dict[str, str], log_path: Path, options: list[str]) -> None:
        metrics = log_path.with_suffix(".prometheus")
        metrics.mkdir()
        env = {**env, "dramatiq_prom_port": str(free_port()), "dramatiq_prom_db": str(metrics)}
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "dramatiq", "ue_flow", *options],
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            start_new_session=True,
        )


@pytest.fixture
def start_dramatiq(tmp_path: Path) -> Iterator[Callable[..., DramatiqWorker]]:
    """Start ``dramatiq ue_flow`` commands with chosen options; each is stopped afterwards."""
    workers: list[DramatiqWorker] = []

    def start(env: dict[str, str], *options: str) -> DramatiqWorker:
        worker = DramatiqWorker(env, tmp_path / f"dramatiq-{len(workers)}.log", list(options))
        workers.append(worker)
        worker.wait_ready()
        return worker

    yield start
    for worker in workers:
        worker.stop()


def wait_until(condition: Callable[[], bool], timeout: float = 60.0) -> bool:
    """Poll as ``tests.conftest.wait_until`` does, by default for 60 s.

    These tests run several worker processes at once.
    """
    return poll_until(condition, timeout)


@contextlib.contextmanager
def emitting_learn(engine: Engine) -> Iterator[list[str]]:
    """Emit learn orders every 10 ms in a thread while the block runs; yield their ids."""
    emitted: list[str] = []
    stop = threading.Event()

    def keep_emitting() -> None:
        while not stop.is_set():
            emitted.append(emit_learn(engine))
            time.sleep(0.01)

    emitter = threading.Thread(target=keep_emitting)
    emitter.start()
    try:
        yield emitted
    finally:
        stop.set()
        emitter.join()


def emit_learn(engine: Engine) -> str:
    """Emit an order whose delivery goes to learn only."""
    return engine.emit("post_sale", **load_example("post_sale", "two_systems"), systems=["learn"])


def emit_mitxonline(engine: Engine) -> str:
    """Emit a basket event, which only mitxonline receives."""
    return engine.emit("basket_add", **load_example("basket_add", "add_course"))


def status_of(log: AttemptLog, event_id: str, slug: str) -> str:
    """Return the status of a delivery's record, or "" while it has none."""
    found = log.get(event_id, slug)
    return found.status if found is not None else ""


def in_flight(client: redis.Redis, namespace: str, slug: str) -> int:
    return int(client.zcard(f"{namespace}:inflight:{slug}"))


def test_max_in_flight_across_workers(
    worker_env: dict[str, str],
    tmp_path: Path,
    endpoints: dict[str, Endpoint],
    start_dramatiq: Callable[..., DramatiqWorker],
    redis_client: redis.Redis,
    namespace: str,
) -> None:
    # Each process may use 4 of its 8 threads for learn, 8 in all, but
    # learn allows 3 in flight. Kept slots must count toward the 3.
    env = attack_env(
        worker_env, tmp_path / "config", endpoints, {"learn": {"delivery": {"max_in_flight": 3}}}
    )
    endpoints["learn"].hold_s = 0.1
    start_dramatiq(env, "-p", "1", "-t", "8")
    start_dramatiq(env, "-p", "1", "-t", "8")
    engine = build_engine(env)

    event_ids = {emit_learn(engine) for _ in range(80)}

    assert wait_until(lambda: set(endpoints["learn"].ids()) >= event_ids, timeout=120)
    assert endpoints["learn"].max_active <= 3
    # The test reaches the limit, so it would see a breach.
    assert endpoints["learn"].max_active >= 2
    # Kept slots are given back after 100 ms idle, so none stays counted.
    assert wait_until(lambda: in_flight(redis_client, namespace, "learn") == 0)


@pytest.fixture
def two_pools_engine(
    worker_env: dict[str, str],
    tmp_path: Path,
    endpoints: dict[str, Endpoint],
    start_dramatiq: Callable[..., DramatiqWorker],
) -> Engine:
    """Return an engine beside two worker pools (three processes) posting to ``endpoints``."""
    env = attack_env(worker_env, tmp_path / "config", endpoints)
    start_dramatiq(env, "-p", "2", "-t", "4")
    start_dramatiq(env, "-p", "1", "-t", "4")
    return build_engine(env)


def test_disable_reaches_every_worker(
    two_pools_engine: Engine, endpoints: dict[str, Endpoint]
) -> None:
    engine = two_pools_engine

    with emitting_learn(engine) as emitted:
        assert wait_until(lambda: len(endpoints["learn"].requests) >= 50)
        engine.stores.systems.disable("learn", "system disabled by an operator", 0)
        # README: disabling reaches every worker within about a second.
        time.sleep(3)
        late_start = len(emitted)
        time.sleep(2)
    late = set(emitted[late_start:])

    def parked() -> set[str]:
        return {letter.event_id for letter in engine.stores.dead_letters.select(system="learn")}

    assert len(late) >= 20
    assert wait_until(lambda: parked() >= late)
    assert late.isdisjoint(endpoints["learn"].ids())


def test_open_circuit_reaches_every_worker(
    two_pools_engine: Engine, endpoints: dict[str, Endpoint]
) -> None:
    engine = two_pools_engine
    breaker = engine.config.systems["learn"].delivery.circuit_breaker

    def circuit() -> str:
        return engine.stores.systems.health("learn", breaker, int(time.time() * 1000)).circuit

    with emitting_learn(engine):
        assert wait_until(lambda: len(endpoints["learn"].requests) >= 50)
        endpoints["learn"].status = 500
        assert wait_until(lambda: circuit() == "open")
        # README: an open circuit reaches every worker within about a second,
        # and it stays open for the 30 s cooldown.
        time.sleep(3)
        assert circuit() == "open"
        requests_before = len(endpoints["learn"].requests)
        time.sleep(3)
        requests_after = len(endpoints["learn"].requests)
        assert circuit() == "open"

    assert requests_after == requests_before


def test_sigterm_keeps_batched_bookkeeping(
    worker_env: dict[str, str],
    tmp_path: Path,
    endpoints: dict[str, Endpoint],
    start_dramatiq: Callable[..., DramatiqWorker],
    redis_client: redis.Redis,
    namespace: str,
) -> None:
    env = attack_env(worker_env, tmp_path / "config", endpoints)
    endpoints["learn"].hold_s = 0.05
    worker = start_dramatiq(env, "-p", "2", "-t", "4")
    engine = build_engine(env)
    event_ids = [
        engine.emit("post_sale", **load_example("post_sale", "two_systems")) for _ in range(300)
    ]

    # Stop mid-burst, while deliveries are in flight and successes wait
    # for the next batch.
    assert wait_until(lambda: len(endpoints["learn"].requests) >= 100)
    worker.stop()
    assert "Worker has been shut down" in worker.output()
    delivered_before = {
        (slug, event_id) for slug, endpoint in endpoints.items() for event_id in endpoint.ids()
    }

    log = engine.stores.attempts
    for slug, event_id in sorted(delivered_before):
        found = log.get(event_id, slug)
        assert found is not None, f"no record of {event_id} to {slug}, which arrived"
        assert found.status == DELIVERED, (event_id, slug, found.status)
    assert in_flight(redis_client, namespace, "learn") == 0
    assert in_flight(redis_client, namespace, "mitxonline") == 0

    # A new worker delivers the rest, each with a record.
    start_dramatiq(env, "-p", "1", "-t", "4")

    def all_arrived() -> bool:
        return all(set(endpoint.ids()) >= set(event_ids) for endpoint in endpoints.values())

    assert wait_until(all_arrived, timeout=120)
    expected = {(event_id, slug) for event_id in event_ids for slug in endpoints}

    def unrecorded() -> set[tuple[str, str]]:
        return {pair for pair in expected if status_of(log, *pair) != DELIVERED}

    assert wait_until(lambda: not unrecorded(), timeout=30), sorted(unrecorded())[:5]


def run_cli(monkeypatch: pytest.MonkeyPatch, env: dict[str, str], *args: str) -> int:
    """Run ``ue-flow`` in this process with the broker settings of ``env``."""
    for name in ("UE_FLOW_CONFIG", "UE_FLOW_BROKER_URL", "UE_FLOW_NAMESPACE"):
        monkeypatch.setenv(name, env[name])
    if "UE_FLOW_REDIS_URL" in env:
        monkeypatch.setenv("UE_FLOW_REDIS_URL", env["UE_FLOW_REDIS_URL"])
    else:
        monkeypatch.delenv("UE_FLOW_REDIS_URL", raising=False)
    return main(list(args))


def odd_payload() -> dict[str, Any]:
    """Return the two-system order with Unicode, integers beyond 2^63 and large amounts."""
    payload = load_example("post_sale", "two_systems")
    payload["user"]["id"] = 2**63 + 5
    payload["user"]["first_name"] = 'Zoë 😀 \u2028 \\/ "q" </script>'
    payload["data"]["total_price_paid"] = Decimal("1234567890123.45")
    payload["data"]["lines"][0]["product"]["system_data"] = {"empty": {}, "none": [], "n": 1e-7}
    return payload


def test_records_of_odd_payload(
    worker_env: dict[str, str],
    tmp_path: Path,
    endpoints: dict[str, Endpoint],
    start_dramatiq: Callable[..., DramatiqWorker],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    env = attack_env(worker_env, tmp_path / "config", endpoints)
    start_dramatiq(env, "-p", "1", "-t", "4")
    engine = build_engine(env)
    log = engine.stores.attempts

    event_id = engine.emit("post_sale", **odd_payload())

    assert wait_until(lambda: event_id in endpoints["learn"].ids())
    assert wait_until(lambda: status_of(log, event_id, "learn") == DELIVERED)
    first = endpoints["learn"].requests[0]
    envelope = first.envelope
    assert envelope["user"]["id"] == 2**63 + 5
    assert envelope["user"]["first_name"] == odd_payload()["user"]["first_name"]
    assert envelope["data"]["total_price_paid"] == "1234567890123.45"
    record = log.get(event_id, "learn")
    assert record is not None
    assert record.user == envelope["user"]
    assert record.data == envelope["data"]

    assert run_cli(monkeypatch, env, "deliveries", "--event", event_id, "--json") == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    deliveries = {line["system"]: line for line in lines if line["kind"] == "delivery"}
    attempts = [line for line in lines if line["kind"] == "attempt"]
    assert wait_until(lambda: log.get(event_id, "mitxonline") is not None)
    assert deliveries["learn"]["status"] == DELIVERED
    assert {attempt["status"] for attempt in attempts} == {200}

    # redeliver sends the payload of the record: the same bytes as before.
    assert run_cli(monkeypatch, env, "redeliver", event_id, "--system", "learn") == 0
    assert wait_until(lambda: endpoints["learn"].ids().count(event_id) == 2)
    assert endpoints["learn"].requests[1].body == first.body
    assert wait_until(lambda: status_of(log, event_id, "learn") == DELIVERED)

    # A disabled system parks the delivery; enabling replays it with the same bytes.
    assert run_cli(monkeypatch, env, "systems", "disable", "learn") == 0
    # A worker reuses its kept slot, without the disabled check, for up to 1 s.
    time.sleep(2)
    parked_id = engine.emit("post_sale", **odd_payload())
    assert wait_until(lambda: status_of(log, parked_id, "learn") == FAILED)
    assert run_cli(monkeypatch, env, "systems", "enable", "learn") == 0
    assert wait_until(lambda: parked_id in endpoints["learn"].ids())
    replayed = next(
        request
        for request in endpoints["learn"].requests
        if request.headers["webhook-id"] == parked_id
    )
    assert replayed.body == first.body
    assert wait_until(lambda: status_of(log, parked_id, "learn") == DELIVERED)
    record = log.get(parked_id, "learn")
    assert record is not None
    assert record.attempts == 1

    capsys.readouterr()
    assert run_cli(monkeypatch, env, "systems", "--json") == 0
    systems = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    learn = next(system for system in systems if system["slug"] == "learn")
    assert learn["enabled"] is True
    assert learn["last_success_ms"] is not None


def test_redeliver_record_ends_delivered(
    worker_env: dict[str, str],
    tmp_path: Path,
    endpoints: dict[str, Endpoint],
    start_dramatiq: Callable[..., DramatiqWorker],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    env = attack_env(worker_env, tmp_path / "config", endpoints)
    start_dramatiq(env, "-p", "1", "-t", "4")
    engine = build_engine(env)
    log = engine.stores.attempts
    event_id = emit_learn(engine)
    assert wait_until(lambda: status_of(log, event_id, "learn") == DELIVERED)
    first = log.get(event_id, "learn")
    assert first is not None
    send = operate_commands.send_delivery

    def send_then_wait(*args: Any, **kwargs: Any) -> None:
        # The worker delivers and writes its record before the command goes
        # on, as on a busy host; nothing the command does then may undo it.
        send(*args, **kwargs)
        redelivered = wait_until(
            lambda: (
                endpoints["learn"].ids().count(event_id) == 2
                and status_of(log, event_id, "learn") == DELIVERED
            )
        )
        if not redelivered:
            pytest.fail("the worker did not deliver the redelivery")

    monkeypatch.setattr(operate_commands, "send_delivery", send_then_wait)
    assert run_cli(monkeypatch, env, "redeliver", event_id, "--system", "learn") == 0

    assert endpoints["learn"].ids().count(event_id) == 2
    assert wait_until(lambda: status_of(log, event_id, "learn") == DELIVERED, timeout=10), (
        f"the record says {log.get(event_id, 'learn')}"
    )


def test_cycling_system_leaves_others_flowing(
    worker_env: dict[str, str],
    tmp_path: Path,
    endpoints: dict[str, Endpoint],
    start_dramatiq: Callable[..., DramatiqWorker],
) -> None:
    # learn keeps its share of the threads busy, so its queued deliveries
    # cycle through the queue; mitxonline's must still go out at once.
    env = attack_env(worker_env, tmp_path / "config", endpoints)
    endpoints["learn"].hold_s = 0.3
    start_dramatiq(env, "-p", "1", "-t", "4")
    engine = build_engine(env)
    learn_ids = [emit_learn(engine) for _ in range(60)]
    assert wait_until(lambda: len(endpoints["learn"].requests) >= 4)

    mitxonline_ids = [emit_mitxonline(engine) for _ in range(20)]

    assert wait_until(lambda: set(endpoints["mitxonline"].ids()) >= set(mitxonline_ids))
    learn_done_then = len(endpoints["learn"].requests)
    assert learn_done_then < len(learn_ids)
    assert wait_until(lambda: set(endpoints["learn"].ids()) >= set(learn_ids), timeout=120)
    assert endpoints["learn"].max_active <= 2


def test_dedicated_worker_uses_its_threads(
    worker_env: dict[str, str],
    tmp_path: Path,
    endpoints: dict[str, Endpoint],
    start_dramatiq: Callable[..., DramatiqWorker],
) -> None:
    env = attack_env(worker_env, tmp_path / "config", endpoints)
    endpoints["learn"].gate = threading.Event()
    start_dramatiq(env, "-p", "1", "-t", "4", "-Q", "deliver.learn")
    engine = build_engine(env)

    event_ids = [emit_learn(engine) for _ in range(8)]

    try:
        # docs/deployment.md: -Q gives a system workers of its own.
        assert wait_until(lambda: endpoints["learn"].active >= 4, timeout=20)
    finally:
        endpoints["learn"].gate.set()
        assert wait_until(lambda: set(endpoints["learn"].ids()) >= set(event_ids))


def add_dropped_queue(url: str, name: str) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        connection.channel().queue_declare(queue=name, durable=True)
    finally:
        connection.close()


@pytest.mark.parametrize("broker", ["rabbitmq"], indirect=True)
def test_rejected_requeue_loses_nothing(
    broker: BrokerSetup,
    worker_env: dict[str, str],
    tmp_path: Path,
    endpoints: dict[str, Endpoint],
    start_dramatiq: Callable[..., DramatiqWorker],
) -> None:
    assert broker.vhost is not None
    env = attack_env(worker_env, tmp_path / "config", endpoints)
    for endpoint in endpoints.values():
        endpoint.gate = threading.Event()
    router = start_dramatiq(env, "-p", "1", "-t", "2", "-Q", "events")
    deliverer = start_dramatiq(
        env, "-p", "1", "-t", "4", "-Q", "deliver.learn", "deliver.mitxonline"
    )
    engine = build_engine(env)

    # Two hanging deliveries per system take all four threads, and learn's
    # share of two.
    first = [emit_learn(engine), emit_learn(engine), emit_mitxonline(engine)]
    first.append(emit_mitxonline(engine))
    if not wait_until(lambda: all(len(each.requests) == 2 for each in endpoints.values())):
        pytest.fail("the four first deliveries did not all reach their receivers")

    # Two more learn deliveries wait in the delivery worker's memory.
    waiting = [emit_learn(engine), emit_learn(engine)]

    def fetched() -> bool:
        routed = all(event_id in router.output() for event_id in waiting)
        return routed and rabbitmq_queue_length(broker.url, "deliver.learn") == 0

    if not wait_until(fetched):
        pytest.fail("the waiting deliveries were not routed and fetched")

    # deliver.learn now rejects publishes, as a full queue with a length
    # limit does. Ready messages that the limit removes go to a side queue,
    # so that a loss the policy itself causes is not blamed on ue-flow.
    add_dropped_queue(broker.url, "attack.dropped")
    policy = {
        "max-length": 0,
        "overflow": "reject-publish",
        "dead-letter-exchange": "",
        "dead-letter-routing-key": "attack.dropped",
    }
    rabbitmqctl(
        "set_policy", "-p", broker.vhost, "--apply-to", "queues",
        "full", r"^deliver\.learn$", json.dumps(policy),
    )  # fmt: skip
    endpoints["mitxonline"].gate.set()  # type: ignore[union-attr]

    failure = "Unexpected failure in after_process_message"
    wait_until(lambda: deliverer.output().count(failure) >= 2, timeout=30)
    rabbitmqctl("clear_policy", "-p", broker.vhost, "full")
    if rabbitmq_queue_length(broker.url, "attack.dropped") != 0:
        pytest.fail("the length limit itself removed a queued message; the test is void")
    endpoints["learn"].gate.set()  # type: ignore[union-attr]

    delivered = wait_until(lambda: set(endpoints["learn"].ids()) >= set(waiting), timeout=60)
    lost = sorted(set(waiting) - set(endpoints["learn"].ids()))
    assert delivered, (
        f"deliveries never sent: {lost}; scheduled retries: "
        f"{engine.stores.scheduler.count('deliver.learn')}, dead letters: "
        f"{engine.stores.dead_letters.count('learn')}, worker log mentions "
        f"{deliverer.output().count(failure)} failures of after_process_message"
    )
