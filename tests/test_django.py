"""The Django integration against real PostgreSQL and Redis: emit_on_commit and settings."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import django
import pytest
import redis
from django.conf import settings

from tests.conftest import REDIS_URL, load_example, queued_deliveries, write_config

DATABASE = {
    "ENGINE": "django.db.backends.postgresql",
    # Django's test tools create and drop test_<NAME>; the suffix keeps
    # concurrent runs apart.
    "NAME": f"ue_flow_{uuid.uuid4().hex[:8]}",
    "USER": "postgres",
    "HOST": "127.0.0.1",
    "PORT": "5432",
}

if not settings.configured:
    # ALLOWED_HOSTS and USE_TZ are what the receiver's Django tests need
    # when they run in the same process.
    settings.configure(DATABASES={"default": DATABASE}, ALLOWED_HOSTS=["testserver"], USE_TZ=True)
    django.setup()
elif not settings.DATABASES:
    # Another test module configured Django without a database first; the
    # connection handler reads DATABASES again once its cache is cleared.
    from django.db import connections

    settings.DATABASES = {"default": DATABASE}
    connections.__dict__.pop("settings", None)
    connections._settings = None

from django.db import connection, transaction  # noqa: E402
from django.test import override_settings  # noqa: E402
from django.test.utils import setup_databases, teardown_databases  # noqa: E402

import ue_flow.django as ue_django  # noqa: E402
from ue_flow.engine import Engine  # noqa: E402
from ue_flow.errors import PayloadError  # noqa: E402
from ue_flow.loader import load_config  # noqa: E402


@pytest.fixture(scope="module")
def database() -> Iterator[None]:
    old_config = setup_databases(verbosity=0, interactive=False)
    with connection.cursor() as cursor:
        cursor.execute("CREATE TABLE ue_flow_orders (reference text PRIMARY KEY)")
    yield
    teardown_databases(old_config, verbosity=0)


@pytest.fixture
def config_dir(tmp_path: Path) -> Path:
    return write_config(tmp_path)


@pytest.fixture
def engine(config_dir: Path, namespace: str) -> Iterator[Engine]:
    built = Engine.for_redis(load_config(config_dir, environ={}), REDIS_URL, namespace)
    ue_django.use_engine(built)
    yield built
    ue_django.use_engine(None)
    built.broker.close()


def queued_event_count(redis_client: redis.Redis, namespace: str) -> int:
    """Return how many events have deliveries queued, counting each event once."""
    queued = queued_deliveries(redis_client, namespace)
    return len({message["args"][0] for messages in queued.values() for message in messages})


def save_order(reference: str) -> None:
    with connection.cursor() as cursor:
        cursor.execute("INSERT INTO ue_flow_orders (reference) VALUES (%s)", [reference])


def order_saved(reference: str) -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1 FROM ue_flow_orders WHERE reference = %s", [reference])
        return cursor.fetchone() is not None


def test_commit_queues_one_event(
    database: None, engine: Engine, redis_client: redis.Redis, namespace: str
) -> None:
    payload: dict[str, Any] = load_example("post_sale", "two_systems")

    with transaction.atomic():
        save_order("commit-1")
        ue_django.emit_on_commit("post_sale", user=payload["user"], data=payload["data"])
        assert queued_event_count(redis_client, namespace) == 0

    assert order_saved("commit-1")
    assert queued_event_count(redis_client, namespace) == 1


def test_rollback_queues_nothing(
    database: None, engine: Engine, redis_client: redis.Redis, namespace: str
) -> None:
    payload = load_example("post_sale", "two_systems")

    with pytest.raises(RuntimeError, match="payment failed"), transaction.atomic():
        save_order("rollback-1")
        ue_django.emit_on_commit("post_sale", user=payload["user"], data=payload["data"])
        raise RuntimeError("payment failed")

    assert not order_saved("rollback-1")
    assert queued_event_count(redis_client, namespace) == 0


def test_invalid_payload_raises_at_once(
    database: None, engine: Engine, redis_client: redis.Redis, namespace: str
) -> None:
    payload = load_example("post_sale", "two_systems")
    payload["data"]["total_price_paid"] = 10.5

    with transaction.atomic():
        with pytest.raises(PayloadError, match=r"\$\.data\.total_price_paid"):
            ue_django.emit_on_commit("post_sale", user=payload["user"], data=payload["data"])
        save_order("invalid-1")

    assert order_saved("invalid-1")
    assert queued_event_count(redis_client, namespace) == 0


def test_engine_built_from_settings(
    database: None,
    config_dir: Path,
    namespace: str,
    redis_client: redis.Redis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("UE_FLOW_NAMESPACE", namespace)
    monkeypatch.setenv("UE_FLOW_BROKER_URL", "redis://127.0.0.1:1/0")
    payload = load_example("basket_add", "add_course")
    ue_django.use_engine(None)

    with override_settings(UE_FLOW_CONFIG=str(config_dir), UE_FLOW_BROKER_URL=REDIS_URL):
        try:
            with transaction.atomic():
                ue_django.emit_on_commit("basket_add", user=payload["user"], data=payload["data"])
            built = ue_django.engine()
        finally:
            ue_django.use_engine(None)
    built.broker.close()

    assert built.config.directory == config_dir
    assert queued_event_count(redis_client, namespace) == 1


def test_setting_falls_back_to_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UE_FLOW_CONFIG", "/srv/ue/config")

    assert ue_django.setting("UE_FLOW_CONFIG") == "/srv/ue/config"
    with override_settings(UE_FLOW_CONFIG="/etc/ue-flow"):
        assert ue_django.setting("UE_FLOW_CONFIG") == "/etc/ue-flow"
