"""Fault: a receiver's server goes away (connection refused) and comes back on its port."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.conftest import Receiver
from tests.faults.conftest import (
    assert_delivered_once_or_more,
    emit_example,
    engine_for,
    fault_env,
    serve_receiver,
    shut_receiver,
    wait_delivered,
    wait_until,
)

pytestmark = [pytest.mark.fault, pytest.mark.slow]

#: Events emitted while the mitxonline receiver is down.
EVENTS = 40

#: Failed attempts to wait for before the receiver comes back.
FAILED_ATTEMPTS = 10


def test_receiver_down_then_back(
    worker_env: dict[str, str], tmp_path: Path, receivers: dict[str, Receiver], start_worker
) -> None:
    env = fault_env(worker_env, tmp_path / "faults")
    engine = engine_for(env)
    down = receivers["mitxonline"]
    assert down.server is not None
    port = down.server.server_address[1]
    shut_receiver(down)
    start_worker(env)

    expected: dict[str, set[str]] = {}
    for number in range(EVENTS):
        event_id, systems = emit_example(engine, number)
        expected[event_id] = systems
    breaker = engine.config.systems["mitxonline"].delivery.circuit_breaker
    assert wait_until(
        lambda: engine.stores.systems.health("mitxonline", breaker, 0).failures >= FAILED_ATTEMPTS,
        timeout=60,
    )
    failures = engine.stores.systems.health("mitxonline", breaker, 0).failures
    # The other system is not held back while mitxonline refuses connections.
    learn_only = {event_id: systems & {"learn"} for event_id, systems in expected.items()}
    learn_result = wait_delivered(learn_only, lambda: {"learn": receivers["learn"].requests}, 30)
    assert not learn_result.missing

    back = serve_receiver(Receiver(), port)
    restarted_at = time.monotonic()
    try:
        result = wait_delivered(
            expected,
            lambda: {
                "mitxonline": [*down.requests, *back.requests],
                "learn": receivers["learn"].requests,
            },
            timeout=60,
        )
        finished = time.monotonic()
        first = back.arrivals[0] - restarted_at if back.arrivals else None
        print(
            f"\n{result.report('receiver outage')} failed attempts before restart={failures} "
            f"first delivery after restart={'never' if first is None else f'{first:.2f}s'} "
            f"all delivered after restart={finished - restarted_at:.1f}s"
        )

        assert_delivered_once_or_more(result)
        assert down.requests == []
        assert engine.stores.dead_letters.count() == 0
        assert not engine.stores.systems.is_disabled("mitxonline")
    finally:
        shut_receiver(back)
