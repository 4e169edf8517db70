"""The envelope: the five-key JSON body of every delivery."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

#: The keys of every envelope, in the order they are sent. Receivers built
#: like Unified Ecommerce's own code fail on any other top-level key.
ENVELOPE_KEYS = ("system_slug", "system_key", "type", "user", "data")


def envelope_body(
    slug: str, key: str, wire_type: str, user: Mapping[str, Any], data: Mapping[str, Any]
) -> bytes:
    """Serialize the envelope to the exact bytes that are signed and sent.

    The key is passed in at send time, so it never sits in a broker message.
    """
    envelope = {
        "system_slug": slug,
        "system_key": key,
        "type": wire_type,
        "user": user,
        "data": data,
    }
    return json.dumps(envelope, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def redact_key(body: bytes, key: str) -> bytes:
    """Return ``body`` with the system key replaced, for display and storage."""
    envelope = json.loads(body)
    if envelope.get("system_key") == key:
        envelope["system_key"] = "***"
    return json.dumps(envelope, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
