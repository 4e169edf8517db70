"""Encoding of the delivery messages that emit queues on Redis."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import dramatiq
import pytest
from dramatiq import Message
from dramatiq.encoder import JSONEncoder, PickleEncoder
from hypothesis import example, given, settings

from tests.fuzz_strategies import JSON_ISH
from ue_flow.errors import PayloadError
from ue_flow.payload import normalize
from ue_flow.publishing import encode


def _message(user: Any, data: Any) -> Message[Any]:
    return Message(
        queue_name="ue_flow_deliver_learn",
        actor_name="deliver_learn",
        args=("evt_1", "post_sale", user, data, 1_700_000_000_000),
        kwargs={},
        options={"started_ms": 1_700_000_000_000, "redis_message_id": "m-1"},
    )


@pytest.fixture
def pickle_encoder() -> Iterator[None]:
    previous = dramatiq.get_encoder()
    dramatiq.set_encoder(PickleEncoder())
    yield
    dramatiq.set_encoder(previous)


@given(user=JSON_ISH, data=JSON_ISH)
@settings(max_examples=300, deadline=None)
@example(user={"name": "Zoë 🛒", "id": 2**63 - 1}, data={"big": 2**64})
@example(user={"id": -(2**63)}, data={"big": 10**400})
@example(user={"ratio": 0.1, "tiny": 5e-324, "huge": 1.7976931348623157e308}, data=[])
def test_workers_decode_what_dramatiq_would(user: Any, data: Any) -> None:
    try:
        user, data = normalize("post_sale", user), normalize("post_sale", data)
    except PayloadError:
        return
    message = _message(user, data)

    assert Message.decode(encode(message)) == Message.decode(message.encode())


def test_other_global_encoder_is_used(pickle_encoder: None) -> None:
    message = _message({"id": 1}, {"lines": []})

    assert encode(message) == message.encode()
    assert Message.decode(encode(message)) == message


def test_default_encoder_is_json() -> None:
    assert type(dramatiq.get_encoder()) is JSONEncoder
    assert encode(_message({"id": 1}, {})).startswith(b"{")


@pytest.mark.parametrize("value", [2**64, -(2**63) - 1, 10**100])
def test_integer_beyond_64_bits_falls_back(value: int) -> None:
    message = _message({"id": value}, {})

    assert encode(message) == message.encode()
