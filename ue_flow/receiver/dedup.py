"""Duplicate detection for received deliveries, keyed by system slug and webhook-id.

Delivery is at least once, so a receiver can see the same webhook-id again
after a lost response, a retry or an operator's replay. A store remembers
each id for a fixed time to live.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Protocol

import redis

from ..errors import Error

#: Seconds a webhook-id is remembered: three days, longer than the default
#: retry schedule (about 28 hours from the first attempt to the last). An
#: operator's replay of a dead letter after that time is processed again.
DEFAULT_TTL_SECONDS = 3 * 24 * 60 * 60

#: The maximum number of ids MemoryDuplicateStore keeps; the oldest is forgotten first.
DEFAULT_MAX_ENTRIES = 100_000

#: The prefix of every key RedisDuplicateStore writes.
DEFAULT_REDIS_PREFIX = "ue_flow:received:"


class DuplicateStoreError(Error):
    """Raised when the duplicate store cannot be reached.

    Nothing was processed, so respond with 503 and the sender retries later.
    """


class DuplicateStore(Protocol):
    """Storage that remembers received webhook-ids."""

    def add(self, key: str) -> bool:
        """Remember ``key`` atomically; return False when it is already remembered."""
        ...

    def discard(self, key: str) -> None:
        """Forget ``key``, so that its next delivery is processed again."""
        ...


class MemoryDuplicateStore:
    """A store in this process's memory, for one process or for tests.

    It is thread-safe. Ids are forgotten after ``ttl_seconds`` or when more
    than ``max_entries`` are kept, oldest first.
    """

    def __init__(
        self,
        *,
        ttl_seconds: int = DEFAULT_TTL_SECONDS,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        _check_ttl(ttl_seconds)
        if max_entries < 1:
            raise ValueError(f"max_entries must be at least 1, not {max_entries}.")

        self._ttl_seconds = ttl_seconds
        self._max_entries = max_entries
        self._clock = clock
        self._expiries: OrderedDict[str, float] = OrderedDict()
        self._lock = threading.Lock()

    def add(self, key: str) -> bool:
        """Remember ``key``; return False when it is already remembered."""
        with self._lock:
            now = self._clock()
            self._forget_expired(now)
            if key in self._expiries:
                return False

            self._expiries[key] = now + self._ttl_seconds
            if len(self._expiries) > self._max_entries:
                self._expiries.popitem(last=False)

            return True

    def discard(self, key: str) -> None:
        """Forget ``key``."""
        with self._lock:
            self._expiries.pop(key, None)

    def _forget_expired(self, now: float) -> None:
        # Every entry has the same time to live, so insertion order is expiry order.
        while self._expiries:
            oldest_key, expiry = next(iter(self._expiries.items()))
            if expiry > now:
                return
            del self._expiries[oldest_key]


class RedisDuplicateStore:
    """A store in Redis, shared by every process of the receiving application.

    Each id is one key, ``prefix`` followed by the id, written with
    ``SET NX EX`` so that two concurrent deliveries cannot both be new.
    Redis errors are raised as DuplicateStoreError.
    """

    def __init__(
        self,
        client: redis.Redis,
        *,
        prefix: str = DEFAULT_REDIS_PREFIX,
        ttl_seconds: int = DEFAULT_TTL_SECONDS,
    ) -> None:
        _check_ttl(ttl_seconds)
        self._client = client
        self._prefix = prefix
        self._ttl_seconds = ttl_seconds

    def add(self, key: str) -> bool:
        """Remember ``key``; return False when it is already remembered."""
        try:
            created = self._client.set(self._prefix + key, b"1", nx=True, ex=self._ttl_seconds)
        except redis.RedisError as error:
            raise DuplicateStoreError(_redis_message("record", key, error)) from error

        return bool(created)

    def discard(self, key: str) -> None:
        """Forget ``key``."""
        try:
            self._client.delete(self._prefix + key)
        except redis.RedisError as error:
            raise DuplicateStoreError(_redis_message("forget", key, error)) from error


def _redis_message(action: str, key: str, error: redis.RedisError) -> str:
    return (
        f"Failed to {action} webhook-id {key!r} in Redis: {error}. "
        "Check that Redis is reachable; answer 503 so that the sender retries."
    )


def _check_ttl(ttl_seconds: int) -> None:
    if ttl_seconds < 1:
        raise ValueError(f"ttl_seconds must be at least 1, not {ttl_seconds}.")
