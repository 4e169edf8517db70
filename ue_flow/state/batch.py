"""Batching Redis writes of several stores into one round trip."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import redis


@contextmanager
def batch(
    client: redis.Redis, pipe: redis.client.Pipeline | None
) -> Iterator[redis.client.Pipeline]:
    """Yield ``pipe`` when given, else a new pipeline that is sent on exit."""
    if pipe is not None:
        yield pipe
        return

    with client.pipeline(transaction=False) as own:
        yield own
        own.execute()
