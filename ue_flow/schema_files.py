"""Checks of the schema files that payload schemas reach by ``$ref``, reported at their own lines.

The files that events.yaml names directly are checked by the loader and
reported at the line that names them. A file reached only through a
``$ref``, such as money.json, is checked here once, however many events
use it, and its problems point into that file.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urldefrag, urljoin, urlsplit

import jsonschema
import referencing
import referencing.exceptions
from referencing.jsonschema import DRAFT202012

from .errors import ConfigError, ConfigProblem
from .schemas import SchemaLoadError, read_schema
from .yamlfile import KeyPath, YamlDocument, load_yaml

_META_VALIDATOR = jsonschema.Draft202012Validator(jsonschema.Draft202012Validator.META_SCHEMA)


class ReferencedSchemas:
    """Walks ``$ref`` links from root schema files and checks each file reached once.

    A reached file is checked for JSON syntax, against the draft 2020-12
    meta-schema, and for every ``$ref`` it contains resolving to a local
    file and a location inside it.
    """

    def __init__(self, roots: Iterable[Path]) -> None:
        self.roots = {root.resolve() for root in roots}
        self._problems: dict[Path, list[ConfigProblem]] = {}
        self._targets: dict[Path, set[Path]] = {}

    def broken_files(self, root: Path) -> list[Path]:
        """Return the files reached from ``root``, itself excluded, that have problems."""
        return sorted(
            path
            for path in self._reachable(root.resolve())
            if path not in self.roots and self._problems[path]
        )

    def problems(self) -> list[ConfigProblem]:
        """Return the problems of every reached file that is not a root, in file order."""
        return [
            problem
            for path in sorted(self._problems)
            if path not in self.roots
            for problem in self._problems[path]
        ]

    def _reachable(self, root: Path) -> set[Path]:
        seen: set[Path] = set()
        pending = [root]
        while pending:
            path = pending.pop()
            if path in seen:
                continue
            seen.add(path)
            self._check(path)
            pending.extend(self._targets[path] - seen)
        seen.discard(root)
        return seen

    def _check(self, path: Path) -> None:
        if path in self._problems:
            return

        self._problems[path] = []
        self._targets[path] = set()
        try:
            schema = read_schema(path)
        except SchemaLoadError as error:
            cause = error.__cause__
            if isinstance(cause, json.JSONDecodeError):
                problem = ConfigProblem(
                    path, cause.lineno, cause.colno, f"invalid JSON: {cause.msg}"
                )
            else:
                problem = ConfigProblem(path, 0, 0, str(error))
            self._problems[path].append(problem)
            return

        document = _positions(path, schema)
        try:
            self._problems[path].extend(_meta_schema_problems(document))
            self._check_references(document)
        except RecursionError:
            # Both checks walk the schema recursively.
            message = "the schema is nested too deeply to check"
            self._problems[path].append(ConfigProblem(path, 1, 1, message))

    def _check_references(self, document: YamlDocument) -> None:
        path = document.path
        uri = path.as_uri()
        resource = referencing.Resource.from_contents(
            document.data, default_specification=DRAFT202012
        )
        registry: referencing.Registry[Any] = referencing.Registry(
            retrieve=_retrieve  # type: ignore[call-arg]
        ).with_resource(uri, resource)
        resolver = registry.resolver(base_uri=uri)

        for key_path, reference in _references(document.data, ()):
            target, _ = urldefrag(urljoin(uri, reference))
            target_file = unquote(urlsplit(target).path)
            if "\0" in target_file:
                message = f"$ref {reference!r} is invalid: a file path cannot contain NUL"
                self._problems[path].append(document.problem(key_path, message))
                continue
            target_path = Path(target_file).resolve()
            local = target.startswith("file://") and target != uri
            try:
                resolver.lookup(reference)
            except referencing.exceptions.Unresolvable as error:
                # A file that exists but cannot be read is reported at its own line.
                if local and target_path.is_file() and _unreadable(target_path):
                    self._targets[path].add(target_path)
                    continue
                message = f"$ref {reference!r} does not resolve: {_describe(error, target)}"
                self._problems[path].append(document.problem(key_path, message))
                continue
            if local:
                self._targets[path].add(target_path)


def _unreadable(path: Path) -> bool:
    try:
        read_schema(path)
    except SchemaLoadError:
        return True

    return False


def _retrieve(uri: str) -> referencing.Resource[Any]:
    # Only local files are followed: checking a configuration must never
    # reach the network.
    if not uri.startswith("file://"):
        raise SchemaLoadError(f"only file references are allowed, not {uri!r}")

    contents = read_schema(Path(unquote(urlsplit(uri).path)))
    return referencing.Resource.from_contents(contents, default_specification=DRAFT202012)


def _describe(error: referencing.exceptions.Unresolvable, target: str) -> str:
    # A failed retrieval arrives as Unresolvable caused by Unretrievable,
    # itself caused by the SchemaLoadError that names the file.
    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, SchemaLoadError):
            return str(cause)
        cause = cause.__cause__
    if isinstance(error, referencing.exceptions.PointerToNowhere):
        return f"{error.ref!r} is not found in {unquote(urlsplit(target).path)}"
    if isinstance(error, referencing.exceptions.NoSuchAnchor):
        return f"anchor {error.anchor!r} is not found in {unquote(urlsplit(target).path)}"

    return type(error).__name__


def _positions(path: Path, schema: Any) -> YamlDocument:
    # JSON is read again as YAML only for the line and column of each value;
    # where that fails, problems point at the first line.
    try:
        positioned = load_yaml(path)
    except ConfigError:
        return YamlDocument(path, schema, {})

    return YamlDocument(path, schema, positioned.positions)


def _meta_schema_problems(document: YamlDocument) -> list[ConfigProblem]:
    problems = []
    for error in _META_VALIDATOR.iter_errors(document.data):
        key_path: KeyPath = tuple(error.absolute_path)
        where = "/".join(str(part) for part in key_path) or "(top level)"
        message = f"not a valid draft 2020-12 schema at {where}: {error.message}"
        problems.append(document.problem(key_path, message))
    return problems


def _references(value: Any, key_path: KeyPath) -> Iterator[tuple[KeyPath, str]]:
    # NOTE: every "$ref" key with a string value is taken for a reference,
    # even a property named "$ref" under "properties". Schemas rarely name a
    # property so.
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "$ref" and isinstance(item, str):
                yield (*key_path, key), item
            else:
                yield from _references(item, (*key_path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _references(item, (*key_path, index))
