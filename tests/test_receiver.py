"""Tests of ue_flow.receiver: every rejection, the examples, duplicates and configuration."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

import ue_flow.receiver
from ue_flow import signing
from ue_flow.errors import Error, PayloadError
from ue_flow.receiver import (
    Duplicate,
    DuplicateStoreError,
    Envelope,
    MemoryDuplicateStore,
    PostrefundData,
    PostsaleData,
    PresaleData,
    Receiver,
    RedisDuplicateStore,
    TrustedSystem,
    Unauthorized,
)

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
WIRE_TYPES = {"basket_add": "presale", "post_sale": "postsale", "post_refund": "postrefund"}
EXAMPLE_FILES = sorted(EXAMPLES.glob("*/*.json"))

NOW = 1_760_000_000
SLUG = "mitxonline"
KEY = "key-mitxonline-2f9c41d7e0"
UNSIGNED_SLUG = "learn"
UNSIGNED_KEY = "key-learn-8e01aa3b"
MSG_ID = "evt_0001"


@pytest.fixture
def secret() -> str:
    return signing.generate_secret()


@pytest.fixture
def receiver(secret: str) -> Receiver:
    trusted = {
        SLUG: TrustedSystem(KEY, secrets=(secret,)),
        UNSIGNED_SLUG: TrustedSystem(UNSIGNED_KEY),
    }
    return Receiver(trusted, clock=lambda: NOW)


def envelope_dict(
    example: str = "basket_add/add_course.json", slug: str = SLUG, key: str = KEY
) -> dict[str, Any]:
    payload = json.loads((EXAMPLES / example).read_text(encoding="utf-8"))
    return {
        "system_slug": slug,
        "system_key": key,
        "type": WIRE_TYPES[example.split("/")[0]],
        "user": payload["user"],
        "data": payload["data"],
    }


def encode(envelope: dict[str, Any]) -> bytes:
    return json.dumps(envelope, ensure_ascii=False, separators=(",", ":")).encode()


def signed_headers(
    secret: str, body: bytes, *, msg_id: str = MSG_ID, timestamp: int = NOW
) -> dict[str, str]:
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signing.signature_header([secret], msg_id, timestamp, body),
    }


def reject(receiver: Receiver, body: bytes, headers: dict[str, str], secret: str) -> str:
    """Return the reason of the Unauthorized that verify raises, checked safe to log."""
    with pytest.raises(Unauthorized) as caught:
        receiver.verify(body, headers)

    reason = caught.value.reason
    assert str(caught.value) == reason
    assert KEY not in reason
    assert secret.removeprefix("whsec_") not in reason
    digests = [entry.partition(",")[2] for entry in headers.get("webhook-signature", "").split()]
    for digest in filter(None, digests):
        assert digest not in reason

    return reason


# Accepted deliveries


@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=lambda path: f"{path.parent.name}/{path.name}")
def test_verify_accepts_example(receiver: Receiver, secret: str, path: Path) -> None:
    example = f"{path.parent.name}/{path.name}"
    envelope = envelope_dict(example)
    body = encode(envelope)

    received = receiver.verify(body, signed_headers(secret, body))

    assert received.system_slug == SLUG
    assert received.system_key == KEY
    assert received.type == envelope["type"]
    assert received.webhook_id == MSG_ID
    assert received.user.id == envelope["user"]["id"]
    assert received.user.email == envelope["user"]["email"]


def test_verify_presale_fields(receiver: Receiver, secret: str) -> None:
    body = encode(envelope_dict("basket_add/add_course.json"))

    data = receiver.verify(body, signed_headers(secret, body)).data

    assert isinstance(data, PresaleData)
    assert data.action == "add"
    assert data.product.price == Decimal("75.00")
    assert isinstance(data.product.price, Decimal)
    assert data.product.system_data == {"run_tag": "2026_Spring", "certificate": True}
    assert data.product.system == "mitxonline"


def test_verify_postsale_money(receiver: Receiver, secret: str) -> None:
    body = encode(envelope_dict("post_sale/two_systems.json"))

    data = receiver.verify(body, signed_headers(secret, body)).data

    assert isinstance(data, PostsaleData)
    assert data.total_price_paid == Decimal("1099.99")
    assert isinstance(data.total_price_paid, Decimal)
    assert [line.total_price for line in data.lines] == [
        Decimal("50.00"),
        Decimal("1000.00"),
        Decimal("49.99"),
    ]
    assert all(isinstance(line.unit_price, Decimal) for line in data.lines)
    assert sum(line.total_price for line in data.lines) == data.total_price_paid


def test_verify_postrefund_refund(receiver: Receiver, secret: str) -> None:
    body = encode(envelope_dict("post_refund/partial.json"))

    data = receiver.verify(body, signed_headers(secret, body)).data

    assert isinstance(data, PostrefundData)
    assert data.state == "partially_refunded"
    assert data.refund.total_refunded == Decimal("99.99")
    assert [(line.line_id, line.amount) for line in data.refund.lines] == [
        (101, Decimal("50.00")),
        (103, Decimal("49.99")),
    ]
    assert data.refund.reason == "Requested within the refund window."


def test_verify_headers_any_case(receiver: Receiver, secret: str) -> None:
    body = encode(envelope_dict())
    headers = {name.title(): value for name, value in signed_headers(secret, body).items()}

    assert receiver.verify(body, headers).webhook_id == MSG_ID


def test_verify_bytes_header_values(receiver: Receiver, secret: str) -> None:
    body = encode(envelope_dict())
    headers = {name: value.encode() for name, value in signed_headers(secret, body).items()}

    assert receiver.verify(body, headers).system_slug == SLUG


def test_verify_timestamp_at_tolerance(receiver: Receiver, secret: str) -> None:
    body = encode(envelope_dict())

    assert receiver.verify(body, signed_headers(secret, body, timestamp=NOW - 300))
    assert receiver.verify(body, signed_headers(secret, body, timestamp=NOW + 300))


def test_verify_rotated_secrets(secret: str) -> None:
    new_secret = signing.generate_secret()
    receiver = Receiver({SLUG: TrustedSystem(KEY, (secret, new_secret))}, clock=lambda: NOW)
    body = encode(envelope_dict())
    headers = signed_headers(new_secret, body)

    assert receiver.verify(body, headers).system_slug == SLUG


def test_verify_unsigned_system(receiver: Receiver) -> None:
    body = encode(envelope_dict(slug=UNSIGNED_SLUG, key=UNSIGNED_KEY))

    envelope = receiver.verify(body, {})

    assert envelope.system_slug == UNSIGNED_SLUG
    assert envelope.webhook_id is None


# Rejections: signature


def test_reject_bad_signature(receiver: Receiver, secret: str) -> None:
    body = encode(envelope_dict())
    headers = signed_headers(signing.generate_secret(), body)

    assert "No signature" in reject(receiver, body, headers, secret)


def test_reject_body_changed_one_byte(receiver: Receiver, secret: str) -> None:
    body = encode(envelope_dict())
    headers = signed_headers(secret, body)
    changed = body.replace(b'"75.00"', b'"75.01"', 1)

    assert len(changed) == len(body)
    assert changed != body
    assert "No signature" in reject(receiver, changed, headers, secret)


def test_reject_changed_webhook_id(receiver: Receiver, secret: str) -> None:
    body = encode(envelope_dict())
    headers = signed_headers(secret, body) | {"webhook-id": "evt_0002"}

    assert "No signature" in reject(receiver, body, headers, secret)


def test_reject_stale_timestamp(receiver: Receiver, secret: str) -> None:
    body = encode(envelope_dict())
    headers = signed_headers(secret, body, timestamp=NOW - 301)

    assert "301 seconds in the past" in reject(receiver, body, headers, secret)


def test_reject_future_timestamp(receiver: Receiver, secret: str) -> None:
    body = encode(envelope_dict())
    headers = signed_headers(secret, body, timestamp=NOW + 301)

    assert "301 seconds in the future" in reject(receiver, body, headers, secret)


def test_reject_timestamp_custom_tolerance(secret: str) -> None:
    trusted = {SLUG: TrustedSystem(KEY, (secret,))}
    receiver = Receiver(trusted, tolerance_seconds=30, clock=lambda: NOW)
    body = encode(envelope_dict())

    assert receiver.verify(body, signed_headers(secret, body, timestamp=NOW - 30))
    reason = reject(receiver, body, signed_headers(secret, body, timestamp=NOW - 31), secret)
    assert "more than the 30 allowed" in reason


@pytest.mark.parametrize("name", ["webhook-id", "webhook-timestamp", "webhook-signature"])
def test_reject_missing_header(receiver: Receiver, secret: str, name: str) -> None:
    body = encode(envelope_dict())
    headers = signed_headers(secret, body)
    del headers[name]

    assert f"The {name} header is missing" in reject(receiver, body, headers, secret)


def test_reject_no_headers(receiver: Receiver, secret: str) -> None:
    body = encode(envelope_dict())

    assert "missing" in reject(receiver, body, {}, secret)


@pytest.mark.parametrize("name", ["webhook-id", "webhook-timestamp", "webhook-signature"])
def test_reject_empty_header(receiver: Receiver, secret: str, name: str) -> None:
    body = encode(envelope_dict())
    headers = signed_headers(secret, body) | {name: " "}

    assert f"The {name} header is empty" in reject(receiver, body, headers, secret)


def test_reject_garbage_base64(receiver: Receiver, secret: str) -> None:
    body = encode(envelope_dict())
    headers = signed_headers(secret, body) | {"webhook-signature": "v1,%%%garbage%%%"}

    assert "not valid base64" in reject(receiver, body, headers, secret)


def test_reject_hundred_signatures(receiver: Receiver, secret: str) -> None:
    body = encode(envelope_dict())
    valid = signed_headers(secret, body)["webhook-signature"]
    headers = signed_headers(secret, body) | {"webhook-signature": " ".join([valid] * 100)}

    assert "contains 100 signatures" in reject(receiver, body, headers, secret)


def test_reject_v2_only(receiver: Receiver, secret: str) -> None:
    body = encode(envelope_dict())
    digest = signed_headers(secret, body)["webhook-signature"].removeprefix("v1,")
    headers = signed_headers(secret, body) | {"webhook-signature": f"v2,{digest}"}

    assert "no v1 signature" in reject(receiver, body, headers, secret)


def test_reject_signature_without_version(receiver: Receiver, secret: str) -> None:
    body = encode(envelope_dict())
    digest = signed_headers(secret, body)["webhook-signature"].removeprefix("v1,")
    headers = signed_headers(secret, body) | {"webhook-signature": digest}

    assert "malformed" in reject(receiver, body, headers, secret)


@pytest.mark.parametrize("value", ["soon", "1.76e9", "-1760000000", "1760000000.5", "0x68e6"])
def test_reject_non_integer_timestamp(receiver: Receiver, secret: str, value: str) -> None:
    body = encode(envelope_dict())
    headers = signed_headers(secret, body) | {"webhook-timestamp": value}

    assert "is not an integer number of Unix seconds" in reject(receiver, body, headers, secret)


def test_reject_huge_timestamp(receiver: Receiver, secret: str) -> None:
    body = encode(envelope_dict())
    headers = signed_headers(secret, body) | {"webhook-timestamp": "9" * 5000}

    reason = reject(receiver, body, headers, secret)
    assert "is not an integer number of Unix seconds" in reason
    assert len(reason) < 300


def test_reject_long_webhook_id(receiver: Receiver, secret: str) -> None:
    body = encode(envelope_dict())
    headers = signed_headers(secret, body, msg_id="e" * 257)

    assert "more than the 256 allowed" in reject(receiver, body, headers, secret)


def test_reject_non_text_header(receiver: Receiver, secret: str) -> None:
    body = encode(envelope_dict())
    headers: dict[str, Any] = signed_headers(secret, body) | {"webhook-timestamp": NOW}

    assert "is not text" in reject(receiver, body, headers, secret)


def test_reject_cause_chained(receiver: Receiver, secret: str) -> None:
    body = encode(envelope_dict())
    headers = signed_headers(secret, body) | {"webhook-signature": "v1,%%%"}

    with pytest.raises(Unauthorized) as caught:
        receiver.verify(body, headers)

    assert isinstance(caught.value.__cause__, signing.SignatureError)


# Rejections: slug and key


def test_reject_wrong_key(receiver: Receiver, secret: str) -> None:
    body = encode(envelope_dict(key="key-guessed"))
    headers = signed_headers(secret, body)

    reason = reject(receiver, body, headers, secret)
    assert "system_key does not match" in reason
    assert "key-guessed" not in reason


def test_reject_wrong_key_unsigned(receiver: Receiver, secret: str) -> None:
    body = encode(envelope_dict(slug=UNSIGNED_SLUG, key=KEY))

    assert "system_key does not match" in reject(receiver, body, {}, secret)


def test_reject_surrogate_key_unsigned(receiver: Receiver, secret: str) -> None:
    # A JSON escape can produce a lone surrogate, which str.encode() rejects.
    body = b'{"system_slug":"learn","system_key":"\\ud800"}'

    assert "system_key does not match" in reject(receiver, body, {}, secret)


def test_reject_surrogate_key_signed(receiver: Receiver, secret: str) -> None:
    # json.dumps escapes the surrogate as \udfff, because ensure_ascii is on by default.
    body = json.dumps(envelope_dict(key="\udfff")).encode()

    reason = reject(receiver, body, signed_headers(secret, body), secret)
    assert "system_key does not match" in reason


def test_reject_missing_key(receiver: Receiver, secret: str) -> None:
    envelope = envelope_dict()
    del envelope["system_key"]
    body = encode(envelope)

    assert "no system_key" in reject(receiver, body, signed_headers(secret, body), secret)


def test_reject_unknown_slug(receiver: Receiver, secret: str) -> None:
    body = encode(envelope_dict(slug="intruder"))

    reason = reject(receiver, body, signed_headers(secret, body), secret)
    assert "system_slug 'intruder' is not a trusted system" in reason


def test_reject_unknown_slug_cut(receiver: Receiver, secret: str) -> None:
    body = encode(envelope_dict(slug="x" * 10_000))

    reason = reject(receiver, body, {}, secret)
    assert "cut from 10000 characters" in reason
    assert len(reason) < 300


@pytest.mark.parametrize("document", [[], "text", 5, None, {"system_slug": 7}])
def test_reject_no_slug(receiver: Receiver, secret: str, document: Any) -> None:
    body = json.dumps(document).encode()

    assert "no system_slug" in reject(receiver, body, {}, secret)


# Rejections: the body


def test_reject_extra_top_level_key(receiver: Receiver, secret: str) -> None:
    envelope = envelope_dict() | {"event_id": MSG_ID}
    body = encode(envelope)

    with pytest.raises(PayloadError) as caught:
        receiver.verify(body, signed_headers(secret, body))

    assert caught.value.event == "presale"
    assert caught.value.path == "$"
    assert "event_id" in caught.value.rule


def test_reject_money_as_number(receiver: Receiver, secret: str) -> None:
    envelope = envelope_dict("post_sale/one_system.json")
    envelope["data"]["total_price_paid"] = 75.0
    body = encode(envelope)

    with pytest.raises(PayloadError) as caught:
        receiver.verify(body, signed_headers(secret, body))

    assert caught.value.event == "postsale"
    assert caught.value.path == "$.data.total_price_paid"
    assert "decimal string" in caught.value.rule


def test_reject_unknown_type(receiver: Receiver, secret: str) -> None:
    envelope = envelope_dict() | {"type": "preorder"}
    body = encode(envelope)

    with pytest.raises(PayloadError) as caught:
        receiver.verify(body, signed_headers(secret, body))

    assert caught.value.event == "envelope"
    assert caught.value.path == "$.type"


def test_reject_invalid_json(receiver: Receiver, secret: str) -> None:
    body = b'{"system_slug": "mitxonline",'

    with pytest.raises(PayloadError) as caught:
        receiver.verify(body, signed_headers(secret, body))

    assert caught.value.event == "envelope"
    assert "not JSON" in caught.value.rule
    assert isinstance(caught.value.__cause__, json.JSONDecodeError)


def test_reject_invalid_utf8(receiver: Receiver, secret: str) -> None:
    body = b'{"system_slug": "\xff"}'

    with pytest.raises(PayloadError, match="not UTF-8"):
        receiver.verify(body, signed_headers(secret, body))


def test_reject_huge_integer(receiver: Receiver, secret: str) -> None:
    body = b'{"system_slug":"learn","x":' + b"7" * 5000 + b"}"

    with pytest.raises(PayloadError) as caught:
        receiver.verify(body, {})

    assert caught.value.event == "envelope"
    assert caught.value.path == "$"
    assert "number that cannot be parsed" in caught.value.rule
    assert "set_int_max_str_digits" not in caught.value.rule
    assert isinstance(caught.value.__cause__, ValueError)


def test_reject_deep_nesting(receiver: Receiver, secret: str) -> None:
    body = b"[" * 100_000 + b"]" * 100_000

    with pytest.raises(PayloadError, match="nests too deeply"):
        receiver.verify(body, {})


def test_reject_deep_nesting_authenticated(receiver: Receiver, secret: str) -> None:
    # Near the recursion limit a body parses, then schema validation may recurse
    # too deeply. Which depths do depends on the stack, so a range is tried.
    prefix = b'{"system_slug":"learn","system_key":"key-learn-8e01aa3b","type":"presale",'
    prefix += b'"user":{},"data":'
    for depth in range(900, 1001, 10):
        body = prefix + b"[" * depth + b"]" * depth + b"}"

        with pytest.raises(PayloadError):
            receiver.verify(body, {})


def test_payload_error_masks_key(receiver: Receiver, secret: str) -> None:
    envelope = envelope_dict()
    envelope["data"]["product"]["system_data"] = KEY
    envelope["data"]["product"]["price"] = KEY
    body = encode(envelope)

    with pytest.raises(PayloadError) as caught:
        receiver.verify(body, signed_headers(secret, body))

    assert caught.value.path == "$.data.product.price"
    assert KEY not in str(caught.value)


def test_verify_rejects_str_body(receiver: Receiver) -> None:
    with pytest.raises(TypeError, match="bytes"):
        receiver.verify("{}", {})  # type: ignore[arg-type]


@pytest.mark.parametrize("headers", [None, [("webhook-id", MSG_ID)], "webhook-id"])
def test_verify_rejects_non_mapping_headers(receiver: Receiver, headers: Any) -> None:
    body = encode(envelope_dict(slug=UNSIGNED_SLUG, key=UNSIGNED_KEY))

    with pytest.raises(TypeError, match="mapping of header names"):
        receiver.verify(body, headers)


def test_verify_accepts_items_headers(receiver: Receiver, secret: str) -> None:
    body = encode(envelope_dict())

    class ItemsOnly:
        """Headers that are not a Mapping but have items(), as werkzeug's Headers."""

        def items(self) -> list[tuple[str, str]]:
            return list(signed_headers(secret, body).items())

    assert receiver.verify(body, ItemsOnly()).webhook_id == MSG_ID  # type: ignore[arg-type]


def test_reject_surrogate_header(receiver: Receiver, secret: str) -> None:
    body = encode(envelope_dict())
    headers = signed_headers(secret, body) | {"webhook-id": "evt_\ud800"}

    assert "webhook-id header is not valid text" in reject(receiver, body, headers, secret)


def test_envelope_from_dict_validates() -> None:
    with pytest.raises(PayloadError) as caught:
        Envelope.from_dict({"system_slug": SLUG})

    assert caught.value.event == "envelope"


# Duplicates


def test_duplicate_second_delivery(secret: str) -> None:
    receiver = Receiver(
        {SLUG: TrustedSystem(KEY, (secret,))},
        duplicates=MemoryDuplicateStore(),
        clock=lambda: NOW,
    )
    body = encode(envelope_dict())
    headers = signed_headers(secret, body)
    first = receiver.verify(body, headers)

    with pytest.raises(Duplicate) as caught:
        receiver.verify(body, headers)

    assert isinstance(caught.value, Error)
    assert caught.value.envelope == first
    assert MSG_ID in str(caught.value)


def test_duplicate_after_forget(secret: str) -> None:
    receiver = Receiver(
        {SLUG: TrustedSystem(KEY, (secret,))},
        duplicates=MemoryDuplicateStore(),
        clock=lambda: NOW,
    )
    body = encode(envelope_dict())
    headers = signed_headers(secret, body)

    receiver.forget(receiver.verify(body, headers))

    assert receiver.verify(body, headers).webhook_id == MSG_ID


def test_duplicate_per_system(secret: str) -> None:
    other_secret = signing.generate_secret()
    trusted = {
        SLUG: TrustedSystem(KEY, (secret,)),
        UNSIGNED_SLUG: TrustedSystem(UNSIGNED_KEY, (other_secret,)),
    }
    receiver = Receiver(trusted, duplicates=MemoryDuplicateStore(), clock=lambda: NOW)
    first = encode(envelope_dict("post_sale/two_systems.json"))
    second = encode(envelope_dict("post_sale/two_systems.json", UNSIGNED_SLUG, UNSIGNED_KEY))

    assert receiver.verify(first, signed_headers(secret, first)).system_slug == SLUG
    assert receiver.verify(second, signed_headers(other_secret, second)).webhook_id == MSG_ID


def test_duplicate_rejected_not_recorded(secret: str) -> None:
    receiver = Receiver(
        {SLUG: TrustedSystem(KEY, (secret,))},
        duplicates=MemoryDuplicateStore(),
        clock=lambda: NOW,
    )
    body = encode(envelope_dict())
    forged = signed_headers(signing.generate_secret(), body)

    with pytest.raises(Unauthorized):
        receiver.verify(body, forged)

    assert receiver.verify(body, signed_headers(secret, body)).webhook_id == MSG_ID


def test_duplicate_unsigned_without_id() -> None:
    trusted = {UNSIGNED_SLUG: TrustedSystem(UNSIGNED_KEY)}
    receiver = Receiver(trusted, duplicates=MemoryDuplicateStore())
    body = encode(envelope_dict(slug=UNSIGNED_SLUG, key=UNSIGNED_KEY))

    assert receiver.verify(body, {}).webhook_id is None
    assert receiver.verify(body, {"webhook-id": ""}).webhook_id is None


def test_memory_store_expiry() -> None:
    now = [0.0]
    store = MemoryDuplicateStore(ttl_seconds=10, clock=lambda: now[0])

    assert store.add("a")
    now[0] = 9.9
    assert not store.add("a")
    now[0] = 10.0
    assert store.add("a")


def test_memory_store_max_entries() -> None:
    store = MemoryDuplicateStore(max_entries=2)

    assert store.add("a")
    assert store.add("b")
    assert store.add("c")
    assert store.add("a")
    assert not store.add("c")


def test_memory_store_rejects_ttl() -> None:
    with pytest.raises(ValueError, match="ttl_seconds must be at least 1"):
        MemoryDuplicateStore(ttl_seconds=0)


def test_memory_store_rejects_max_entries() -> None:
    with pytest.raises(ValueError, match="max_entries must be at least 1"):
        MemoryDuplicateStore(max_entries=0)


@pytest.fixture
def redis_prefix(namespace: str) -> str:
    """A key prefix of this test's own; the namespace fixture deletes its keys afterwards."""
    return namespace + ":received:"


def test_redis_store_duplicate(redis_client: redis.Redis, redis_prefix: str) -> None:
    store = RedisDuplicateStore(redis_client, prefix=redis_prefix, ttl_seconds=60)

    assert store.add("mitxonline:evt_1")
    assert not store.add("mitxonline:evt_1")
    assert store.add("learn:evt_1")


def test_redis_store_key_and_expiry(redis_client: redis.Redis, redis_prefix: str) -> None:
    store = RedisDuplicateStore(redis_client, prefix=redis_prefix, ttl_seconds=60)

    store.add("mitxonline:evt_1")

    ttl = redis_client.ttl(redis_prefix + "mitxonline:evt_1")
    assert 0 < ttl <= 60


def test_redis_store_discard(redis_client: redis.Redis, redis_prefix: str) -> None:
    store = RedisDuplicateStore(redis_client, prefix=redis_prefix)
    store.add("mitxonline:evt_1")

    store.discard("mitxonline:evt_1")

    assert store.add("mitxonline:evt_1")


def test_redis_store_receiver(secret: str, redis_client: redis.Redis, redis_prefix: str) -> None:
    store = RedisDuplicateStore(redis_client, prefix=redis_prefix)
    receiver = Receiver({SLUG: TrustedSystem(KEY, (secret,))}, duplicates=store, clock=lambda: NOW)
    body = encode(envelope_dict())
    headers = signed_headers(secret, body)

    receiver.verify(body, headers)

    with pytest.raises(Duplicate):
        receiver.verify(body, headers)
    assert redis_client.exists(f"{redis_prefix}{SLUG}:{MSG_ID}") == 1


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def test_redis_store_unreachable() -> None:
    client = redis.Redis(
        host="127.0.0.1", port=_closed_port(), socket_connect_timeout=1, retry=Retry(NoBackoff(), 0)
    )
    store = RedisDuplicateStore(client)

    with pytest.raises(DuplicateStoreError, match="evt_1") as caught:
        store.add("mitxonline:evt_1")

    assert isinstance(caught.value.__cause__, redis.ConnectionError)


# Configuration


def test_trusted_system_repr_hides_secrets(secret: str) -> None:
    text = repr(TrustedSystem(KEY, (secret,)))

    assert KEY not in text
    assert secret not in text


def test_envelope_repr_hides_key(receiver: Receiver, secret: str) -> None:
    body = encode(envelope_dict())

    assert KEY not in repr(receiver.verify(body, signed_headers(secret, body)))


def test_trusted_system_bad_secret() -> None:
    with pytest.raises(ValueError, match="Secret 2 of a trusted system") as caught:
        TrustedSystem(KEY, (signing.generate_secret(), "whsec_tooshort"))

    assert "tooshort" not in str(caught.value)


def test_trusted_system_one_str(secret: str) -> None:
    with pytest.raises(TypeError, match="not one str"):
        TrustedSystem(KEY, secret)  # type: ignore[arg-type]


def test_trusted_system_empty_key() -> None:
    with pytest.raises(ValueError, match="non-empty"):
        TrustedSystem("")


def test_trusted_system_list_secrets(secret: str) -> None:
    system = TrustedSystem(KEY, [secret])  # type: ignore[arg-type]

    assert system.secrets == (secret,)


def test_receiver_needs_trusted() -> None:
    with pytest.raises(ValueError, match="at least one trusted system"):
        Receiver({})


def test_receiver_rejects_plain_key() -> None:
    with pytest.raises(TypeError, match="must be a TrustedSystem"):
        Receiver({SLUG: KEY})  # type: ignore[dict-item]


@pytest.mark.parametrize("tolerance", [0, -5])
def test_receiver_rejects_tolerance(tolerance: int) -> None:
    with pytest.raises(ValueError, match="tolerance_seconds"):
        Receiver({SLUG: TrustedSystem(KEY)}, tolerance_seconds=tolerance)


def test_from_env_reads_variables(secret: str) -> None:
    other_secret = signing.generate_secret()
    environ = {
        "UE_FLOW_TRUSTED_SLUGS": "mitxonline, mit-learn",
        "UE_FLOW_TRUSTED_MITXONLINE_KEY": KEY,
        "UE_FLOW_TRUSTED_MITXONLINE_SECRETS": f"{secret} {other_secret}",
        "UE_FLOW_TRUSTED_MIT_LEARN_KEY": UNSIGNED_KEY,
    }
    receiver = Receiver.from_env(environ=environ)
    signed = encode(envelope_dict())
    unsigned = encode(envelope_dict(slug="mit-learn", key=UNSIGNED_KEY))
    headers = signed_headers(other_secret, signed, timestamp=int(time.time()))

    assert receiver.verify(signed, headers).system_slug == SLUG
    assert receiver.verify(unsigned, {}).system_slug == "mit-learn"
    with pytest.raises(Unauthorized, match="header is missing"):
        receiver.verify(signed, {})


def test_from_env_explicit_slugs() -> None:
    environ = {"UE_FLOW_TRUSTED_LEARN_KEY": UNSIGNED_KEY}
    receiver = Receiver.from_env(["learn"], environ=environ)
    body = encode(envelope_dict(slug="learn", key=UNSIGNED_KEY))

    assert receiver.verify(body, {}).system_slug == "learn"


def test_from_env_missing_key() -> None:
    with pytest.raises(ValueError, match="UE_FLOW_TRUSTED_LEARN_KEY is not set"):
        Receiver.from_env(["learn"], environ={})


def test_from_env_rejects_one_str() -> None:
    with pytest.raises(TypeError, match="not one str"):
        Receiver.from_env("learn", environ={"UE_FLOW_TRUSTED_LEARN_KEY": UNSIGNED_KEY})


def test_from_env_missing_slugs() -> None:
    with pytest.raises(ValueError, match="UE_FLOW_TRUSTED_SLUGS is not set"):
        Receiver.from_env(environ={})


def test_from_env_bad_secret() -> None:
    environ = {
        "UE_FLOW_TRUSTED_LEARN_KEY": UNSIGNED_KEY,
        "UE_FLOW_TRUSTED_LEARN_SECRETS": "whsec_c2hvcnQ=",
    }

    with pytest.raises(ValueError, match="UE_FLOW_TRUSTED_LEARN_SECRETS: Secret 1") as caught:
        Receiver.from_env(["learn"], environ=environ)

    assert "c2hvcnQ" not in str(caught.value)


# The package


def test_all_complete() -> None:
    public = {
        name
        for name, value in vars(ue_flow.receiver).items()
        if not name.startswith("_") and isinstance(value, type)
    }

    assert public <= set(ue_flow.receiver.__all__)
    assert all(hasattr(ue_flow.receiver, name) for name in ue_flow.receiver.__all__)


def test_import_without_django() -> None:
    code = "import sys, ue_flow.receiver; print('django' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )

    assert result.stdout.strip() == "False"
