"""In-flight slots kept by a worker process, on the real Redis."""

from __future__ import annotations

import redis

from ue_flow.config import DeliverySettings
from ue_flow.slots import IDLE_MS, REUSE_MS, SlotPool
from ue_flow.state.systems import ADMITTED, DISABLED, NO_SLOT, SystemStates

NOW_MS = 1_800_000_000_000


def in_flight(client: redis.Redis, namespace: str, slug: str = "learn") -> int:
    return int(client.zcard(f"{namespace}:inflight:{slug}"))


def test_first_admit_takes_redis_slot(redis_client: redis.Redis, namespace: str) -> None:
    pool = SlotPool(SystemStates(redis_client, namespace))

    admission = pool.admit("learn", DeliverySettings(), NOW_MS)

    assert admission.verdict == ADMITTED
    assert admission.taken_ms == NOW_MS
    assert in_flight(redis_client, namespace) == 1


def test_kept_slot_reused(redis_client: redis.Redis, namespace: str) -> None:
    pool = SlotPool(SystemStates(redis_client, namespace))
    first = pool.admit("learn", DeliverySettings(), NOW_MS)

    pool.keep("learn", first, NOW_MS + 10)
    second = pool.admit("learn", DeliverySettings(), NOW_MS + 20)

    assert second.token == first.token
    assert in_flight(redis_client, namespace) == 1
    assert pool.take_spent(NOW_MS + 30) == []


def test_kept_slot_per_system(redis_client: redis.Redis, namespace: str) -> None:
    pool = SlotPool(SystemStates(redis_client, namespace))
    learn = pool.admit("learn", DeliverySettings(), NOW_MS)
    pool.keep("learn", learn, NOW_MS)

    other = pool.admit("mitxonline", DeliverySettings(), NOW_MS)

    assert other.token != learn.token
    assert in_flight(redis_client, namespace, "mitxonline") == 1


def test_old_slot_taken_again(redis_client: redis.Redis, namespace: str) -> None:
    pool = SlotPool(SystemStates(redis_client, namespace))
    first = pool.admit("learn", DeliverySettings(), NOW_MS)
    pool.keep("learn", first, NOW_MS + 10)

    later = NOW_MS + REUSE_MS
    second = pool.admit("learn", DeliverySettings(), later)

    assert second.verdict == ADMITTED
    assert second.token != first.token
    assert ("learn", first.token) in pool.take_spent(later)


def test_old_slot_not_kept(redis_client: redis.Redis, namespace: str) -> None:
    pool = SlotPool(SystemStates(redis_client, namespace))
    first = pool.admit("learn", DeliverySettings(), NOW_MS)

    pool.keep("learn", first, NOW_MS + REUSE_MS)

    assert pool.take_spent(NOW_MS + REUSE_MS) == [("learn", first.token)]


def test_idle_slot_given_back(redis_client: redis.Redis, namespace: str) -> None:
    pool = SlotPool(SystemStates(redis_client, namespace))
    first = pool.admit("learn", DeliverySettings(), NOW_MS)
    pool.keep("learn", first, NOW_MS)

    assert pool.take_spent(NOW_MS + IDLE_MS - 1) == []
    assert pool.take_spent(NOW_MS + IDLE_MS) == [("learn", first.token)]
    assert pool.admit("learn", DeliverySettings(), NOW_MS + IDLE_MS).token != first.token


def test_forget_gives_back_kept_slots(redis_client: redis.Redis, namespace: str) -> None:
    pool = SlotPool(SystemStates(redis_client, namespace))
    first = pool.admit("learn", DeliverySettings(), NOW_MS)
    pool.keep("learn", first, NOW_MS)

    pool.forget("learn")

    assert pool.take_spent(NOW_MS) == [("learn", first.token)]
    assert pool.admit("learn", DeliverySettings(), NOW_MS).token != first.token


def test_take_all_gives_back_everything(redis_client: redis.Redis, namespace: str) -> None:
    pool = SlotPool(SystemStates(redis_client, namespace))
    learn = pool.admit("learn", DeliverySettings(), NOW_MS)
    mitxonline = pool.admit("mitxonline", DeliverySettings(), NOW_MS)
    pool.keep("learn", learn, NOW_MS)
    pool.keep("mitxonline", mitxonline, NOW_MS)

    spent = pool.take_all()

    assert sorted(spent) == sorted([("learn", learn.token), ("mitxonline", mitxonline.token)])
    assert pool.take_spent(NOW_MS) == []


def test_kept_slot_counts_toward_limit(redis_client: redis.Redis, namespace: str) -> None:
    # Two pools are two worker processes sharing one Redis.
    settings = DeliverySettings(max_in_flight=1)
    keeper = SlotPool(SystemStates(redis_client, namespace))
    other = SlotPool(SystemStates(redis_client, namespace))
    keeper.keep("learn", keeper.admit("learn", settings, NOW_MS), NOW_MS)

    assert other.admit("learn", settings, NOW_MS).verdict == NO_SLOT


def test_disabled_system_seen_on_renewal(redis_client: redis.Redis, namespace: str) -> None:
    states = SystemStates(redis_client, namespace)
    pool = SlotPool(states)
    first = pool.admit("learn", DeliverySettings(), NOW_MS)
    pool.keep("learn", first, NOW_MS)
    states.disable("learn", "test", NOW_MS)

    assert pool.admit("learn", DeliverySettings(), NOW_MS + 1).token == first.token
    assert pool.admit("learn", DeliverySettings(), NOW_MS + REUSE_MS).verdict == DISABLED
