"""Property tests: the spliced envelope equals its five keys serialized at once, and verifies."""

from __future__ import annotations

import json
import time
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from standardwebhooks.webhooks import Webhook

from ue_flow.envelope import envelope_body, envelope_from_payload, payload_json
from ue_flow.jsontext import compact_json
from ue_flow.signing import generate_secret, signature_header

# Every plane of Unicode but the lone surrogates, which payload
# normalization rejects because UTF-8 cannot encode them.
texts = st.text(st.characters(exclude_categories=["Cs"]), max_size=30)

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**200), max_value=2**200)
    | st.floats(allow_nan=False, allow_infinity=False)
    | texts
)

#: JSON values as message decoding yields them: dicts, lists and scalars.
json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(texts, children, max_size=4),
    max_leaves=25,
)

json_objects = st.dictionaries(texts, json_values, max_size=5)


def envelope(slug: str, key: str, wire_type: str, user: Any, data: Any) -> dict[str, Any]:
    return {"system_slug": slug, "system_key": key, "type": wire_type, "user": user, "data": data}


def reference_body(slug: str, key: str, wire_type: str, user: Any, data: Any) -> bytes:
    return compact_json(envelope(slug, key, wire_type, user, data)).encode("utf-8")


def standard_body(slug: str, key: str, wire_type: str, user: Any, data: Any) -> bytes:
    whole = envelope(slug, key, wire_type, user, data)
    return json.dumps(whole, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


@settings(max_examples=500)
@given(slug=texts, key=texts, wire_type=texts, user=json_objects, data=json_objects)
def test_splice_equals_json_dumps(
    slug: str, key: str, wire_type: str, user: dict[str, Any], data: dict[str, Any]
) -> None:
    spliced = envelope_from_payload(slug, key, wire_type, payload_json(user, data))

    assert spliced == reference_body(slug, key, wire_type, user, data)
    assert json.loads(spliced) == json.loads(standard_body(slug, key, wire_type, user, data))
    assert envelope_body(slug, key, wire_type, user, data) == spliced
    assert list(json.loads(spliced)) == ["system_slug", "system_key", "type", "user", "data"]


@settings(max_examples=200)
@given(user=json_values, data=json_values)
def test_splice_of_non_object_payload(user: Any, data: Any) -> None:
    # Message arguments are whatever JSON the broker message holds.
    spliced = envelope_from_payload("learn", "k", "postsale", payload_json(user, data))

    assert spliced == reference_body("learn", "k", "postsale", user, data)


@settings(max_examples=100, deadline=None)
@given(
    user=json_objects,
    data=json_objects,
    event_id=st.from_regex(r"evt_[0-9a-f]{32}", fullmatch=True),
)
def test_spliced_body_verifies(user: dict[str, Any], data: dict[str, Any], event_id: str) -> None:
    secret = generate_secret()
    body = envelope_from_payload("learn", "key-ü", "postsale", payload_json(user, data))
    timestamp = int(time.time())
    headers = {
        "webhook-id": event_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature_header([secret], event_id, timestamp, body),
    }

    verified = Webhook(secret).verify(body, headers)

    assert verified == {
        "system_slug": "learn",
        "system_key": "key-ü",
        "type": "postsale",
        "user": user,
        "data": data,
    }
