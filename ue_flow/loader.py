"""Loading a configuration directory: YAML, config schemas, payload schemas, templates."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jinja2
import jinja2.sandbox
import jsonschema

from .config import (
    Config,
    DeliverySettings,
    EventType,
    RelatedItems,
    Routing,
    System,
)
from .errors import ConfigError, ConfigProblem
from .schemas import PayloadValidator, SchemaLoadError, config_schema_validator, read_schema
from .settings import SettingsReader
from .yamlfile import KeyPath, YamlDocument, load_yaml

#: Where the configuration is read from when neither an argument nor
#: UE_FLOW_CONFIG names a directory.
DEFAULT_CONFIG_DIR = "./config"

#: The user schema of events.yaml files that do not name one.
DEFAULT_USER_SCHEMA = "../schemas/user.json"

#: The example payloads of events.yaml files that do not name a directory.
DEFAULT_EXAMPLES_DIR = "../examples"


def config_dir(directory: str | os.PathLike[str] | None = None) -> Path:
    """Return the configuration directory: the argument, UE_FLOW_CONFIG or ./config."""
    chosen = directory or os.environ.get("UE_FLOW_CONFIG") or DEFAULT_CONFIG_DIR
    return Path(chosen)


@dataclass(frozen=True)
class LoadedConfig:
    """A configuration with the payload validators compiled from its schemas."""

    config: Config
    validators: Mapping[str, PayloadValidator]


def load_config(
    directory: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> LoadedConfig:
    """Load and validate a configuration directory.

    Raises ConfigError carrying every problem found, each with its file,
    line and column. ``environ`` is what URL templates see as ``env``;
    it defaults to ``os.environ``.
    """
    root = config_dir(directory)
    if not root.is_dir():
        message = "configuration directory not found; set UE_FLOW_CONFIG or pass --config"
        raise ConfigError([ConfigProblem(root, 0, 0, message)])

    problems: list[ConfigProblem] = []
    events_doc = _load_checked(root / "events.yaml", "events.schema.json", problems)
    systems_doc = _load_checked(root / "systems.yaml", "systems.schema.json", problems)
    if problems or events_doc is None or systems_doc is None:
        raise ConfigError(problems)

    events, validators, user_schema = _build_events(events_doc, problems)
    reader = SettingsReader(events_doc, problems)
    delivery = reader.delivery(
        events_doc.data.get("delivery") or {}, ("delivery",), DeliverySettings()
    )
    retention = reader.retention(events_doc.data.get("retention") or {})
    workers = reader.workers(events_doc.data.get("workers") or {})
    systems = _build_systems(
        systems_doc, events, delivery, os.environ if environ is None else environ, problems
    )
    if problems:
        raise ConfigError(problems)

    config = Config(
        directory=root,
        events=events,
        systems=systems,
        delivery=delivery,
        retention=retention,
        workers=workers,
        user_schema_path=user_schema,
        examples_dir=(root / events_doc.data.get("examples", DEFAULT_EXAMPLES_DIR)).resolve(),
    )
    return LoadedConfig(config, validators)


def _load_checked(
    path: Path, schema_name: str, problems: list[ConfigProblem]
) -> YamlDocument | None:
    try:
        document = load_yaml(path)
    except ConfigError as error:
        problems.extend(error.problems)
        return None

    validator = config_schema_validator(schema_name)
    errors = sorted(validator.iter_errors(document.data), key=lambda found: list(found.path))
    for schema_error in errors:
        key_path: KeyPath = tuple(schema_error.absolute_path)
        if schema_error.validator == "additionalProperties" and isinstance(
            schema_error.instance, dict
        ):
            problems.extend(_unknown_keys(document, key_path, schema_error))
        else:
            problems.append(document.problem(key_path, _describe_config_error(schema_error)))
    return None if errors else document


def _unknown_keys(
    document: YamlDocument, key_path: KeyPath, error: jsonschema.ValidationError
) -> list[ConfigProblem]:
    valid = sorted(_schema_of(error).get("properties", {}))
    where = "/".join(str(part) for part in key_path) or "(top level)"
    return [
        document.problem(
            (*key_path, key), f"{where}: unknown key {key!r}; valid keys are {', '.join(valid)}"
        )
        for key in (error.instance if isinstance(error.instance, dict) else {})
        if key not in valid
    ]


def _schema_of(error: jsonschema.ValidationError) -> Mapping[str, Any]:
    return error.schema if isinstance(error.schema, Mapping) else {}


def _describe_config_error(error: jsonschema.ValidationError) -> str:
    where = "/".join(str(part) for part in error.absolute_path) or "(top level)"
    schema = _schema_of(error)
    if error.validator == "not" and "description" in schema:
        return f"{where}: {schema['description']}"
    if error.validator == "pattern" and "description" in schema:
        return f"{where}: invalid value {error.instance!r}; expected {schema['description']}"

    return f"{where}: {error.message}"


def _build_events(
    document: YamlDocument, problems: list[ConfigProblem]
) -> tuple[dict[str, EventType], dict[str, PayloadValidator], Path]:
    base = document.path.parent
    user_schema = (base / document.data.get("user_schema", DEFAULT_USER_SCHEMA)).resolve()
    events: dict[str, EventType] = {}
    validators: dict[str, PayloadValidator] = {}
    wire_types: dict[str, str] = {}

    for name, entry in document.data["events"].items():
        key_path: KeyPath = ("events", name)
        event = EventType(
            name=name,
            type=entry["type"],
            description=entry["description"],
            hookspec=entry["hookspec"],
            schema_path=(base / entry["schema"]).resolve(),
            routing=_build_routing(entry["routing"]),
        )
        if event.type in wire_types:
            message = (
                f"events/{name}/type: wire type {event.type!r} is already used by "
                f"{wire_types[event.type]!r}; each event needs its own type"
            )
            problems.append(document.problem((*key_path, "type"), message))
        wire_types[event.type] = name

        try:
            _check_schema_file(event.schema_path)
            validators[name] = PayloadValidator(name, user_schema, event.schema_path)
        except SchemaLoadError as error:
            problems.append(
                document.problem((*key_path, "schema"), f"events/{name}/schema: {error}")
            )
        events[name] = event

    return events, validators, user_schema


def _check_schema_file(path: Path) -> None:
    schema = read_schema(path)
    try:
        jsonschema.Draft202012Validator.check_schema(schema)
    except jsonschema.SchemaError as error:
        where = "/".join(str(part) for part in error.path) or "(top level)"
        message = f"{path} is not a valid draft 2020-12 schema at {where}: {error.message}"
        raise SchemaLoadError(message) from error


def _build_routing(entry: Mapping[str, Any]) -> Routing:
    related = tuple(
        RelatedItems(
            items=item["items"], item_id=item["item_id"], required=item.get("required", False)
        )
        for item in entry.get("related", ())
    )
    return Routing(owner=entry["owner"], items=entry.get("items"), related=related)


def _build_systems(
    document: YamlDocument,
    events: Mapping[str, EventType],
    delivery: DeliverySettings,
    environ: Mapping[str, str],
    problems: list[ConfigProblem],
) -> dict[str, System]:
    systems: dict[str, System] = {}
    reader = SettingsReader(document, problems)
    first_seen: dict[str, int] = {}
    ue_ids: dict[int, str] = {}

    for index, entry in enumerate(document.data["systems"]):
        key_path: KeyPath = ("systems", index)
        slug = entry["slug"]
        if slug in first_seen:
            line = document.position(("systems", first_seen[slug]))[0]
            message = (
                f"systems/{index}/slug: duplicate slug {slug!r}; it is first used on line {line}"
            )
            problems.append(document.problem((*key_path, "slug"), message))
        else:
            first_seen[slug] = index

        ue_id = entry.get("id")
        if ue_id is not None and ue_id in ue_ids:
            message = f"systems/{index}/id: id {ue_id} is already used by system {ue_ids[ue_id]!r}"
            problems.append(document.problem((*key_path, "id"), message))
        elif ue_id is not None:
            ue_ids[ue_id] = slug

        _check_subscriptions(document, key_path, entry["events"], events, problems)
        url = _render_url(document, key_path, entry, environ, problems)
        systems[slug] = System(
            slug=slug,
            name=entry["name"],
            url=url,
            events=frozenset(entry["events"]),
            key_env=entry["key_env"],
            secret_env=entry.get("secret_env"),
            ue_id=ue_id,
            allow_http=entry.get("allow_http", False),
            allow_private_network=entry.get("allow_private_network", False),
            delivery=reader.delivery(
                entry.get("delivery") or {}, (*key_path, "delivery"), delivery
            ),
            line=document.position((*key_path, "key_env"))[0],
        )

    return systems


def _check_subscriptions(
    document: YamlDocument,
    key_path: KeyPath,
    subscribed: Iterable[str],
    events: Mapping[str, EventType],
    problems: list[ConfigProblem],
) -> None:
    for position, name in enumerate(subscribed):
        if name not in events:
            known = ", ".join(sorted(events))
            message = (
                f"systems/{key_path[1]}/events/{position}: unknown event {name!r}; "
                f"events.yaml declares {known}"
            )
            problems.append(document.problem((*key_path, "events", position), message))


_TEMPLATES = jinja2.sandbox.ImmutableSandboxedEnvironment(
    undefined=jinja2.StrictUndefined, autoescape=False
)


def _render_url(
    document: YamlDocument,
    key_path: KeyPath,
    entry: Mapping[str, Any],
    environ: Mapping[str, str],
    problems: list[ConfigProblem],
) -> str:
    where = f"systems/{key_path[1]}/url"
    try:
        url = _TEMPLATES.from_string(entry["url"]).render(env=dict(environ)).strip()
    except jinja2.UndefinedError as error:
        message = (
            f"{where}: template uses an undefined name ({error.message}); "
            "set it in the environment or add | default('...')"
        )
        problems.append(document.problem((*key_path, "url"), message))
        return ""
    except jinja2.TemplateError as error:
        problems.append(document.problem((*key_path, "url"), f"{where}: invalid template: {error}"))
        return ""

    problem = url_problem(url, allow_http=entry.get("allow_http", False))
    if problem:
        problems.append(document.problem((*key_path, "url"), f"{where}: {problem}"))
    return url


def url_problem(url: str, *, allow_http: bool) -> str | None:
    """Return why ``url`` cannot be a webhook URL, or None when it can."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as error:
        return f"invalid URL {url!r}: {error}"

    del port  # Reading it checks that the port is a number within range.
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"invalid URL {url!r}: expected https://host/path"
    if parts.scheme == "http" and not allow_http:
        return f"URL {url!r} uses plain http; use https, or set allow_http: true for this system"
    if parts.username or parts.password:
        return "URL must not carry credentials; the system key travels in the envelope"

    return None
