"""Attacks on emit's single-script fan-out on Redis: lost replies, broken keys and races."""

from __future__ import annotations

import select
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import redis

import ue_flow
from tests.conftest import REDIS_URL, load_example, queued_deliveries, write_config
from ue_flow.engine import Engine
from ue_flow.loader import load_config
from ue_flow.publishing import _ENQUEUE_ALL


class ReplyDroppingProxy:
    """A TCP proxy on 127.0.0.1 in front of the test Redis that can lose replies.

    While ``drop_script_replies`` is set, a connection that sends EVALSHA
    has the command forwarded to Redis, which runs it. The connection is
    then closed before the reply reaches the client, as a network failure
    after the request was sent would do. NOSCRIPT replies still pass, so
    that redis-py can load the script and send it again.
    """

    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        self.upstream = (parts.hostname or "127.0.0.1", parts.port or 6379)
        self.drop_script_replies = False
        self.dropped = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._closed = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self._listener.getsockname()[1]}/0"

    def close(self) -> None:
        self._closed.set()
        self._listener.close()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.upstream)
            threading.Thread(target=self._pump, args=(client, server), daemon=True).start()

    def _pump(self, client: socket.socket, server: socket.socket) -> None:
        doomed = False
        try:
            while True:
                readable, _, _ = select.select([client, server], [], [], 0.5)
                if self._closed.is_set():
                    return
                if client in readable:
                    data = client.recv(65536)
                    if not data:
                        return
                    if self.drop_script_replies and b"EVALSHA" in data.upper():
                        doomed = True
                    server.sendall(data)
                if server in readable:
                    data = server.recv(65536)
                    if not data:
                        return
                    if doomed and not data.startswith(b"-NOSCRIPT"):
                        # Redis ran the script, but the client gets no reply.
                        self.dropped += 1
                        return
                    doomed = False
                    client.sendall(data)
        finally:
            client.close()
            server.close()


@pytest.fixture
def proxy() -> Iterator[ReplyDroppingProxy]:
    started = ReplyDroppingProxy(REDIS_URL)
    yield started
    started.close()


@pytest.fixture
def proxied_engine(
    tmp_path: Path, namespace: str, proxy: ReplyDroppingProxy, redis_client: redis.Redis
) -> Engine:
    # The script is loaded directly, so the only EVALSHA through the proxy is emit's.
    redis_client.script_load(_ENQUEUE_ALL)
    return Engine.for_redis(load_config(write_config(tmp_path)), proxy.url, namespace)


def queued_event_ids(client: redis.Redis, namespace: str) -> dict[str, list[str]]:
    """Return the event id of each queued delivery message, by system slug."""
    queued = queued_deliveries(client, namespace)
    return {slug: [message["args"][0] for message in messages] for slug, messages in queued.items()}


def test_emit_error_after_lost_reply(
    proxied_engine: Engine, proxy: ReplyDroppingProxy, namespace: str, redis_client: redis.Redis
) -> None:
    proxy.drop_script_replies = True

    with pytest.raises(ue_flow.BrokerError) as raised:
        proxied_engine.emit("post_sale", **load_example("post_sale", "two_systems"))

    assert proxy.dropped >= 1
    # Redis ran the script, so the error must not claim that nothing was queued.
    assert raised.value.maybe_queued is True
    assert sorted(queued_event_ids(redis_client, namespace)) == ["learn", "mitxonline"]


def test_emit_key_retry_after_lost_reply(
    proxied_engine: Engine, proxy: ReplyDroppingProxy, namespace: str, redis_client: redis.Redis
) -> None:
    payload = load_example("post_sale", "two_systems")
    key = "order-attack-lost-reply"
    proxy.drop_script_replies = True
    with pytest.raises(ue_flow.BrokerError):
        proxied_engine.emit("post_sale", **payload, idempotency_key=key)

    # The network is back, and the caller retries as the README allows.
    proxy.drop_script_replies = False
    event_id = proxied_engine.emit("post_sale", **payload, idempotency_key=key)

    queued = queued_event_ids(redis_client, namespace)
    assert sorted(queued) == ["learn", "mitxonline"]
    for slug, event_ids in queued.items():
        assert set(event_ids) == {event_id}, f"{slug} has deliveries of {sorted(set(event_ids))}"


def test_emit_list_key_wrongtype_queues_nothing(
    tmp_path: Path, namespace: str, redis_client: redis.Redis
) -> None:
    engine = Engine.for_redis(load_config(write_config(tmp_path)), REDIS_URL, namespace)
    # The second system's queue list (rather than its .msgs hash) is a string.
    redis_client.set(f"{namespace}:deliver.mitxonline", "not a list")

    with pytest.raises(ue_flow.BrokerError) as raised:
        engine.emit("post_sale", **load_example("post_sale", "two_systems"))

    assert "WRONGTYPE" in str(raised.value)
    assert redis_client.exists(f"{namespace}:deliver.learn") == 0
    assert redis_client.exists(f"{namespace}:deliver.learn.msgs") == 0
    assert redis_client.exists(f"{namespace}:deliver.mitxonline.msgs") == 0


def test_emit_after_failure_queues_once(
    tmp_path: Path, namespace: str, redis_client: redis.Redis
) -> None:
    engine = Engine.for_redis(load_config(write_config(tmp_path)), REDIS_URL, namespace)
    redis_client.set(f"{namespace}:deliver.learn.msgs", "not a hash")
    payload = load_example("post_sale", "two_systems")
    with pytest.raises(ue_flow.BrokerError):
        engine.emit("post_sale", **payload, idempotency_key="order-attack-wrongtype")

    redis_client.delete(f"{namespace}:deliver.learn.msgs")
    event_id = engine.emit("post_sale", **payload, idempotency_key="order-attack-wrongtype")

    assert queued_event_ids(redis_client, namespace) == {
        "learn": [event_id],
        "mitxonline": [event_id],
    }


def test_racing_idempotent_emits_queue_once(
    tmp_path: Path, namespace: str, redis_client: redis.Redis
) -> None:
    # Each emit claims the key and finds no marker yet. Only the script,
    # which checks and sets the marker in one step, keeps the second copy out.
    loaded = load_config(write_config(tmp_path))
    engines = [Engine.for_redis(loaded, REDIS_URL, namespace) for _ in range(4)]

    for trial in range(20):
        key = f"order-race-{trial}"
        start = threading.Barrier(len(engines))
        event_ids: list[str] = []
        threads = [
            threading.Thread(target=_emit_at_once, args=(engine, key, start, event_ids))
            for engine in engines
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

        assert len(event_ids) == len(engines)
        assert len(set(event_ids)) == 1
        assert queued_event_ids(redis_client, namespace) == {
            "learn": [event_ids[0]],
            "mitxonline": [event_ids[0]],
        }
        for slug in ("learn", "mitxonline"):
            redis_client.delete(f"{namespace}:deliver.{slug}", f"{namespace}:deliver.{slug}.msgs")


def _emit_at_once(engine: Engine, key: str, start: threading.Barrier, event_ids: list[str]) -> None:
    start.wait()
    payload = load_example("post_sale", "two_systems")
    event_ids.append(engine.emit("post_sale", **payload, idempotency_key=key))
