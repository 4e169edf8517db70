"""Delivery semantics with real workers: retries, dead letters, isolation, crashes."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.conftest import (
    BrokerSetup,
    Receiver,
    Worker,
    build_engine,
    load_example,
    queued_deliveries,
    rabbitmq_queue_length,
    wait_until,
    write_config,
)
from ue_flow.engine import Engine
from ue_flow.sending import DISABLED_REASON

pytestmark = pytest.mark.slow

UE_FLOW = str(Path(sys.executable).parent / "ue-flow")

#: Short worker settings so that sweeps and scheduled retries happen within a test.
FAST_WORKERS = {"heartbeat_timeout": "3s", "sweep_interval": "500ms", "scheduler_interval": "50ms"}


def custom_env(
    worker_env: dict[str, str],
    tmp_path: Path,
    *,
    retry: dict[str, Any] | None = None,
    delivery: dict[str, Any] | None = None,
    systems: dict[str, dict[str, Any]] | None = None,
) -> dict[str, str]:
    """Return ``worker_env`` with a config whose delivery settings are changed."""
    delivery_section: dict[str, Any] = {
        "connect_timeout": "1s",
        "read_timeout": "2s",
        "retry": retry or {"schedule": ["100ms", "100ms", "100ms"], "jitter": 0},
        **(delivery or {}),
    }
    config = write_config(
        tmp_path / "custom",
        events_changes={"delivery": delivery_section, "workers": FAST_WORKERS},
        system_changes=systems,
    )
    return {**worker_env, "UE_FLOW_CONFIG": str(config)}


def engine_for(env: dict[str, str]) -> Engine:
    return build_engine(env)


def ue_flow_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [UE_FLOW, *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )


def emit_basket(engine: Engine) -> str:
    return engine.emit("basket_add", **load_example("basket_add", "add_course"))


def test_gone_disables_and_parks(
    broker: BrokerSetup,
    worker_env: dict[str, str],
    tmp_path: Path,
    receivers: dict[str, Receiver],
    start_worker,
) -> None:
    env = custom_env(worker_env, tmp_path)
    engine = engine_for(env)
    mitx = receivers["mitxonline"]
    mitx.statuses = [410]
    start_worker(env)

    first = emit_basket(engine)
    assert wait_until(lambda: engine.stores.dead_letters.count("mitxonline") == 1)
    assert engine.stores.systems.is_disabled("mitxonline")
    second = emit_basket(engine)
    assert wait_until(lambda: engine.stores.dead_letters.count("mitxonline") == 2)
    assert len(mitx.requests) == 1
    letters = list(engine.stores.dead_letters.select(system="mitxonline"))
    assert all(letter.reason.startswith(DISABLED_REASON) for letter in letters)
    health = ue_flow_cli(env, "systems")
    assert "no (system disabled" in health.stdout

    enabled = ue_flow_cli(env, "systems", "enable", "mitxonline")

    assert enabled.returncode == 0, enabled.stderr
    requests = mitx.wait_for(3)
    assert sorted(request.headers["webhook-id"] for request in requests[1:]) == sorted(
        [first, second]
    )
    assert not engine.stores.systems.is_disabled("mitxonline")
    assert engine.stores.dead_letters.count("mitxonline") == 0


def test_retry_after_seconds_waited(
    worker_env: dict[str, str], tmp_path: Path, receivers: dict[str, Receiver], start_worker
) -> None:
    env = custom_env(worker_env, tmp_path)
    mitx = receivers["mitxonline"]
    mitx.statuses = [(429, {"Retry-After": "2"})]
    start_worker(env)

    emit_basket(engine_for(env))

    assert len(mitx.wait_for(2)) == 2
    assert mitx.arrivals[1] - mitx.arrivals[0] >= 1.9


def test_retry_after_capped(
    worker_env: dict[str, str], tmp_path: Path, receivers: dict[str, Receiver], start_worker
) -> None:
    retry = {"schedule": ["100ms"], "jitter": 0, "retry_after_cap": "500ms"}
    env = custom_env(worker_env, tmp_path, retry=retry)
    mitx = receivers["mitxonline"]
    mitx.statuses = [(503, {"Retry-After": "3600"})]
    start_worker(env)

    emit_basket(engine_for(env))

    assert len(mitx.wait_for(2, timeout=15)) == 2


@pytest.mark.parametrize("answer", [("hang", 3.0), "close", 500, 301, 404], ids=str)
def test_failure_kinds_retried(
    answer: Any,
    worker_env: dict[str, str],
    tmp_path: Path,
    receivers: dict[str, Receiver],
    start_worker,
) -> None:
    env = custom_env(worker_env, tmp_path, delivery={"read_timeout": "500ms"})
    engine = engine_for(env)
    mitx = receivers["mitxonline"]
    mitx.statuses = [answer]
    start_worker(env)

    event_id = emit_basket(engine)

    requests = mitx.wait_for(2)
    assert len(requests) == 2
    assert requests[1].headers["webhook-id"] == event_id
    assert wait_until(
        lambda: (
            (record := engine.stores.attempts.get(event_id, "mitxonline")) is not None
            and record.status == "delivered"
        )
    )


def test_give_up_on_status(
    worker_env: dict[str, str], tmp_path: Path, receivers: dict[str, Receiver], start_worker
) -> None:
    systems = {"mitxonline": {"delivery": {"retry": {"give_up_on": [422]}}}}
    env = custom_env(worker_env, tmp_path, systems=systems)
    engine = engine_for(env)
    mitx = receivers["mitxonline"]
    mitx.statuses = [422]
    start_worker(env)

    event_id = emit_basket(engine)

    assert wait_until(lambda: engine.stores.dead_letters.count("mitxonline") == 1)
    letter = next(engine.stores.dead_letters.select(event_id=event_id))
    assert letter.attempts == 1
    assert letter.last_status == 422
    assert "give up" in letter.reason
    assert len(mitx.requests) == 1


def test_dead_letter_then_replay(
    broker: BrokerSetup,
    worker_env: dict[str, str],
    tmp_path: Path,
    receivers: dict[str, Receiver],
    start_worker,
) -> None:
    env = custom_env(worker_env, tmp_path, retry={"schedule": ["100ms"], "jitter": 0})
    engine = engine_for(env)
    mitx = receivers["mitxonline"]
    mitx.statuses = [500, 500]
    start_worker(env)

    event_id = emit_basket(engine)
    assert wait_until(lambda: engine.stores.dead_letters.count("mitxonline") == 1)
    listed = ue_flow_cli(env, "dead-letters", "--system", "mitxonline", "--json")
    replayed = ue_flow_cli(env, "replay", "--event", event_id)

    assert listed.returncode == 0, listed.stderr
    letter = json.loads(listed.stdout.splitlines()[0])
    assert letter["event_id"] == event_id
    assert letter["attempts"] == 2
    assert letter["last_error"] == "HTTP 500"
    assert "system_key" not in listed.stdout
    assert replayed.returncode == 0, replayed.stderr
    assert "replayed 1" in replayed.stdout
    requests = mitx.wait_for(3)
    assert [request.headers["webhook-id"] for request in requests] == [event_id] * 3
    assert engine.stores.dead_letters.count() == 0


def test_replay_needs_selection(worker_env: dict[str, str], tmp_path: Path) -> None:
    result = ue_flow_cli(custom_env(worker_env, tmp_path), "replay")

    assert result.returncode == 2
    assert "--all" in result.stderr


def test_attempt_log_lists_attempts(
    worker_env: dict[str, str], tmp_path: Path, receivers: dict[str, Receiver], start_worker
) -> None:
    env = custom_env(worker_env, tmp_path)
    engine = engine_for(env)
    receivers["mitxonline"].statuses = [503]
    start_worker(env)
    event_id = emit_basket(engine)
    assert wait_until(
        lambda: (
            (record := engine.stores.attempts.get(event_id, "mitxonline")) is not None
            and record.status == "delivered"
        )
    )

    result = ue_flow_cli(env, "deliveries", "--event", event_id, "--json")

    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    deliveries = [line for line in lines if line["kind"] == "delivery"]
    attempts = sorted(
        (line for line in lines if line["kind"] == "attempt"), key=lambda a: a["attempt"]
    )
    assert [delivery["status"] for delivery in deliveries] == ["delivered"]
    assert [attempt["status"] for attempt in attempts] == [503, 200]
    assert all(attempt["duration_ms"] >= 0 for attempt in attempts)
    delivered = ue_flow_cli(env, "deliveries", "--status", "delivered")
    assert event_id in delivered.stdout


def test_redeliver_sends_again(
    broker: BrokerSetup,
    worker_env: dict[str, str],
    tmp_path: Path,
    receivers: dict[str, Receiver],
    start_worker,
) -> None:
    env = custom_env(worker_env, tmp_path)
    engine = engine_for(env)
    start_worker(env)
    event_id = emit_basket(engine)
    receivers["mitxonline"].wait_for(1)

    result = ue_flow_cli(env, "redeliver", event_id, "--system", "mitxonline")

    assert result.returncode == 0, result.stderr
    requests = receivers["mitxonline"].wait_for(2)
    assert [request.headers["webhook-id"] for request in requests] == [event_id] * 2


def test_idempotent_emit(
    broker: BrokerSetup,
    worker_env: dict[str, str],
    namespace: str,
    redis_client: redis.Redis,
    tmp_path: Path,
) -> None:
    engine = engine_for(custom_env(worker_env, tmp_path))
    payload = load_example("basket_add", "add_course")

    first = engine.emit("basket_add", **payload, idempotency_key="basket-4217-11")
    again = engine.emit("basket_add", **payload, idempotency_key="basket-4217-11")
    other = engine.emit("basket_add", **payload, idempotency_key="basket-4217-12")

    assert again == first
    assert other != first
    if broker.kind == "redis":
        queued = queued_deliveries(redis_client, namespace)
        assert list(queued) == ["mitxonline"]
        assert [message["args"][0] for message in queued["mitxonline"]] == [first, other]
    else:
        assert rabbitmq_queue_length(broker.url, "events") == 2


def test_worker_killed_mid_delivery(
    broker: BrokerSetup,
    worker_env: dict[str, str],
    tmp_path: Path,
    receivers: dict[str, Receiver],
    start_worker,
) -> None:
    env = custom_env(worker_env, tmp_path, delivery={"read_timeout": "20s"})
    mitx = receivers["mitxonline"]
    mitx.statuses = [("hang", 8.0)]
    doomed: Worker = start_worker(env)
    event_id = emit_basket(engine_for(env))
    assert len(mitx.wait_for(1)) == 1

    doomed.kill()
    killed_at = time.monotonic()
    start_worker(env)

    requests = mitx.wait_for(2, timeout=60)
    assert len(requests) == 2
    assert requests[1].headers["webhook-id"] == event_id
    # On Redis, the heartbeat timeout (3 s) plus a sweep (0.5 s); RabbitMQ
    # queues the message again when the killed worker's connection closes.
    # Both bounds leave room for a slow machine.
    assert mitx.arrivals[1] - killed_at < 30


def test_scheduled_retry_survives_restart(
    broker: BrokerSetup,
    worker_env: dict[str, str],
    tmp_path: Path,
    receivers: dict[str, Receiver],
    start_worker,
    redis_client: redis.Redis,
) -> None:
    env = custom_env(worker_env, tmp_path, retry={"schedule": ["2s"], "jitter": 0})
    mitx = receivers["mitxonline"]
    mitx.statuses = [500]
    first_worker: Worker = start_worker(env)
    event_id = emit_basket(engine_for(env))
    scheduled = f"{env['UE_FLOW_NAMESPACE']}:scheduled:deliver.mitxonline"
    assert wait_until(lambda: redis_client.zcard(scheduled) == 1)

    first_worker.stop()
    time.sleep(3)
    assert len(mitx.requests) == 1
    start_worker(env)

    requests = mitx.wait_for(2, timeout=20)
    assert len(requests) == 2
    assert requests[1].headers["webhook-id"] == event_id
    assert redis_client.zcard(scheduled) == 0


def test_hanging_peer_spares_healthy(
    broker: BrokerSetup,
    worker_env: dict[str, str],
    tmp_path: Path,
    receivers: dict[str, Receiver],
    start_worker,
) -> None:
    systems = {"learn": {"delivery": {"read_timeout": "2s", "max_in_flight": 2}}}
    env = custom_env(worker_env, tmp_path, systems=systems)
    engine = engine_for(env)
    receivers["learn"].statuses = [("hang", 5.0)] * 50
    start_worker(env)
    payload = load_example("post_sale", "two_systems")

    started = time.monotonic()
    for _ in range(10):
        engine.emit("post_sale", **payload)

    healthy = receivers["mitxonline"].wait_for(10, timeout=60)
    assert len(healthy) == 10
    # Ten hanging deliveries to learn would hold every worker thread for
    # about ten seconds without the in-flight limit; this bound is generous.
    assert receivers["mitxonline"].arrivals[-1] - started < 8


def test_circuit_opens_keeps_attempts(
    worker_env: dict[str, str], tmp_path: Path, receivers: dict[str, Receiver], start_worker
) -> None:
    retry = {"schedule": ["100ms"] * 8, "jitter": 0}
    breaker = {"failure_threshold": 2, "cooldown": "3s"}
    env = custom_env(worker_env, tmp_path, retry=retry, delivery={"circuit_breaker": breaker})
    engine = engine_for(env)
    mitx = receivers["mitxonline"]
    mitx.statuses = [500] * 20
    worker = start_worker(env)

    event_id = emit_basket(engine)
    mitx.wait_for(2)
    time.sleep(1.5)

    assert len(mitx.requests) == 2
    opened = [line for line in worker.output().splitlines() if "system.circuit_opened" in line]
    assert len(opened) == 1
    assert event_id in opened[0]
    record = engine.stores.attempts.get(event_id, "mitxonline")
    assert record is not None
    assert record.attempts == 2
    health = ue_flow_cli(env, "systems", "--json")
    states = {line["slug"]: line for line in map(json.loads, health.stdout.splitlines())}
    assert states["mitxonline"]["circuit"] == "open"
    assert states["learn"]["circuit"] == "closed"
    # After the cooldown one probe goes out.
    assert len(mitx.wait_for(3, timeout=10)) == 3


def test_failing_system_disabled(
    worker_env: dict[str, str], tmp_path: Path, receivers: dict[str, Receiver], start_worker
) -> None:
    retry = {"schedule": ["200ms"] * 20, "jitter": 0}
    # A high threshold keeps the circuit closed, so failures go on past disable_after.
    delivery = {"disable_after": "1s", "circuit_breaker": {"failure_threshold": 100}}
    env = custom_env(worker_env, tmp_path, retry=retry, delivery=delivery)
    engine = engine_for(env)
    receivers["mitxonline"].statuses = [500] * 40
    start_worker(env)

    emit_basket(engine)

    assert wait_until(lambda: engine.stores.systems.is_disabled("mitxonline"), timeout=20)
    letter = next(engine.stores.dead_letters.select(system="mitxonline"))
    assert (
        "failing for"
        in engine.stores.systems.health(
            "mitxonline", engine.config.systems["mitxonline"].delivery.circuit_breaker, 0
        ).disabled_reason
    )
    assert letter.reason == DISABLED_REASON


def test_max_age_dead_letters(
    worker_env: dict[str, str], tmp_path: Path, receivers: dict[str, Receiver], start_worker
) -> None:
    retry = {"schedule": ["2s"], "jitter": 0, "max_age": "500ms"}
    env = custom_env(worker_env, tmp_path, retry=retry)
    engine = engine_for(env)
    receivers["mitxonline"].statuses = [500]
    start_worker(env)

    event_id = emit_basket(engine)

    assert wait_until(lambda: engine.stores.dead_letters.count("mitxonline") == 1)
    letter = next(engine.stores.dead_letters.select(event_id=event_id))
    assert "maximum age" in letter.reason
    assert len(receivers["mitxonline"].requests) == 1
