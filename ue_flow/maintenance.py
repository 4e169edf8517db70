"""Worker maintenance: moving due retries, recovering dead workers' messages, pruning.

Each worker process runs one maintenance thread. Several processes and
hosts may run it at once: every step is safe to repeat.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import dramatiq
import redis
import structlog
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import Middleware

from .config import WorkerSettings
from .state import StateStores

#: How many commands in a million trigger Dramatiq's own Redis maintenance
#: on the sweeping broker: all of them, since it runs only once a sweep.
ALWAYS = 1_000_000

#: The wait after maintenance itself fails, such as while Redis restarts, in seconds.
FAILURE_PAUSE_S = 1.0

logger = structlog.get_logger("ue_flow")


class Maintenance(Middleware):
    """Starts the maintenance thread with each worker and stops it at shutdown."""

    def __init__(self, stores: StateStores, settings: WorkerSettings) -> None:
        self.stores = stores
        self.settings = settings
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def after_worker_boot(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._run, args=(broker,), name="ue-flow-maintenance", daemon=True
        )
        self._thread.start()

    def before_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self, broker: dramatiq.Broker) -> None:
        sweep = _sweeper(broker, self.settings)
        interval_s = self.settings.scheduler_interval_ms / 1000
        next_sweep = 0.0
        while not self._stop.is_set():
            try:
                self._move_due(broker)
                if time.monotonic() >= next_sweep:
                    next_sweep = time.monotonic() + self.settings.sweep_interval_ms / 1000
                    sweep()
                    self.stores.dead_letters.prune(_now_ms())
                    self.stores.attempts.prune(_now_ms())
                self._stop.wait(interval_s)
            except (redis.RedisError, dramatiq.errors.BrokerError) as error:
                logger.warning("maintenance.failed", error=f"{type(error).__name__}: {error}")
                self._stop.wait(FAILURE_PAUSE_S)

    def _move_due(self, broker: dramatiq.Broker) -> None:
        # A scheduler that died mid-move is noticed no later than a dead
        # worker's messages, so its claims last as long as a heartbeat.
        moved = self.stores.scheduler.move_due(
            broker,
            broker.get_declared_queues(),
            _now_ms(),
            lease_ms=self.settings.heartbeat_timeout_ms,
        )
        if moved:
            logger.debug("retries.queued", count=moved)


def _sweeper(broker: dramatiq.Broker, settings: WorkerSettings) -> Callable[[], None]:
    """Return a function that queues again the unfinished messages of dead workers.

    Dramatiq's Redis broker does this in its maintenance, which by default
    runs on about one command in a thousand, so an idle system may wait
    many minutes. A second broker on the same Redis, with maintenance on
    every command, runs it on each sweep. It also heartbeats for this
    process, so a worker whose threads are all busy is not taken for dead.
    """
    if not isinstance(broker, RedisBroker):
        return lambda: None

    sweeping = RedisBroker(
        client=broker.client,
        namespace=broker.namespace,
        maintenance_chance=ALWAYS,
        heartbeat_timeout=settings.heartbeat_timeout_ms,
        middleware=[],
    )
    sweeping.broker_id = broker.broker_id

    def sweep() -> None:
        for queue_name in broker.get_declared_queues():
            # A requeue of no messages only heartbeats and runs maintenance.
            sweeping.do_requeue(queue_name)

    return sweep


def _now_ms() -> int:
    return int(time.time() * 1000)
