"""The attempt log and delivery records, bounded by age and size."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, cast

import redis

from .batch import batch

#: Delivery statuses: waiting for an attempt or a retry, done, or given up.
PENDING = "pending"
DELIVERED = "delivered"
FAILED = "failed"

#: The first bytes of an answer's body kept with an attempt.
RESPONSE_EXCERPT_BYTES = 2048


@dataclass(frozen=True)
class Attempt:
    """One HTTP attempt. Times are Unix epoch milliseconds.

    ``status`` is the HTTP status, or None when no response came; ``error``
    then names the error class. ``response`` is the start of the body.
    """

    event_id: str
    system: str
    attempt: int
    time_ms: int
    duration_ms: int
    status: int | None
    error: str | None
    response: str


@dataclass(frozen=True)
class DeliveryRecord:
    """The state of one event's delivery to one system, and what it sends."""

    event_id: str
    system: str
    event_name: str
    status: str
    attempts: int
    updated_ms: int
    emitted_at_ms: int
    last_status: int | None = None
    last_error: str | None = None
    user: dict[str, Any] | None = None
    data: dict[str, Any] | None = None


# Sets fields of a delivery record only when the record exists, so that an
# update after expiry does not leave a half-written record behind.
_UPDATE_EXISTING = """
if redis.call('exists', KEYS[1]) == 1 then
    redis.call('hset', KEYS[1], unpack(ARGV))
end
return 0
"""


# Delivery records are Redis hashes of JSON-encoded fields, so that an
# update writes only the fields that changed.
def _encode(fields: dict[str, Any]) -> dict[str, str]:
    return {key: _encode_value(value) for key, value in fields.items()}


def _encode_value(value: Any) -> str:
    # Most fields are integers or null, whose JSON is cheaper to write by hand.
    if value is None:
        return "null"
    if type(value) is int:
        return str(value)
    return json.dumps(value, ensure_ascii=False)


class AttemptLog:
    """Attempts in a Redis stream, and one record per delivery.

    Both are bounded: the stream keeps about ``max_attempts`` entries, and
    ``prune`` drops attempts and records older than ``retention_ms``.
    """

    def __init__(
        self, client: redis.Redis, namespace: str, retention_ms: int, max_attempts: int
    ) -> None:
        self.client = client
        self.namespace = namespace
        self.retention_ms = retention_ms
        self.max_attempts = max_attempts
        self._stream = f"{namespace}:attempts"
        self._index = f"{namespace}:deliveries"
        self._update_existing = client.register_script(_UPDATE_EXISTING)

    def _record_key(self, event_id: str, system: str) -> str:
        return f"{self.namespace}:delivery:{event_id}:{system}"

    def record_attempt(self, attempt: Attempt, pipe: redis.client.Pipeline | None = None) -> None:
        """Append ``attempt`` to the log, as part of ``pipe`` when given."""
        fields = _encode(vars(attempt))
        with batch(self.client, pipe) as writes:
            writes.xadd(self._stream, fields, maxlen=self.max_attempts, approximate=True)  # type: ignore[arg-type]

    def save(self, record: DeliveryRecord, pipe: redis.client.Pipeline | None = None) -> None:
        """Store ``record`` whole, as part of ``pipe`` when given."""
        key = self._record_key(record.event_id, record.system)
        with batch(self.client, pipe) as writes:
            # vars() rather than asdict(), which would deep-copy the payload.
            writes.hset(key, mapping=_encode(vars(record)))  # type: ignore[arg-type]
            writes.pexpire(key, self.retention_ms)
            writes.zadd(self._index, {f"{record.event_id}:{record.system}": record.updated_ms})

    def update(
        self,
        event_id: str,
        system: str,
        pipe: redis.client.Pipeline | None = None,
        **changes: Any,
    ) -> None:
        """Change fields of a stored record, as part of ``pipe`` when given.

        ``changes`` must include ``updated_ms``. A record that expired stays
        absent rather than half-written.
        """
        key = self._record_key(event_id, system)
        pairs = [part for field, value in _encode(changes).items() for part in (field, value)]
        with batch(self.client, pipe) as writes:
            self._update_existing(keys=[key], args=pairs, client=writes)
            writes.zadd(self._index, {f"{event_id}:{system}": changes["updated_ms"]}, xx=True)

    def prune(self, now_ms: int) -> None:
        """Drop attempts and delivery records older than the retention."""
        oldest = now_ms - self.retention_ms
        with self.client.pipeline(transaction=False) as pipe:
            pipe.xtrim(self._stream, minid=f"{max(0, oldest)}-0", approximate=True)
            pipe.zremrangebyscore(self._index, "-inf", oldest)
            pipe.execute()

    def attempts(self, event_id: str | None = None, limit: int = 1000) -> list[Attempt]:
        """Return the newest attempts, newest first, for one event or all."""
        found: list[Attempt] = []
        last = "+"
        while len(found) < limit:
            entries: list[tuple[bytes, dict[bytes, bytes]]] = cast(
                Any, self.client.xrevrange(self._stream, max=last, count=1000)
            )
            for entry_id, fields in entries:
                values = {key.decode(): json.loads(value) for key, value in fields.items()}
                if event_id is None or values["event_id"] == event_id:
                    found.append(Attempt(**values))
                last = f"({entry_id.decode()}"
            if len(entries) < 1000:
                break
        return found[:limit]

    def get(self, event_id: str, system: str) -> DeliveryRecord | None:
        """Return one delivery record, or None when absent or expired."""
        stored: dict[bytes, bytes] = cast(
            Any, self.client.hgetall(self._record_key(event_id, system))
        )
        return _record(stored)

    def deliveries(
        self,
        *,
        system: str | None = None,
        status: str | None = None,
        event_id: str | None = None,
        limit: int = 50,
    ) -> list[DeliveryRecord]:
        """Return the most recently updated delivery records matching every filter."""
        found: list[DeliveryRecord] = []
        start = 0
        while len(found) < limit:
            members: list[bytes] = cast(Any, self.client.zrevrange(self._index, start, start + 499))
            if not members:
                break
            start += len(members)
            with self.client.pipeline(transaction=False) as pipe:
                for member in members:
                    pipe.hgetall(self._record_key(*member.decode().rsplit(":", 1)))
                stored_records = pipe.execute()
            for stored in stored_records:
                record = _record(stored)
                if record is None:
                    continue
                if system is not None and record.system != system:
                    continue
                if status is not None and record.status != status:
                    continue
                if event_id is not None and record.event_id != event_id:
                    continue
                found.append(record)
        return found[:limit]


def _record(stored: dict[bytes, bytes]) -> DeliveryRecord | None:
    if not stored:
        return None
    return DeliveryRecord(**{key.decode(): json.loads(value) for key, value in stored.items()})
