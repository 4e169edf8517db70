"""The Dramatiq broker named by UE_FLOW_BROKER_URL."""

from __future__ import annotations

import os
from pathlib import Path

import dramatiq
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import CurrentMessage, Middleware, Retries, default_middleware

from .errors import ConfigError, ConfigProblem

#: The broker used when UE_FLOW_BROKER_URL is unset.
DEFAULT_BROKER_URL = "redis://localhost:6379/0"

#: The prefix of every Redis key ue-flow writes, so that it can share a
#: Redis server with other Dramatiq applications.
DEFAULT_NAMESPACE = "ue_flow"


def broker_url() -> str:
    """Return UE_FLOW_BROKER_URL, or the default local Redis."""
    return os.environ.get("UE_FLOW_BROKER_URL") or DEFAULT_BROKER_URL


def namespace() -> str:
    """Return UE_FLOW_NAMESPACE, the Redis key prefix, or the default."""
    return os.environ.get("UE_FLOW_NAMESPACE") or DEFAULT_NAMESPACE


def broker_middleware() -> list[Middleware]:
    """Return Dramatiq's default middleware without Retries, plus CurrentMessage."""
    # Dramatiq's Retries middleware keeps delayed retries in worker memory;
    # ue-flow's DurableRetries, added by the engine, takes its place.
    middleware = [factory() for factory in default_middleware if factory is not Retries]
    return [*middleware, CurrentMessage()]


def create_broker(
    url: str | None = None,
    *,
    key_prefix: str | None = None,
    heartbeat_timeout_ms: int | None = None,
) -> dramatiq.Broker:
    """Build a broker for a redis:// or amqp:// URL; nothing connects yet.

    ``heartbeat_timeout_ms`` is how long a silent Redis worker is taken
    for alive; Dramatiq's default applies when it is None.
    """
    url = url or broker_url()
    if url.startswith(("redis://", "rediss://", "unix://")):
        options = (
            {} if heartbeat_timeout_ms is None else {"heartbeat_timeout": heartbeat_timeout_ms}
        )
        broker: dramatiq.Broker = RedisBroker(
            url=url, namespace=key_prefix or namespace(), middleware=broker_middleware(), **options
        )
    elif url.startswith(("amqp://", "amqps://")):
        # Publisher confirms make a publish that the server did not take raise.
        broker = RabbitmqBroker(url=url, confirm_delivery=True, middleware=broker_middleware())
    else:
        scheme = url.split(":", 1)[0]
        message = (
            f"UE_FLOW_BROKER_URL has unsupported scheme {scheme!r}; "
            "use redis://host:port/db or amqp://user:password@host:port/vhost"
        )
        raise ConfigError([ConfigProblem(Path("UE_FLOW_BROKER_URL"), 0, 0, message)])

    return broker
