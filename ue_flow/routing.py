"""Routing: which subscribed systems receive an event, and which part of it."""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from typing import Any, NoReturn

from .config import Config, EventType, System
from .errors import PayloadError

#: Why an event went to no system, in the warning logged then.
UNROUTED = "no subscribed system owns an item of the event"


def resolve_pointer(document: Any, pointer: str) -> Any:
    """Return the value at a JSON pointer (RFC 6901); raise KeyError when absent."""
    value = document
    for token in pointer_tokens(pointer):
        if isinstance(value, Mapping) and token in value:
            value = value[token]
        elif isinstance(value, list) and token.isdigit() and int(token) < len(value):
            value = value[int(token)]
        else:
            raise KeyError(pointer)

    return value


@functools.lru_cache(maxsize=256)
def pointer_tokens(pointer: str) -> tuple[str, ...]:
    """Return the unescaped reference tokens of a JSON pointer (RFC 6901)."""
    # Routing reads the same few pointers from events.yaml for every event.
    return tuple(
        token.replace("~1", "/").replace("~0", "~") for token in pointer.lstrip("/").split("/")
    )


def _json_path(pointer: str) -> str:
    return "$" + "".join(
        f"[{token}]" if token.isdigit() else f".{token}" for token in pointer.lstrip("/").split("/")
    )


def _owner_slug(config: Config, event: EventType, owner: Any, pointer: str) -> str | None:
    if isinstance(owner, str):
        return owner if owner in config.systems else None
    if isinstance(owner, int) and not isinstance(owner, bool):
        for system in config.systems.values():
            if system.ue_id == owner:
                return system.slug
        return None

    rule = f"the owning system must be a slug or an integer id, got {owner!r}"
    raise PayloadError(event.name, _json_path(pointer), rule)


def owners(
    config: Config, event: EventType, payload: Mapping[str, Any], *, strict: bool = False
) -> list[str | None]:
    """Return the owning system of each routed item, or of the whole payload.

    An owner that names no configured system is None, so no system receives
    that item, unless ``strict``, as at emit, when it raises PayloadError:
    a mistyped owner would otherwise drop an order without a trace. Raises
    PayloadError when the owner field is missing.
    """
    routing = event.routing
    if routing.items is None:
        found = [_owner_at(config, event, payload, routing.owner)]
    else:
        items = _array_at(event, payload, routing.items)
        found = [_item_owner(config, event, item, index) for index, item in enumerate(items)]
    if strict:
        for index, slug in enumerate(found):
            if slug is None:
                item = "" if routing.items is None else f"{routing.items}/{index}"
                _raise_unknown_owner(config, event, payload, item + routing.owner)
    return found


def _item_owner(config: Config, event: EventType, item: Any, index: int) -> str | None:
    # The owner pointer is resolved within the item; the whole pointer is
    # built only when there is an error to report.
    routing = event.routing
    try:
        owner = resolve_pointer(item, routing.owner)
    except KeyError:
        _raise_missing_owner(event, f"{routing.items}/{index}{routing.owner}")
    if isinstance(owner, str) and owner in config.systems:
        return owner
    return _owner_slug(config, event, owner, f"{routing.items}/{index}{routing.owner}")


def _raise_unknown_owner(config: Config, event: EventType, payload: Any, pointer: str) -> None:
    value = resolve_pointer(payload, pointer)
    known = ", ".join(
        f"{slug} (id {system.ue_id})" if system.ue_id is not None else slug
        for slug, system in config.systems.items()
    )
    rule = f"owner {value!r} names no configured system; systems.yaml declares {known}"
    raise PayloadError(event.name, _json_path(pointer), rule)


def _array_at(event: EventType, payload: Any, pointer: str) -> list[Any]:
    # The pointer comes from events.yaml, which cannot know the payload's shape.
    try:
        value = resolve_pointer(payload, pointer)
    except KeyError:
        rule = "missing, but the routing rule in events.yaml reads it"
        raise PayloadError(event.name, _json_path(pointer), rule) from None
    if not isinstance(value, list):
        rule = (
            f"must be an array because the routing rule in events.yaml splits it, "
            f"got {type(value).__name__}"
        )
        raise PayloadError(event.name, _json_path(pointer), rule)

    return value


def _owner_at(config: Config, event: EventType, payload: Any, pointer: str) -> str | None:
    try:
        owner = resolve_pointer(payload, pointer)
    except KeyError:
        _raise_missing_owner(event, pointer)

    return _owner_slug(config, event, owner, pointer)


def _raise_missing_owner(event: EventType, pointer: str) -> NoReturn:
    rule = "required to route the event: name the owning system's slug or integer id"
    raise PayloadError(event.name, _json_path(pointer), rule) from None


def route(
    config: Config,
    event: EventType,
    payload: Mapping[str, Any],
    only: Iterable[str] | None = None,
    *,
    slugs: list[str | None] | None = None,
) -> dict[str, dict[str, Any]]:
    """Return the payload each receiving system gets, keyed by slug.

    A system receives the event when it subscribes to it, is in ``only``
    (when given) and owns at least one item; with ``items`` routing, its
    copy holds only its own items and the related entries that refer to
    them. The payload is not modified; the parts share its unchanged values,
    so treat them as read-only. ``slugs`` is what ``owners`` returned for
    the payload, when the caller has it already.
    """
    narrowed = set(only) if only is not None else None
    if slugs is None:
        slugs = owners(config, event, payload)
    result: dict[str, dict[str, Any]] = {}

    for system in config.subscribers(event.name):
        if narrowed is not None and system.slug not in narrowed:
            continue
        if system.slug not in slugs:
            continue
        try:
            part = _part_for(system, event, payload, slugs)
        except KeyError as error:
            pointer = str(error.args[0])
            rule = "missing, but the routing rule in events.yaml reads it"
            raise PayloadError(event.name, _json_path(pointer), rule) from None
        if part is not None:
            result[system.slug] = part

    return result


def _part_for(
    system: System, event: EventType, payload: Mapping[str, Any], slugs: list[str | None]
) -> dict[str, Any] | None:
    routing = event.routing
    if routing.items is None:
        return dict(payload)

    items = _array_at(event, payload, routing.items)
    kept = [item for item, owner in zip(items, slugs, strict=True) if owner == system.slug]
    part = _with_value(payload, routing.items, kept)
    kept_ids = {item.get("id") for item in kept if isinstance(item, Mapping)}

    for related in routing.related:
        entries = _array_at(event, part, related.items)
        kept_entries = [entry for entry in entries if _refers_to(entry, related.item_id, kept_ids)]
        if related.required and not kept_entries:
            return None
        part = _with_value(part, related.items, kept_entries)

    return dict(part)


def _with_value(document: Any, pointer: str, value: Any) -> Any:
    """Return a copy of ``document`` with ``value`` at ``pointer``.

    Only the containers on the pointer's path are copied; everything else
    is shared with ``document``, which is not modified. A deep copy per
    system would cost the square of the fan-out.
    """
    return _replaced(document, list(pointer_tokens(pointer)), value)


def _replaced(node: Any, tokens: list[str], value: Any) -> Any:
    if not tokens:
        return value

    head, rest = tokens[0], tokens[1:]
    if isinstance(node, Mapping):
        copied = dict(node)
        copied[head] = _replaced(node[head], rest, value)
        return copied
    index = int(head)
    copied_list = list(node)
    copied_list[index] = _replaced(node[index], rest, value)
    return copied_list


def _refers_to(entry: Any, pointer: str, ids: set[Any]) -> bool:
    try:
        return resolve_pointer(entry, pointer) in ids
    except KeyError:
        return False
