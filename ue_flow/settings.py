"""Delivery, retention and worker settings read from the YAML configuration."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

from .config import (
    CircuitBreaker,
    DeliverySettings,
    Retention,
    RetryPolicy,
    WorkerSettings,
    parse_duration,
)
from .errors import ConfigProblem
from .yamlfile import KeyPath, YamlDocument


class SettingsReader:
    """Reads settings from one document, collecting problems instead of stopping."""

    def __init__(self, document: YamlDocument, problems: list[ConfigProblem]) -> None:
        self.document = document
        self.problems = problems

    def duration(self, entry: Mapping[str, Any], key: str, key_path: KeyPath, default: int) -> int:
        """Return ``entry[key]`` in milliseconds, or ``default`` when it is absent."""
        text = entry.get(key)
        if text is None:
            return default

        # The config schema's pattern rejects most mistakes, but jsonschema
        # matches "$" before a trailing newline, so "5s\n" reaches here.
        try:
            return parse_duration(text)
        except ValueError as error:
            where = "/".join(str(part) for part in (*key_path, key))
            self.problems.append(self.document.problem((*key_path, key), f"{where}: {error}"))
            return default

    def delivery(
        self, entry: Mapping[str, Any], key_path: KeyPath, defaults: DeliverySettings
    ) -> DeliverySettings:
        """Return ``defaults`` overridden by the keys set in ``entry``."""
        circuit = entry.get("circuit_breaker") or {}
        return DeliverySettings(
            connect_timeout_ms=self.duration(
                entry, "connect_timeout", key_path, defaults.connect_timeout_ms
            ),
            read_timeout_ms=self.duration(
                entry, "read_timeout", key_path, defaults.read_timeout_ms
            ),
            retry=self.retry(entry.get("retry") or {}, (*key_path, "retry"), defaults.retry),
            max_in_flight=entry.get("max_in_flight", defaults.max_in_flight),
            circuit_breaker=CircuitBreaker(
                failure_threshold=circuit.get(
                    "failure_threshold", defaults.circuit_breaker.failure_threshold
                ),
                cooldown_ms=self.duration(
                    circuit,
                    "cooldown",
                    (*key_path, "circuit_breaker"),
                    defaults.circuit_breaker.cooldown_ms,
                ),
            ),
            disable_after_ms=self.duration(
                entry, "disable_after", key_path, defaults.disable_after_ms
            ),
        )

    def retry(
        self, entry: Mapping[str, Any], key_path: KeyPath, defaults: RetryPolicy
    ) -> RetryPolicy:
        """Return ``defaults`` overridden by the keys set in ``entry``.

        Setting a schedule drops an inherited backoff, and the reverse.
        """
        jitter = float(entry.get("jitter", defaults.jitter))
        if not math.isfinite(jitter):
            # The config schema's range check lets NaN through.
            where = "/".join(str(part) for part in (*key_path, "jitter"))
            message = f"{where}: invalid value {jitter}; expected a fraction from 0 to 1"
            self.problems.append(self.document.problem((*key_path, "jitter"), message))
            jitter = defaults.jitter
        policy = dataclasses.replace(
            defaults,
            jitter=jitter,
            max_age_ms=self.duration(entry, "max_age", key_path, defaults.max_age_ms),
            retry_after_cap_ms=self.duration(
                entry, "retry_after_cap", key_path, defaults.retry_after_cap_ms
            ),
            give_up_on=frozenset(entry.get("give_up_on", defaults.give_up_on)),
        )
        if "schedule" in entry:
            schedule = tuple(
                self.duration({"step": step}, "step", (*key_path, "schedule", index), 0)
                for index, step in enumerate(entry["schedule"])
            )
            policy = dataclasses.replace(policy, schedule_ms=schedule, base_ms=None)
        if "backoff" in entry:
            backoff = entry["backoff"]
            backoff_path = (*key_path, "backoff")
            cap = self.duration(backoff, "cap", backoff_path, -1)
            policy = dataclasses.replace(
                policy,
                base_ms=self.duration(backoff, "base", backoff_path, 0),
                factor=float(backoff.get("factor", 2.0)),
                cap_ms=None if cap < 0 else cap,
                retries=backoff.get("retries"),
            )
        return policy

    def retention(self, entry: Mapping[str, Any]) -> Retention:
        """Return the retention settings of events.yaml."""
        defaults = Retention()
        key_path: KeyPath = ("retention",)
        return Retention(
            dead_letters_ms=self.duration(
                entry, "dead_letters", key_path, defaults.dead_letters_ms
            ),
            attempts_ms=self.duration(entry, "attempts", key_path, defaults.attempts_ms),
            max_attempts=entry.get("max_attempts", defaults.max_attempts),
        )

    def workers(self, entry: Mapping[str, Any]) -> WorkerSettings:
        """Return the worker settings of events.yaml."""
        defaults = WorkerSettings()
        key_path: KeyPath = ("workers",)
        return WorkerSettings(
            heartbeat_timeout_ms=self.duration(
                entry, "heartbeat_timeout", key_path, defaults.heartbeat_timeout_ms
            ),
            sweep_interval_ms=self.duration(
                entry, "sweep_interval", key_path, defaults.sweep_interval_ms
            ),
            scheduler_interval_ms=self.duration(
                entry, "scheduler_interval", key_path, defaults.scheduler_interval_ms
            ),
            metrics=entry.get("metrics", defaults.metrics),
        )
