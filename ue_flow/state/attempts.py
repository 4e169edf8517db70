"""The attempt log and delivery records, bounded by age and size."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any, cast

import redis

#: Delivery statuses: waiting for an attempt or a retry, done, or given up.
PENDING = "pending"
DELIVERED = "delivered"
FAILED = "failed"

#: The first bytes of an answer's body kept with an attempt.
RESPONSE_EXCERPT_BYTES = 2048


@dataclass(frozen=True)
class Attempt:
    """One HTTP attempt. Times are Unix epoch milliseconds.

    ``status`` is the HTTP status, or None when no answer came; ``error``
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


class AttemptLog:
    """Attempts in a Redis stream, and one record per delivery.

    Both are bounded: entries older than ``retention_ms`` go, and the
    stream keeps about ``max_attempts`` entries.
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

    def _record_key(self, event_id: str, system: str) -> str:
        return f"{self.namespace}:delivery:{event_id}:{system}"

    def record_attempt(self, attempt: Attempt) -> None:
        """Append ``attempt`` to the log and trim the log by size and age."""
        fields = {key: json.dumps(value) for key, value in asdict(attempt).items()}
        oldest = f"{max(0, attempt.time_ms - self.retention_ms)}-0"
        with self.client.pipeline(transaction=False) as pipe:
            pipe.xadd(self._stream, fields, maxlen=self.max_attempts, approximate=True)  # type: ignore[arg-type]
            pipe.xtrim(self._stream, minid=oldest, approximate=True)
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

    def save(self, record: DeliveryRecord) -> None:
        """Store ``record``, replacing the previous state of that delivery."""
        key = self._record_key(record.event_id, record.system)
        member = f"{record.event_id}:{record.system}"
        with self.client.pipeline(transaction=False) as pipe:
            pipe.set(key, json.dumps(asdict(record), ensure_ascii=False), px=self.retention_ms)
            pipe.zadd(self._index, {member: record.updated_ms})
            pipe.zremrangebyscore(self._index, "-inf", record.updated_ms - self.retention_ms)
            pipe.execute()

    def update(self, event_id: str, system: str, **changes: Any) -> DeliveryRecord | None:
        """Change fields of a stored record; return the new record, or None when absent."""
        record = self.get(event_id, system)
        if record is None:
            return None

        updated = DeliveryRecord(**{**asdict(record), **changes})
        self.save(updated)
        return updated

    def get(self, event_id: str, system: str) -> DeliveryRecord | None:
        """Return one delivery record, or None when absent or expired."""
        raw = self.client.get(self._record_key(event_id, system))
        return DeliveryRecord(**json.loads(raw)) if raw else None

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
            keys = [self._record_key(*member.decode().rsplit(":", 1)) for member in members]
            for raw in self.client.mget(keys):
                if raw is None:
                    continue
                record = DeliveryRecord(**json.loads(raw))
                if system is not None and record.system != system:
                    continue
                if status is not None and record.status != status:
                    continue
                if event_id is not None and record.event_id != event_id:
                    continue
                found.append(record)
        return found[:limit]
