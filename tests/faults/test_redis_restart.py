"""Fault: the broker's Redis server stops mid-run and restarts from its append-only file."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import redis

from tests.conftest import Receiver, Worker, load_example
from tests.faults.conftest import (
    RedisServer,
    assert_delivered_once_or_more,
    emit_example,
    engine_for,
    fault_env,
    wait_delivered,
    wait_until,
)
from ue_flow import BrokerError

pytestmark = [pytest.mark.fault, pytest.mark.slow]

#: Events emitted before Redis stops.
BEFORE = 80

#: Events emitted after Redis is back, to see that new work flows too.
AFTER = 10

#: Emits tried while Redis is down; each must raise BrokerError.
DURING = 5

#: How long Redis stays down, in seconds: long enough for every worker
#: thread and the maintenance thread to hit connection errors.
OUTAGE_S = 3.0

#: How long each receiver keeps a request open before replying 200, in seconds.
HOLD_S = 0.1

#: A generous bound on one failed emit, in seconds: emit must fail, not hang.
EMIT_FAILURE_BOUND_S = 10.0


@pytest.mark.parametrize("stop", ["kill", "shutdown"])
def test_redis_restart_mid_run(
    stop: str,
    worker_env: dict[str, str],
    tmp_path: Path,
    receivers: dict[str, Receiver],
    private_redis: RedisServer,
    start_worker,
) -> None:
    env = {
        **fault_env(worker_env, tmp_path / "faults"),
        "UE_FLOW_BROKER_URL": private_redis.url,
        "UE_FLOW_REDIS_URL": private_redis.url,
    }
    namespace = env["UE_FLOW_NAMESPACE"]
    engine = engine_for(env, private_redis.url)
    for receiver in receivers.values():
        receiver.statuses = [("hang", HOLD_S)] * ((BEFORE + AFTER) * 4)
    workers: list[Worker] = [start_worker(env), start_worker(env)]
    expected: dict[str, set[str]] = {}
    for number in range(BEFORE):
        event_id, systems = emit_example(engine, number)
        expected[event_id] = systems
    assert wait_until(lambda: sum(len(r.requests) for r in receivers.values()) >= 20)

    if stop == "kill":
        private_redis.kill()
    else:
        private_redis.shutdown()
    stopped_at = time.monotonic()
    delivered_before_restart = sum(len(r.requests) for r in receivers.values())

    failures: list[BrokerError] = []
    failure_seconds: list[float] = []
    for number in range(DURING):
        payload = load_example("post_sale", "two_systems")
        payload["data"]["reference_number"] = f"outage-{number}"
        started = time.monotonic()
        with pytest.raises(BrokerError) as raised:
            engine.emit("post_sale", **payload, idempotency_key=f"outage-{number}")
        failure_seconds.append(time.monotonic() - started)
        failures.append(raised.value)
    time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - stopped_at)))

    private_redis.start()
    restarted_at = time.monotonic()
    for number in range(BEFORE, BEFORE + AFTER):
        event_id, systems = emit_example(engine, number)
        expected[event_id] = systems
    result = wait_delivered(
        expected, lambda: {slug: r.requests for slug, r in receivers.items()}, timeout=120
    )
    finished = time.monotonic()
    first_after = min(
        (a for r in receivers.values() for a in r.arrivals if a > restarted_at), default=None
    )
    print(
        f"\n{result.report(f'redis {stop}')} "
        f"delivered before restart={delivered_before_restart} "
        f"outage={restarted_at - stopped_at:.1f}s "
        f"first delivery after restart="
        f"{'never' if first_after is None else f'{first_after - restarted_at:.2f}s'} "
        f"all delivered after restart={finished - restarted_at:.1f}s "
        f"failed emits={len(failures)} slowest failed emit={max(failure_seconds):.3f}s"
    )

    assert_delivered_once_or_more(result)
    # The same worker processes recovered; none exited or was replaced.
    assert [worker.process.poll() for worker in workers] == [None, None]
    assert max(failure_seconds) < EMIT_FAILURE_BOUND_S
    assert all("could not queue post_sale event" in str(error) for error in failures)
    assert all(isinstance(error.__cause__, redis.RedisError) for error in failures)

    # Nothing of the rejected emits was queued, delivered or remembered.
    outage_bodies = [
        request.body
        for receiver in receivers.values()
        for request in receiver.requests
        if json.loads(request.body)["data"].get("reference_number", "").startswith("outage-")
    ]
    assert outage_bodies == []
    client = redis.Redis.from_url(private_redis.url)
    try:
        keys = [f"{namespace}:idempotency:outage-{number}" for number in range(DURING)]
        assert client.exists(*keys) == 0
        assert engine.stores.dead_letters.count() == 0
        failed_queues = list(client.scan_iter(match=f"{namespace}:*.XQ", count=1000))
        assert sum(int(client.zcard(key)) for key in failed_queues) == 0, failed_queues
    finally:
        client.close()
    for worker in workers:
        worker.stop()
