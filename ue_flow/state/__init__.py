"""Delivery state kept in Redis and shared by every worker and command.

Each module keeps one kind of state under the engine's key prefix:
scheduled retries, dead letters, the attempt log and delivery records,
per-system health, and idempotency keys.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import redis

from ..broker import broker_url, redis_client
from ..config import Config
from ..errors import ConfigError, ConfigProblem
from .attempts import AttemptLog
from .dead_letters import DeadLetters
from .idempotency import IdempotencyKeys
from .scheduler import RetryScheduler
from .systems import SystemStates

#: The URL schemes redis-py connects to.
REDIS_SCHEMES = ("redis://", "rediss://", "unix://")


def state_redis_url() -> str:
    """Return UE_FLOW_REDIS_URL, else the broker URL when it is a Redis URL.

    With a RabbitMQ broker, the delivery state still needs Redis, so
    UE_FLOW_REDIS_URL must then be set. Raises ConfigError when it is
    missing or is not a Redis URL.
    """
    url = os.environ.get("UE_FLOW_REDIS_URL")
    if url:
        if not url.startswith(REDIS_SCHEMES):
            scheme = url.split(":", 1)[0]
            message = (
                f"unsupported scheme {scheme!r}; the delivery state "
                "needs Redis, so use redis://host:port/db"
            )
            raise ConfigError([ConfigProblem(Path("UE_FLOW_REDIS_URL"), 0, 0, message)])
        return url

    broker = broker_url()
    if broker.startswith(REDIS_SCHEMES):
        return broker

    message = (
        "not set, but with a RabbitMQ broker ue-flow keeps retries, dead letters and "
        "the attempt log in Redis; set it to redis://host:port/db"
    )
    raise ConfigError([ConfigProblem(Path("UE_FLOW_REDIS_URL"), 0, 0, message)])


def connect(url: str | None = None) -> redis.Redis:
    """Return a Redis client for the delivery state; nothing connects yet."""
    return redis_client(url or state_redis_url())


@dataclass(frozen=True)
class StateStores:
    """Every kind of delivery state, on one Redis client and key prefix."""

    client: redis.Redis
    namespace: str
    scheduler: RetryScheduler
    dead_letters: DeadLetters
    attempts: AttemptLog
    systems: SystemStates
    idempotency: IdempotencyKeys

    @classmethod
    def open(cls, client: redis.Redis, namespace: str, config: Config) -> StateStores:
        """Return the stores of ``config`` under the key prefix ``namespace``."""
        retention = config.retention
        return cls(
            client=client,
            namespace=namespace,
            scheduler=RetryScheduler(client, namespace),
            dead_letters=DeadLetters(client, namespace, retention.dead_letters_ms),
            attempts=AttemptLog(client, namespace, retention.attempts_ms, retention.max_attempts),
            systems=SystemStates(client, namespace),
            idempotency=IdempotencyKeys(client, namespace),
        )
