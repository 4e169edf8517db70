"""The configuration model: frozen dataclasses built by the loader."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

#: Milliseconds allowed to open a connection when events.yaml sets no connect_timeout.
DEFAULT_CONNECT_TIMEOUT_MS = 3_000

#: Milliseconds allowed between bytes of the answer when events.yaml sets no read_timeout.
DEFAULT_READ_TIMEOUT_MS = 10_000

#: Close to the Standard Webhooks example: 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h.
DEFAULT_RETRY_SCHEDULE_MS = (5_000, 300_000, 1_800_000, 7_200_000, 18_000_000, 36_000_000, 36_000_000)

#: Each retry wait is moved at random by up to this fraction so that
#: deliveries that failed together do not retry together.
DEFAULT_JITTER = 0.1

_DURATION = re.compile(r"([0-9]+)(ms|s|m|h|d)")
_UNIT_MS = {"ms": 1, "s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}


def parse_duration(text: str) -> int:
    """Convert a duration such as ``5s`` or ``2h`` to integer milliseconds."""
    match = _DURATION.fullmatch(text)
    if match is None:
        message = f"invalid duration {text!r}: use an integer and a unit (ms, s, m, h, d), such as 5s"
        raise ValueError(message)

    return int(match.group(1)) * _UNIT_MS[match.group(2)]


@dataclass(frozen=True)
class RetryPolicy:
    """When failed deliveries are retried. Durations are integer milliseconds."""

    schedule_ms: tuple[int, ...] = DEFAULT_RETRY_SCHEDULE_MS
    jitter: float = DEFAULT_JITTER


@dataclass(frozen=True)
class DeliverySettings:
    """How deliveries are sent. Durations are integer milliseconds."""

    connect_timeout_ms: int = DEFAULT_CONNECT_TIMEOUT_MS
    read_timeout_ms: int = DEFAULT_READ_TIMEOUT_MS
    retry: RetryPolicy = field(default_factory=RetryPolicy)


@dataclass(frozen=True)
class RelatedItems:
    """An array whose entries refer to routed items by id and follow them."""

    items: str
    item_id: str
    required: bool = False


@dataclass(frozen=True)
class Routing:
    """Which systems receive an event. Pointers are JSON pointers (RFC 6901).

    With ``items`` set, ``owner`` is relative to each item and each system
    receives only its own items; without it, ``owner`` is relative to the
    payload and names the single owner.
    """

    owner: str
    items: str | None = None
    related: tuple[RelatedItems, ...] = ()


@dataclass(frozen=True)
class EventType:
    """One event Unified Ecommerce raises."""

    name: str
    type: str
    description: str
    hookspec: str
    schema_path: Path
    routing: Routing


@dataclass(frozen=True)
class System:
    """One integrated system and its subscriptions.

    ``url`` is already rendered from its template. Keys and secrets are not
    stored here, only the names of the environment variables holding them.
    """

    slug: str
    name: str
    url: str
    events: frozenset[str]
    key_env: str
    secret_env: str | None = None
    ue_id: int | None = None
    allow_http: bool = False
    allow_private_network: bool = False
    #: The line of the system's entry in systems.yaml, for error messages.
    line: int = field(default=0, compare=False)


@dataclass(frozen=True)
class Config:
    """A loaded, validated configuration directory."""

    directory: Path
    events: Mapping[str, EventType]
    systems: Mapping[str, System]
    delivery: DeliverySettings
    user_schema_path: Path
    examples_dir: Path

    def subscribers(self, event_name: str) -> list[System]:
        """Return the systems subscribed to ``event_name``, in file order."""
        return [system for system in self.systems.values() if event_name in system.events]
