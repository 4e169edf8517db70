"""Fault: the broker's Redis reaches maxmemory while emit queues an event's deliveries."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import redis

from tests.conftest import load_example, queued_deliveries, write_config
from tests.faults.conftest import RedisServer
from ue_flow import BrokerError
from ue_flow.engine import Engine
from ue_flow.loader import load_config

pytestmark = pytest.mark.fault

#: The size of the text added to each line of the order, in bytes, so that
#: each delivery message is about this large.
LINE_TEXT_BYTES = 400_000

#: Memory left below maxmemory before emit, in bytes. On Redis 7.0.15 emit
#: is rejected up to about 1.85 MB, which its own request buffer takes, and
#: fits from about 1.9 MB. There the script's 1.4 MB of writes, added to
#: that buffer, take Redis past the limit while the script runs.
HEADROOMS = [-1_000_000, 0, *range(1_000_000, 2_100_000, 100_000), 4_000_000]


def big_order() -> dict[str, Any]:
    """Return the two-system order with a long description on every line."""
    payload = load_example("post_sale", "two_systems")
    for line in payload["data"]["lines"]:
        line["item_description"] = "x" * LINE_TEXT_BYTES
    return payload


@pytest.mark.parametrize("headroom", HEADROOMS)
def test_emit_near_maxmemory_all_or_nothing(
    headroom: int, private_redis: RedisServer, tmp_path: Path, namespace: str
) -> None:
    client = redis.Redis.from_url(private_redis.url)
    engine = Engine.for_redis(load_config(write_config(tmp_path)), private_redis.url, namespace)
    payload = big_order()
    # Load the script first, so that loading it is not what runs out of memory.
    engine.emit("post_sale", **payload)
    for key in client.scan_iter(match=f"{namespace}*"):
        client.delete(key)
    used = int(client.info("memory")["used_memory"])
    client.config_set("maxmemory-policy", "noeviction")
    client.config_set("maxmemory", max(1, used + headroom))

    try:
        event_id = engine.emit("post_sale", **payload)
    except BrokerError as error:
        assert "maxmemory" in str(error)
        assert queued_deliveries(client, namespace) == {}
        return
    finally:
        client.config_set("maxmemory", 0)

    queued = queued_deliveries(client, namespace)
    assert sorted(queued) == ["learn", "mitxonline"]
    for slug, messages in queued.items():
        assert [message["args"][0] for message in messages] == [event_id], slug
