"""Per-system state shared by every worker: disabled flag, circuit breaker, in-flight slots."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any, cast

import redis

from ..config import CircuitBreaker, DeliverySettings
from .batch import batch

# Admits one delivery in a single round trip. Returns {0} with the slot
# taken, {1} when the system is disabled, {2, ms} while the circuit is open
# and {3} when every in-flight slot is taken. When an open circuit's
# cooldown is over, the delivery admitted is the single probe, and the
# circuit stays open for every other delivery for another cooldown.
_ADMIT = """
local state, slots = KEYS[1], KEYS[2]
local now, threshold, cooldown = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local limit, lease_until, token = tonumber(ARGV[4]), tonumber(ARGV[5]), ARGV[6]
if redis.call('hexists', state, 'disabled_reason') == 1 then
    return {1}
end
local open_until = tonumber(redis.call('hget', state, 'open_until_ms') or '0')
if open_until > now then
    return {2, open_until - now}
end
redis.call('zremrangebyscore', slots, '-inf', now)
if redis.call('zcard', slots) >= limit then
    return {3}
end
local failures = tonumber(redis.call('hget', state, 'failures') or '0')
if failures >= threshold then
    redis.call('hset', state, 'open_until_ms', now + cooldown)
end
redis.call('zadd', slots, lease_until, token)
redis.call('pexpire', slots, lease_until - now)
return {0}
"""

# Records a success at ARGV[1] ms. It closes the circuit and ends the failure
# streak only when no failure came later, since a batch of successes may be
# written after failures that happened meanwhile.
_SUCCESS = """
local state, now = KEYS[1], tonumber(ARGV[1])
local last_success = tonumber(redis.call('hget', state, 'last_success_ms') or '0')
if now > last_success then
    redis.call('hset', state, 'last_success_ms', now)
end
local last_failure = tonumber(redis.call('hget', state, 'last_failure_ms') or '0')
if last_failure <= now then
    redis.call('hdel', state, 'failures', 'failing_since_ms', 'open_until_ms')
end
return 0
"""

#: Admission verdicts of ``SystemStates.admit``.
ADMITTED = 0
DISABLED = 1
CIRCUIT_OPEN = 2
NO_SLOT = 3


@dataclass(frozen=True)
class Admission:
    """Whether a delivery may go now: ``verdict`` is one of the constants above.

    ``token`` names the in-flight slot taken when admitted, at Unix time
    ``taken_ms``; ``wait_ms`` is how long the circuit stays open when it is.
    """

    verdict: int
    token: str = ""
    wait_ms: int = 0
    taken_ms: int = 0


@dataclass(frozen=True)
class Health:
    """A snapshot of one system's state. Times are Unix epoch ms, None when never."""

    enabled: bool
    disabled_reason: str | None
    circuit: str
    failures: int
    last_success_ms: int | None
    last_failure_ms: int | None
    last_error: str | None


class SystemStates:
    """The shared state of every system under one key prefix."""

    def __init__(self, client: redis.Redis, namespace: str) -> None:
        self.client = client
        self.namespace = namespace
        self._admit = client.register_script(_ADMIT)
        self._success = client.register_script(_SUCCESS)

    def _key(self, slug: str) -> str:
        return f"{self.namespace}:system:{slug}"

    def _slots(self, slug: str) -> str:
        return f"{self.namespace}:inflight:{slug}"

    def admit(self, slug: str, settings: DeliverySettings, now_ms: int) -> Admission:
        """Check the disabled flag and the circuit, and take an in-flight slot.

        A slot is leased for the connect and read timeouts plus a margin, so
        the slot of a worker killed mid-delivery frees itself.
        """
        token = uuid.uuid4().hex
        lease_until = now_ms + settings.connect_timeout_ms + settings.read_timeout_ms + 5_000
        breaker = settings.circuit_breaker
        reply = self._admit(
            keys=[self._key(slug), self._slots(slug)],
            args=[
                now_ms,
                breaker.failure_threshold,
                breaker.cooldown_ms,
                settings.max_in_flight,
                lease_until,
                token,
            ],
        )
        verdict = int(reply[0])
        if verdict == ADMITTED:
            return Admission(ADMITTED, token=token, taken_ms=now_ms)
        if verdict == CIRCUIT_OPEN:
            return Admission(CIRCUIT_OPEN, wait_ms=int(reply[1]))
        return Admission(verdict)

    def release_slot(
        self, slug: str, token: str, pipe: redis.client.Pipeline | None = None
    ) -> None:
        """Give back a slot taken by ``admit``, as part of ``pipe`` when given."""
        with batch(self.client, pipe) as writes:
            writes.zrem(self._slots(slug), token)

    def is_disabled(self, slug: str) -> bool:
        """True when deliveries to ``slug`` are stopped until an operator enables it."""
        return bool(self.client.hexists(self._key(slug), "disabled_reason"))

    def disable(self, slug: str, reason: str, now_ms: int) -> bool:
        """Stop deliveries to ``slug``; return False when it was already disabled."""
        added = self.client.hsetnx(self._key(slug), "disabled_reason", reason)
        if added:
            self.client.hset(self._key(slug), "disabled_at_ms", now_ms)
        return bool(added)

    def enable(self, slug: str) -> None:
        """Resume deliveries to ``slug`` with a closed circuit."""
        self.client.hdel(
            self._key(slug),
            "disabled_reason",
            "disabled_at_ms",
            "failures",
            "failing_since_ms",
            "open_until_ms",
        )

    def record_success(
        self, slug: str, now_ms: int, pipe: redis.client.Pipeline | None = None
    ) -> None:
        """Note a success at ``now_ms``, as part of ``pipe`` when given.

        The circuit closes and the failure streak ends unless a failure was
        recorded after ``now_ms``.
        """
        with batch(self.client, pipe) as writes:
            self._success(keys=[self._key(slug)], args=[now_ms], client=writes)

    def record_failure(
        self, slug: str, error: str, breaker: CircuitBreaker, now_ms: int
    ) -> tuple[int, int]:
        """Count a failure; return the failures in a row and when the streak began (ms)."""
        key = self._key(slug)
        with self.client.pipeline(transaction=True) as pipe:
            pipe.hincrby(key, "failures", 1)
            pipe.hsetnx(key, "failing_since_ms", now_ms)
            pipe.hset(key, mapping={"last_failure_ms": now_ms, "last_error": error})
            pipe.hget(key, "failing_since_ms")
            failures, _, _, failing_since = pipe.execute()

        if failures >= breaker.failure_threshold:
            self.client.hset(key, "open_until_ms", now_ms + breaker.cooldown_ms)
        return int(failures), int(failing_since)

    def health(self, slug: str, breaker: CircuitBreaker, now_ms: int) -> Health:
        """Return a snapshot of ``slug``'s state."""
        stored: dict[bytes, bytes] = cast(Any, self.client.hgetall(self._key(slug)))
        fields = {key.decode(): value.decode() for key, value in stored.items()}
        failures = int(fields.get("failures", 0))
        open_until = int(fields.get("open_until_ms", 0))
        if open_until > now_ms:
            circuit = "open"
        elif failures >= breaker.failure_threshold:
            circuit = "half-open"
        else:
            circuit = "closed"
        return Health(
            enabled="disabled_reason" not in fields,
            disabled_reason=fields.get("disabled_reason"),
            circuit=circuit,
            failures=failures,
            last_success_ms=_optional_int(fields.get("last_success_ms")),
            last_failure_ms=_optional_int(fields.get("last_failure_ms")),
            last_error=fields.get("last_error"),
        )


def _optional_int(value: str | None) -> int | None:
    return int(value) if value is not None else None
