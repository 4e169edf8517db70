"""Loading a configuration directory: YAML, config schemas, payload schemas, templates."""

from __future__ import annotations

import keyword
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
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
    HookBinding,
    RelatedItems,
    Retention,
    Routing,
    System,
    WorkerSettings,
)
from .errors import ConfigError, ConfigProblem
from .schema_files import ReferencedSchemas
from .schemas import PayloadValidator, SchemaLoadError, config_schema_validator, read_schema
from .settings import SettingsReader
from .signing import SECRET_PREFIX
from .urlsafety import host_problem
from .yamlfile import KeyPath, YamlDocument, load_yaml

#: The configuration directory used when neither an argument nor
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
        raise ConfigError([ConfigProblem(root.resolve(), 0, 0, message)])

    problems: list[ConfigProblem] = []
    events_doc = _load_checked(root / "events.yaml", "events.schema.json", problems)
    systems_doc = _load_checked(root / "systems.yaml", "systems.schema.json", problems)

    # Each file that passed its config schema is checked further even when
    # the other did not, so that one run reports every problem.
    events: dict[str, EventType] = {}
    validators: dict[str, PayloadValidator] = {}
    user_schema = Path()
    delivery, retention, workers = DeliverySettings(), Retention(), WorkerSettings()
    if events_doc is not None:
        events, validators, user_schema = _build_events(events_doc, problems)
        reader = SettingsReader(events_doc, problems)
        delivery = reader.delivery(
            events_doc.data.get("delivery") or {}, ("delivery",), DeliverySettings()
        )
        retention = reader.retention(events_doc.data.get("retention") or {})
        workers = reader.workers(events_doc.data.get("workers") or {})
    systems: dict[str, System] = {}
    if systems_doc is not None:
        systems = _build_systems(
            systems_doc,
            events if events_doc is not None else None,
            delivery,
            os.environ if environ is None else environ,
            problems,
        )
    config = None
    if events_doc is not None:
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
    if problems or config is None or systems_doc is None:
        error = ConfigError(_without_secrets(problems))
        # What did load lets validate go on to check the examples.
        error.partial = LoadedConfig(config, validators) if config is not None else None
        raise error

    return LoadedConfig(config, validators)


def _load_checked(
    path: Path, schema_name: str, problems: list[ConfigProblem]
) -> YamlDocument | None:
    try:
        document = load_yaml(path)
    except ConfigError as error:
        problems.extend(error.problems)
        return None

    problems.extend(_literal_secrets(document, document.data, ()))
    validator = config_schema_validator(schema_name)
    errors = sorted(validator.iter_errors(document.data), key=_error_order)
    for schema_error in errors:
        key_path: KeyPath = tuple(schema_error.absolute_path)
        if _is_key_error(schema_error):
            # The positions store where the offending key's value starts.
            key_path = (*key_path, str(schema_error.instance))
        if schema_error.validator == "additionalProperties" and isinstance(
            schema_error.instance, dict
        ):
            problems.extend(_unknown_keys(document, key_path, schema_error))
        else:
            problems.append(document.problem(key_path, _describe_config_error(schema_error)))
    return None if errors else document


def _error_order(error: jsonschema.ValidationError) -> list[tuple[int, int | str]]:
    # A YAML key may be an int, a bool or null as well as a string, and
    # Python cannot compare those, so indexes sort as numbers and keys as text.
    return [(0, part) if isinstance(part, int) else (1, str(part)) for part in error.path]


#: A Standard Webhooks signing secret written out in a problem message.
_SECRET_TEXT = re.compile(re.escape(SECRET_PREFIX) + r"[A-Za-z0-9+/=]*")


def _without_secrets(problems: list[ConfigProblem]) -> list[ConfigProblem]:
    # Messages quote values from the files, such as a URL or a schema
    # error's instance, so a signing secret among them is masked.
    return [
        replace(problem, message=_SECRET_TEXT.sub(SECRET_PREFIX + "***", problem.message))
        for problem in problems
    ]


def _literal_secrets(document: YamlDocument, value: Any, key_path: KeyPath) -> list[ConfigProblem]:
    # The message names where the secret sits, never the secret itself.
    if isinstance(value, str) and SECRET_PREFIX in value:
        where = "/".join(str(part) for part in key_path) or "(top level)"
        message = (
            f"{where}: literal signing secret in YAML; put it in an environment variable "
            "and name the variable in secret_env"
        )
        return [document.problem(key_path, message)]
    if isinstance(value, dict):
        items: Iterable[tuple[Any, Any]] = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    else:
        return []

    return [
        problem
        for key, item in items
        for problem in _literal_secrets(document, item, (*key_path, key))
    ]


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
    description = schema.get("description")
    if error.validator == "not" and description:
        return f"{where}: {description}"
    if _is_key_error(error) and description:
        return f"{where}: invalid key {error.instance!r}; expected {description}"
    # The descriptions of patterned values state their rule.
    states_rule = error.validator == "pattern" or (
        error.validator == "type" and "pattern" in schema
    )
    if states_rule and description:
        field_name = str(error.absolute_path[-1]) if error.absolute_path else ""
        if field_name.endswith("_env"):
            # Where a variable's name belongs, the value may be the key itself.
            return (
                f"{where}: invalid variable name, not shown because it may be a key or "
                f"secret; expected {description}. Put the key or secret in that variable."
            )
        return f"{where}: invalid value {error.instance!r}; expected {description}"
    if error.validator == "type" and description:
        expected = _TYPE_NAMES.get(str(error.validator_value), str(error.validator_value))
        return f"{where}: invalid value {error.instance!r}; expected {expected}. {description}"

    return f"{where}: {error.message}"


#: The phrase a type error uses for each JSON Schema type.
_TYPE_NAMES = {
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "true or false",
    "object": "a mapping",
    "array": "a list",
}


def _is_key_error(error: jsonschema.ValidationError) -> bool:
    # A propertyNames error concerns a key, and its absolute_path ends at
    # the mapping that contains the key.
    return "propertyNames" in error.relative_schema_path


def _build_events(
    document: YamlDocument, problems: list[ConfigProblem]
) -> tuple[dict[str, EventType], dict[str, PayloadValidator], Path]:
    base = document.path.parent
    user_schema = (base / document.data.get("user_schema", DEFAULT_USER_SCHEMA)).resolve()
    events: dict[str, EventType] = {}
    validators: dict[str, PayloadValidator] = {}
    wire_types: dict[str, str] = {}
    hookspecs: dict[str, str] = {}
    referenced = ReferencedSchemas(
        [user_schema, *((base / entry["schema"]) for entry in document.data["events"].values())]
    )
    user_schema_valid = _check_user_schema(document, user_schema, referenced, problems)

    for name, entry in document.data["events"].items():
        key_path: KeyPath = ("events", name)
        event = EventType(
            name=name,
            type=entry["type"],
            description=entry["description"],
            hookspec=entry["hookspec"],
            schema_path=(base / entry["schema"]).resolve(),
            routing=_build_routing(entry["routing"]),
            hook=_build_hook(entry.get("hook")),
        )
        problems.extend(_hook_problems(document, key_path, event.hook))
        if event.type in wire_types:
            message = (
                f"events/{name}/type: wire type {event.type!r} is already used by "
                f"{wire_types[event.type]!r}; each event needs its own type"
            )
            problems.append(document.problem((*key_path, "type"), message))
        wire_types[event.type] = name
        if event.hookspec in hookspecs:
            message = (
                f"events/{name}/hookspec: hook {event.hookspec!r} is already raised by "
                f"{hookspecs[event.hookspec]!r}; each event needs its own hook"
            )
            problems.append(document.problem((*key_path, "hookspec"), message))
        hookspecs[event.hookspec] = name

        try:
            _check_schema_file(event.schema_path)
            # A broken file that the schema reaches by $ref is reported at
            # its own line below, once for all the events that use it.
            if user_schema_valid and not referenced.broken_files(event.schema_path):
                validators[name] = PayloadValidator(name, user_schema, event.schema_path)
        except SchemaLoadError as error:
            problems.append(
                document.problem((*key_path, "schema"), f"events/{name}/schema: {error}")
            )
        events[name] = event

    problems.extend(referenced.problems())
    return events, validators, user_schema


def _check_user_schema(
    document: YamlDocument,
    path: Path,
    referenced: ReferencedSchemas,
    problems: list[ConfigProblem],
) -> bool:
    """Report a broken user schema once, at user_schema; return whether it is usable."""
    try:
        _check_schema_file(path)
    except SchemaLoadError as error:
        problems.append(document.problem(("user_schema",), f"user_schema: {error}"))
        return False

    return not referenced.broken_files(path)


def _check_schema_file(path: Path) -> None:
    schema = read_schema(path)
    try:
        jsonschema.Draft202012Validator.check_schema(schema)
    except jsonschema.SchemaError as error:
        where = "/".join(str(part) for part in error.path) or "(top level)"
        message = f"{path} is not a valid draft 2020-12 schema at {where}: {error.message}"
        raise SchemaLoadError(message) from error
    except RecursionError:
        # jsonschema checks nested schemas recursively.
        raise SchemaLoadError(f"{path} is nested too deeply to check as a schema") from None


def _build_hook(entry: Mapping[str, Any] | None) -> HookBinding:
    if entry is None:
        return HookBinding()

    return HookBinding(
        arguments=tuple(entry["arguments"]),
        user=entry["payload"]["user"],
        data=entry["payload"]["data"],
    )


def _hook_problems(
    document: YamlDocument, key_path: KeyPath, hook: HookBinding
) -> list[ConfigProblem]:
    problems = []
    for index, argument in enumerate(hook.arguments):
        if keyword.iskeyword(argument):
            argument_path: KeyPath = (*key_path, "hook", "arguments", index)
            where = "/".join(str(step) for step in argument_path)
            message = f"{where}: {argument!r} is a Python keyword; choose another argument name"
            problems.append(document.problem(argument_path, message))
    for part in ("user", "data"):
        argument = getattr(hook, part).split(".")[0]
        if argument not in hook.arguments:
            part_path: KeyPath = (*key_path, "hook", "payload", part)
            where = "/".join(str(step) for step in part_path)
            message = (
                f"{where}: {argument!r} is not a hook argument; "
                f"the arguments are {', '.join(hook.arguments)}"
            )
            problems.append(document.problem(part_path, message))
    return problems


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
    events: Mapping[str, EventType] | None,
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

        # Without a valid events.yaml there is nothing to check subscriptions against.
        if events is not None:
            _check_subscriptions(document, key_path, entry["events"], events, problems)
        url = _render_url(document, key_path, entry, environ, problems)
        headers = _render_headers(document, key_path, entry, environ, problems)
        systems[slug] = System(
            slug=slug,
            name=entry["name"],
            url=url,
            events=frozenset(entry["events"]),
            key_env=entry["key_env"],
            secret_env=entry.get("secret_env"),
            previous_secret_env=entry.get("previous_secret_env"),
            previous_secret_expires_ms=_expiry_ms(document, key_path, entry, problems),
            ue_id=ue_id,
            allow_http=entry.get("allow_http", False),
            allow_private_network=entry.get("allow_private_network", False),
            delivery=reader.delivery(
                entry.get("delivery") or {}, (*key_path, "delivery"), delivery
            ),
            headers=headers,
            line=document.position((*key_path, "key_env"))[0],
        )

    return systems


def _expiry_ms(
    document: YamlDocument,
    key_path: KeyPath,
    entry: Mapping[str, Any],
    problems: list[ConfigProblem],
) -> int | None:
    text = entry.get("previous_secret_expires")
    if text is None:
        return None

    where = f"systems/{key_path[1]}/previous_secret_expires"
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        when = None
    if when is None or when.tzinfo is None:
        message = (
            f"{where}: invalid time {text!r}; expected ISO 8601 with a time zone, "
            "such as 2027-01-15T00:00:00Z"
        )
        problems.append(document.problem((*key_path, "previous_secret_expires"), message))
        return None
    return int(when.timestamp() * 1000)


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


#: Headers that ue-flow or HTTP itself sets on every delivery, in lower
#: case; systems.yaml cannot override them.
RESERVED_HEADERS = frozenset(
    {"content-type", "user-agent", "content-length", "host", "transfer-encoding"}
)

#: The prefix of the Standard Webhooks headers, which ue-flow sets.
RESERVED_HEADER_PREFIX = "webhook-"


class TemplateEnvironment:
    """The ``env`` of systems.yaml templates: single variables, never the whole environment.

    A template reads ``env.NAME`` or ``env['NAME']``; it cannot list or print
    the environment, and reading a variable in ``hidden``, such as a key or
    secret variable, raises jinja2.SecurityError, so a template cannot send
    one system's secret to another.
    """

    def __init__(self, environ: Mapping[str, str], hidden: frozenset[str] = frozenset()) -> None:
        self._environ = environ
        self._hidden = hidden

    def __getitem__(self, name: str) -> str:
        if name in self._hidden:
            message = f"env.{name} contains a key or signing secret, which templates cannot read"
            raise jinja2.exceptions.SecurityError(message)
        return self._environ[name]

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0

    def __str__(self) -> str:
        return "env"


def render_template(
    template: str, environ: Mapping[str, str], hidden: frozenset[str] = frozenset()
) -> str:
    """Render a systems.yaml template with the environment available as ``env``.

    ``hidden`` names variables the template may not read. Raises
    jinja2.TemplateError, and jinja2.UndefinedError for a name that is not
    defined.
    """
    env = TemplateEnvironment(environ, hidden)
    return _TEMPLATES.from_string(template).render(env=env).strip()


def _render_checked(
    document: YamlDocument,
    key_path: KeyPath,
    template: str,
    environ: Mapping[str, str],
    problems: list[ConfigProblem],
) -> str | None:
    where = "/".join(str(part) for part in key_path)
    try:
        return render_template(template, environ, _secret_variables(document))
    except jinja2.UndefinedError as error:
        missing = re.search(r"has no attribute '([^']+)'", error.message or "")
        name = f"env.{missing.group(1)}" if missing else "a name"
        message = (
            f"{where}: template uses {name}, which is not set; "
            "set it in the environment or add | default('...')"
        )
        problems.append(document.problem(key_path, message))
    except jinja2.TemplateError as error:
        problems.append(document.problem(key_path, f"{where}: invalid template: {error}"))
    return None


def _secret_variables(document: YamlDocument) -> frozenset[str]:
    # Every variable systems.yaml names for a key or secret, of any system.
    names = set()
    for entry in document.data.get("systems") or ():
        if isinstance(entry, Mapping):
            for field in ("key_env", "secret_env", "previous_secret_env"):
                if isinstance(entry.get(field), str):
                    names.add(entry[field])
    return frozenset(names)


def _render_url(
    document: YamlDocument,
    key_path: KeyPath,
    entry: Mapping[str, Any],
    environ: Mapping[str, str],
    problems: list[ConfigProblem],
) -> str:
    where = f"systems/{key_path[1]}/url"
    url = _render_checked(document, (*key_path, "url"), entry["url"], environ, problems)
    if url is None:
        return ""

    problem = url_problem(
        url,
        allow_http=entry.get("allow_http", False),
        allow_private_network=entry.get("allow_private_network", False),
    )
    if problem:
        # The message shows the template, not what the environment filled in.
        if url != entry["url"]:
            problem = problem.replace(repr(url), f"{entry['url']!r} (once rendered)")
        problems.append(document.problem((*key_path, "url"), f"{where}: {problem}"))
    return url


def _render_headers(
    document: YamlDocument,
    key_path: KeyPath,
    entry: Mapping[str, Any],
    environ: Mapping[str, str],
    problems: list[ConfigProblem],
) -> tuple[tuple[str, str], ...]:
    rendered: list[tuple[str, str]] = []
    seen: dict[str, str] = {}
    for name, template in (entry.get("headers") or {}).items():
        header_path: KeyPath = (*key_path, "headers", name)
        where = "/".join(str(part) for part in header_path)
        lowered = name.lower()
        if lowered in RESERVED_HEADERS or lowered.startswith(RESERVED_HEADER_PREFIX):
            message = (
                f"{where}: header {name!r} is set by ue-flow on every delivery and cannot "
                "be overridden; remove it"
            )
            problems.append(document.problem(header_path, message))
            continue
        if lowered in seen:
            message = (
                f"{where}: header {name!r} repeats {seen[lowered]!r}; "
                "header names are case-insensitive, so keep one"
            )
            problems.append(document.problem(header_path, message))
            continue
        seen[lowered] = name

        value = _render_checked(document, header_path, template, environ, problems)
        if value is None:
            continue
        # The value is not quoted in the message because it may hold a secret.
        if any((ord(char) < 0x20 and char != "\t") or ord(char) == 0x7F for char in value):
            message = f"{where}: the rendered value contains a line break or control character"
            problems.append(document.problem(header_path, message))
            continue
        if not value.isascii():
            message = (
                f"{where}: the rendered value contains characters outside ASCII, which "
                "HTTP header values cannot carry reliably; percent-encode or remove them"
            )
            problems.append(document.problem(header_path, message))
            continue
        rendered.append((name, value))

    return tuple(rendered)


def url_problem(url: str, *, allow_http: bool, allow_private_network: bool) -> str | None:
    """Return why ``url`` cannot be a webhook URL, or None when it can.

    Only what the URL itself shows is checked: a host name that resolves to
    a private address is rejected when a delivery connects.
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as error:
        return f"invalid URL {url!r}: {error}"

    del port  # Reading it checks that the port is a number within range.
    if parts.scheme not in ("http", "https") or not parts.hostname:
        schemes = "http://host/path or https://host/path" if allow_http else "https://host/path"
        return f"invalid URL {url!r}: expected {schemes}"
    if parts.scheme == "http" and not allow_http:
        return f"URL {url!r} uses plain http; use https, or set allow_http: true for this system"
    if parts.username or parts.password:
        return "URL must not carry credentials; the system key travels in the envelope"
    rejected = None if allow_private_network else host_problem(parts.hostname)
    if rejected:
        return (
            f"URL {url!r} points at the {rejected}; use a public host, or set "
            "allow_private_network: true for this system"
        )

    return None
