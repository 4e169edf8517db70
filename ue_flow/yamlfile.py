"""YAML documents loaded with the source position of every value."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError, ConfigProblem

#: A location inside a document: mapping keys and sequence indexes.
KeyPath = tuple[str | int, ...]

#: The deepest nesting a document may have. The checks that follow parsing
#: recurse once or more per level, and configuration files need a few.
MAX_DEPTH = 100

#: The maximum number of values in a document once its aliases are expanded, so
#: that a "billion laughs" of nested aliases is rejected instead of
#: expanded. Configuration files have a few hundred.
MAX_VALUES = 100_000


@dataclass(frozen=True)
class YamlDocument:
    """A parsed YAML file: its data and the 1-based line and column of each value."""

    path: Path
    data: Any
    positions: dict[KeyPath, tuple[int, int]] = field(repr=False)

    def position(self, key_path: KeyPath) -> tuple[int, int]:
        """Return where ``key_path`` sits, or its nearest ancestor that exists."""
        for end in range(len(key_path), -1, -1):
            found = self.positions.get(tuple(key_path[:end]))
            if found is not None:
                return found

        return (1, 1)

    def problem(self, key_path: KeyPath, message: str) -> ConfigProblem:
        """Build a problem located at ``key_path``."""
        line, column = self.position(key_path)
        return ConfigProblem(self.path, line, column, message)


def load_yaml(path: Path) -> YamlDocument:
    """Parse ``path`` safely; raise ConfigError for syntax errors and duplicate keys."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([ConfigProblem(path, 0, 0, "file not found")]) from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError([ConfigProblem(path, 0, 0, f"cannot read file: {error}")]) from error

    try:
        loader = yaml.SafeLoader(text)
    except yaml.reader.ReaderError as error:
        # Raised for characters YAML does not allow, such as control
        # characters; it carries an offset into the text, not a line.
        line, column = _line_and_column(text, error.position)
        message = f"invalid YAML: {error.reason} (character {error.character!r})"
        raise ConfigError([ConfigProblem(path, line, column, message)]) from error

    try:
        node = loader.get_single_node()
        if node is None:
            raise ConfigError([ConfigProblem(path, 1, 1, "file is empty")])
        positions: dict[KeyPath, tuple[int, int]] = {}
        problems: list[ConfigProblem] = []
        _index_node(node, (), positions, problems, path)
        if problems:
            raise ConfigError(problems)
        data = _construct(loader, node, path)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        line, column = (mark.line + 1, mark.column + 1) if mark else (0, 0)
        message = f"invalid YAML: {error.problem or error.context}"
        raise ConfigError([ConfigProblem(path, line, column, message)]) from error
    except RecursionError:
        # PyYAML composes nested collections recursively; the mark is where
        # parsing had reached.
        mark = loader.get_mark()
        message = f"invalid YAML: collections nested more than {MAX_DEPTH} levels deep"
        raise ConfigError([ConfigProblem(path, mark.line + 1, mark.column + 1, message)]) from None
    finally:
        loader.dispose()

    return YamlDocument(path, data, positions)


def _construct(loader: yaml.SafeLoader, node: yaml.Node, path: Path) -> Any:
    try:
        return loader.construct_document(node)
    except (AttributeError, KeyError, TypeError, ValueError):
        # PyYAML's scalar constructors fail this way when a value does not
        # fit its explicit tag, such as "!!int abc" or "!!bool maybe".
        bad = _misfit_scalar(loader, node)
        if bad is None:
            message = "invalid YAML: a value does not fit its explicit tag"
            raise ConfigError([ConfigProblem(path, 1, 1, message)]) from None
        line, column = bad.start_mark.line + 1, bad.start_mark.column + 1
        message = f"invalid YAML: {bad.value!r} is not a valid {bad.tag.rsplit(':', 1)[-1]}"
        raise ConfigError([ConfigProblem(path, line, column, message)]) from None


def _misfit_scalar(loader: yaml.SafeLoader, node: yaml.Node) -> yaml.Node | None:
    # Runs after construction failed, to find the scalar that made it fail.
    if isinstance(node, yaml.ScalarNode):
        constructor = loader.yaml_constructors.get(node.tag)
        try:
            if constructor is not None:
                constructor(loader, node)
        except (AttributeError, KeyError, TypeError, ValueError):
            return node
        return None

    children = node.value
    if isinstance(node, yaml.MappingNode):
        children = [child for pair in node.value for child in pair]
    for child in children:
        found = _misfit_scalar(loader, child)
        if found is not None:
            return found
    return None


def _line_and_column(text: str, offset: int) -> tuple[int, int]:
    line_start = text.rfind("\n", 0, offset) + 1
    return text.count("\n", 0, offset) + 1, offset - line_start + 1


def _index_node(
    node: yaml.Node,
    key_path: KeyPath,
    positions: dict[KeyPath, tuple[int, int]],
    problems: list[ConfigProblem],
    path: Path,
    ancestors: frozenset[int] = frozenset(),
) -> None:
    positions[key_path] = (node.start_mark.line + 1, node.start_mark.column + 1)
    if len(positions) > MAX_VALUES:
        message = (
            f"the document holds more than {MAX_VALUES} values once its aliases are expanded; "
            "write the values out or use fewer nested aliases"
        )
        raise ConfigError([ConfigProblem(path, *positions[key_path], message)])
    if len(key_path) > MAX_DEPTH:
        message = f"collections nested more than {MAX_DEPTH} levels deep"
        problems.append(ConfigProblem(path, *positions[key_path], message))
        return

    # An alias may refer to an enclosing anchor (``&a [*a]``); following it
    # would never end, so it is reported instead.
    if id(node) in ancestors:
        message = "recursive alias: the value contains itself; point the alias at another anchor"
        problems.append(ConfigProblem(path, *positions[key_path], message))
        return
    ancestors = ancestors | {id(node)}

    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            key = str(key_node.value)
            line = key_node.start_mark.line + 1
            if key in seen:
                message = f"duplicate key {key!r}; it was first set on line {seen[key]}"
                problems.append(ConfigProblem(path, line, key_node.start_mark.column + 1, message))
            seen[key] = line
            _index_node(value_node, (*key_path, key), positions, problems, path, ancestors)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _index_node(item, (*key_path, index), positions, problems, path, ancestors)
