"""End to end: emit in this process, a real ``dramatiq ue_flow`` worker delivers."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import requests
from structlog.testing import capture_logs

import ue_flow
from tests.conftest import (
    ROOT,
    BrokerSetup,
    Receiver,
    build_engine,
    load_example,
    queued_deliveries,
    rabbitmq_peek,
    rabbitmq_queue_length,
    rabbitmqctl,
)
from ue_flow import engine as engine_module
from ue_flow.engine import Engine
from ue_flow.publishing import TogetherQueue
from ue_flow.worker import EXIT_CONFIG

pytestmark = pytest.mark.slow


@pytest.fixture
def app_engine(worker_env: dict[str, str]) -> Engine:
    """The application side: an engine on the test's broker and Redis key prefix."""
    return build_engine(worker_env)


@pytest.fixture
def default_emit(worker_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """``ue_flow.emit`` configured from this test's environment."""
    for name in ("UE_FLOW_CONFIG", "UE_FLOW_BROKER_URL", "UE_FLOW_NAMESPACE", "UE_FLOW_REDIS_URL"):
        if name in worker_env:
            monkeypatch.setenv(name, worker_env[name])
        else:
            monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(engine_module, "_default_engine", None)
    yield
    monkeypatch.setattr(engine_module, "_default_engine", None)


def _line_ids(request_envelope: dict[str, object]) -> list[int]:
    data = request_envelope["data"]
    assert isinstance(data, dict)
    return [line["id"] for line in data["lines"]]


def test_post_sale_split_by_system(
    broker: BrokerSetup,
    app_engine: Engine,
    worker_env: dict[str, str],
    receivers: dict[str, Receiver],
    start_worker,
) -> None:
    start_worker(worker_env)
    payload = load_example("post_sale", "two_systems")

    event_id = app_engine.emit("post_sale", **payload)

    mitx = receivers["mitxonline"].wait_for(1)[0]
    learn = receivers["learn"].wait_for(1)[0]
    assert _line_ids(mitx.envelope) == [101, 102]
    assert _line_ids(learn.envelope) == [103]
    for request, slug in ((mitx, "mitxonline"), (learn, "learn")):
        envelope = request.envelope
        assert list(envelope) == ["system_slug", "system_key", "type", "user", "data"]
        assert envelope["system_slug"] == slug
        assert envelope["system_key"] == worker_env[f"UE_FLOW_KEY_{slug.upper()}"]
        assert envelope["type"] == "postsale"
        assert envelope["user"] == payload["user"]
        assert envelope["data"]["total_price_paid"] == "1099.99"
        assert request.headers["webhook-id"] == event_id
        assert request.headers["webhook-timestamp"].isdigit()
        assert request.headers["user-agent"] == f"ue-flow/{ue_flow.__version__}"
        assert request.headers["content-type"] == "application/json"
    # systems.yaml adds a templated header for mitxonline only.
    assert mitx.headers["x-ue-deployment"] == "development"
    assert "x-ue-deployment" not in learn.headers


def test_retry_after_two_500s(
    broker: BrokerSetup,
    app_engine: Engine,
    worker_env: dict[str, str],
    receivers: dict[str, Receiver],
    start_worker,
) -> None:
    receivers["mitxonline"].statuses = [500, 500]
    start_worker(worker_env)

    event_id = app_engine.emit("basket_add", **load_example("basket_add", "add_course"))

    requests = receivers["mitxonline"].wait_for(3)
    assert len(requests) == 3
    assert [request.headers["webhook-id"] for request in requests] == [event_id] * 3
    assert requests[0].body == requests[2].body


def test_redirect_not_followed(
    broker: BrokerSetup,
    app_engine: Engine,
    worker_env: dict[str, str],
    receivers: dict[str, Receiver],
    start_worker,
) -> None:
    # A 301 counts as a failure: the retry goes to the configured URL again.
    receivers["mitxonline"].statuses = [301]
    start_worker(worker_env)

    app_engine.emit("basket_add", **load_example("basket_add", "add_course"))

    requests = receivers["mitxonline"].wait_for(2)
    assert len(requests) == 2


def test_every_example_delivered(
    broker: BrokerSetup,
    default_emit: None,
    worker_env: dict[str, str],
    receivers: dict[str, Receiver],
    start_worker,
) -> None:
    start_worker(worker_env)
    for path in sorted((ROOT / "examples").glob("*/*.json")):
        payload = json.loads(path.read_text(encoding="utf-8"))
        event_id = ue_flow.emit(path.parent.name, **payload)
        assert event_id.startswith("evt_")
    # Each example reaches mitxonline; learn subscribes to orders only and
    # owns a line in two_systems and partial.
    expected = {"mitxonline": 5, "learn": 2}

    for slug, count in expected.items():
        got = receivers[slug].wait_for(count)
        assert len(got) == count, slug
        assert {request.envelope["system_slug"] for request in got} == {slug}


def test_invalid_payload_queues_nothing(
    broker: BrokerSetup, app_engine: Engine, namespace: str, redis_client: redis.Redis
) -> None:
    payload = load_example("post_sale", "two_systems")
    payload["data"]["lines"][0]["unit_price"] = 75.0

    with pytest.raises(ue_flow.PayloadError, match=r"\$\.data\.lines\[0\]\.unit_price"):
        app_engine.emit("post_sale", **payload)

    assert list(redis_client.scan_iter(match=f"{namespace}*")) == []
    if broker.kind == "rabbitmq":
        assert rabbitmq_queue_length(broker.url, "events") == 0
    event_id = app_engine.emit("post_sale", **load_example("post_sale", "two_systems"))
    if broker.kind == "redis":
        queued = queued_deliveries(redis_client, namespace)
        assert sorted(queued) == ["learn", "mitxonline"]
        for slug, messages in queued.items():
            assert [message["args"][0] for message in messages] == [event_id], slug
    else:
        # On RabbitMQ a worker routes the event, so emit queues one routing message.
        routing = [json.loads(body) for body in rabbitmq_peek(broker.url, "events")]
        assert [message["actor_name"] for message in routing] == ["route_event"]
        assert routing[0]["args"][0] == event_id


def test_emit_queues_delivery_per_system(
    app_engine: Engine, namespace: str, redis_client: redis.Redis
) -> None:
    payload = load_example("post_sale", "two_systems")
    before_ms = int(time.time() * 1000)

    event_id = app_engine.emit("post_sale", **payload)

    after_ms = int(time.time() * 1000)
    queued = queued_deliveries(redis_client, namespace)
    assert sorted(queued) == ["learn", "mitxonline"]
    order_fields = {key: value for key, value in payload["data"].items() if key != "lines"}
    for slug in ("mitxonline", "learn"):
        assert len(queued[slug]) == 1, slug
        message = queued[slug][0]
        message_event_id, event_name, user, data, emitted_at_ms = message["args"]
        own_lines = [line for line in payload["data"]["lines"] if line["product"]["system"] == slug]
        assert message["queue_name"] == f"deliver.{slug}"
        assert message["actor_name"] == f"deliver_{slug}"
        assert message_event_id == event_id
        assert event_name == "post_sale"
        assert user == payload["user"]
        assert data["lines"] == own_lines
        assert {key: value for key, value in data.items() if key != "lines"} == order_fields
        assert before_ms <= emitted_at_ms <= after_ms
        assert message["options"]["redis_message_id"] == message["message_id"]
        assert before_ms <= message["options"]["started_ms"] <= after_ms
        # The worker writes the delivery record after the first attempt.
        assert app_engine.stores.attempts.get(event_id, slug) is None
    # On Redis, emit routes the event itself, so it queues no routing message.
    assert redis_client.exists(f"{namespace}:events", f"{namespace}:events.msgs") == 0


def test_unrouted_event_queues_nothing(
    app_engine: Engine, namespace: str, redis_client: redis.Redis
) -> None:
    # learn owns the product but does not subscribe to basket_add.
    payload = load_example("basket_add", "add_course")
    payload["data"]["product"]["system"] = "learn"

    with capture_logs() as logs:
        event_id = app_engine.emit("basket_add", **payload)

    assert event_id.startswith("evt_")
    assert list(redis_client.scan_iter(match=f"{namespace}*")) == []
    unrouted = [entry for entry in logs if entry["event"] == "event.unrouted"]
    assert len(unrouted) == 1
    assert unrouted[0]["log_level"] == "warning"
    assert unrouted[0]["event_id"] == event_id
    assert unrouted[0]["event_name"] == "basket_add"


def test_together_queue_all_or_nothing(
    app_engine: Engine, namespace: str, redis_client: redis.Redis
) -> None:
    payload = load_example("post_sale", "two_systems")
    messages = [
        app_engine.deliverers[slug].message(
            "evt_" + "0" * 32, "post_sale", payload["user"], payload["data"], 0
        )
        for slug in ("mitxonline", "learn")
    ]
    # A string at the second message's .msgs key makes the script fail with
    # WRONGTYPE; the first message must not stay queued either.
    redis_client.set(f"{namespace}:deliver.learn.msgs", "not a hash")

    with pytest.raises(redis.ResponseError) as raised:
        TogetherQueue(app_engine.broker).enqueue(messages)

    if "WRONGTYPE" not in str(raised.value):
        pytest.fail(f"expected a WRONGTYPE error from the script, got: {raised.value}")
    assert queued_deliveries(redis_client, namespace) == {}


def test_emit_script_error_keeps_event_id(
    app_engine: Engine, namespace: str, redis_client: redis.Redis
) -> None:
    payload = load_example("post_sale", "two_systems")
    key = "order-mitol-production-42"
    redis_client.set(f"{namespace}:deliver.learn.msgs", "not a hash")

    with pytest.raises(ue_flow.BrokerError) as raised:
        app_engine.emit("post_sale", **payload, idempotency_key=key)
    claimed = redis_client.get(f"{namespace}:idempotency:{key}")
    redis_client.delete(f"{namespace}:deliver.learn.msgs")
    event_id = app_engine.emit("post_sale", **payload, idempotency_key=key)
    again = app_engine.emit("post_sale", **payload, idempotency_key=key)

    message = str(raised.value)
    assert message.startswith("could not queue post_sale event: ResponseError")
    assert "WRONGTYPE" in message
    assert isinstance(raised.value.__cause__, redis.ResponseError)
    assert raised.value.maybe_queued is False
    # The failed emit queued nothing, so the retry queues the event, under
    # the id the key was claimed with, and a third emit queues nothing.
    assert claimed == event_id.encode()
    assert again == event_id
    queued = queued_deliveries(redis_client, namespace)
    assert {slug: [m["args"][0] for m in messages] for slug, messages in queued.items()} == {
        "mitxonline": [event_id],
        "learn": [event_id],
    }


def test_worker_requires_key_variable(
    broker: BrokerSetup, worker_env: dict[str, str], tmp_path: Path
) -> None:
    env = dict(worker_env)
    del env["UE_FLOW_KEY_LEARN"]

    result = subprocess.run(
        [sys.executable, "-m", "dramatiq", "ue_flow", "-p", "1", "-t", "1"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == EXIT_CONFIG
    assert "systems.yaml:" in result.stderr
    assert "UE_FLOW_KEY_LEARN is not set" in result.stderr


def test_key_absent_from_broker(
    broker: BrokerSetup,
    app_engine: Engine,
    worker_env: dict[str, str],
    receivers: dict[str, Receiver],
    namespace: str,
    redis_client: redis.Redis,
) -> None:
    # No worker runs, so the message stays on the broker to be inspected.
    app_engine.emit("post_sale", **load_example("post_sale", "two_systems"))

    if broker.kind == "redis":
        stored = b"".join(
            value
            for key in redis_client.scan_iter(match=f"{namespace}*")
            if redis_client.type(key) == b"hash"
            for value in redis_client.hvals(key)
        )
    else:
        stored = b"".join(rabbitmq_peek(broker.url, "events"))
    assert b"mitol-production-42" in stored
    assert worker_env["UE_FLOW_KEY_MITXONLINE"].encode() not in stored
    assert worker_env["UE_FLOW_KEY_LEARN"].encode() not in stored


def test_worker_exports_metrics(
    broker: BrokerSetup,
    app_engine: Engine,
    worker_env: dict[str, str],
    receivers: dict[str, Receiver],
    start_worker,
) -> None:
    start_worker(worker_env)
    app_engine.emit("post_sale", **load_example("post_sale", "two_systems"))
    receivers["mitxonline"].wait_for(1)
    receivers["learn"].wait_for(1)
    url = f"http://127.0.0.1:{worker_env['dramatiq_prom_port']}/metrics"

    deadline = time.monotonic() + 20
    text = ""
    while time.monotonic() < deadline and 'outcome="delivered"' not in text:
        # The exposition server starts a moment after the worker.
        with contextlib.suppress(requests.ConnectionError):
            text = requests.get(url, timeout=2).text
        time.sleep(0.2)

    assert 'ue_flow_deliveries_total{outcome="delivered",system="mitxonline"} 1.0' in text
    assert 'ue_flow_deliveries_total{outcome="delivered",system="learn"} 1.0' in text
    assert 'ue_flow_delivery_latency_seconds_count{system="learn"} 1.0' in text
    assert "dramatiq_messages_total" in text


@pytest.mark.parametrize("broker", ["rabbitmq"], indirect=True)
def test_rejected_publish_raises(broker: BrokerSetup, app_engine: Engine) -> None:
    # A queue that takes no message makes RabbitMQ nack the publish, which
    # only publisher confirms turn into an error.
    assert broker.vhost is not None
    policy = '{"max-length": 0, "overflow": "reject-publish"}'
    rabbitmqctl("set_policy", "-p", broker.vhost, "reject", "^events$", policy)
    payload = load_example("basket_add", "add_course")

    with pytest.raises(ue_flow.BrokerError, match="RabbitMQ rejected the message"):
        app_engine.emit("basket_add", **payload, idempotency_key="basket-1")

    rabbitmqctl("clear_policy", "-p", broker.vhost, "reject")
    event_id = app_engine.emit("basket_add", **payload, idempotency_key="basket-1")
    assert event_id.startswith("evt_")
    assert rabbitmq_queue_length(broker.url, "events") == 1
