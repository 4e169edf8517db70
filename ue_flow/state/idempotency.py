"""Idempotency keys of emit: a repeated key returns the first event id."""

from __future__ import annotations

from typing import Any, cast

import redis

#: How long an idempotency key is remembered, in milliseconds.
IDEMPOTENCY_TTL_MS = 86_400_000


class IdempotencyKeys:
    """Idempotency keys of ``emit``: the first event id per key, kept for a while."""

    def __init__(self, client: redis.Redis, namespace: str) -> None:
        self.client = client
        self.namespace = namespace

    def claim(self, key: str, event_id: str, ttl_ms: int = IDEMPOTENCY_TTL_MS) -> str | None:
        """Store ``event_id`` under ``key`` unless set; return the earlier id, or None."""
        redis_key = f"{self.namespace}:idempotency:{key}"
        if self.client.set(redis_key, event_id, nx=True, px=ttl_ms):
            return None

        earlier: bytes | None = cast(Any, self.client.get(redis_key))
        return earlier.decode() if earlier is not None else None

    def release(self, key: str, event_id: str) -> None:
        """Forget ``key`` if it still names ``event_id``, after queueing failed."""
        redis_key = f"{self.namespace}:idempotency:{key}"
        if self.client.get(redis_key) == event_id.encode():
            self.client.delete(redis_key)
