"""Inputs a reviewer used to break ue-flow, each now rejected or handled."""

from __future__ import annotations

import enum
import http.server
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fakeredis
import pytest
from dramatiq import Message
from dramatiq.broker import MessageProxy
from dramatiq.brokers.stub import StubBroker

from tests.conftest import ROOT, load_example, write_config
from ue_flow.broker import broker_middleware
from ue_flow.delivery import Sender
from ue_flow.engine import Engine, validate_event
from ue_flow.errors import ConfigError, PayloadError
from ue_flow.loader import LoadedConfig, load_config
from ue_flow.retries import DurableRetries
from ue_flow.state import StateStores


def edit(root: Path, file: str, old: str, new: str) -> None:
    path = root / file
    text = path.read_text(encoding="utf-8")
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def problems_of(config: Path, environ: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as raised:
        load_config(config, environ)
    return [str(problem) for problem in raised.value.problems]


MITX_URL = (
    "{{ env.MITXONLINE_WEBHOOK_URL | default('http://127.0.0.1:8071/api/v0/ecommerce/webhook/') }}"
)


def test_template_cannot_read_secret(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    edit(
        tmp_path,
        "config/systems.yaml",
        MITX_URL,
        "http://127.0.0.1:8071/?s={{ env.UE_FLOW_SECRET_LEARN }}",
    )

    problems = problems_of(config, {"UE_FLOW_SECRET_LEARN": "whsec_notprinted"})

    assert len(problems) == 1
    assert "env.UE_FLOW_SECRET_LEARN contains a key or signing secret" in problems[0]
    assert "whsec_notprinted" not in problems[0]


def test_template_cannot_dump_environment(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    edit(
        tmp_path,
        "config/systems.yaml",
        MITX_URL,
        "http://127.0.0.1:8071/?e={{ env }}&n={{ env | list }}",
    )

    loaded = load_config(config, {"OTHER_TOKEN": "tok-not-printed"})

    assert loaded.config.systems["mitxonline"].url == "http://127.0.0.1:8071/?e=env&n=[]"


def test_undefined_template_variable_named(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    edit(tmp_path, "config/systems.yaml", MITX_URL, "{{ env.NOT_SET_ANYWHERE }}")

    problems = problems_of(config, {})

    assert "template uses env.NOT_SET_ANYWHERE, which is not set" in problems[0]


def test_non_ascii_header_rejected(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    edit(tmp_path, "config/systems.yaml", "default('development')", "default('développement')")

    problems = problems_of(config, {})

    assert "outside ASCII" in problems[0]


def test_nan_jitter_and_huge_duration(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    edit(tmp_path, "config/events.yaml", "jitter: 0.1", "jitter: .nan")
    edit(tmp_path, "config/events.yaml", "read_timeout: 10s", "read_timeout: 99999999999d")

    problems = problems_of(config, {})

    assert any("jitter: invalid value nan" in problem for problem in problems)
    assert any("longest allowed is 365d" in problem for problem in problems)


@pytest.fixture(scope="module")
def loaded() -> LoadedConfig:
    return load_config(ROOT / "config")


@pytest.mark.parametrize("owner", ["nosuch", 99])
def test_unknown_owner_rejected(loaded: LoadedConfig, owner: object) -> None:
    payload = load_example("basket_add", "add_course")
    payload["data"]["product"]["system"] = owner

    with pytest.raises(PayloadError) as raised:
        validate_event(loaded, "basket_add", **payload)

    assert raised.value.path == "$.data.product.system"
    assert f"owner {owner!r} names no configured system" in raised.value.rule


def test_narrowing_to_non_subscriber_rejected(loaded: LoadedConfig) -> None:
    with pytest.raises(PayloadError, match="'learn' does not subscribe to basket_add"):
        validate_event(
            loaded, "basket_add", **load_example("basket_add", "add_course"), systems=["learn"]
        )


class Level(enum.IntEnum):
    ID = 11


def test_subclass_values_become_plain(loaded: LoadedConfig) -> None:
    from django.utils.safestring import mark_safe

    payload = load_example("basket_add", "add_course")
    payload["data"]["product"]["name"] = mark_safe("Intro")
    payload["data"]["product"]["id"] = Level.ID

    product = validate_event(loaded, "basket_add", **payload)["data"]["product"]

    assert type(product["name"]) is str
    assert type(product["id"]) is int
    assert json.dumps(product["id"]) == "11"


def fake_stores(loaded: LoadedConfig) -> StateStores:
    return StateStores.open(fakeredis.FakeRedis(), "hardening", loaded.config)


def test_slugs_differing_by_dash(tmp_path: Path) -> None:
    config = write_config(
        tmp_path,
        system_changes={"learn": {"slug": "mitx-online", "id": 3}},
    )
    edit(tmp_path, "config/systems.yaml", "slug: mitxonline", "slug: mitx_online")
    loaded = load_config(config, {})

    engine = Engine(loaded, StubBroker(middleware=broker_middleware()), fake_stores(loaded), {})

    assert sorted(engine.deliverers) == ["mitx-online", "mitx_online"]


def test_unexpected_failure_becomes_dead_letter(loaded: LoadedConfig) -> None:
    stores = fake_stores(loaded)
    broker = StubBroker(middleware=broker_middleware())
    engine = Engine(loaded, broker, stores, {})
    retries = next(m for m in broker.middleware if isinstance(m, DurableRetries))
    actor = engine.deliverers["mitxonline"]
    payload = load_example("basket_add", "add_course")
    message = Message(
        queue_name=actor.queue_name,
        actor_name=actor.actor_name,
        args=("evt_test", "basket_add", payload["user"], payload["data"], 0),
        kwargs={},
        options={"retries": actor.options["max_retries"]},
    )

    retries.after_process_message(broker, MessageProxy(message), exception=RuntimeError("boom"))

    letters = list(stores.dead_letters.select())
    assert len(letters) == 1
    assert letters[0].event_id == "evt_test"
    assert "unexpected RuntimeError: boom" in letters[0].reason


@pytest.fixture
def dripping_server() -> Iterator[str]:
    class Drip(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            self.send_response(200)
            self.send_header("Content-Length", "100")
            self.end_headers()
            for _ in range(100):
                self.wfile.write(b"x")
                self.wfile.flush()
                time.sleep(0.1)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Drip)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def test_dripping_answer_times_out(dripping_server: str) -> None:
    # Each byte arrives well within the read timeout, but the whole response
    # would take ten seconds; the attempt stops near connect plus read.
    outcome = Sender().post(dripping_server, b"{}", {}, (500, 500), allow_private_network=True)

    assert outcome.status is None
    assert outcome.error == "TimeoutError"
    assert outcome.duration_ms < 5_000
