"""Django integration: settings, and an emit that queues only when the transaction commits.

Settings, each read from ``django.conf.settings`` when set there, else
from the environment variable of the same name:

- ``UE_FLOW_CONFIG``: the configuration directory (default ``./config``).
- ``UE_FLOW_BROKER_URL``: the broker URL (default ``redis://localhost:6379/0``).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Mapping
from typing import Any

# Django ships no type hints.
from django.conf import settings  # type: ignore[import-untyped]
from django.db import transaction  # type: ignore[import-untyped]

from . import state
from .broker import create_broker, namespace
from .engine import Engine
from .loader import load_config
from .state import StateStores

_engine: Engine | None = None
_engine_lock = threading.Lock()


def setting(name: str) -> str | None:
    """Return a ue-flow setting from Django's settings, else the environment, else None."""
    value = getattr(settings, name, None)
    if value is not None:
        return str(value)

    return os.environ.get(name) or None


def engine() -> Engine:
    """Return the engine built from the settings, building it on first use."""
    global _engine
    if _engine is None:
        with _engine_lock:
            if _engine is None:
                _engine = _build_engine()
    return _engine


def _build_engine() -> Engine:
    # Engine.from_environment reads only the environment, so the engine is
    # assembled here from the Django settings.
    loaded = load_config(setting("UE_FLOW_CONFIG"))
    url = setting("UE_FLOW_BROKER_URL")
    if url is not None and url.startswith(("redis://", "rediss://", "unix://")):
        return Engine.for_redis(loaded, url, namespace())

    broker = create_broker(url, heartbeat_timeout_ms=loaded.config.workers.heartbeat_timeout_ms)
    return Engine(loaded, broker, StateStores.open(state.connect(), namespace(), loaded.config))


def use_engine(custom: Engine | None) -> None:
    """Make ``emit_on_commit`` use ``custom``; None rebuilds from the settings on next use."""
    global _engine
    with _engine_lock:
        _engine = custom


def emit_on_commit(
    event_name: str,
    *,
    user: Mapping[str, Any],
    data: Mapping[str, Any],
    systems: Iterable[str] | None = None,
    idempotency_key: str | None = None,
    using: str | None = None,
) -> None:
    """Validate an event now and queue it when the current transaction commits.

    Raises PayloadError at once when the payload is invalid. A rolled-back
    transaction queues nothing. Outside a transaction (autocommit) the event
    is queued immediately, as ``transaction.on_commit`` runs the callback at
    once. ``using`` names the database connection, as in Django's
    transaction API. The event id is not returned because it does not exist
    until the commit; pass ``idempotency_key`` to recognize the event.
    """
    current = engine()
    selected = list(systems) if systems is not None else None
    payload = current.validate(event_name, user=user, data=data, systems=selected)

    def queue() -> None:
        current.emit(
            event_name,
            user=payload["user"],
            data=payload["data"],
            systems=selected,
            idempotency_key=idempotency_key,
        )

    transaction.on_commit(queue, using=using)
