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

import ue_flow
from tests.conftest import (
    ROOT,
    BrokerSetup,
    Receiver,
    build_engine,
    load_example,
    rabbitmq_peek,
    rabbitmq_queue_length,
    rabbitmqctl,
)
from ue_flow import engine as engine_module
from ue_flow.engine import Engine
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
    app_engine.emit("post_sale", **load_example("post_sale", "two_systems"))
    if broker.kind == "redis":
        assert redis_client.llen(f"{namespace}:events") == 1
    else:
        assert rabbitmq_queue_length(broker.url, "events") == 1


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
