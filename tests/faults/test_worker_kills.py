"""Fault: worker pools SIGKILLed again and again while a batch is being delivered."""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest
import redis

from tests.conftest import Receiver, Worker
from tests.faults.conftest import (
    assert_delivered_once_or_more,
    emit_example,
    engine_for,
    fault_env,
    wait_delivered,
    wait_until,
)

pytestmark = [pytest.mark.fault, pytest.mark.slow]

#: Events emitted in all, in equal chunks before each kill.
EVENTS = 160

#: SIGKILLs of a random pool.
KILLS = 10

#: How long each receiver keeps a request open before replying 200, in seconds,
#: so that a kill finds deliveries in flight.
HOLD_S = 0.3


def test_pools_killed_ten_times(
    worker_env: dict[str, str],
    tmp_path: Path,
    receivers: dict[str, Receiver],
    start_worker,
    redis_client: redis.Redis,
) -> None:
    env = fault_env(worker_env, tmp_path / "faults")
    engine = engine_for(env)
    for receiver in receivers.values():
        receiver.statuses = [("hang", HOLD_S)] * (EVENTS * 4)
    pools: list[Worker] = [start_worker(env), start_worker(env)]
    rng = random.Random(20260)
    expected: dict[str, set[str]] = {}
    kills_in_flight = 0
    started = time.monotonic()

    chunk = EVENTS // KILLS
    for kill in range(KILLS):
        for number in range(kill * chunk, (kill + 1) * chunk):
            event_id, systems = emit_example(engine, number)
            expected[event_id] = systems
        seen = sum(len(receiver.requests) for receiver in receivers.values())
        # Kill once a new request arrives, so that at least one delivery
        # is held by a receiver at that moment.
        wait_until(
            lambda seen=seen: sum(len(r.requests) for r in receivers.values()) > seen,
            timeout=15,
        )
        time.sleep(rng.uniform(0.0, HOLD_S / 2))
        latest = max((a for r in receivers.values() for a in r.arrivals), default=0.0)
        kills_in_flight += time.monotonic() - latest < HOLD_S
        victim = rng.randrange(len(pools))
        pools[victim].kill()
        pools[victim] = start_worker(env)

    killed_at = time.monotonic()
    result = wait_delivered(
        expected, lambda: {slug: r.requests for slug, r in receivers.items()}, timeout=120
    )
    finished = time.monotonic()
    print(
        f"\n{result.report('worker kills')} kills={KILLS} "
        f"kills with a delivery in flight={kills_in_flight} "
        f"run={finished - started:.1f}s after last kill={finished - killed_at:.1f}s"
    )

    assert_delivered_once_or_more(result)
    assert engine.stores.dead_letters.count() == 0
    namespace = env["UE_FLOW_NAMESPACE"]
    failed = [key for key in redis_client.scan_iter(match=f"{namespace}:*.XQ", count=1000)]
    assert not any(redis_client.zcard(key) for key in failed), failed
