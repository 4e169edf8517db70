"""ue-flow: Unified Ecommerce events delivered as webhooks by Dramatiq workers.

``dramatiq ue_flow`` imports this package as its broker module. Only in
that case does the import load the configuration, declare the actors and
set Dramatiq's global broker; applications that import ue_flow to emit or
to verify deliveries get no side effects.
"""

from __future__ import annotations

import sys
from typing import Any

__version__ = "0.1.0"

from .errors import BrokerError, ConfigError, Error, PayloadError

__all__ = [
    "BrokerError",
    "ConfigError",
    "Error",
    "PayloadError",
    "__version__",
    "emit",
]


def emit(
    event_name: str,
    *,
    user: Any,
    data: Any,
    systems: Any = None,
    idempotency_key: str | None = None,
) -> str:
    """Validate an event, queue it for delivery and return its event id.

    Raises ``PayloadError`` (a ValueError) naming the event, JSON path and
    rule when the payload is invalid, and ``BrokerError`` when the broker
    cannot take it; nothing is queued in either case. A repeated
    ``idempotency_key`` within 24 hours returns the first event's id and
    queues nothing.
    """
    from .engine import emit as emit_with_default_engine

    return emit_with_default_engine(
        event_name, user=user, data=data, systems=systems, idempotency_key=idempotency_key
    )


if "dramatiq.cli" in sys.modules:
    from .worker import boot_worker

    boot_worker()
