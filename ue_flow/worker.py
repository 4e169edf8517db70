"""Start-up of ``dramatiq ue_flow`` worker processes."""

from __future__ import annotations

import sys

import dramatiq
from dramatiq.middleware.prometheus import Prometheus

from .engine import Engine
from .errors import ConfigError
from .logs import configure_logging
from .metrics import DeliveryMetrics

#: The exit status of a worker whose configuration is invalid: EX_CONFIG
#: from sysexits.h, apart from the statuses Dramatiq itself uses.
EXIT_CONFIG = 78


def boot_worker() -> Engine:
    """Load the configuration, declare the actors and install the broker globally.

    Exits the process with a message naming every problem, such as an
    unset key variable, instead of starting a worker that cannot deliver.
    """
    configure_logging()
    try:
        engine = Engine.from_environment(require_keys=True)
    except ConfigError as error:
        print(f"ue-flow: cannot start the worker:\n{error}", file=sys.stderr, flush=True)
        sys.exit(EXIT_CONFIG)

    if engine.config.workers.metrics:
        engine.broker.add_middleware(Prometheus())
        engine.broker.add_middleware(DeliveryMetrics())
    dramatiq.set_broker(engine.broker)
    return engine
