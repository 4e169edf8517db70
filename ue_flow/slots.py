"""In-flight slots taken from Redis and reused by one worker process.

Taking a slot is a script call to Redis that also checks the system's
disabled flag and circuit. A process that just delivered to a healthy
system keeps the slot for its next delivery there, for at most REUSE_MS.
A busy worker then pays that round trip about once a second per slot
rather than once per delivery. The slot stays counted in Redis all along,
so the in-flight limit applies across every worker.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from .config import DeliverySettings
from .state.systems import ADMITTED, Admission, SystemStates

#: How long a process reuses a slot taken from Redis, in milliseconds. Taking
#: it again checks the disabled flag and the circuit, so a change to them
#: reaches every worker within this time.
REUSE_MS = 1_000

#: A kept slot that no delivery reused for this long is given back to Redis,
#: in milliseconds, so that other processes can take it.
IDLE_MS = 100


@dataclass(frozen=True)
class _KeptSlot:
    """A slot waiting in this process for its next delivery, kept since ``kept_ms``."""

    admission: Admission
    kept_ms: int


class SlotPool:
    """Hands out in-flight slots, reusing this process's recent ones before asking Redis."""

    def __init__(self, states: SystemStates) -> None:
        self.states = states
        self._lock = threading.Lock()
        self._kept: dict[str, list[_KeptSlot]] = {}
        self._spent: list[tuple[str, str]] = []

    def admit(self, slug: str, settings: DeliverySettings, now_ms: int) -> Admission:
        """Return a fresh kept slot of ``slug``, else what ``SystemStates.admit`` decides."""
        with self._lock:
            kept = self._kept.get(slug)
            while kept:
                admission = kept.pop().admission
                if now_ms - admission.taken_ms < REUSE_MS:
                    return admission
                self._spent.append((slug, admission.token))

        return self.states.admit(slug, settings, now_ms)

    def keep(self, slug: str, admission: Admission, now_ms: int) -> None:
        """Keep the slot of a delivery that succeeded for the next delivery to ``slug``."""
        with self._lock:
            if admission.verdict == ADMITTED and now_ms - admission.taken_ms < REUSE_MS:
                self._kept.setdefault(slug, []).append(_KeptSlot(admission, now_ms))
            else:
                self._spent.append((slug, admission.token))

    def forget(self, slug: str) -> None:
        """Stop reusing the kept slots of ``slug``, as after a failure.

        Its next deliveries then pass the circuit's check in Redis.
        """
        with self._lock:
            for kept in self._kept.pop(slug, []):
                self._spent.append((slug, kept.admission.token))

    def take_spent(self, now_ms: int) -> list[tuple[str, str]]:
        """Return and forget the slots to give back to Redis: stale, idle or forgotten ones."""
        with self._lock:
            for slug, kept in self._kept.items():
                fresh = [each for each in kept if now_ms - each.kept_ms < IDLE_MS]
                if len(fresh) < len(kept):
                    self._spent.extend(
                        (slug, each.admission.token)
                        for each in kept
                        if now_ms - each.kept_ms >= IDLE_MS
                    )
                    self._kept[slug] = fresh
            spent, self._spent = self._spent, []
        return spent

    def take_all(self) -> list[tuple[str, str]]:
        """Return and forget every kept slot, as at shutdown."""
        with self._lock:
            for slug in list(self._kept):
                self._spent.extend((slug, kept.admission.token) for kept in self._kept.pop(slug))
            spent, self._spent = self._spent, []
        return spent
