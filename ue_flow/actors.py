"""The Dramatiq actors compiled from a configuration: one router, one sender per system."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import dramatiq
import structlog
from dramatiq.middleware import CurrentMessage

from .bookkeeping import Bookkeeper
from .config import Config
from .errors import PayloadError
from .isolation import ProcessSlots
from .queues import ROUTE_QUEUE, delivery_queue
from .routing import UNROUTED, route
from .sending import REQUEUES_OPTION, SystemSender
from .slots import SlotPool
from .state import StateStores

#: Retries of a routing message that failed unexpectedly, such as when
#: Redis was briefly unreachable.
ROUTE_MAX_RETRIES = 20

logger = structlog.get_logger("ue_flow")


def delivery_actor_name(slug: str) -> str:
    """Return the name of the actor delivering to ``slug``.

    The slug is kept as it is, so that slugs differing only in - and _
    cannot collide.
    """
    return f"deliver_{slug}"


def now_ms() -> int:
    """Return the Unix time in integer milliseconds."""
    return int(time.time() * 1000)


def declare_actors(
    broker: dramatiq.Broker,
    config: Config,
    stores: StateStores,
    environ: Mapping[str, str],
    process_slots: ProcessSlots,
    slots: SlotPool,
    bookkeeper: Bookkeeper,
) -> tuple[dramatiq.Actor[..., None], dict[str, dramatiq.Actor[..., None]]]:
    """Declare the router and one delivery actor per system on ``broker``."""
    deliverers = {}
    for slug, system in config.systems.items():
        sender = SystemSender(system, config, stores, environ, process_slots, slots, bookkeeper)
        deliverers[slug] = dramatiq.Actor(
            _delivery_function(sender),
            broker=broker,
            actor_name=delivery_actor_name(slug),
            queue_name=delivery_queue(slug),
            priority=0,
            options={
                "max_retries": system.delivery.retry.max_retries,
                "dead_letter": sender.dead_letter_from_args,
            },
        )
    router = dramatiq.Actor(
        _route_function(config, deliverers),
        broker=broker,
        actor_name="route_event",
        queue_name=ROUTE_QUEUE,
        priority=0,
        options={"max_retries": ROUTE_MAX_RETRIES, "throws": (PayloadError,)},
    )
    return router, deliverers


def send_delivery(
    actor: dramatiq.Actor[..., None],
    event_id: str,
    event_name: str,
    user: dict[str, Any],
    data: dict[str, Any],
    emitted_at_ms: int,
) -> None:
    """Queue one delivery; its maximum age counts from now."""
    actor.broker.enqueue(delivery_message(actor, event_id, event_name, user, data, emitted_at_ms))


def delivery_message(
    actor: dramatiq.Actor[..., None],
    event_id: str,
    event_name: str,
    user: dict[str, Any],
    data: dict[str, Any],
    emitted_at_ms: int,
) -> dramatiq.Message[Any]:
    """Return the message of one delivery; its maximum age counts from now."""
    return actor.message_with_options(
        args=(event_id, event_name, user, data, emitted_at_ms), started_ms=now_ms()
    )


def _route_function(
    config: Config, deliverers: Mapping[str, dramatiq.Actor[..., None]]
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
            log.error("event.unknown", error="the event is not declared in events.yaml")
            raise PayloadError(event_name, "$", "event is not declared in events.yaml")

        parts = route(config, event, {"user": user, "data": data}, systems)
        if not parts:
            log.warning("event.unrouted", error=UNROUTED)
        for slug, part in parts.items():
            send_delivery(
                deliverers[slug], event_id, event_name, part["user"], part["data"], emitted_at_ms
            )
        log.info("event.routed", systems=sorted(parts))

    return route_event


def _delivery_function(sender: SystemSender) -> Callable[..., None]:
    def deliver(
        event_id: str,
        event_name: str,
        user: dict[str, Any],
        data: dict[str, Any],
        emitted_at_ms: int,
    ) -> None:
        message = CurrentMessage.get_current_message()
        options = message.options if message is not None else {}
        sender.deliver(
            event_id,
            event_name,
            user,
            data,
            emitted_at_ms,
            retries=options.get("retries", 0),
            requeues=options.get(REQUEUES_OPTION, 0),
            started_ms=options.get("started_ms", emitted_at_ms),
        )

    deliver.__name__ = delivery_actor_name(sender.system.slug)
    return deliver
