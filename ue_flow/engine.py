"""The engine: a loaded configuration, its broker and actors, and ``emit``."""

from __future__ import annotations

import contextlib
import os
import threading
import uuid
from collections.abc import Collection, Iterable, Mapping
from typing import Any

import dramatiq
import pika.exceptions
import redis
import structlog
from dramatiq.brokers.redis import RedisBroker
from dramatiq.errors import BrokerError as DramatiqBrokerError

from . import state
from .actors import declare_actors, delivery_message, now_ms
from .bookkeeping import Bookkeeper
from .broker import create_broker, describe_broker_error, maybe_queued, namespace
from .config import Config
from .errors import BrokerError, ConfigError, ConfigProblem, PayloadError
from .isolation import ProcessSlots, ThreadShare
from .loader import LoadedConfig, load_config
from .maintenance import Maintenance
from .payload import normalize
from .publishing import TogetherQueue
from .retries import DurableRetries
from .routing import UNROUTED, owners, route
from .signing import parse_secret
from .slots import SlotPool
from .state import StateStores
from .state.idempotency import IDEMPOTENCY_TTL_MS

logger = structlog.get_logger("ue_flow")


def new_event_id() -> str:
    """Return a fresh event id, sent as ``webhook-id`` on every attempt."""
    return f"evt_{uuid.uuid4().hex}"


class Engine:
    """A configuration compiled into actors on one broker.

    Applications use the process-wide engine through ``ue_flow.emit``;
    tests and the demo build their own.
    """

    def __init__(
        self,
        loaded: LoadedConfig,
        broker: dramatiq.Broker,
        stores: StateStores,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        """Declare the actors of ``loaded`` on ``broker``, keeping state in ``stores``.

        ``environ`` is where workers look up keys and signing secrets at
        send time; it defaults to ``os.environ``.
        """
        self.config: Config = loaded.config
        self.broker = broker
        self.stores = stores
        # On Redis, emit routes the event itself and queues its deliveries
        # in one script call; other brokers get one routing message.
        self._together = TogetherQueue(broker) if isinstance(broker, RedisBroker) else None
        self._loaded = loaded
        broker.add_middleware(DurableRetries(stores.scheduler, stores.dead_letters))
        broker.add_middleware(Maintenance(stores, self.config.workers))
        process_slots = ProcessSlots()
        #: A worker started with -Q delivers to fewer systems; boot_worker sets that count.
        self.thread_share = ThreadShare(process_slots, len(self.config.systems))
        broker.add_middleware(self.thread_share)
        slots = SlotPool(stores.systems)
        self.bookkeeper = Bookkeeper(stores, slots)
        broker.add_middleware(self.bookkeeper)
        self.router, self.deliverers = declare_actors(
            broker,
            self.config,
            stores,
            os.environ if environ is None else environ,
            process_slots,
            slots,
            self.bookkeeper,
        )

    @classmethod
    def from_environment(
        cls, directory: str | os.PathLike[str] | None = None, *, require_keys: bool = False
    ) -> Engine:
        """Build an engine from UE_FLOW_CONFIG (or ``directory``) and UE_FLOW_BROKER_URL.

        With ``require_keys``, as in workers, raise ConfigError naming each
        unset key variable of a system that subscribes to an event.
        """
        loaded = load_config(directory)
        if require_keys:
            check_keys(loaded.config)
        broker = create_broker(heartbeat_timeout_ms=loaded.config.workers.heartbeat_timeout_ms)
        stores = StateStores.open(state.connect(), namespace(), loaded.config)
        return cls(loaded, broker, stores)

    @classmethod
    def for_redis(cls, loaded: LoadedConfig, url: str, key_prefix: str) -> Engine:
        """Build an engine whose broker and state share one Redis URL and key prefix."""
        broker = create_broker(
            url,
            key_prefix=key_prefix,
            heartbeat_timeout_ms=loaded.config.workers.heartbeat_timeout_ms,
        )
        return cls(loaded, broker, StateStores.open(state.connect(url), key_prefix, loaded.config))

    def emit(
        self,
        event_name: str,
        *,
        user: Mapping[str, Any],
        data: Mapping[str, Any],
        systems: Iterable[str] | None = None,
        idempotency_key: str | None = None,
    ) -> str:
        """Validate an event, queue it for delivery and return its id.

        With ``idempotency_key``, a second emit with the same key within 24
        hours returns the first event's id. It queues nothing when the
        first emit's event was queued, and otherwise queues the event under
        the first event's id. Raises PayloadError when the payload is
        invalid, and nothing was queued then. Raises BrokerError when the
        broker cannot take the event; nothing was queued unless the error's
        ``maybe_queued`` is true.
        """
        if systems is not None and not isinstance(systems, str | bytes):
            # A generator would be used up by validation, and the event routed to no system.
            with contextlib.suppress(TypeError):
                systems = list(systems)
        payload, slugs = checked_event(self._loaded, event_name, user, data, systems)
        only = sorted(systems) if systems is not None else None
        event_id = new_event_id()
        try:
            if idempotency_key is not None:
                event_id, claimed_before = self.stores.idempotency.claim(idempotency_key, event_id)
                if claimed_before and self._was_queued(idempotency_key):
                    return event_id
            self._enqueue(event_id, event_name, payload, slugs, only, idempotency_key)
        # Dramatiq wraps pika's connection and channel errors, not its other errors.
        except (redis.RedisError, DramatiqBrokerError, pika.exceptions.AMQPError, OSError) as error:
            text = f"could not queue {event_name} event: {describe_broker_error(error)}"
            raise BrokerError(text, maybe_queued=maybe_queued(error)) from error

        return event_id

    def _was_queued(self, idempotency_key: str) -> bool:
        marker = self.stores.idempotency.marker(idempotency_key)
        if self._together is not None:
            return self._together.is_marked(marker)
        return self.stores.idempotency.is_queued(idempotency_key)

    def _enqueue(
        self,
        event_id: str,
        event_name: str,
        payload: dict[str, Any],
        slugs: list[str | None],
        only: list[str] | None,
        idempotency_key: str | None,
    ) -> None:
        marker = "" if idempotency_key is None else self.stores.idempotency.marker(idempotency_key)
        if self._together is not None:
            self._fan_out(self._together, event_id, event_name, payload, slugs, only, marker)
            return

        # RabbitMQ publishes one message at a time, so the event goes out as
        # a single routing message that a worker fans out: a failed emit
        # then leaves nothing queued.
        message = self.router.message(
            event_id, event_name, payload["user"], payload["data"], only, now_ms()
        )
        self.broker.enqueue(message)
        if idempotency_key is not None:
            self._mark_published(idempotency_key, event_id)

    def _mark_published(self, idempotency_key: str, event_id: str) -> None:
        # The event is accepted once RabbitMQ confirmed it; a marker that
        # cannot be written costs at most a duplicate with the same id.
        try:
            self.stores.idempotency.mark_queued(idempotency_key)
        except redis.RedisError as error:
            logger.warning(
                "idempotency.mark_failed",
                event_id=event_id,
                error=f"{type(error).__name__}: {error}",
            )

    def _fan_out(
        self,
        together: TogetherQueue,
        event_id: str,
        event_name: str,
        payload: dict[str, Any],
        slugs: list[str | None],
        only: list[str] | None,
        marker: str,
    ) -> None:
        # Routing here rather than in a worker spares every event a message
        # and a worker's round trips. The deliveries go to Redis in one
        # script call, so a failure leaves none of them queued.
        parts = route(self.config, self.config.events[event_name], payload, only, slugs=slugs)
        if not parts:
            logger.warning(
                "event.unrouted",
                event_id=event_id,
                event_name=event_name,
                error=UNROUTED,
            )
            return
        emitted_at_ms = now_ms()
        messages = [
            delivery_message(
                self.deliverers[slug],
                event_id,
                event_name,
                part["user"],
                part["data"],
                emitted_at_ms,
            )
            for slug, part in parts.items()
        ]
        together.enqueue(messages, marker=marker, marker_ttl_ms=IDEMPOTENCY_TTL_MS)

    def validate(
        self,
        event_name: str,
        *,
        user: Mapping[str, Any],
        data: Mapping[str, Any],
        systems: Iterable[str] | None = None,
    ) -> dict[str, Any]:
        """Return the normalized payload, or raise PayloadError."""
        return validate_event(self._loaded, event_name, user=user, data=data, systems=systems)


def validate_event(
    loaded: LoadedConfig,
    event_name: str,
    *,
    user: Mapping[str, Any],
    data: Mapping[str, Any],
    systems: Iterable[str] | None = None,
) -> dict[str, Any]:
    """Return the normalized payload of an event, or raise PayloadError.

    Checks the event is declared, the payload against its schema, that
    each owner is a configured system, and that ``systems`` names systems
    subscribed to the event.
    """
    return checked_event(loaded, event_name, user, data, systems)[0]


def checked_event(
    loaded: LoadedConfig,
    event_name: str,
    user: Mapping[str, Any],
    data: Mapping[str, Any],
    systems: Iterable[str] | None,
) -> tuple[dict[str, Any], list[str | None]]:
    """Return the normalized payload and its owners, as ``routing.owners`` gives them.

    Raises PayloadError as ``validate_event`` does.
    """
    config = loaded.config
    event = config.events.get(event_name)
    if event is None:
        known = ", ".join(sorted(config.events))
        raise PayloadError(event_name, "$", f"unknown event; events.yaml declares {known}")

    payload: dict[str, Any] = normalize(event_name, {"user": user, "data": data})
    loaded.validators[event_name].validate(payload)
    slugs = owners(config, event, payload, strict=True)
    if systems is not None:
        _check_systems(config, event_name, systems)
    return payload, slugs


def _check_systems(config: Config, event_name: str, systems: Any) -> None:
    # ``systems`` arrives from the caller unchecked, so any value may reach here.
    if isinstance(systems, str):
        rule = f"systems must be a list of slugs, not the string {systems!r}"
        raise PayloadError(event_name, "systems", rule)
    if isinstance(systems, bytes) or not isinstance(systems, Iterable):
        rule = f"systems must be a list of slugs, not {type(systems).__name__} {systems!r}"
        raise PayloadError(event_name, "systems", rule)

    subscribers = [system.slug for system in config.subscribers(event_name)]
    for slug in systems:
        if not isinstance(slug, str) or slug not in config.systems:
            known = ", ".join(config.systems)
            raise PayloadError(event_name, "systems", f"unknown system {slug!r}; known: {known}")
        if slug not in subscribers:
            rule = (
                f"system {slug!r} does not subscribe to {event_name}; "
                f"its subscribers are {', '.join(subscribers) or 'none'}"
            )
            raise PayloadError(event_name, "systems", rule)


def check_keys(
    config: Config,
    environ: Mapping[str, str] | None = None,
    systems: Collection[str] | None = None,
) -> None:
    """Raise ConfigError naming every unset key variable and invalid secret variable.

    Only the systems whose slugs are in ``systems`` are checked, or every
    system when it is None. Messages name the variables, never their values.
    """
    environ = os.environ if environ is None else environ
    systems_file = config.directory / "systems.yaml"
    problems = []
    for system in config.systems.values():
        if systems is not None and system.slug not in systems:
            continue
        where = f"system {system.slug!r}: environment variable"
        if system.events and not environ.get(system.key_env):
            message = (
                f"{where} {system.key_env} is not set; "
                "set it to the system's shared key before starting workers"
            )
            problems.append(ConfigProblem(systems_file, system.line, 1, message))
        for variable in (system.secret_env, system.previous_secret_env):
            problem = _secret_problem(environ, variable) if variable else None
            if problem:
                problems.append(ConfigProblem(systems_file, system.line, 1, f"{where} {problem}"))
    if problems:
        raise ConfigError(problems)


def _secret_problem(environ: Mapping[str, str], variable: str) -> str | None:
    value = environ.get(variable, "")
    if not value.split():
        return f"{variable} is not set; set it to the signing secret (whsec_...)"
    for secret in value.split():
        try:
            parse_secret(secret)
        except ValueError as error:
            # parse_secret's message starts with the words this one starts with.
            reason = str(error).removeprefix("Invalid signing secret: ")
            return f"{variable} holds an invalid signing secret: {reason}"
    return None


_default_engine: Engine | None = None
_default_lock = threading.Lock()


def default_engine() -> Engine:
    """Return the process-wide engine, building it from the environment once."""
    global _default_engine
    if _default_engine is None:
        with _default_lock:
            if _default_engine is None:
                _default_engine = Engine.from_environment()
    return _default_engine


def emit(
    event_name: str,
    *,
    user: Mapping[str, Any],
    data: Mapping[str, Any],
    systems: Iterable[str] | None = None,
    idempotency_key: str | None = None,
) -> str:
    """Validate an event, queue it and return its id; see ``Engine.emit``."""
    return default_engine().emit(
        event_name, user=user, data=data, systems=systems, idempotency_key=idempotency_key
    )
