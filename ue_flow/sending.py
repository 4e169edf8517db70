"""One delivery to one system: checks, the HTTP attempt, its record and the verdict."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import redis
import structlog

from . import metrics
from .bookkeeping import Bookkeeper
from .config import Config, System
from .delivery import Outcome, Sender
from .envelope import envelope_from_payload, payload_json
from .isolation import ProcessSlots
from .outcomes import GONE, decide, jittered
from .queues import delivery_queue
from .retries import GiveUp, RetryLater
from .signing import signature_header
from .slots import SlotPool
from .state import StateStores
from .state.attempts import (
    DELIVERED,
    FAILED,
    PENDING,
    RESPONSE_EXCERPT_BYTES,
    Attempt,
    Delivered,
    DeliveryRecord,
)
from .state.dead_letters import DeadLetter
from .state.systems import CIRCUIT_OPEN, DISABLED, NO_SLOT, Admission

#: How long a delivery waits when its system has all its slots in flight, in
#: milliseconds, before jitter. It keeps its attempts.
SLOT_WAIT_MS = 200

#: Times in a row a delivery whose system's share of the process's threads
#: is in use goes straight back to its queue before it waits SLOT_WAIT_MS.
SHARE_REQUEUES = 3

#: The message option counting those times.
REQUEUES_OPTION = "share_requeues"

#: Tries for an in-flight slot, and the pause in seconds between them, before
#: a delivery is deferred by SLOT_WAIT_MS.
SLOT_RETRIES = 3
SLOT_RETRY_PAUSE_S = 0.015

#: The reason of dead letters parked because their system is disabled;
#: enabling the system queues them again.
DISABLED_REASON = "system disabled"

logger = structlog.get_logger("ue_flow")

# The envelope passes through one sender and its dead letters as a unit.
Envelope = tuple[str, str, dict[str, Any], dict[str, Any], int]


def _now_ms() -> int:
    return int(time.time() * 1000)


class SystemSender:
    """Delivers envelopes to one system, sharing its state with every worker."""

    _http = Sender()

    def __init__(
        self,
        system: System,
        config: Config,
        stores: StateStores,
        environ: Mapping[str, str],
        process_slots: ProcessSlots,
        slots: SlotPool,
        bookkeeper: Bookkeeper,
    ) -> None:
        self.system = system
        self.process_slots = process_slots
        self.slots = slots
        self.bookkeeper = bookkeeper
        self.config = config
        self.stores = stores
        self.environ = environ
        self.settings = system.delivery

    def deliver(
        self,
        event_id: str,
        event_name: str,
        user: dict[str, Any],
        data: dict[str, Any],
        emitted_at_ms: int,
        *,
        retries: int,
        started_ms: int,
        requeues: int = 0,
    ) -> None:
        """Make one attempt, or raise RetryLater or GiveUp to say what comes next.

        ``requeues`` counts the times in a row this message found its
        system's share of this process's threads in use.
        """
        envelope: Envelope = (event_id, event_name, user, data, emitted_at_ms)
        if not self.process_slots.acquire(self.system.slug):
            raise self._share_full(requeues)
        try:
            self._admit_and_send(envelope, retries, started_ms)
        finally:
            self.process_slots.release(self.system.slug)

    def _share_full(self, requeues: int) -> RetryLater:
        reason = "thread share of this process in use"
        if requeues < SHARE_REQUEUES:
            # Back to the end of the queue at once: this thread can take
            # another system's delivery, and another process may have room.
            return RetryLater(
                reason, 0, consume_attempt=False, options={REQUEUES_OPTION: requeues + 1}
            )
        # The system keeps every share busy, so the message waits instead of
        # cycling through the queue.
        wait_ms = jittered(SLOT_WAIT_MS, 0.5)
        return RetryLater(reason, wait_ms, consume_attempt=False, options={REQUEUES_OPTION: 0})

    def _admit_and_send(self, envelope: Envelope, retries: int, started_ms: int) -> None:
        admission = self.slots.admit(self.system.slug, self.settings, _now_ms())
        for _ in range(SLOT_RETRIES):
            if admission.verdict != NO_SLOT:
                break
            # A healthy system frees a slot within milliseconds; deferring
            # through the scheduler would cost hundreds.
            time.sleep(SLOT_RETRY_PAUSE_S)
            admission = self.slots.admit(self.system.slug, self.settings, _now_ms())
        if admission.verdict == DISABLED:
            raise GiveUp(self._dead_letter(envelope, retries, None, DISABLED_REASON))
        if admission.verdict == CIRCUIT_OPEN:
            raise RetryLater(
                "circuit open", jittered(admission.wait_ms, 0.1), consume_attempt=False
            )
        if admission.verdict == NO_SLOT:
            wait_ms = jittered(SLOT_WAIT_MS, 0.5)
            raise RetryLater("in-flight limit reached", wait_ms, consume_attempt=False)

        # Serialized once for both the body and the delivery record.
        payload = payload_json(envelope[2], envelope[3])
        try:
            outcome = self._attempt(envelope, payload)
        except BaseException:
            self.slots.forget(self.system.slug)
            self.stores.systems.release_slot(self.system.slug, admission.token)
            raise
        self._judge(envelope, payload, outcome, retries, started_ms, admission)

    def _attempt(self, envelope: Envelope, payload: str) -> Outcome:
        event_id, event_name = envelope[0], envelope[1]
        key = self.environ[self.system.key_env]
        wire_type = self.config.events[event_name].type
        body = envelope_from_payload(self.system.slug, key, wire_type, payload)
        timestamp = int(time.time())
        # The loader rejects extra headers that would replace these.
        headers = {
            **dict(self.system.headers),
            "Content-Type": "application/json",
            "webhook-id": event_id,
            "webhook-timestamp": str(timestamp),
        }
        secrets = self._secrets()
        if secrets:
            headers["webhook-signature"] = signature_header(secrets, event_id, timestamp, body)

        timeouts = (self.settings.connect_timeout_ms, self.settings.read_timeout_ms)
        return self._http.post(
            self.system.url,
            body,
            headers,
            timeouts,
            allow_private_network=self.system.allow_private_network,
        )

    def _secrets(self) -> list[str]:
        # Each delivery carries one signature per active secret: the current
        # one, and during a rotation the previous one until it expires. The
        # current variable may also hold several secrets separated by spaces.
        system = self.system
        if system.secret_env is None:
            return []
        secrets = self.environ.get(system.secret_env, "").split()
        expires_ms = system.previous_secret_expires_ms
        if system.previous_secret_env and expires_ms is not None and _now_ms() < expires_ms:
            secrets.extend(self.environ.get(system.previous_secret_env, "").split())
        return secrets

    def _judge(
        self,
        envelope: Envelope,
        payload: str,
        outcome: Outcome,
        retries: int,
        started_ms: int,
        admission: Admission,
    ) -> None:
        slug = self.system.slug
        attempt = retries + 1
        now = _now_ms()
        if outcome.delivered:
            self._succeeded(envelope, payload, outcome, attempt, admission, now)
            return

        # The slot and the attempt go to Redis at once, before the verdict:
        # a failure decides what happens next and is rare.
        self.slots.forget(slug)
        with self.stores.client.pipeline(transaction=False) as pipe:
            self.stores.systems.release_slot(slug, admission.token, pipe)
            self._log_attempt(envelope[0], attempt, outcome, now, pipe)
            pipe.execute()
        log = logger.bind(
            event_id=envelope[0],
            system=slug,
            attempt=attempt,
            status=outcome.status,
            duration_ms=outcome.duration_ms,
        )
        if outcome.status == GONE:
            self.disable(f"{DISABLED_REASON}: the endpoint answered 410 Gone", now)
            raise GiveUp(self._dead_letter(envelope, attempt, outcome, DISABLED_REASON))

        breaker = self.settings.circuit_breaker
        failures, failing_since = self.stores.systems.record_failure(
            slug, outcome.summary, breaker, now
        )
        if failures == breaker.failure_threshold:
            log.warning(
                "system.circuit_opened",
                error=outcome.summary,
                failures=failures,
                cooldown_ms=breaker.cooldown_ms,
            )
        if now - failing_since >= self.settings.disable_after_ms:
            self.disable(f"{DISABLED_REASON}: failing for {now - failing_since} ms", now)
            raise GiveUp(self._dead_letter(envelope, attempt, outcome, DISABLED_REASON))

        decision = decide(self.settings.retry, outcome, retries, started_ms, now)
        metrics.count_delivery(slug, metrics.FAILED if decision.retry else metrics.GIVEN_UP)
        if not decision.retry:
            log.warning("delivery.given_up", error=outcome.summary, reason=decision.reason)
            raise GiveUp(self._dead_letter(envelope, attempt, outcome, decision.reason))

        log.warning(
            "delivery.failed",
            error=outcome.summary,
            retry_in_ms=decision.delay_ms,
            failures=failures,
        )
        self._save_record(envelope, PENDING, attempt, outcome, payload=payload)
        raise RetryLater(f"delivery to {slug} failed: {outcome.summary}", decision.delay_ms)

    def _succeeded(
        self,
        envelope: Envelope,
        payload: str,
        outcome: Outcome,
        attempt: int,
        admission: Admission,
        now: int,
    ) -> None:
        slug = self.system.slug
        self.slots.keep(slug, admission, now)

        self.bookkeeper.add(
            Delivered(
                self._attempt_entry(envelope[0], attempt, outcome, now),
                self._record(envelope, DELIVERED, attempt, outcome),
                payload,
            )
        )
        metrics.count_delivery(slug, metrics.DELIVERED)
        metrics.observe_latency(slug, (now - envelope[4]) / 1000)
        # The attempt log keeps every success; the log line is for debugging.
        logger.debug(
            "delivery.delivered",
            event_id=envelope[0],
            system=slug,
            attempt=attempt,
            status=outcome.status,
            duration_ms=outcome.duration_ms,
            latency_ms=now - envelope[4],
        )

    def disable(self, reason: str, now: int) -> None:
        """Stop deliveries to this system and park its scheduled retries as dead letters."""
        slug = self.system.slug
        if self.stores.systems.disable(slug, reason, now):
            logger.error(
                "system.disabled",
                system=slug,
                reason=reason,
                action=f"fix the endpoint, then run: ue-flow systems enable {slug}",
            )
        for message in self.stores.scheduler.take_all(delivery_queue(slug)):
            event_id, event_name, user, data, emitted_at_ms = message.args
            envelope: Envelope = (event_id, event_name, user, data, emitted_at_ms)
            retries = message.options.get("retries", 0)
            self.stores.dead_letters.add(
                self._dead_letter(envelope, retries, None, DISABLED_REASON)
            )

    def dead_letter_from_args(
        self, args: tuple[Any, ...], attempts: int, reason: str
    ) -> DeadLetter:
        """Return the dead letter of a delivery message with arguments ``args``."""
        event_id, event_name, user, data, emitted_at_ms = args
        envelope: Envelope = (event_id, event_name, user, data, emitted_at_ms)
        return self._dead_letter(envelope, attempts, None, reason)

    def _dead_letter(
        self, envelope: Envelope, attempts: int, outcome: Outcome | None, reason: str
    ) -> DeadLetter:
        event_id, event_name, user, data, emitted_at_ms = envelope
        self._save_record(envelope, FAILED, attempts, outcome)
        return DeadLetter(
            event_id=event_id,
            event_name=event_name,
            system=self.system.slug,
            type=self.config.events[event_name].type,
            user=user,
            data=data,
            emitted_at_ms=emitted_at_ms,
            attempts=attempts,
            last_status=outcome.status if outcome else None,
            last_error=outcome.summary if outcome else reason,
            reason=reason,
            dead_at_ms=_now_ms(),
        )

    def _log_attempt(
        self, event_id: str, attempt: int, outcome: Outcome, now: int, pipe: redis.client.Pipeline
    ) -> None:
        self.stores.attempts.record_attempt(
            self._attempt_entry(event_id, attempt, outcome, now), pipe
        )

    def _attempt_entry(self, event_id: str, attempt: int, outcome: Outcome, now: int) -> Attempt:
        return Attempt(
            event_id=event_id,
            system=self.system.slug,
            attempt=attempt,
            time_ms=now - outcome.duration_ms,
            duration_ms=outcome.duration_ms,
            status=outcome.status,
            error=outcome.error,
            # Redacted before it is cut, so that a key cut in half at
            # the end cannot slip through.
            response=self._redact(outcome.response)[:RESPONSE_EXCERPT_BYTES],
        )

    def _redact(self, text: str) -> str:
        # A receiver may echo the request in its response; the key and the
        # secrets must not reach the attempt log that way.
        if not text:
            return text
        for secret in (self.environ.get(self.system.key_env, ""), *self._secrets()):
            if secret:
                text = text.replace(secret, "***")
        return text

    def _save_record(
        self,
        envelope: Envelope,
        status: str,
        attempts: int,
        outcome: Outcome | None,
        pipe: redis.client.Pipeline | None = None,
        *,
        payload: str | None = None,
    ) -> None:
        record = self._record(envelope, status, attempts, outcome)
        self.stores.attempts.save(record, pipe, payload=payload)

    def _record(
        self, envelope: Envelope, status: str, attempts: int, outcome: Outcome | None
    ) -> DeliveryRecord:
        # The record is written whole after each attempt, so a delivery has
        # one from its first attempt on, with the payload that redeliver sends.
        event_id, event_name, user, data, emitted_at_ms = envelope
        return DeliveryRecord(
            event_id=event_id,
            system=self.system.slug,
            event_name=event_name,
            status=status,
            attempts=attempts,
            updated_ms=_now_ms(),
            emitted_at_ms=emitted_at_ms,
            last_status=outcome.status if outcome else None,
            last_error=outcome.summary if outcome and not outcome.delivered else None,
            user=user,
            data=data,
        )
