"""Fault: the broker cannot be reached while the application emits."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import pytest
import redis

from tests.conftest import REDIS_URL, Receiver, free_port, load_example, queued_deliveries
from tests.faults.conftest import (
    assert_delivered_once_or_more,
    emit_example,
    expected_systems,
    fault_env,
    wait_delivered,
)
from ue_flow import BrokerError, state
from ue_flow.broker import create_broker
from ue_flow.engine import Engine
from ue_flow.loader import load_config
from ue_flow.state import StateStores

pytestmark = [pytest.mark.fault, pytest.mark.slow]

#: A generous bound on an emit to a refused port, in seconds: emit must
#: fail, not hang or retry for long.
EMIT_FAILURE_BOUND_S = 5.0

#: A generous bound on an emit to a broker that accepts connections but
#: never replies, in seconds: the Redis client's socket timeout must end it.
SILENT_BOUND_S = 30.0


def test_broker_refused_keeps_key(
    worker_env: dict[str, str],
    tmp_path: Path,
    receivers: dict[str, Receiver],
    start_worker,
    redis_client: redis.Redis,
) -> None:
    env = fault_env(worker_env, tmp_path / "faults")
    namespace = env["UE_FLOW_NAMESPACE"]
    loaded = load_config(env["UE_FLOW_CONFIG"])
    closed_port = free_port()
    closed_url = f"redis://127.0.0.1:{closed_port}/0"
    # Idempotency keys live in the state Redis, which stays up, so that the
    # key claimed by the failed emit can be seen.
    refused = Engine(
        loaded,
        create_broker(closed_url, key_prefix=namespace),
        StateStores.open(state.connect(REDIS_URL), namespace, loaded.config),
    )
    payload = load_example("basket_add", "add_course")
    key = "basket-4217-11"

    started = time.monotonic()
    with pytest.raises(BrokerError) as raised:
        refused.emit("basket_add", **payload, idempotency_key=key)
    failed_in = time.monotonic() - started
    message = str(raised.value)

    assert failed_in < EMIT_FAILURE_BOUND_S
    assert message.startswith("could not queue basket_add event: ConnectionError")
    assert f"127.0.0.1:{closed_port}" in message
    assert "refused" in message
    assert isinstance(raised.value.__cause__, redis.ConnectionError)
    assert raised.value.maybe_queued is False
    claimed = redis_client.get(f"{namespace}:idempotency:{key}")
    assert queued_deliveries(redis_client, namespace) == {}

    working = Engine.for_redis(loaded, REDIS_URL, namespace)
    event_id = working.emit("basket_add", **payload, idempotency_key=key)
    again = working.emit("basket_add", **payload, idempotency_key=key)
    # The retry queues the event under the id the failed emit claimed.
    assert claimed == event_id.encode()
    assert again == event_id
    queued = queued_deliveries(redis_client, namespace)
    assert list(queued) == ["mitxonline"]
    assert [message["args"][0] for message in queued["mitxonline"]] == [event_id]
    start_worker(env)
    expected = {event_id: expected_systems(working, "basket_add", payload)}
    result = wait_delivered(
        expected, lambda: {slug: r.requests for slug, r in receivers.items()}, timeout=30
    )
    print(
        f"\n{result.report('broker refused')} failed emit took={failed_in * 1000:.1f}ms "
        f"message={message!r}"
    )
    assert_delivered_once_or_more(result)


def test_broker_and_state_refused(worker_env: dict[str, str], tmp_path: Path) -> None:
    env = fault_env(worker_env, tmp_path / "faults")
    closed_url = f"redis://127.0.0.1:{free_port()}/0"
    engine = Engine.for_redis(load_config(env["UE_FLOW_CONFIG"]), closed_url, "ue_flow_refused")
    durations: list[float] = []

    for number in range(4):
        started = time.monotonic()
        with pytest.raises(BrokerError, match=r"could not queue \w+ event: ConnectionError"):
            emit_example(engine, number, idempotency_key=f"refused-{number}")
        durations.append(time.monotonic() - started)

    print(f"\nbroker and state refused: emits=4 slowest={max(durations) * 1000:.1f}ms")
    assert max(durations) < EMIT_FAILURE_BOUND_S


def test_broker_silent_times_out(worker_env: dict[str, str], tmp_path: Path) -> None:
    env = fault_env(worker_env, tmp_path / "faults")
    # The kernel completes connections to a listening socket that never
    # accepts them, so every read waits for a reply that never comes.
    with socket.create_server(("127.0.0.1", 0), backlog=16) as silent:
        url = f"redis://127.0.0.1:{silent.getsockname()[1]}/0"
        engine = Engine.for_redis(load_config(env["UE_FLOW_CONFIG"]), url, "ue_flow_silent")
        outcome: dict[str, object] = {}

        def emit() -> None:
            started = time.monotonic()
            try:
                outcome["event_id"] = emit_example(engine, 0)[0]
            except BrokerError as error:
                outcome["error"] = error
            outcome["seconds"] = time.monotonic() - started

        caller = threading.Thread(target=emit, daemon=True)
        caller.start()
        caller.join(timeout=SILENT_BOUND_S)

        assert not caller.is_alive(), f"emit still waiting after {SILENT_BOUND_S} s"
    print(f"\nbroker silent: emit failed after {outcome['seconds']:.2f}s: {outcome.get('error')}")
    assert "event_id" not in outcome
    assert "Timeout" in str(outcome["error"])
