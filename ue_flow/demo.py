"""``ue-flow demo``: every example through an in-process broker, worker and receivers."""

from __future__ import annotations

import dataclasses
import json
import logging
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import dramatiq
import fakeredis
from dramatiq.brokers.stub import StubBroker

from .broker import broker_middleware
from .config import Config, RetryPolicy, System
from .engine import Engine
from .errors import PayloadError
from .examples import read_payload_file
from .loader import LoadedConfig, load_config
from .logs import configure_logging
from .queues import ROUTE_QUEUE, delivery_queue
from .receiver import Receiver, TrustedSystem, Unauthorized
from .signing import generate_secret
from .state import StateStores

#: The demo's retry schedule in milliseconds, short so that the retry of
#: the first, deliberately failed delivery is visible within a second.
DEMO_RETRY_SCHEDULE_MS = (200, 400, 800)


@dataclass
class Received:
    """One request a demo receiver got, and what verifying it found."""

    system: str
    webhook_id: str
    status: int
    verdict: str
    envelope: dict[str, Any] = field(default_factory=dict)


class DemoReceivers:
    """One HTTP receiver per system on 127.0.0.1, each verifying what it gets.

    The first request to the first system gets a 503, so the
    demo shows a retry that carries the same ``webhook-id``.
    """

    def __init__(self, systems: list[System], trusted: dict[str, TrustedSystem]) -> None:
        self.requests: list[Received] = []
        self._lock = threading.Lock()
        self._failed_once = False
        self._receiver = Receiver(trusted)
        self._failing_slug = systems[0].slug if systems else None
        self.servers = {system.slug: self._server(system.slug) for system in systems}

    def _server(self, slug: str) -> ThreadingHTTPServer:
        demo = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                status = demo.record(slug, body, dict(self.headers))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server

    def url(self, slug: str) -> str:
        """Return the webhook URL of ``slug``'s receiver."""
        host, port = self.servers[slug].server_address[:2]
        return f"http://{host!s}:{port}/webhook/"

    def record(self, slug: str, body: bytes, headers: dict[str, str]) -> int:
        """Verify one request, record it and return the status to respond with."""
        webhook_id = headers.get("webhook-id", "")
        envelope = json.loads(body)
        with self._lock:
            if slug == self._failing_slug and not self._failed_once:
                self._failed_once = True
                self.requests.append(
                    Received(slug, webhook_id, 503, "answered 503 on purpose", envelope)
                )
                return 503

        try:
            self._receiver.verify(body, headers)
            signed = "webhook-signature" in headers
            verdict = "signature and key verified" if signed else "key verified (unsigned)"
            status = 200
        except Unauthorized as error:
            verdict, status = f"rejected: {error.reason}", 401
        except PayloadError as error:
            verdict, status = f"rejected: {error}", 400
        with self._lock:
            self.requests.append(Received(slug, webhook_id, status, verdict, envelope))
        return status

    def close(self) -> None:
        """Stop every receiver."""
        for server in self.servers.values():
            server.shutdown()
            server.server_close()


def run_demo(config_directory: str | None) -> int:
    """Emit every example, deliver it in process and print what each system received."""
    configure_logging(logging.WARNING, json_lines=False)
    loaded = load_config(config_directory)
    environ, trusted = _demo_credentials(loaded.config)
    receivers = DemoReceivers(list(loaded.config.systems.values()), trusted)
    try:
        demo_config = _local_config(loaded.config, receivers)
        broker = StubBroker(middleware=broker_middleware())
        # The delivery state lives in an in-process fake Redis, so the demo
        # needs no server.
        stores = StateStores.open(fakeredis.FakeRedis(), "ue_flow_demo", demo_config)
        engine = Engine(LoadedConfig(demo_config, loaded.validators), broker, stores, environ)
        with _running_worker(broker):
            emitted = _emit_examples(engine)
            _wait_until_done(broker, stores, demo_config)
    finally:
        receivers.close()

    _print_report(emitted, receivers.requests)
    return 0


def _demo_credentials(config: Config) -> tuple[dict[str, str], dict[str, TrustedSystem]]:
    environ: dict[str, str] = {}
    trusted: dict[str, TrustedSystem] = {}
    for system in config.systems.values():
        key = secrets.token_urlsafe(24)
        environ[system.key_env] = key
        signing: tuple[str, ...] = ()
        if system.secret_env:
            secret = generate_secret()
            environ[system.secret_env] = secret
            signing = (secret,)
        trusted[system.slug] = TrustedSystem(key, secrets=signing)
    return environ, trusted


def _local_config(config: Config, receivers: DemoReceivers) -> Config:
    retry = RetryPolicy(schedule_ms=DEMO_RETRY_SCHEDULE_MS, jitter=0.0)
    systems = {
        slug: dataclasses.replace(
            system,
            url=receivers.url(slug),
            delivery=dataclasses.replace(system.delivery, retry=retry),
        )
        for slug, system in config.systems.items()
    }
    delivery = dataclasses.replace(config.delivery, retry=retry)
    return dataclasses.replace(config, systems=systems, delivery=delivery)


@contextmanager
def _running_worker(broker: StubBroker) -> Iterator[None]:
    broker.emit_after("process_boot")
    worker = dramatiq.Worker(broker, worker_threads=4, worker_timeout=50)
    worker.start()
    try:
        yield
    finally:
        worker.stop()
        broker.close()


def _emit_examples(engine: Engine) -> list[tuple[str, Path, str]]:
    emitted = []
    examples = engine.config.examples_dir
    for event_name in engine.config.events:
        for path in sorted((examples / event_name).glob("*.json")):
            payload = read_payload_file(path).payload
            event_id = engine.emit(event_name, user=payload["user"], data=payload["data"])
            emitted.append((event_name, path, event_id))
    return emitted


def _wait_until_done(broker: StubBroker, stores: StateStores, config: Config) -> None:
    # Routing fills the delivery queues, and a failed delivery waits in the
    # retry scheduler until the maintenance thread queues it again.
    queues = [ROUTE_QUEUE, *(delivery_queue(slug) for slug in config.systems)]
    while True:
        for queue in queues:
            broker.join(queue, fail_fast=False)
        if not any(stores.scheduler.count(queue) for queue in queues):
            return
        time.sleep(0.05)


def _print_report(emitted: list[tuple[str, Path, str]], requests: list[Received]) -> None:
    rows = [("EVENT", "EXAMPLE", "SYSTEM", "ANSWER", "WEBHOOK-ID", "RECEIVED", "CHECK")]
    for event_name, path, event_id in emitted:
        got = [request for request in requests if request.webhook_id == event_id]
        if not got:
            rows.append(
                (event_name, path.stem, "-", "-", event_id, "no subscribed system owns it", "")
            )
        for request in got:
            rows.append(
                (
                    event_name,
                    path.stem,
                    request.system,
                    str(request.status),
                    event_id,
                    _summary(request.envelope),
                    request.verdict,
                )
            )

    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    for row in rows:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )

    delivered = sum(1 for request in requests if request.status == 200)
    print(
        f"\n{len(emitted)} events emitted, {delivered} deliveries accepted, "
        f"{len(requests) - delivered} answered otherwise and retried."
    )


def _summary(envelope: dict[str, Any]) -> str:
    data = envelope.get("data", {})
    if "product" in data:
        return f"{data.get('action')} {data['product'].get('sku')}"
    skus = [line["product"]["sku"] for line in data.get("lines", [])]
    text = f"{envelope.get('type')} {data.get('reference_number')}: {', '.join(skus)}"
    if "refund" in data:
        refunded = [f"line {line['line_id']}: {line['amount']}" for line in data["refund"]["lines"]]
        text += f"; refunded {', '.join(refunded)}"
    return text
