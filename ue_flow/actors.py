"""The Dramatiq actors compiled from a configuration: one router, one sender per system."""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable, Mapping
from typing import Any

import dramatiq
import structlog
from dramatiq.middleware import CurrentMessage

from .config import Config, RetryPolicy, System
from .delivery import Sender
from .envelope import envelope_body
from .errors import PayloadError
from .routing import route

#: The queue of events waiting to be routed to their systems.
ROUTE_QUEUE = "events"

logger = structlog.get_logger("ue_flow")


def delivery_queue(slug: str) -> str:
    """Return the queue of one system's deliveries, so `-Q` can pick systems."""
    return f"deliver.{slug}"


class DeliveryFailed(dramatiq.Retry):
    """Raised by a delivery actor to have the Retries middleware retry it later.

    ``delay`` is in milliseconds. The message carries the slug and status
    only, because Dramatiq stores it with the broker message.
    """


def retry_delay_ms(policy: RetryPolicy, retries: int) -> int:
    """Return the wait before retry number ``retries + 1``, with jitter, in ms."""
    base = policy.schedule_ms[min(retries, len(policy.schedule_ms) - 1)]
    spread = base * policy.jitter
    return max(0, round(base + random.uniform(-spread, spread)))


def declare_actors(
    broker: dramatiq.Broker, config: Config, environ: Mapping[str, str] | None = None
) -> tuple[dramatiq.Actor, dict[str, dramatiq.Actor]]:
    """Declare the router and one delivery actor per system on ``broker``."""
    environ = os.environ if environ is None else environ
    sender = Sender(config.delivery.connect_timeout_ms, config.delivery.read_timeout_ms)
    deliverers = {
        slug: dramatiq.Actor(
            _delivery_function(system, config, sender, environ),
            broker=broker,
            actor_name=f"deliver_{slug.replace('-', '_')}",
            queue_name=delivery_queue(slug),
            priority=0,
            options={"max_retries": len(config.delivery.retry.schedule_ms)},
        )
        for slug, system in config.systems.items()
    }
    router = dramatiq.Actor(
        _route_function(config, deliverers),
        broker=broker,
        actor_name="route_event",
        queue_name=ROUTE_QUEUE,
        priority=0,
        options={"max_retries": 20, "throws": (PayloadError,)},
    )
    return router, deliverers


def _route_function(
    config: Config, deliverers: Mapping[str, dramatiq.Actor]
) -> Callable[..., None]:
    def route_event(
        event_id: str,
        event_name: str,
        user: dict[str, Any],
        data: dict[str, Any],
        systems: list[str] | None,
        emitted_at_ms: int,
    ) -> None:
        log = logger.bind(event_id=event_id, event_name=event_name)
        event = config.events.get(event_name)
        if event is None:
            log.error("event.unknown", reason="the event is not declared in events.yaml")
            raise PayloadError(event_name, "$", "event is not declared in events.yaml")

        parts = route(config, event, {"user": user, "data": data}, systems)
        if not parts:
            log.warning("event.unrouted", reason="no subscribed system owns an item of the event")
        for slug, part in parts.items():
            deliverers[slug].send(event_id, event_name, part["user"], part["data"], emitted_at_ms)
        log.info("event.routed", systems=sorted(parts))

    return route_event


def _delivery_function(
    system: System, config: Config, sender: Sender, environ: Mapping[str, str]
) -> Callable[..., None]:
    policy = config.delivery.retry

    def deliver(
        event_id: str,
        event_name: str,
        user: dict[str, Any],
        data: dict[str, Any],
        emitted_at_ms: int,
    ) -> None:
        message = CurrentMessage.get_current_message()
        retries = message.options.get("retries", 0) if message is not None else 0
        attempt = retries + 1
        wire_type = config.events[event_name].type
        key = environ[system.key_env]
        body = envelope_body(system.slug, key, wire_type, user, data)
        timestamp = int(time.time())
        headers = {
            "Content-Type": "application/json",
            "webhook-id": event_id,
            "webhook-timestamp": str(timestamp),
        }
        secrets = _secrets(system, environ)
        if secrets:
            from .signing import signature_header

            headers["webhook-signature"] = signature_header(secrets, event_id, timestamp, body)

        outcome = sender.post(system.url, body, headers)
        log = logger.bind(
            event_id=event_id,
            system=system.slug,
            attempt=attempt,
            status=outcome.status,
            duration_ms=outcome.duration_ms,
        )
        if outcome.delivered:
            latency_ms = int(time.time() * 1000) - emitted_at_ms
            log.info("delivery.delivered", latency_ms=latency_ms)
            return

        reason = outcome.error or f"HTTP {outcome.status}"
        if retries >= len(policy.schedule_ms):
            log.warning("delivery.retries_exhausted", error=reason)
            raise DeliveryFailed(f"delivery to {system.slug} failed: {reason}")

        delay_ms = retry_delay_ms(policy, retries)
        log.warning("delivery.failed", error=reason, retry_in_ms=delay_ms)
        raise DeliveryFailed(f"delivery to {system.slug} failed: {reason}", delay=delay_ms)

    deliver.__name__ = f"deliver_{system.slug.replace('-', '_')}"
    return deliver


def _secrets(system: System, environ: Mapping[str, str]) -> list[str]:
    # During a rotation the variable holds several secrets separated by
    # spaces, and each delivery carries one signature per secret.
    if system.secret_env is None:
        return []
    return environ.get(system.secret_env, "").split()
