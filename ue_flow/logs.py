"""structlog configuration: JSON lines in production, readable on a terminal."""

from __future__ import annotations

import logging
import os
import sys

import structlog

_configured = False

#: The level used when neither the caller nor UE_FLOW_LOG_LEVEL sets one.
DEFAULT_LEVEL = "INFO"


def level_from_environment() -> int:
    """Return UE_FLOW_LOG_LEVEL (DEBUG, INFO, WARNING or ERROR) as a logging level."""
    name = (os.environ.get("UE_FLOW_LOG_LEVEL") or DEFAULT_LEVEL).upper()
    level = logging.getLevelNamesMapping().get(name)
    if level is None:
        message = f"ue-flow: invalid UE_FLOW_LOG_LEVEL {name!r}; using {DEFAULT_LEVEL}"
        print(message, file=sys.stderr)
        return logging.INFO
    return level


def configure_logging(level: int | None = None, *, json_lines: bool | None = None) -> None:
    """Configure structlog once per process.

    ``level`` defaults to UE_FLOW_LOG_LEVEL, else INFO. Output is JSON
    lines unless standard error is a terminal; pass ``json_lines`` to
    choose. Calling again has no effect.
    """
    global _configured
    if _configured:
        return
    _configured = True

    if level is None:
        level = level_from_environment()
    if json_lines is None:
        json_lines = not sys.stderr.isatty()
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer()
        if json_lines
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
