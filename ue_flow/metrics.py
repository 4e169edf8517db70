"""Prometheus metrics of deliveries, exported with Dramatiq's Prometheus middleware.

Dramatiq's middleware serves every worker process's metrics from one
exposition server (port 9191 unless ``dramatiq_prom_port`` sets another)
using prometheus_client's multiprocess mode. The delivery metrics here
join the same registry, so they must be created after the multiprocess
directory is set, which is at process boot.
"""

from __future__ import annotations

import os
from typing import Any

import dramatiq
from dramatiq.middleware import Middleware

#: Delivery outcomes counted by ``ue_flow_deliveries_total``.
DELIVERED = "delivered"
FAILED = "failed"
GIVEN_UP = "given_up"

#: Buckets of the emit-to-delivered latency histogram, in seconds: from a
#: healthy system's few milliseconds to the hours of a retry schedule.
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800, 7200, 36000)

_deliveries: Any = None
_latency: Any = None
_children: dict[tuple[int, tuple[str, ...]], Any] = {}


class DeliveryMetrics(Middleware):
    """Creates the delivery metrics in each worker process at boot."""

    def after_process_boot(self, broker: dramatiq.Broker) -> None:
        global _deliveries, _latency
        from dramatiq.middleware.prometheus import DB_PATH

        # Dramatiq's Prometheus middleware sets this in the same hook, but
        # hooks run in reverse order, so this one may run first.
        os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", DB_PATH)
        import prometheus_client

        _children.clear()
        _deliveries = prometheus_client.Counter(
            "ue_flow_deliveries_total",
            "Delivery attempts by system and outcome.",
            ["system", "outcome"],
        )
        _latency = prometheus_client.Histogram(
            "ue_flow_delivery_latency_seconds",
            "Time from emit to a 2xx answer.",
            ["system"],
            buckets=LATENCY_BUCKETS,
        )


def count_delivery(system: str, outcome: str) -> None:
    """Count one attempt's outcome; does nothing unless metrics are enabled."""
    if _deliveries is not None:
        _child(_deliveries, system, outcome).inc()


def observe_latency(system: str, seconds: float) -> None:
    """Record one emit-to-delivered latency; does nothing unless metrics are enabled."""
    if _latency is not None:
        _child(_latency, system).observe(seconds)


def _child(metric: Any, *labels: str) -> Any:
    # labels() takes a lock and builds a key on every call; the children
    # are few, one per system and outcome, so they are kept here.
    key = (id(metric), labels)
    child = _children.get(key)
    if child is None:
        child = _children[key] = metric.labels(*labels)
    return child
