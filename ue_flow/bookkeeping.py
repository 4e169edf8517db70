"""Bookkeeping of successful deliveries, written to Redis in batches.

A delivery that succeeded has nothing left to decide, so its attempt, its
record, its system's last success and the in-flight slots this process
gives back need not cost the worker thread a round trip each. A thread of
each worker process writes them every FLUSH_INTERVAL_S in one pipeline.
A worker killed outright loses the bookkeeping of its last interval, never
a delivery: the message was acknowledged only after the HTTP attempt.
"""

from __future__ import annotations

import threading
import time

import dramatiq
import redis
import structlog
from dramatiq.middleware import Middleware

from .slots import SlotPool
from .state import StateStores
from .state.attempts import Delivered

#: How often the writes are sent, in seconds.
FLUSH_INTERVAL_S = 0.02

#: Writes kept while Redis cannot take them; older ones are dropped beyond it.
MAX_PENDING = 100_000

logger = structlog.get_logger("ue_flow")


def _now_ms() -> int:
    return int(time.time() * 1000)


class Bookkeeper(Middleware):
    """Collects writes and sends them in batches from a thread started with the worker.

    Outside a worker, as in tests and commands, each write is sent at once.
    """

    def __init__(self, stores: StateStores, slots: SlotPool) -> None:
        self.stores = stores
        self.slots = slots
        self._lock = threading.Lock()
        self._writes: list[Delivered] = []
        self._successes: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        #: True in a worker, where writes wait for the next batch.
        self.batching = False

    @property
    def pending(self) -> int:
        """The number of deliveries whose bookkeeping waits for the next batch."""
        with self._lock:
            return len(self._writes)

    def add(self, delivered: Delivered) -> None:
        """Queue the bookkeeping of one successful delivery."""
        system = delivered.record.system
        if not self.batching:
            now_ms = _now_ms()
            self._write([delivered], {system: now_ms}, self.slots.take_spent(now_ms))
            return

        with self._lock:
            self._writes.append(delivered)
            self._successes[system] = _now_ms()

    def after_worker_boot(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        self._stop.clear()
        self.batching = True
        self._thread = threading.Thread(target=self._run, name="ue-flow-bookkeeping", daemon=True)
        self._thread.start()

    def after_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        # After the worker threads have stopped, so that their last writes go too.
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._thread = None
        self.batching = False
        self.flush(give_back_all=True)

    def _run(self) -> None:
        while not self._stop.wait(FLUSH_INTERVAL_S):
            try:
                self.flush()
            except Exception:
                # The thread must outlive an unexpected error, or the
                # bookkeeping of every later delivery would pile up here.
                logger.exception("bookkeeping.flush_crashed")

    def flush(self, *, give_back_all: bool = False) -> None:
        """Send the queued writes and give back the slots this process no longer keeps."""
        with self._lock:
            writes, self._writes = self._writes, []
            successes, self._successes = self._successes, {}
        spent = self.slots.take_all() if give_back_all else self.slots.take_spent(_now_ms())
        if not (writes or successes or spent):
            return

        try:
            self._write(writes, successes, spent)
        except redis.RedisError as error:
            # Slots need no retry: their leases expire in Redis by themselves.
            logger.warning(
                "bookkeeping.failed",
                error=f"{type(error).__name__}: {error}",
                writes=len(writes),
                systems=sorted(successes),
            )
            self._requeue(writes, successes)

    def _write(
        self,
        writes: list[Delivered],
        successes: dict[str, int],
        spent: list[tuple[str, str]],
    ) -> None:
        with self.stores.client.pipeline(transaction=False) as pipe:
            self.stores.attempts.log_delivered(writes, pipe)
            for slug, now_ms in successes.items():
                self.stores.systems.record_success(slug, now_ms, pipe)
            for slug, token in spent:
                self.stores.systems.release_slot(slug, token, pipe)
            pipe.execute()

    def _requeue(self, writes: list[Delivered], successes: dict[str, int]) -> None:
        with self._lock:
            self._writes[:0] = writes
            dropped = len(self._writes) - MAX_PENDING
            if dropped > 0:
                del self._writes[:dropped]
                logger.error("bookkeeping.dropped", writes=dropped)
            for slug, now_ms in successes.items():
                self._successes.setdefault(slug, now_ms)
