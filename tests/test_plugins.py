"""The pluggy bridge: hook specifications from events.yaml, and an implementation that emits."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pluggy
import pytest
import redis

from tests.conftest import REDIS_URL, load_example, queued_deliveries, write_config
from ue_flow.engine import Engine
from ue_flow.errors import PayloadError
from ue_flow.loader import load_config
from ue_flow.plugins import HookEmitter, hook_specifications


@pytest.fixture
def engine(tmp_path: Path, namespace: str) -> Iterator[Engine]:
    config = write_config(tmp_path)
    built = Engine.for_redis(load_config(config, environ={}), REDIS_URL, namespace)
    yield built
    built.broker.close()


@pytest.fixture
def plugin_manager(engine: Engine) -> pluggy.PluginManager:
    manager = pluggy.PluginManager("ue")
    manager.add_hookspecs(hook_specifications(engine.config, "ue"))
    manager.register(HookEmitter(engine, "ue"))
    return manager


def test_specs_take_yaml_arguments(engine: Engine) -> None:
    specs = hook_specifications(engine.config, "ue")
    manager = pluggy.PluginManager("ue")
    manager.add_hookspecs(specs)

    assert manager.hook.post_sale.spec is not None
    assert manager.hook.post_sale.spec.argnames == ("user", "order")
    assert manager.hook.basket_add.spec is not None
    assert manager.hook.basket_add.spec.argnames == ("user", "basket_item")
    assert specs.post_sale.__doc__ == "An order was completed successfully."


def test_post_sale_hook_queues_event(
    plugin_manager: pluggy.PluginManager, redis_client: redis.Redis, namespace: str
) -> None:
    payload = load_example("post_sale", "two_systems")

    results = plugin_manager.hook.post_sale(user=payload["user"], order=payload["data"])
    queued = queued_deliveries(redis_client, namespace)

    assert len(results) == 1
    assert results[0].startswith("evt_")
    assert sorted(queued) == ["learn", "mitxonline"]
    for slug, messages in queued.items():
        assert len(messages) == 1, slug
        assert messages[0]["actor_name"] == f"deliver_{slug}"
        assert messages[0]["args"][0] == results[0]
        assert messages[0]["args"][1] == "post_sale"
        assert messages[0]["args"][3]["reference_number"] == payload["data"]["reference_number"]


def test_invalid_hook_call_queues_nothing(
    plugin_manager: pluggy.PluginManager, redis_client: redis.Redis, namespace: str
) -> None:
    payload = load_example("post_sale", "two_systems")
    payload["data"]["total_price_paid"] = 12.5

    with pytest.raises(PayloadError, match=r"\$\.data\.total_price_paid"):
        plugin_manager.hook.post_sale(user=payload["user"], order=payload["data"])

    assert list(redis_client.scan_iter(match=f"{namespace}*")) == []


def test_dotted_path_reads_argument(
    tmp_path: Path, namespace: str, redis_client: redis.Redis
) -> None:
    config = write_config(tmp_path)
    events_file = config / "events.yaml"
    text = events_file.read_text(encoding="utf-8")
    old = "      arguments: [user, order]\n      payload: {user: user, data: order}\n"
    new = "      arguments: [order, source]\n      payload: {user: order.user, data: order.data}\n"
    assert old in text
    events_file.write_text(text.replace(old, new), encoding="utf-8")
    engine = Engine.for_redis(load_config(config, environ={}), REDIS_URL, namespace)
    manager = pluggy.PluginManager("ue")
    manager.add_hookspecs(hook_specifications(engine.config, "ue"))
    manager.register(HookEmitter(engine, "ue"))
    payload = load_example("post_sale", "one_system")

    try:
        results = manager.hook.post_sale(order=payload, source="checkout")
        with pytest.raises(PayloadError, match=r"order\.user"):
            manager.hook.post_sale(order={"data": payload["data"]}, source="checkout")
    finally:
        engine.broker.close()

    assert len(results) == 1
    # one_system has lines of mitxonline only.
    queued = queued_deliveries(redis_client, namespace)
    assert list(queued) == ["mitxonline"]
    assert len(queued["mitxonline"]) == 1
