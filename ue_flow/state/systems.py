"""Per-system state shared by every worker: disabled flag, circuit breaker, in-flight slots."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any, cast

import redis

from ..config import CircuitBreaker

# Returns 0 when a delivery may go ahead, else the time in ms until the
# circuit lets one through. When the cooldown of an open circuit is over,
# the caller that gets 0 is the single probe, and the circuit stays open
# for everyone else for another cooldown.
_CIRCUIT_CHECK = """
local open_until = tonumber(redis.call('hget', KEYS[1], 'open_until_ms') or '0')
local now = tonumber(ARGV[1])
if open_until > now then
    return open_until
end
local failures = tonumber(redis.call('hget', KEYS[1], 'failures') or '0')
if failures >= tonumber(ARGV[2]) then
    redis.call('hset', KEYS[1], 'open_until_ms', now + tonumber(ARGV[3]))
end
return 0
"""

# Takes one of ARGV[2] slots, each leased until ARGV[3]; returns 1 or 0.
_ACQUIRE_SLOT = """
redis.call('zremrangebyscore', KEYS[1], '-inf', ARGV[1])
if redis.call('zcard', KEYS[1]) < tonumber(ARGV[2]) then
    redis.call('zadd', KEYS[1], ARGV[3], ARGV[4])
    redis.call('pexpire', KEYS[1], tonumber(ARGV[3]) - tonumber(ARGV[1]))
    return 1
end
return 0
"""


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
        self._circuit_check = client.register_script(_CIRCUIT_CHECK)
        self._acquire = client.register_script(_ACQUIRE_SLOT)

    def _key(self, slug: str) -> str:
        return f"{self.namespace}:system:{slug}"

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

    def circuit_wait_ms(self, slug: str, breaker: CircuitBreaker, now_ms: int) -> int:
        """Return 0 when a delivery may go now, else milliseconds until the circuit allows one."""
        open_until = int(
            self._circuit_check(
                keys=[self._key(slug)],
                args=[now_ms, breaker.failure_threshold, breaker.cooldown_ms],
            )
        )
        return max(0, open_until - now_ms)

    def record_success(self, slug: str, now_ms: int) -> None:
        """Close the circuit and clear the failure streak."""
        with self.client.pipeline(transaction=True) as pipe:
            pipe.hset(self._key(slug), "last_success_ms", now_ms)
            pipe.hdel(self._key(slug), "failures", "failing_since_ms", "open_until_ms")
            pipe.execute()

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

    def acquire_slot(self, slug: str, limit: int, lease_ms: int, now_ms: int) -> str | None:
        """Take one of ``slug``'s in-flight slots; return its token, or None when all are taken.

        A slot whose holder died is free again after ``lease_ms``.
        """
        token = uuid.uuid4().hex
        taken = self._acquire(
            keys=[f"{self.namespace}:inflight:{slug}"],
            args=[now_ms, limit, now_ms + lease_ms, token],
        )
        return token if taken else None

    def release_slot(self, slug: str, token: str) -> None:
        """Give back a slot taken with ``acquire_slot``."""
        self.client.zrem(f"{self.namespace}:inflight:{slug}", token)

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
