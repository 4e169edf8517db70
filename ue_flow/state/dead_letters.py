"""Dead letters: deliveries that ran out of retries or were stopped, kept for replay."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any, cast

import redis


@dataclass(frozen=True)
class DeadLetter:
    """A delivery that will not be retried on its own.

    It contains the envelope's parts without the key, which workers look up
    again when a replay sends it. Times are Unix epoch milliseconds.
    """

    event_id: str
    event_name: str
    system: str
    type: str
    user: dict[str, Any]
    data: dict[str, Any]
    emitted_at_ms: int
    attempts: int
    last_status: int | None
    last_error: str
    reason: str
    dead_at_ms: int

    @property
    def id(self) -> str:
        """The dead letter's id: one per event and system, so a repeat replaces it."""
        return f"{self.event_id}:{self.system}"


class DeadLetters:
    """The dead letters under one key prefix, newest last."""

    def __init__(self, client: redis.Redis, namespace: str, retention_ms: int) -> None:
        self.client = client
        self.retention_ms = retention_ms
        self._records = f"{namespace}:dead"
        self._index = f"{namespace}:dead:index"

    def add(self, letter: DeadLetter) -> None:
        """Keep ``letter``, replacing an older one of the same event and system."""
        with self.client.pipeline(transaction=True) as pipe:
            pipe.hset(self._records, letter.id, json.dumps(asdict(letter), ensure_ascii=False))
            pipe.zadd(self._index, {letter.id: letter.dead_at_ms})
            pipe.execute()

    def prune(self, now_ms: int) -> int:
        """Drop dead letters older than the retention; return how many."""
        expired = self.client.zrangebyscore(self._index, "-inf", now_ms - self.retention_ms)
        if not expired:
            return 0

        with self.client.pipeline(transaction=True) as pipe:
            pipe.hdel(self._records, *expired)
            pipe.zrem(self._index, *expired)
            pipe.execute()
        return len(expired)

    def select(
        self,
        *,
        system: str | None = None,
        event_id: str | None = None,
        since_ms: int | None = None,
    ) -> Iterator[DeadLetter]:
        """Yield the dead letters matching every filter given, oldest first."""
        ids: list[bytes] = cast(Any, self.client.zrangebyscore)(
            self._index, since_ms if since_ms is not None else "-inf", "+inf"
        )
        for start in range(0, len(ids), 500):
            batch = ids[start : start + 500]
            for raw in self.client.hmget(self._records, batch):
                if raw is None:
                    continue
                letter = DeadLetter(**json.loads(raw))
                if system is not None and letter.system != system:
                    continue
                if event_id is not None and letter.event_id != event_id:
                    continue
                yield letter

    def remove(self, letter: DeadLetter) -> None:
        """Forget ``letter``, after it was queued again."""
        with self.client.pipeline(transaction=True) as pipe:
            pipe.hdel(self._records, letter.id)
            pipe.zrem(self._index, letter.id)
            pipe.execute()

    def count(self, system: str | None = None) -> int:
        """Return how many dead letters are kept, for one system or all."""
        if system is None:
            return int(self.client.zcard(self._index))
        return sum(1 for _ in self.select(system=system))
