"""The Dramatiq broker named by UE_FLOW_BROKER_URL."""

from __future__ import annotations

import os
from pathlib import Path

import dramatiq
import pika.exceptions
import redis
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.brokers.redis import RedisBroker
from dramatiq.errors import ConnectionClosed
from dramatiq.middleware import CurrentMessage, Middleware, Retries, default_middleware

from .errors import ConfigError, ConfigProblem

#: The broker used when UE_FLOW_BROKER_URL is unset.
DEFAULT_BROKER_URL = "redis://localhost:6379/0"

#: Seconds a Redis command or connection may take before it fails.
REDIS_SOCKET_TIMEOUT_S = 5.0

#: The prefix of every Redis key ue-flow writes, so that it can share a
#: Redis server with other Dramatiq applications.
DEFAULT_NAMESPACE = "ue_flow"

#: The AMQP reply code of a passive declare of a queue that does not exist.
NOT_FOUND = 404


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


def redis_client(url: str) -> redis.Redis:
    """Return a Redis client for ``url`` with explicit timeouts; nothing connects yet.

    Without them a call to a server that accepts connections but never
    replies could block emit, and a worker thread, indefinitely.
    """
    return redis.Redis.from_url(
        url,
        socket_timeout=REDIS_SOCKET_TIMEOUT_S,
        socket_connect_timeout=REDIS_SOCKET_TIMEOUT_S,
        health_check_interval=30,
    )


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
            client=redis_client(url),
            namespace=key_prefix or namespace(),
            middleware=broker_middleware(),
            **options,
        )
    elif url.startswith(("amqp://", "amqps://")):
        # With publisher confirms, enqueue waits for RabbitMQ to acknowledge
        # each publish, so a nack, a returned message or a lost connection
        # raises ConnectionClosed instead of losing the message.
        broker = RabbitmqBroker(url=url, confirm_delivery=True, middleware=broker_middleware())
    else:
        scheme = url.split(":", 1)[0]
        message = (
            f"unsupported scheme {scheme!r}; "
            "use redis://host:port/db or amqp://user:password@host:port/vhost"
        )
        raise ConfigError([ConfigProblem(Path("UE_FLOW_BROKER_URL"), 0, 0, message)])

    return broker


def count_queued(broker: dramatiq.Broker, queue_name: str) -> int | None:
    """Return how many messages wait in ``queue_name``, or None for other brokers.

    Messages that a worker has fetched but not yet acknowledged are not
    counted, on Redis as on RabbitMQ. A RabbitMQ queue that does not
    exist yet counts as empty. Raises ConnectionClosed when RabbitMQ
    cannot be reached.
    """
    if isinstance(broker, RedisBroker):
        return int(broker.client.llen(f"{broker.namespace}:{queue_name}"))
    if not isinstance(broker, RabbitmqBroker):
        return None

    try:
        # A passive declare only reads the queue's state; it never creates it.
        declared = broker.channel.queue_declare(queue=queue_name, passive=True)
    except pika.exceptions.ChannelClosedByBroker as error:
        # The server closes the channel when the queue is missing.
        del broker.channel
        if error.reply_code == NOT_FOUND:
            return 0
        raise ConnectionClosed(error) from error
    except pika.exceptions.AMQPError as error:
        del broker.connection
        raise ConnectionClosed(error) from error

    return int(declared.method.message_count)


def maybe_queued(error: BaseException) -> bool:
    """Return True when a failed enqueue may still have queued its message.

    A connection that broke while the broker was taking the message leaves
    it unknown whether the broker took it. A refused connection, and an
    error reply such as a nack or WRONGTYPE, leave nothing queued.
    """
    if isinstance(error, redis.ConnectionError | redis.TimeoutError):
        # redis-py words a failed connect "Error N connecting to host:port".
        return " connecting to " not in str(error)
    if isinstance(error, ConnectionClosed):
        cause = getattr(error, "message", None)
        nacked = isinstance(cause, pika.exceptions.NackError | pika.exceptions.UnroutableError)
        # pika raises the base class itself when it cannot connect at all;
        # its subclasses report a connection lost on the way.
        unreachable = type(cause) is pika.exceptions.AMQPConnectionError
        return not (nacked or unreachable)
    return False


def describe_broker_error(error: BaseException) -> str:
    """Return a one-line account of a failed enqueue, naming the error class.

    Dramatiq's RabbitMQ broker wraps pika's connection and channel errors
    in ConnectionClosed. That includes the nack and the returned message
    that publisher confirms add, and those two are spelled out.
    """
    cause = getattr(error, "message", None) if isinstance(error, ConnectionClosed) else None
    if isinstance(cause, pika.exceptions.NackError):
        return (
            "RabbitMQ rejected the message (publisher confirm nack), for example because "
            "a queue length limit rejects new messages"
        )
    if isinstance(cause, pika.exceptions.UnroutableError):
        return "RabbitMQ returned the message as unroutable: its queue could not be declared"

    return f"{type(error).__name__}: {error}"
