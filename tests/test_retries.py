"""Durable retries and the requeue of deliveries whose thread share is full."""

from __future__ import annotations

import pytest
import redis
from dramatiq.broker import MessageProxy

from tests.conftest import REDIS_URL, load_example, queued_deliveries
from ue_flow.bookkeeping import Bookkeeper
from ue_flow.engine import Engine
from ue_flow.isolation import ProcessSlots
from ue_flow.loader import load_config
from ue_flow.retries import DurableRetries, RetryLater
from ue_flow.sending import REQUEUES_OPTION, SHARE_REQUEUES, SLOT_WAIT_MS, SystemSender
from ue_flow.slots import SlotPool


@pytest.fixture
def engine(namespace: str) -> Engine:
    return Engine.for_redis(load_config("config"), REDIS_URL, namespace)


def learn_message(engine: Engine) -> MessageProxy:
    payload = load_example("post_sale", "two_systems")
    message = engine.deliverers["learn"].message(
        "evt_" + "0" * 32, "post_sale", payload["user"], payload["data"], 0
    )
    return MessageProxy(message)


def test_zero_delay_requeues_at_once(
    engine: Engine, namespace: str, redis_client: redis.Redis
) -> None:
    retries = DurableRetries(engine.stores.scheduler, engine.stores.dead_letters)
    exception = RetryLater("share in use", 0, consume_attempt=False, options={"mark": 1})

    retries.after_process_message(engine.broker, learn_message(engine), exception=exception)

    queued = queued_deliveries(redis_client, namespace)["learn"]
    assert len(queued) == 1
    assert queued[0]["options"]["retries"] == 0
    assert queued[0]["options"]["mark"] == 1
    assert engine.stores.scheduler.count("deliver.learn") == 0


def test_delay_goes_to_scheduler(engine: Engine, namespace: str, redis_client: redis.Redis) -> None:
    retries = DurableRetries(engine.stores.scheduler, engine.stores.dead_letters)

    retries.after_process_message(
        engine.broker, learn_message(engine), exception=RetryLater("failed", 5_000)
    )

    assert queued_deliveries(redis_client, namespace) == {}
    assert engine.stores.scheduler.count("deliver.learn") == 1


def full_share_sender(engine: Engine) -> SystemSender:
    process_slots = ProcessSlots()
    process_slots.limit = 0
    slots = SlotPool(engine.stores.systems)
    return SystemSender(
        engine.config.systems["learn"],
        engine.config,
        engine.stores,
        {"UE_FLOW_KEY_LEARN": "key"},
        process_slots,
        slots,
        Bookkeeper(engine.stores, slots),
    )


def deliver(sender: SystemSender, requeues: int) -> RetryLater:
    payload = load_example("post_sale", "two_systems")
    with pytest.raises(RetryLater) as raised:
        sender.deliver(
            "evt_" + "0" * 32,
            "post_sale",
            payload["user"],
            payload["data"],
            0,
            retries=2,
            started_ms=0,
            requeues=requeues,
        )
    return raised.value


def test_full_share_requeues_at_once(engine: Engine) -> None:
    retry = deliver(full_share_sender(engine), requeues=0)

    assert retry.delay_ms == 0
    assert retry.consume_attempt is False
    assert retry.options == {REQUEUES_OPTION: 1}


def test_full_share_waits_after_requeues(engine: Engine) -> None:
    retry = deliver(full_share_sender(engine), requeues=SHARE_REQUEUES)

    assert SLOT_WAIT_MS * 0.5 <= retry.delay_ms <= SLOT_WAIT_MS * 1.5
    assert retry.consume_attempt is False
    assert retry.options == {REQUEUES_OPTION: 0}
