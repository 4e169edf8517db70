"""The envelope: the five-key JSON body of every delivery."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from .jsontext import compact_json

#: The keys of every envelope, in the order they are sent. Receivers built
#: like Unified Ecommerce's own code fail on any other top-level key.
ENVELOPE_KEYS = ("system_slug", "system_key", "type", "user", "data")


def envelope_body(
    slug: str, key: str, wire_type: str, user: Mapping[str, Any], data: Mapping[str, Any]
) -> bytes:
    """Serialize the envelope to the exact bytes that are signed and sent.

    The key is passed in at send time, so it never sits in a broker message.
    """
    return envelope_from_payload(slug, key, wire_type, payload_json(user, data))


def payload_json(user: Any, data: Any) -> str:
    """Serialize ``{"user": user, "data": data}`` as envelopes and delivery records write it."""
    return compact_json({"user": user, "data": data})


def envelope_from_payload(slug: str, key: str, wire_type: str, payload: str) -> bytes:
    """Serialize the envelope around ``payload``, the output of ``payload_json``.

    The payload, the bulk of the body, is serialized once per delivery and
    also kept in its record; the envelope's keys keep ENVELOPE_KEYS' order.
    """
    head = compact_json({"system_slug": slug, "system_key": key, "type": wire_type})
    return f"{head[:-1]},{payload[1:]}".encode()


def redact_key(body: bytes, key: str) -> bytes:
    """Return ``body`` with the system key replaced, for display and storage."""
    envelope = json.loads(body)
    if envelope.get("system_key") == key:
        envelope["system_key"] = "***"
    return json.dumps(envelope, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
