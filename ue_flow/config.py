"""The configuration model: frozen dataclasses built by the loader."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

#: Milliseconds allowed to open a connection when events.yaml sets no connect_timeout.
DEFAULT_CONNECT_TIMEOUT_MS = 3_000

#: Milliseconds allowed between bytes of the response when events.yaml sets no read_timeout.
DEFAULT_READ_TIMEOUT_MS = 10_000

#: Close to the Standard Webhooks example: 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h.
DEFAULT_RETRY_SCHEDULE_MS = (
    5_000,
    300_000,
    1_800_000,
    7_200_000,
    18_000_000,
    36_000_000,
    36_000_000,
)

#: Each retry wait is moved at random by up to this fraction so that
#: deliveries that failed together do not retry together.
DEFAULT_JITTER = 0.1

#: Retries of an exponential backoff when events.yaml sets none.
DEFAULT_BACKOFF_RETRIES = 10

#: A delivery still failing three days after its event is dead, in milliseconds.
DEFAULT_MAX_AGE_MS = 3 * 86_400_000

#: The maximum wait a Retry-After header can impose, in milliseconds.
DEFAULT_RETRY_AFTER_CAP_MS = 3_600_000

#: Deliveries to one system in flight at once, across all workers, so that a
#: hanging system cannot take every worker thread. Size it below the total
#: of worker threads, and above what one healthy system needs.
DEFAULT_MAX_IN_FLIGHT = 8

#: Failures in a row that open a system's circuit.
DEFAULT_FAILURE_THRESHOLD = 5

#: How long an open circuit pauses a system's deliveries, in milliseconds.
DEFAULT_COOLDOWN_MS = 30_000

#: A system failing continuously for five days is disabled, in milliseconds.
DEFAULT_DISABLE_AFTER_MS = 5 * 86_400_000

#: Dead letters are kept for 14 days, in milliseconds.
DEFAULT_DEAD_LETTER_RETENTION_MS = 14 * 86_400_000

#: Attempts and delivery records are kept for 7 days, in milliseconds.
DEFAULT_ATTEMPT_RETENTION_MS = 7 * 86_400_000

#: The attempt log keeps at most about this many attempts.
DEFAULT_MAX_ATTEMPTS_LOGGED = 100_000

#: A worker silent for 15 s is dead, in milliseconds. Busy workers still
#: send heartbeats from their scheduler thread.
DEFAULT_HEARTBEAT_TIMEOUT_MS = 15_000

#: How often workers look for dead workers' messages, in milliseconds.
DEFAULT_SWEEP_INTERVAL_MS = 5_000

#: How often workers move due retries to their queues, in milliseconds.
DEFAULT_SCHEDULER_INTERVAL_MS = 250

#: The maximum duration a setting accepts, a year in milliseconds. Longer
#: ones are mistakes, and they overflow the timers they reach.
MAX_DURATION_MS = 365 * 86_400_000

_DURATION = re.compile(r"([0-9]+)(ms|s|m|h|d)")
_UNIT_MS = {"ms": 1, "s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}


def parse_duration(text: str) -> int:
    """Convert a duration such as ``5s`` or ``2h`` to integer milliseconds."""
    match = _DURATION.fullmatch(text)
    if match is None:
        message = (
            f"invalid duration {text!r}: use an integer and a unit (ms, s, m, h, d), such as 5s"
        )
        raise ValueError(message)

    milliseconds = int(match.group(1)) * _UNIT_MS[match.group(2)]
    if milliseconds > MAX_DURATION_MS:
        message = f"invalid duration {text!r}: the longest allowed is 365d"
        raise ValueError(message)
    return milliseconds


@dataclass(frozen=True)
class RetryPolicy:
    """When failed deliveries are retried. Durations are integer milliseconds.

    The wait before retry ``n`` (0-based) is ``schedule_ms[n]`` when a
    schedule is set; otherwise ``base_ms * factor ** n`` capped at
    ``cap_ms``, for ``retries`` retries. Either way each wait moves at
    random by up to ``jitter`` times itself. A delivery older than
    ``max_age_ms`` is not retried again, and a response whose status is in
    ``give_up_on`` is not retried at all.
    """

    schedule_ms: tuple[int, ...] = DEFAULT_RETRY_SCHEDULE_MS
    jitter: float = DEFAULT_JITTER
    base_ms: int | None = None
    factor: float = 2.0
    cap_ms: int | None = None
    retries: int | None = None
    max_age_ms: int = DEFAULT_MAX_AGE_MS
    retry_after_cap_ms: int = DEFAULT_RETRY_AFTER_CAP_MS
    give_up_on: frozenset[int] = frozenset()

    @property
    def max_retries(self) -> int:
        """The number of retries after the first attempt."""
        if self.base_ms is not None:
            return self.retries if self.retries is not None else DEFAULT_BACKOFF_RETRIES
        return len(self.schedule_ms)

    def wait_ms(self, retries: int) -> int:
        """Return the wait before retry number ``retries + 1``, without jitter."""
        if self.base_ms is not None:
            wait = self.base_ms * self.factor**retries
            return int(min(wait, self.cap_ms) if self.cap_ms is not None else wait)
        return self.schedule_ms[min(retries, len(self.schedule_ms) - 1)]


@dataclass(frozen=True)
class CircuitBreaker:
    """When a failing system's deliveries pause. Durations are integer milliseconds.

    After ``failure_threshold`` failures in a row the circuit opens for
    ``cooldown_ms``; then one delivery probes the system, and a success
    closes the circuit. Deliveries that wait on an open circuit keep their
    attempts.
    """

    failure_threshold: int = DEFAULT_FAILURE_THRESHOLD
    cooldown_ms: int = DEFAULT_COOLDOWN_MS


@dataclass(frozen=True)
class DeliverySettings:
    """Settings of the deliveries to one system. Durations are integer milliseconds."""

    connect_timeout_ms: int = DEFAULT_CONNECT_TIMEOUT_MS
    read_timeout_ms: int = DEFAULT_READ_TIMEOUT_MS
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT
    circuit_breaker: CircuitBreaker = field(default_factory=CircuitBreaker)
    disable_after_ms: int = DEFAULT_DISABLE_AFTER_MS


@dataclass(frozen=True)
class Retention:
    """How long delivery records are kept. Durations are integer milliseconds."""

    dead_letters_ms: int = DEFAULT_DEAD_LETTER_RETENTION_MS
    attempts_ms: int = DEFAULT_ATTEMPT_RETENTION_MS
    max_attempts: int = DEFAULT_MAX_ATTEMPTS_LOGGED


@dataclass(frozen=True)
class WorkerSettings:
    """Settings of how workers find work. Durations are integer milliseconds.

    A worker that sends no heartbeat for ``heartbeat_timeout_ms`` is dead,
    and the next sweep, every ``sweep_interval_ms``, puts its unfinished
    messages back on their queues. Retries that are due are moved to
    their queues every ``scheduler_interval_ms``. With ``metrics``, each
    worker exports Prometheus metrics through Dramatiq's middleware.
    """

    heartbeat_timeout_ms: int = DEFAULT_HEARTBEAT_TIMEOUT_MS
    sweep_interval_ms: int = DEFAULT_SWEEP_INTERVAL_MS
    scheduler_interval_ms: int = DEFAULT_SCHEDULER_INTERVAL_MS
    metrics: bool = True


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
class HookBinding:
    """The mapping from the arguments of an event's pluggy hook to its payload.

    ``arguments`` are the hook's argument names, in order. ``user`` and
    ``data`` are each an argument name, optionally followed by dotted keys
    into that argument's mapping, such as ``order.data``.
    """

    arguments: tuple[str, ...] = ("user", "data")
    user: str = "user"
    data: str = "data"


@dataclass(frozen=True)
class EventType:
    """One event Unified Ecommerce raises."""

    name: str
    type: str
    description: str
    hookspec: str
    schema_path: Path
    routing: Routing
    hook: HookBinding = field(default_factory=HookBinding)


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
    #: During a rotation, the variable holding the previous signing secret,
    #: which also signs every delivery until ``previous_secret_expires_ms``
    #: (Unix epoch milliseconds).
    previous_secret_env: str | None = None
    previous_secret_expires_ms: int | None = None
    ue_id: int | None = None
    allow_http: bool = False
    allow_private_network: bool = False
    delivery: DeliverySettings = field(default_factory=DeliverySettings)
    #: Extra HTTP headers sent with every delivery, as (name, value) pairs
    #: already rendered from their templates.
    headers: tuple[tuple[str, str], ...] = ()
    #: The line of the system's entry in systems.yaml, for error messages.
    line: int = field(default=0, compare=False)


@dataclass(frozen=True)
class Config:
    """A loaded, validated configuration directory."""

    directory: Path
    events: Mapping[str, EventType]
    systems: Mapping[str, System]
    delivery: DeliverySettings
    retention: Retention
    workers: WorkerSettings
    user_schema_path: Path
    examples_dir: Path

    def subscribers(self, event_name: str) -> list[System]:
        """Return the systems subscribed to ``event_name``, in file order."""
        return [system for system in self.systems.values() if event_name in system.events]
