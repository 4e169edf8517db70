"""Per-process share of worker threads for each system.

The in-flight limit in Redis bounds one system's deliveries across all
workers, but each worker process fetches messages for every queue into
its own work queue. Without a cap per process, every thread of one
process can wait on a hanging system while that process has healthy
systems' messages it cannot start. Here each system may use at most half
of a process's threads whenever more than one system is configured.
"""

from __future__ import annotations

import threading

import dramatiq
from dramatiq.middleware import Middleware

#: How long a thread waits for its system's share to free up, in seconds. A
#: healthy system frees a slot within milliseconds. Otherwise the delivery
#: goes back to its queue, so that the thread can take another message.
SHARE_WAIT_S = 0.005


class ProcessSlots:
    """Counts each system's deliveries in flight in this process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # One condition per system on the shared lock, so that a freed slot
        # wakes one thread waiting for that system and no other.
        self._freed: dict[str, threading.Condition] = {}
        self._in_flight: dict[str, int] = {}
        #: The maximum deliveries to one system at once in this process; None is no cap.
        self.limit: int | None = None

    def acquire(self, slug: str, timeout_s: float = SHARE_WAIT_S) -> bool:
        """Take a slot for ``slug``, waiting up to ``timeout_s``; False when none freed."""
        with self._lock:
            if not self._has_room(slug):
                freed = self._freed.get(slug)
                if freed is None:
                    freed = self._freed[slug] = threading.Condition(self._lock)
                if not freed.wait_for(lambda: self._has_room(slug), timeout=timeout_s):
                    return False
            self._in_flight[slug] = self._in_flight.get(slug, 0) + 1
            return True

    def _has_room(self, slug: str) -> bool:
        return self.limit is None or self._in_flight.get(slug, 0) < self.limit

    def release(self, slug: str) -> None:
        """Give back a slot taken with ``acquire``."""
        with self._lock:
            self._in_flight[slug] -= 1
            freed = self._freed.get(slug)
            if freed is not None:
                freed.notify()


class ThreadShare(Middleware):
    """Sizes a ProcessSlots from the worker's thread count when the worker boots.

    ``system_count`` is the number of systems the worker delivers to; with
    more than one, each may use half of the threads.
    """

    def __init__(self, slots: ProcessSlots, system_count: int) -> None:
        self.slots = slots
        self.system_count = system_count

    def after_worker_boot(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        if self.system_count > 1:
            self.slots.limit = max(1, worker.worker_threads // 2)
