"""Batched bookkeeping of successful deliveries, on the real Redis."""

from __future__ import annotations

import time
from typing import Any

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from structlog.testing import capture_logs

from tests.conftest import free_port, wait_until
from ue_flow import bookkeeping
from ue_flow.bookkeeping import Bookkeeper
from ue_flow.config import Config, DeliverySettings
from ue_flow.envelope import payload_json
from ue_flow.loader import load_config
from ue_flow.slots import SlotPool
from ue_flow.state import StateStores
from ue_flow.state.attempts import DELIVERED, Attempt, Delivered, DeliveryRecord


def open_stores(client: redis.Redis, namespace: str) -> StateStores:
    config: Config = load_config("config").config
    return StateStores.open(client, namespace, config)


def unreachable_client() -> redis.Redis:
    """Return a client of a port nothing listens on, failing without retries."""
    return redis.Redis(port=free_port(), retry=Retry(NoBackoff(), 0))


def delivered(index: int, system: str = "learn") -> Delivered:
    """Return the bookkeeping of a successful first attempt of event ``index``."""
    event_id = f"evt_{index:032x}"
    user, data = {"id": index}, {"lines": [index]}
    return Delivered(
        Attempt(event_id, system, 1, 1_000, 12, 200, None, ""),
        DeliveryRecord(
            event_id, system, "post_sale", DELIVERED, 1, 1_012, 990, 200, None, user, data
        ),
        payload_json(user, data),
    )


def test_write_outside_worker_at_once(redis_client: redis.Redis, namespace: str) -> None:
    stores = open_stores(redis_client, namespace)
    keeper = Bookkeeper(stores, SlotPool(stores.systems))

    keeper.add(delivered(1))

    assert stores.attempts.get(f"evt_{1:032x}", "learn") == delivered(1).record
    assert stores.attempts.attempts(f"evt_{1:032x}") == [delivered(1).attempt]
    assert redis_client.hexists(f"{namespace}:system:learn", "last_success_ms")
    assert keeper.pending == 0


def test_worker_writes_in_batches(redis_client: redis.Redis, namespace: str) -> None:
    stores = open_stores(redis_client, namespace)
    keeper = Bookkeeper(stores, SlotPool(stores.systems))
    keeper.after_worker_boot(None, None)  # type: ignore[arg-type]
    try:
        for index in range(50):
            keeper.add(delivered(index))

        assert wait_until(lambda: len(stores.attempts.deliveries(limit=100)) == 50)
        assert len(stores.attempts.attempts()) == 50
        assert keeper.pending == 0
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
    keeper.add(delivered(1))

    keeper.after_worker_shutdown(None, None)  # type: ignore[arg-type]

    assert redis_client.zcard(f"{namespace}:inflight:learn") == 0
    assert stores.attempts.get(f"evt_{1:032x}", "learn") is not None


@pytest.fixture
def unreachable_keeper(namespace: str) -> Bookkeeper:
    """A batching bookkeeper whose Redis refuses connections."""
    stores = open_stores(unreachable_client(), namespace)
    keeper = Bookkeeper(stores, SlotPool(stores.systems))
    keeper.batching = True
    return keeper


def test_unreachable_redis_keeps_writes(unreachable_keeper: Bookkeeper) -> None:
    keeper = unreachable_keeper

    for index in range(3):
        keeper.add(delivered(index))
    with capture_logs() as logs:
        keeper.flush()

    assert keeper.pending == 3
    assert [entry["event"] for entry in logs] == ["bookkeeping.failed"]
    assert logs[0]["writes"] == 3
    assert "ConnectionError" in logs[0]["error"]


def test_kept_writes_bounded(
    unreachable_keeper: Bookkeeper, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bookkeeping, "MAX_PENDING", 2)
    keeper = unreachable_keeper

    for index in range(3):
        keeper.add(delivered(index))
    with capture_logs() as logs:
        keeper.flush()

    assert keeper.pending == 2
    dropped = [entry for entry in logs if entry["event"] == "bookkeeping.dropped"]
    assert dropped[0]["writes"] == 1
    assert dropped[0]["log_level"] == "error"


def test_flush_thread_survives_error(
    redis_client: redis.Redis, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    stores = open_stores(redis_client, namespace)
    keeper = Bookkeeper(stores, SlotPool(stores.systems))
    log_delivered = stores.attempts.log_delivered
    calls = []

    def fail_once(*args: Any, **kwargs: Any) -> None:
        calls.append(args)
        if len(calls) == 1:
            raise RuntimeError("unexpected")
        log_delivered(*args, **kwargs)

    monkeypatch.setattr(stores.attempts, "log_delivered", fail_once)
    keeper.after_worker_boot(None, None)  # type: ignore[arg-type]
    try:
        with capture_logs() as logs:
            keeper.add(delivered(1))
            assert wait_until(lambda: len(calls) >= 1)
            keeper.add(delivered(2))
            assert wait_until(lambda: stores.attempts.get(f"evt_{2:032x}", "learn") is not None)
    finally:
        keeper.after_worker_shutdown(None, None)  # type: ignore[arg-type]

    assert [entry["event"] for entry in logs if entry["log_level"] == "error"] == [
        "bookkeeping.flush_crashed"
    ]
