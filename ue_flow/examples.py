"""Payload files: reading them with positions, and checking the shipped examples."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError, ConfigProblem, PayloadError
from .loader import LoadedConfig
from .routing import route
from .yamlfile import load_yaml


@dataclass(frozen=True)
class PayloadFile:
    """A payload file's contents, ``{"user": ..., "data": ...}``, and where it came from."""

    path: Path
    payload: Any
    text: str

    def line_of(self, json_path: str) -> int:
        """Return the 1-based line of a JSON path such as ``$.data.lines[0]``, or 1."""
        try:
            document = load_yaml(self.path)
        except (ConfigError, yaml.YAMLError):
            return 1
        return document.position(_key_path(json_path))[0]


def _key_path(json_path: str) -> tuple[str | int, ...]:
    parts: list[str | int] = []
    for token in json_path.lstrip("$").replace("[", ".[").split("."):
        if not token:
            continue
        parts.append(int(token[1:-1]) if token.startswith("[") else token)
    return tuple(parts)


def read_payload_file(path: Path, text: str | None = None) -> PayloadFile:
    """Parse a payload file; raise ConfigError with the line of a JSON syntax error."""
    if text is None:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            raise ConfigError(
                [ConfigProblem(path, 0, 0, f"cannot read payload file: {error}")]
            ) from error

    try:
        payload = json.loads(text, object_pairs_hook=_unique_keys)
    except _DuplicateKey as error:
        line, column = _duplicate_position(text, error.key)
        message = f"invalid JSON: duplicate key {error.key!r}; set each key once"
        raise ConfigError([ConfigProblem(path, line, column, message)]) from None
    except json.JSONDecodeError as error:
        problem = ConfigProblem(path, error.lineno, error.colno, f"invalid JSON: {error.msg}")
        raise ConfigError([problem]) from error
    except (ValueError, RecursionError) as error:
        # Integers past Python's digit limit and very deep nesting.
        message = f"invalid JSON: {type(error).__name__}: {str(error)[:200]}"
        raise ConfigError([ConfigProblem(path, 1, 1, message)]) from error

    if not isinstance(payload, dict) or set(payload) - {"user", "data"}:
        keys = sorted(payload) if isinstance(payload, dict) else type(payload).__name__
        message = f"a payload file is a JSON object with the keys user and data, found {keys}"
        raise ConfigError([ConfigProblem(path, 1, 1, message)])
    return PayloadFile(path, payload, text)


class _DuplicateKey(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # json.loads keeps the last of duplicate keys without a word, so a
    # payload file could send a value other than the one its author reads.
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _DuplicateKey(key)
        result[key] = value
    return result


def _duplicate_position(text: str, key: str) -> tuple[int, int]:
    # JSON is YAML, and the YAML reader reports duplicate keys with their
    # lines; a text it cannot read is reported at its start.
    try:
        node = yaml.SafeLoader(text).get_single_node()
    except yaml.YAMLError:
        return 1, 1
    pending = [node]
    while pending:
        current = pending.pop()
        if isinstance(current, yaml.MappingNode):
            seen = set()
            for key_node, value_node in current.value:
                if key_node.value == key and key in seen:
                    return key_node.start_mark.line + 1, key_node.start_mark.column + 1
                seen.add(key_node.value)
                pending.append(value_node)
        elif isinstance(current, yaml.SequenceNode):
            pending.extend(current.value)
    return 1, 1


def check_examples(loaded: LoadedConfig) -> list[ConfigProblem]:
    """Validate and route every example payload; return the problems found."""
    config = loaded.config
    problems: list[ConfigProblem] = []
    if not config.examples_dir.is_dir():
        return problems

    for event_dir in sorted(path for path in config.examples_dir.iterdir() if path.is_dir()):
        event = config.events.get(event_dir.name)
        if event is None:
            known = ", ".join(sorted(config.events))
            message = (
                f"example directory names unknown event {event_dir.name!r}; "
                f"events.yaml declares {known}"
            )
            problems.append(ConfigProblem(event_dir, 0, 0, message))
            continue

        # An event whose schema is broken has no validator; its problem is
        # reported where the schema is.
        validator = loaded.validators.get(event.name)
        if validator is None:
            continue
        for path in sorted(event_dir.glob("*.json")):
            try:
                example = read_payload_file(path)
                validator.validate(example.payload)
                route(config, event, example.payload)
            except ConfigError as error:
                problems.extend(error.problems)
            except PayloadError as error:
                line = example.line_of(error.path)
                problems.append(ConfigProblem(path, line, 1, f"{error.path}: {error.rule}"))

    return problems
