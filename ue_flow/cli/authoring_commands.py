"""Commands for people editing the configuration: render, events, docs.

None of them sends anything or prints a key or signing secret.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import jinja2

from ..catalog import catalog_markdown
from ..config import Config, System
from ..delivery import USER_AGENT
from ..envelope import envelope_body
from ..errors import ConfigError, PayloadError
from ..loader import LoadedConfig, load_config, render_template
from ..routing import route
from ..signing import ID_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER
from ..yamlfile import load_yaml
from .common import (
    EXIT_INVALID,
    EXIT_OK,
    Commands,
    add_config_option,
    add_payload_arguments,
    print_problems,
    read_payload,
    unknown_name_problem,
    usage_error,
)

#: The placeholder printed for the system key and every value read from the environment.
REDACTED = "***"

#: The catalog file of ``ue-flow docs``, relative to the working directory.
DEFAULT_DOCS_PATH = "docs/events.md"


def register(commands: Commands) -> None:
    """Add the render, events and docs commands."""
    render = commands.add_parser(
        "render", help="print the body and headers each system would receive, sending nothing"
    )
    add_payload_arguments(render)
    render.add_argument(
        "--system",
        action="append",
        dest="systems",
        metavar="SLUG",
        help="show only this system; repeat for several",
    )
    render.add_argument(
        "--format", choices=("text", "json"), default="text", help="output format (default text)"
    )
    render.set_defaults(command="render", run=run_render)

    events = commands.add_parser("events", help="list the event catalog")
    add_config_option(events)
    events.add_argument(
        "--format", choices=("text", "json"), default="text", help="output format (default text)"
    )
    events.set_defaults(command="events", run=run_events)

    docs = commands.add_parser("docs", help="write the event catalog as Markdown")
    add_config_option(docs)
    docs.add_argument(
        "--output",
        metavar="FILE",
        default=DEFAULT_DOCS_PATH,
        help=f"file to write (default {DEFAULT_DOCS_PATH})",
    )
    docs.add_argument(
        "--check",
        action="store_true",
        help="write nothing; exit 1 when FILE differs from the generated catalog",
    )
    docs.set_defaults(command="docs", run=run_docs)


def run_render(args: argparse.Namespace) -> int:
    """Print what each receiving system would get for one payload file."""
    from ..engine import new_event_id, validate_event

    try:
        loaded = load_config(args.config)
        unknown = unknown_name_problem(loaded.config, args.event, args.systems or ())
        if unknown is not None:
            return usage_error(unknown)

        _, payload = read_payload(args)
        normalized = validate_event(
            loaded,
            args.event,
            user=payload.get("user", {}),
            data=payload.get("data", {}),
            systems=args.systems,
        )
        config = loaded.config
        event = config.events[args.event]
        parts = route(config, event, normalized, args.systems)
    except ConfigError as error:
        print_problems(error.problems)
        return EXIT_INVALID
    except PayloadError as error:
        print(f"{args.file}: error: {error}", file=sys.stderr)
        return EXIT_INVALID

    event_id = new_event_id()
    timestamp = int(time.time())
    deliveries = [
        _delivery(loaded, config.systems[slug], event.type, part, event_id, timestamp)
        for slug, part in parts.items()
    ]
    output = _format_deliveries(deliveries, args.format)
    print(_scrub(output, config), end="")
    if not deliveries:
        print(f"no subscribed system receives this {args.event} event", file=sys.stderr)
    return EXIT_OK


def _delivery(
    loaded: LoadedConfig,
    system: System,
    wire_type: str,
    part: dict[str, Any],
    event_id: str,
    timestamp: int,
) -> dict[str, Any]:
    body = envelope_body(system.slug, REDACTED, wire_type, part["user"], part["data"])
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        ID_HEADER: event_id,
        TIMESTAMP_HEADER: str(timestamp),
    }
    if system.secret_env is not None:
        headers[SIGNATURE_HEADER] = f"v1,{REDACTED} (signed at send time)"
    headers.update(_redacted_headers(loaded.config, system))
    return {"system": system.slug, "url": system.url, "headers": headers, "body": body}


def _redacted_headers(config: Config, system: System) -> dict[str, str]:
    # The loaded headers hold values read from the environment, which may
    # be tokens, so each template is rendered again over an environment in
    # which every variable reads as REDACTED.
    if not system.headers:
        return {}

    document = load_yaml(config.directory / "systems.yaml")
    entry = next(item for item in document.data["systems"] if item["slug"] == system.slug)
    redacted_environ = dict.fromkeys(os.environ, REDACTED)
    headers = {}
    for name, _ in system.headers:
        try:
            headers[name] = render_template(entry["headers"][name], redacted_environ)
        except jinja2.TemplateError:
            headers[name] = REDACTED
    return headers


def _format_deliveries(deliveries: list[dict[str, Any]], output_format: str) -> str:
    if output_format == "json":
        report = [{**delivery, "body": json.loads(delivery["body"])} for delivery in deliveries]
        return json.dumps(report, indent=2, ensure_ascii=False) + "\n"

    blocks = []
    for delivery in deliveries:
        lines = [f"# {delivery['system']}: POST {delivery['url']}"]
        lines.extend(f"{name}: {value}" for name, value in delivery["headers"].items())
        lines.extend(["", delivery["body"].decode("utf-8"), ""])
        blocks.append("\n".join(lines))
    return "\n".join(blocks)


def _scrub(text: str, config: Config) -> str:
    # A payload could carry a key or a secret by mistake; neither may reach
    # the terminal.
    for system in config.systems.values():
        for variable in (system.key_env, system.secret_env):
            for value in os.environ.get(variable or "", "").split():
                text = text.replace(value, REDACTED)
    return text


def run_events(args: argparse.Namespace) -> int:
    """Print each event's name, wire type, hook, subscribers and description."""
    try:
        config = load_config(args.config).config
    except ConfigError as error:
        print_problems(error.problems)
        return EXIT_INVALID

    if args.format == "json":
        rows = [
            {
                "name": event.name,
                "type": event.type,
                "hookspec": event.hookspec,
                "subscribers": [system.slug for system in config.subscribers(event.name)],
                "description": event.description,
            }
            for event in config.events.values()
        ]
        print(json.dumps(rows, indent=2))
        return EXIT_OK

    table = [("EVENT", "TYPE", "HOOK", "SUBSCRIBERS", "DESCRIPTION")]
    for event in config.events.values():
        subscribers = ",".join(system.slug for system in config.subscribers(event.name))
        table.append(
            (event.name, event.type, event.hookspec, subscribers or "-", event.description)
        )
    widths = [max(len(line[column]) for line in table) for column in range(4)]
    for line in table:
        cells = [cell.ljust(width) for cell, width in zip(line, widths, strict=False)]
        print("  ".join([*cells, line[4]]))
    return EXIT_OK


def run_docs(args: argparse.Namespace) -> int:
    """Write the event catalog, or with --check compare it with the file."""
    try:
        config = load_config(args.config).config
    except ConfigError as error:
        print_problems(error.problems)
        return EXIT_INVALID

    text = catalog_markdown(config)
    output = Path(args.output)
    if args.check:
        try:
            current = output.read_text(encoding="utf-8")
        except FileNotFoundError:
            current = None
        if current != text:
            state = "is missing" if current is None else "is out of date"
            print(f"error: {output} {state}; run: ue-flow docs --output {output}", file=sys.stderr)
            return EXIT_INVALID
        print(f"ok: {output} is up to date")
        return EXIT_OK

    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text, encoding="utf-8")
    print(f"wrote {output}")
    return EXIT_OK
