"""The baseline: one plain Dramatiq actor that POSTs a prepared body."""

from __future__ import annotations

import threading
from typing import Any

import dramatiq
import requests

#: The queue of the baseline actor, apart from ue-flow's queues.
BARE_QUEUE = "bench_bare"

_local = threading.local()


def _session() -> requests.Session:
    session: requests.Session | None = getattr(_local, "session", None)
    if session is None:
        session = requests.Session()
        session.trust_env = False
        _local.session = session
    return session


def bare_deliver(url: str, body: str) -> None:
    """POST ``body`` to ``url``; raise for anything but 2xx so that Retries retries it."""
    response = _session().post(
        url,
        data=body.encode("utf-8"),
        headers={"Content-Type": "application/json"},
        timeout=(5, 10),
        allow_redirects=False,
    )
    response.content  # noqa: B018 - reading the body keeps the connection reusable
    if not 200 <= response.status_code < 300:
        raise RuntimeError(f"POST {url} returned HTTP {response.status_code}")


def bare_send(event_name: str, user: Any, data: Any) -> None:
    """Do nothing: the emit benchmark only enqueues messages for this actor."""


def declare_bare_actors(broker: dramatiq.Broker) -> tuple[dramatiq.Actor, dramatiq.Actor]:
    """Declare the baseline actors on ``broker``: the deliverer and the enqueue-only one."""
    deliver = dramatiq.Actor(
        bare_deliver,
        broker=broker,
        actor_name="bench_bare_deliver",
        queue_name=BARE_QUEUE,
        priority=0,
        options={},
    )
    send = dramatiq.Actor(
        bare_send,
        broker=broker,
        actor_name="bench_bare_send",
        queue_name=BARE_QUEUE,
        priority=0,
        options={},
    )
    return deliver, send
