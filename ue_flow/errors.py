"""Exceptions raised by ue-flow.

The class tree::

    Error
    ├── ConfigError      configuration files are invalid or incomplete
    ├── PayloadError     an event payload or a received envelope is invalid (also a ValueError)
    └── BrokerError      the broker could not be reached while queueing

Low-level errors from yaml, jsonschema, redis and requests are converted
where they enter ue-flow and chained with ``raise ... from``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class Error(Exception):
    """The root of every exception ue-flow raises on purpose."""


@dataclass(frozen=True)
class ConfigProblem:
    """One mistake in a configuration file, with where it sits.

    ``line`` and ``column`` are 1-based; 0 means the position is unknown.
    """

    path: Path
    line: int
    column: int
    message: str

    def __str__(self) -> str:
        if self.line == 0:
            return f"{self.path}: error: {self.message}"
        return f"{self.path}:{self.line}:{self.column}: error: {self.message}"


class ConfigError(Error):
    """Raised when the configuration is invalid; carries every problem found."""

    def __init__(self, problems: Sequence[ConfigProblem]) -> None:
        self.problems = tuple(problems)
        #: The part of the configuration that did load, when events.yaml
        #: did: a LoadedConfig whose broken events have no validator.
        self.partial: Any = None
        super().__init__("\n".join(str(problem) for problem in self.problems))


class PayloadError(Error, ValueError):
    """Raised when a payload breaks its event's schema; nothing was queued.

    ``event`` is the event name, ``path`` the JSON path of the offending
    value (``$`` for the payload itself) and ``rule`` the broken rule.
    """

    def __init__(self, event: str, path: str, rule: str) -> None:
        self.event = event
        self.path = path
        self.rule = rule
        super().__init__(f"invalid {event} payload at {path}: {rule}")


class BrokerError(Error):
    """Raised when an event could not be queued because the broker failed.

    ``maybe_queued`` is False when nothing was queued, so the caller may
    retry the same call. It is True when the connection broke while the
    broker was taking the event, so the event may be queued. A retry with
    the same idempotency key then queues it only if the first call did
    not, under the same event id. A retry without one may deliver it twice.
    """

    def __init__(self, message: str, *, maybe_queued: bool = False) -> None:
        super().__init__(message)
        self.maybe_queued = maybe_queued
