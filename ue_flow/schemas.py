"""JSON Schemas on disk: loading, reference resolution and compiled validators."""

from __future__ import annotations

import json
import re
from functools import lru_cache
from pathlib import Path
from typing import Any, NoReturn

import jsonschema
import jsonschema_rs
import referencing
import referencing.exceptions
from referencing.jsonschema import DRAFT202012

from .errors import PayloadError

_PACKAGE_DIR = Path(__file__).resolve().parent


def shipped_schemas_dir() -> Path:
    """Return the schemas shipped with ue-flow: the checkout's, else the wheel's copy."""
    checkout = _PACKAGE_DIR.parent / "schemas"
    if (checkout / "envelope.json").is_file():
        return checkout

    return _PACKAGE_DIR / "_schemas"


class SchemaLoadError(Exception):
    """Raised when a schema file cannot be read, parsed or resolved."""


def read_schema(path: Path) -> Any:
    """Read one JSON Schema file."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SchemaLoadError(f"schema file not found: {path}") from None
    except json.JSONDecodeError as error:
        message = (
            f"invalid JSON in schema {path}: {error.msg} "
            f"at line {error.lineno}, column {error.colno}"
        )
        raise SchemaLoadError(message) from error
    except (OSError, ValueError) as error:
        # ValueError covers invalid UTF-8 and a NUL character in the path.
        raise SchemaLoadError(f"cannot read schema {path}: {error}") from error
    except RecursionError:
        raise SchemaLoadError(f"invalid JSON in schema {path}: nested too deeply") from None


def _retrieve(uri: str) -> referencing.Resource[Any]:
    # Only local files are resolved: a schema must never make the loader,
    # a worker or a receiver reach the network.
    if not uri.startswith("file://"):
        raise SchemaLoadError(f"only file references are allowed, not {uri!r}")

    contents = read_schema(Path(uri.removeprefix("file://")))
    return referencing.Resource.from_contents(contents, default_specification=DRAFT202012)


def _rs_retrieve(uri: str) -> Any:
    if not uri.startswith("file://"):
        raise SchemaLoadError(f"only file references are allowed, not {uri!r}")

    return read_schema(Path(uri.removeprefix("file://")))


def _registry() -> referencing.Registry[Any]:
    return referencing.Registry(retrieve=_retrieve)  # type: ignore[call-arg]


class PayloadValidator:
    """Validates one event's payload, ``{"user": ..., "data": ...}``.

    Valid payloads are checked by jsonschema-rs, which is more than a
    hundred times faster than jsonschema; an invalid one is checked again
    by jsonschema to build the error message with its JSON path.
    """

    def __init__(self, event_name: str, user_schema: Path, data_schema: Path) -> None:
        self.event_name = event_name
        wrapper = {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "type": "object",
            "required": ["user", "data"],
            "properties": {
                "user": {"$ref": user_schema.resolve().as_uri()},
                "data": {"$ref": data_schema.resolve().as_uri()},
            },
            "additionalProperties": False,
        }
        self._detailed = jsonschema.Draft202012Validator(wrapper, registry=_registry())
        try:
            self._fast = jsonschema_rs.validator_for(wrapper, retriever=_rs_retrieve)
        except (jsonschema_rs.ReferencingError, ValueError) as error:
            # jsonschema_rs.ValidationError's str() appends a multi-line
            # report; its ``message`` is the one-line cause.
            raise SchemaLoadError(getattr(error, "message", None) or str(error)) from error
        self._check_references()

    def _check_references(self) -> None:
        # jsonschema resolves references lazily; validating an empty object
        # walks every reference reachable from "user" and "data".
        try:
            for _ in self._detailed.iter_errors({"user": {}, "data": {}}):
                pass
        except referencing.exceptions.Unresolvable as error:
            raise SchemaLoadError(f"unresolvable $ref: {error}") from error

    def validate(self, payload: Any) -> None:
        """Raise PayloadError naming the JSON path and rule unless ``payload`` is valid."""
        if self._fast.is_valid(payload):
            return

        try:
            error = jsonschema.exceptions.best_match(self._detailed.iter_errors(payload))
        except (RecursionError, re.error):
            # jsonschema cannot evaluate some schemas that jsonschema-rs can:
            # a $ref cycle such as {"$ref": "#"}, or a pattern that Python's
            # re rejects but ECMA-262 allows, such as \p{L}.
            error = None
        if error is None:
            # The two validators also disagree where Python's regular
            # expressions do, such as "$" matching before a final newline;
            # the stricter verdict of jsonschema-rs is kept.
            self._raise_fast_error(payload)
        raise PayloadError(self.event_name, error.json_path, describe_error(error))

    def _raise_fast_error(self, payload: Any) -> NoReturn:
        try:
            self._fast.validate(payload)
        except jsonschema_rs.ValidationError as error:
            path = "$" + "".join(
                f"[{part}]" if isinstance(part, int) else f".{part}" for part in error.instance_path
            )
            raise PayloadError(self.event_name, path, error.message) from None
        raise PayloadError(self.event_name, "$", "invalid payload")


def describe_error(error: jsonschema.ValidationError) -> str:
    """Turn a jsonschema error into a rule a person can act on."""
    schema = error.schema if isinstance(error.schema, dict) else {}
    if schema.get("title") == "Money":
        found = type(error.instance).__name__ if not isinstance(error.instance, str) else "string"
        return (
            f'money must be a decimal string with two places such as "100.00", '
            f"or a decimal.Decimal; got {found} {error.instance!r}"
        )

    return error.message


@lru_cache(maxsize=4)
def config_schema_validator(name: str) -> jsonschema.Draft202012Validator:
    """Return the validator of a shipped config schema, such as events.schema.json."""
    path = (shipped_schemas_dir() / "config" / name).resolve()
    return jsonschema.Draft202012Validator({"$ref": path.as_uri()}, registry=_registry())


@lru_cache(maxsize=1)
def envelope_validator() -> jsonschema.Draft202012Validator:
    """Return the validator of the shipped envelope schema."""
    path = shipped_schemas_dir() / "envelope.json"
    schema = read_schema(path)
    resource = referencing.Resource.from_contents(schema, default_specification=DRAFT202012)
    registry = _registry().with_resource(path.resolve().as_uri(), resource)
    return jsonschema.Draft202012Validator({"$ref": path.resolve().as_uri()}, registry=registry)
