"""Start-up of ``dramatiq ue_flow`` worker processes."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import NoReturn

import dramatiq
import structlog
from dramatiq.cli import make_argument_parser
from dramatiq.common import q_name
from dramatiq.middleware.prometheus import Prometheus

from .engine import Engine, check_keys
from .errors import ConfigError
from .logs import configure_logging
from .metrics import DeliveryMetrics
from .queues import delivery_queue

#: The exit status of a worker whose configuration is invalid: EX_CONFIG
#: from sysexits.h, apart from the statuses Dramatiq itself uses.
EXIT_CONFIG = 78


def boot_worker() -> Engine:
    """Load the configuration, declare the actors and install the broker globally.

    Exits the process with a message naming every problem, such as an
    unset key variable of a system whose queue the worker consumes, or a
    ``-Q`` queue that no actor declares, instead of starting a worker
    that cannot deliver.
    """
    configure_logging()
    try:
        engine = Engine.from_environment()
    except ConfigError as error:
        _exit_config(str(error))

    queues = dramatiq_queues(sys.argv[1:])
    declared = sorted({q_name(name) for name in engine.broker.get_declared_queues()})
    unknown = [name for name in queues or () if name not in declared]
    if unknown:
        _exit_config(
            f"-Q names {', '.join(unknown)}, which no actor declares; "
            f"the declared queues are {', '.join(declared)}"
        )

    delivering = [
        slug for slug in engine.config.systems if queues is None or delivery_queue(slug) in queues
    ]
    try:
        check_keys(engine.config, systems=delivering)
    except ConfigError as error:
        _exit_config(str(error))
    # A worker of one system's queue gives it all its threads.
    engine.thread_share.system_count = len(delivering)

    if engine.config.workers.metrics:
        engine.broker.add_middleware(Prometheus())
        engine.broker.add_middleware(DeliveryMetrics())
    dramatiq.set_broker(engine.broker)
    structlog.get_logger("ue_flow").info(
        "worker.configured",
        config=str(engine.config.directory),
        namespace=engine.stores.namespace,
        queues=queues or "all",
        systems=delivering,
    )
    return engine


def dramatiq_queues(argv: Sequence[str]) -> list[str] | None:
    """Return the queues named by ``-Q``/``--queues`` in the dramatiq command line ``argv``.

    Returns None when the worker consumes every queue: without ``-Q``, with
    ``-Q`` and no names, or when ``argv`` is not a command line Dramatiq
    accepts. Dramatiq passes its options to the worker process but not to
    the modules it imports, so they are read again from ``sys.argv`` with
    Dramatiq's own parser, which also reads ``-Q`` joined to other short
    options, such as ``-vQ``.
    """
    parser = make_argument_parser()
    parser.error = _reject
    try:
        known, _ = parser.parse_known_args(argv)
    except ValueError:
        return None
    queues: list[str] | None = known.queues or None
    return queues


def _reject(message: str) -> NoReturn:
    # argparse's default prints the usage and exits, which is Dramatiq's
    # own job when the command line is wrong.
    raise ValueError(message)


def _exit_config(message: str) -> NoReturn:
    print(f"ue-flow: cannot start the worker:\n{message}", file=sys.stderr, flush=True)
    sys.exit(EXIT_CONFIG)
