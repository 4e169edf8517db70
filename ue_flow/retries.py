"""Durable retries: a Dramatiq middleware that keeps waiting messages in Redis.

It takes the place of Dramatiq's Retries middleware. Actors raise
``RetryLater`` or ``GiveUp`` to say what should happen; any other
exception is retried with exponential backoff, like Dramatiq does.
Waiting messages go to the RetryScheduler's sorted sets instead of the
worker's memory, and given-up deliveries become dead letters.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import dramatiq
import redis
import structlog
from dramatiq.broker import MessageProxy
from dramatiq.common import compute_backoff
from dramatiq.errors import BrokerError as DramatiqBrokerError
from dramatiq.middleware import Middleware

from .state.dead_letters import DeadLetter, DeadLetters
from .state.scheduler import RetryScheduler

#: Retries of a message whose actor failed unexpectedly, before it is failed.
DEFAULT_MAX_RETRIES = 20

#: The first wait after an unexpected failure, in milliseconds; it doubles.
DEFAULT_MIN_BACKOFF_MS = 5_000

#: The maximum wait after an unexpected failure, in milliseconds.
DEFAULT_MAX_BACKOFF_MS = 3_600_000

#: The pause between tries to store a retry while Redis is unreachable, in seconds.
STORE_RETRY_PAUSE_S = 1.0

#: While Redis stays unreachable, one warning per this many failed tries.
STORE_FAILURE_LOG_EVERY = 30

logger = structlog.get_logger("ue_flow")


class RetryLater(dramatiq.Retry):
    """Raised by an actor to run the message again after ``delay_ms`` milliseconds.

    ``consume_attempt`` is False when the message did not really try,
    such as when the system's circuit was open; it keeps its attempts.
    With ``delay_ms`` 0 the message goes straight back to the end of its
    queue rather than through the scheduler. ``options`` are set on the
    message that runs again.
    """

    def __init__(
        self,
        reason: str,
        delay_ms: int,
        *,
        consume_attempt: bool = True,
        options: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(reason, delay=delay_ms)
        self.reason = reason
        self.delay_ms = delay_ms
        self.consume_attempt = consume_attempt
        self.options = dict(options or {})


class GiveUp(dramatiq.Retry):
    """Raised by a delivery actor to stop retrying and keep ``dead_letter``."""

    def __init__(self, dead_letter: DeadLetter) -> None:
        super().__init__(dead_letter.reason)
        self.dead_letter = dead_letter


class DurableRetries(Middleware):
    """Retries messages through a RetryScheduler and dead-letters given-up deliveries."""

    def __init__(self, scheduler: RetryScheduler, dead_letters: DeadLetters) -> None:
        self.scheduler = scheduler
        self.dead_letters = dead_letters

    @property
    def actor_options(self) -> set[str]:
        # dead_letter: a function of (message args, attempts, reason) that
        # returns the DeadLetter of a message that gave up unexpectedly.
        return {"max_retries", "throws", "dead_letter"}

    def after_process_message(
        self,
        broker: dramatiq.Broker,
        message: MessageProxy,
        *,
        result: object = None,
        exception: BaseException | None = None,
    ) -> None:
        if exception is None:
            return

        # Dramatiq acknowledges the message right after this hook, so its
        # retry or dead letter must be stored first. While Redis is
        # unreachable the thread waits, as Dramatiq's own acknowledgement
        # does. Failing the message instead would move it to Dramatiq's
        # dead-letter queue, which ue-flow never reads, and lose the event.
        # NOTE: a worker stopped while Redis is down waits here until
        # Dramatiq's --worker-shutdown-timeout. The message, still
        # unacknowledged, is then queued again by another worker's sweep.
        failures = 0
        while True:
            try:
                self._handle(broker, message, exception)
                return
            except (redis.ConnectionError, redis.TimeoutError) as error:
                failures += 1
                if failures == 1 or failures % STORE_FAILURE_LOG_EVERY == 0:
                    logger.warning(
                        "retry.store_waiting",
                        message_id=message.message_id,
                        failures=failures,
                        retry_in_ms=int(STORE_RETRY_PAUSE_S * 1000),
                        error=f"{type(error).__name__}: {error}",
                    )
                time.sleep(STORE_RETRY_PAUSE_S)
            except redis.RedisError:
                # Redis replied with an error, such as OOM or READONLY,
                # that waiting may not cure, so the message is failed into
                # Dramatiq's dead-letter queue.
                logger.exception("retry.store_failed", message_id=message.message_id)
                message.fail()
                return

    def _handle(
        self, broker: dramatiq.Broker, message: MessageProxy, exception: BaseException
    ) -> None:
        if isinstance(exception, GiveUp):
            self.dead_letters.add(exception.dead_letter)
            return

        retries = message.options.get("retries", 0)
        if isinstance(exception, redis.ConnectionError | redis.TimeoutError):
            # Redis was unreachable before the actor could do its work; that
            # is no attempt, so the message keeps its retries.
            _, delay_ms = compute_backoff(
                retries, factor=DEFAULT_MIN_BACKOFF_MS, max_backoff=DEFAULT_MAX_BACKOFF_MS
            )
            logger.warning(
                "message.redis_unreachable",
                message_id=message.message_id,
                actor=message.actor_name,
                retry_in_ms=delay_ms,
            )
            self._schedule(message, delay_ms, {"retries": retries})
            return
        if isinstance(exception, RetryLater):
            consumed = retries + 1 if exception.consume_attempt else retries
            options = {"retries": consumed, **exception.options}
            if exception.delay_ms <= 0 and self._requeue(broker, message, options):
                return
            self._schedule(message, exception.delay_ms, options)
            return

        actor = broker.get_actor(message.actor_name)
        throws = actor.options.get("throws")
        max_retries = actor.options.get("max_retries", DEFAULT_MAX_RETRIES)
        if (throws and isinstance(exception, throws)) or retries >= max_retries:
            self._give_up(actor, message, exception, retries)
            return

        _, delay_ms = compute_backoff(
            retries, factor=DEFAULT_MIN_BACKOFF_MS, max_backoff=DEFAULT_MAX_BACKOFF_MS
        )
        logger.warning(
            "message.retry",
            message_id=message.message_id,
            actor=message.actor_name,
            retry_in_ms=delay_ms,
        )
        self._schedule(message, delay_ms, {"retries": retries + 1})

    def _give_up(
        self,
        actor: dramatiq.Actor[..., Any],
        message: MessageProxy,
        exception: BaseException,
        retries: int,
    ) -> None:
        # A delivery actor turns its message into a ue-flow dead letter, which
        # operators can list and replay; Dramatiq's own dead-letter queue is
        # not read by ue-flow, and its entries expire.
        reason = f"gave up after an unexpected {type(exception).__name__}: {exception}"
        to_dead_letter = actor.options.get("dead_letter")
        logger.error(
            "message.failed",
            message_id=message.message_id,
            actor=message.actor_name,
            retries=retries,
            error=f"{type(exception).__name__}: {exception}",
        )
        if to_dead_letter is None:
            message.fail()
            return
        self.dead_letters.add(to_dead_letter(message.args, retries + 1, reason[:500]))

    def _requeue(
        self, broker: dramatiq.Broker, message: MessageProxy, options: dict[str, Any]
    ) -> bool:
        # A broker that rejects the publish, such as RabbitMQ with a queue
        # length limit, must not cost the message: the scheduler keeps it.
        try:
            broker.enqueue(message.copy(options=options))
        except DramatiqBrokerError as error:
            logger.warning(
                "message.requeue_failed",
                message_id=message.message_id,
                actor=message.actor_name,
                error=f"{type(error).__name__}: {error}",
            )
            return False
        return True

    def _schedule(self, message: MessageProxy, delay_ms: int, options: dict[str, Any]) -> None:
        due_ms = int(time.time() * 1000) + delay_ms
        self.scheduler.schedule(message, due_ms, options)
