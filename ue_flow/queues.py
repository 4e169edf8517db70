"""Queue names: one for routing, one per system for its deliveries."""

from __future__ import annotations

#: The queue of events waiting to be routed to their systems.
ROUTE_QUEUE = "events"


def delivery_queue(slug: str) -> str:
    """Return the queue of one system's deliveries, so that `-Q` can pick systems."""
    return f"deliver.{slug}"
