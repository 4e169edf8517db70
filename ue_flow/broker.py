"""The Dramatiq broker named by UE_FLOW_BROKER_URL."""

from __future__ import annotations

import os
from pathlib import Path

import dramatiq
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import CurrentMessage

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


def create_broker(url: str | None = None, *, key_prefix: str | None = None) -> dramatiq.Broker:
    """Build a broker for a redis:// or amqp:// URL; nothing connects yet."""
    url = url or broker_url()
    if url.startswith(("redis://", "rediss://", "unix://")):
        broker: dramatiq.Broker = RedisBroker(url=url, namespace=key_prefix or namespace())
    elif url.startswith(("amqp://", "amqps://")):
        # Publisher confirms make a publish that the server did not take raise.
        broker = RabbitmqBroker(url=url, confirm_delivery=True)
    else:
        scheme = url.split(":", 1)[0]
        message = (
            f"UE_FLOW_BROKER_URL has unsupported scheme {scheme!r}; "
            "use redis://host:port/db or amqp://user:password@host:port/vhost"
        )
        raise ConfigError([ConfigProblem(Path("UE_FLOW_BROKER_URL"), 0, 0, message)])

    broker.add_middleware(CurrentMessage())
    return broker

