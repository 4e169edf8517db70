"""The attempt log and delivery records, bounded by age and size."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import redis

from ..envelope import payload_json
from ..jsontext import compact_json
from .batch import batch

#: Delivery statuses: waiting for an attempt or a retry, done, or given up.
PENDING = "pending"
DELIVERED = "delivered"
FAILED = "failed"

#: The fields of a delivery record kept apart from its state.
_PAYLOAD = ("user", "data")

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


@dataclass(frozen=True)
class Delivered:
    """A successful attempt, the record it completes and that record's ``payload_json``."""

    attempt: Attempt
    record: DeliveryRecord
    payload: str


# Stores the attempts and records of successful deliveries in one call.
# KEYS: the attempt stream, the record index, then each record's key. ARGV:
# the stream's approximate length cap, the records' retention in ms, then
# per record its state, payload, update time, index member and attempt.
_LOG_DELIVERED = """
local stream, index = KEYS[1], KEYS[2]
local max_attempts, retention = ARGV[1], ARGV[2]
for i = 3, #KEYS do
    local at = 3 + (i - 3) * 5
    redis.call('hset', KEYS[i], 'state', ARGV[at], 'payload', ARGV[at + 1])
    redis.call('pexpire', KEYS[i], retention)
    redis.call('zadd', index, ARGV[at + 2], ARGV[at + 3])
    redis.call('xadd', stream, 'MAXLEN', '~', max_attempts, '*', 'attempt', ARGV[at + 4])
end
return 0
"""


# A delivery record is a Redis hash of two JSON fields: "state", every field
# but the payload, and "payload", the user and data that redeliver sends.
# Updates rewrite the small state only, and only when the record exists, so
# that an update after expiry does not leave a half-written record behind.
_UPDATE_STATE = """
local state = redis.call('hget', KEYS[1], 'state')
if state then
    local fields = cjson.decode(state)
    for name, value in pairs(cjson.decode(ARGV[1])) do
        fields[name] = value
    end
    redis.call('hset', KEYS[1], 'state', cjson.encode(fields))
end
return 0
"""


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
        self._update_state = client.register_script(_UPDATE_STATE)
        self._log_delivered = client.register_script(_LOG_DELIVERED)

    def _record_key(self, event_id: str, system: str) -> str:
        return f"{self.namespace}:delivery:{event_id}:{system}"

    def record_attempt(self, attempt: Attempt, pipe: redis.client.Pipeline | None = None) -> None:
        """Append ``attempt`` to the log, as part of ``pipe`` when given."""
        entry = {"attempt": compact_json(vars(attempt))}
        with batch(self.client, pipe) as writes:
            writes.xadd(self._stream, entry, maxlen=self.max_attempts, approximate=True)  # type: ignore[arg-type]

    def log_delivered(
        self, delivered: Sequence[Delivered], pipe: redis.client.Pipeline | None = None
    ) -> None:
        """Append the attempts and store the records of ``delivered`` in one script call.

        The call is part of ``pipe`` when given. Each record is stored as
        ``save`` stores it.
        """
        if not delivered:
            return

        keys = [self._stream, self._index]
        args: list[str | int] = [self.max_attempts, self.retention_ms]
        for entry in delivered:
            record = entry.record
            keys.append(self._record_key(record.event_id, record.system))
            args += [
                _state_json(record),
                entry.payload,
                record.updated_ms,
                f"{record.event_id}:{record.system}",
                compact_json(vars(entry.attempt)),
            ]
        with batch(self.client, pipe) as writes:
            self._log_delivered(keys=keys, args=args, client=writes)

    def save(
        self,
        record: DeliveryRecord,
        pipe: redis.client.Pipeline | None = None,
        *,
        payload: str | None = None,
    ) -> None:
        """Store ``record`` whole, as part of ``pipe`` when given.

        ``payload`` is ``payload_json(record.user, record.data)`` when the
        caller has it already.
        """
        key = self._record_key(record.event_id, record.system)
        if payload is None:
            payload = payload_json(record.user, record.data)
        fields = {"state": _state_json(record), "payload": payload}
        with batch(self.client, pipe) as writes:
            writes.hset(key, mapping=fields)  # type: ignore[arg-type]
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

        ``changes`` must include ``updated_ms`` and cannot change the
        payload. A record that expired stays absent rather than half-written.
        """
        key = self._record_key(event_id, system)
        with batch(self.client, pipe) as writes:
            self._update_state(keys=[key], args=[json.dumps(changes)], client=writes)
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
                values = _attempt_fields(fields)
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


def _state_json(record: DeliveryRecord) -> str:
    # vars() rather than asdict(), which would deep-copy the payload.
    state = {name: value for name, value in vars(record).items() if name not in _PAYLOAD}
    return compact_json(state)


def _attempt_fields(fields: dict[bytes, bytes]) -> dict[str, Any]:
    if b"event_id" in fields:
        # Written by earlier releases, one JSON value per field; such entries
        # remain until the attempt retention passes.
        return {key.decode(): json.loads(value) for key, value in fields.items()}
    values: dict[str, Any] = json.loads(fields[b"attempt"])
    return values


def _record(stored: dict[bytes, bytes]) -> DeliveryRecord | None:
    if b"state" not in stored:
        if b"event_id" not in stored:
            return None
        # Written by earlier releases, one JSON value per field.
        return DeliveryRecord(**{key.decode(): json.loads(value) for key, value in stored.items()})
    payload = json.loads(stored[b"payload"]) if b"payload" in stored else {}
    return DeliveryRecord(
        **json.loads(stored[b"state"]), user=payload.get("user"), data=payload.get("data")
    )
