"""Idempotency keys of emit: a repeated key returns the first event id."""

from __future__ import annotations

from typing import Any, cast

import redis

#: How long an idempotency key is remembered, in milliseconds.
IDEMPOTENCY_TTL_MS = 86_400_000


class IdempotencyKeys:
    """Idempotency keys of ``emit``: the first event id per key, kept for a while.

    A key is claimed before its event is queued, and marked once the event
    is queued. An emit that finds the key claimed but not marked queues the
    event again under the claimed id, since the first emit failed before
    its event was queued.
    """

    def __init__(self, client: redis.Redis, namespace: str) -> None:
        self.client = client
        self.namespace = namespace

    def claim(self, key: str, event_id: str, ttl_ms: int = IDEMPOTENCY_TTL_MS) -> tuple[str, bool]:
        """Store ``event_id`` under ``key`` unless set.

        Returns the event id that ``key`` names and whether an earlier emit
        had claimed it.
        """
        redis_key = self.key(key)
        if self.client.set(redis_key, event_id, nx=True, px=ttl_ms):
            return event_id, False

        earlier: bytes | None = cast(Any, self.client.get(redis_key))
        if earlier is None:
            # Expired between the two calls: claim it afresh.
            return self.claim(key, event_id, ttl_ms)
        return earlier.decode(), True

    def key(self, key: str) -> str:
        """Return the Redis key of idempotency key ``key``."""
        return f"{self.namespace}:idempotency:{key}"

    def marker(self, key: str) -> str:
        """Return the Redis key that exists once the event of ``key`` is queued."""
        return f"{self.key(key)}:queued"

    def mark_queued(self, key: str, ttl_ms: int = IDEMPOTENCY_TTL_MS) -> None:
        """Note that the event of ``key`` was queued."""
        self.client.set(self.marker(key), 1, px=ttl_ms)

    def is_queued(self, key: str) -> bool:
        """True when the event of ``key`` was queued."""
        return bool(self.client.exists(self.marker(key)))
