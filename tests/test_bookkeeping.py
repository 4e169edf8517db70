"""Batched bookkeeping of successful deliveries, on the real Redis."""

from __future__ import annotations

import time
from typing import Any

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from structlog.testing import capture_logs

from tests.conftest import free_port
from ue_flow import bookkeeping
from ue_flow.bookkeeping import Bookkeeper
from ue_flow.config import Config, DeliverySettings
from ue_flow.loader import load_config
from ue_flow.slots import SlotPool
from ue_flow.state import StateStores


def open_stores(client: redis.Redis, namespace: str) -> StateStores:
    config: Config = load_config("config").config
    return StateStores.open(client, namespace, config)


def unreachable_client() -> redis.Redis:
    """Return a client of a port nothing listens on, failing without retries."""
    return redis.Redis(port=free_port(), retry=Retry(NoBackoff(), 0))


def marker(key: str) -> bookkeeping.Write:
    def write(pipe: redis.client.Pipeline) -> None:
        pipe.set(key, "written")

    return write


def wait_for(condition: Any, timeout_s: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return False


def test_write_outside_worker_at_once(redis_client: redis.Redis, namespace: str) -> None:
    stores = open_stores(redis_client, namespace)
    keeper = Bookkeeper(stores, SlotPool(stores.systems))

    keeper.add(marker(f"{namespace}:marker"), success_of="learn")

    assert redis_client.get(f"{namespace}:marker") == b"written"
    assert redis_client.hexists(f"{namespace}:system:learn", "last_success_ms")
    assert keeper.pending == 0


def test_worker_writes_in_batches(redis_client: redis.Redis, namespace: str) -> None:
    stores = open_stores(redis_client, namespace)
    keeper = Bookkeeper(stores, SlotPool(stores.systems))
    keeper.after_worker_boot(None, None)  # type: ignore[arg-type]
    try:
        for index in range(50):
            keeper.add(marker(f"{namespace}:marker:{index}"), success_of="learn")

        assert wait_for(lambda: redis_client.exists(f"{namespace}:marker:49"))
        assert all(redis_client.exists(f"{namespace}:marker:{index}") for index in range(50))
        assert redis_client.hexists(f"{namespace}:system:learn", "last_success_ms")
    finally:
        keeper.after_worker_shutdown(None, None)  # type: ignore[arg-type]


def test_shutdown_gives_back_kept_slots(redis_client: redis.Redis, namespace: str) -> None:
    stores = open_stores(redis_client, namespace)
    slots = SlotPool(stores.systems)
    keeper = Bookkeeper(stores, slots)
    keeper.after_worker_boot(None, None)  # type: ignore[arg-type]
    now_ms = int(time.time() * 1000)
    slots.keep("learn", slots.admit("learn", DeliverySettings(), now_ms), now_ms)
    keeper.add(marker(f"{namespace}:marker"))

    keeper.after_worker_shutdown(None, None)  # type: ignore[arg-type]

    assert redis_client.zcard(f"{namespace}:inflight:learn") == 0
    assert redis_client.get(f"{namespace}:marker") == b"written"


def test_unreachable_redis_keeps_writes(namespace: str) -> None:
    unreachable = unreachable_client()
    stores = open_stores(unreachable, namespace)
    keeper = Bookkeeper(stores, SlotPool(stores.systems))
    keeper.batching = True

    for index in range(3):
        keeper.add(marker(f"{namespace}:marker:{index}"))
    with capture_logs() as logs:
        keeper.flush()

    assert keeper.pending == 3
    assert [entry["event"] for entry in logs] == ["bookkeeping.failed"]
    assert logs[0]["writes"] == 3
    assert "ConnectionError" in logs[0]["error"]


def test_kept_writes_bounded(namespace: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bookkeeping, "MAX_PENDING", 2)
    unreachable = unreachable_client()
    stores = open_stores(unreachable, namespace)
    keeper = Bookkeeper(stores, SlotPool(stores.systems))
    keeper.batching = True

    for index in range(3):
        keeper.add(marker(f"{namespace}:marker:{index}"))
    with capture_logs() as logs:
        keeper.flush()

    assert keeper.pending == 2
    dropped = [entry for entry in logs if entry["event"] == "bookkeeping.dropped"]
    assert dropped[0]["writes"] == 1
    assert dropped[0]["log_level"] == "error"
