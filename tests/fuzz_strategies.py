"""Hypothesis strategies for fuzzing payloads and configuration files.

Payload strategies produce the Python values an application might hand to
``emit``, JSON or not. Configuration strategies produce edits of the
shipped YAML and JSON Schema files: text fragments, structural changes
re-dumped with ``yaml.safe_dump``, and byte-level corruption.
"""

from __future__ import annotations

import collections
import datetime
import enum
import json
import re
import types
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import yaml
from hypothesis import strategies as st

#: A step into a parsed document: a mapping key or a sequence index.
Step = Any

# --- payload values ------------------------------------------------------------------

#: Lone surrogates: valid in a Python str, impossible to encode as UTF-8.
SURROGATES = st.sampled_from(["\ud800", "\udfff", "a\udc80b", "\ud83d"])

TEXT = (
    st.text(st.characters(), max_size=12)
    | SURROGATES
    | st.sampled_from(
        [
            "",
            "\x00",
            "\n",
            "\t",
            "\x7f",
            "\u202e",
            "\ufeff",
            "$",
            "a.b",
            "[0]",
            "mitxonline",
            "learn",
        ]
    )
)

#: Integers past 64 bits.
BIG_INTEGERS = st.sampled_from([2**63, -(2**63) - 1, 2**64, 10**30, -(10**300)])

#: Integers past the 4300 digits that Python's int to str conversion
#: accepts by default. They are built by ``map`` because Hypothesis prints
#: a strategy's constants, and such an integer has no repr.
HUGE_INTEGERS = st.integers(4301, 5000).map(lambda digits: 10**digits)

INTEGERS = st.integers() | BIG_INTEGERS | HUGE_INTEGERS

FLOATS = st.floats() | st.sampled_from([float("nan"), float("inf"), -0.0, 1e308, 5e-324])

SPECIAL_DECIMALS = st.sampled_from(
    [
        Decimal("NaN"),
        Decimal("sNaN"),
        Decimal("-sNaN"),
        Decimal("Infinity"),
        Decimal("-Infinity"),
        Decimal("-0"),
        Decimal("0E-30"),
        Decimal("1E+30"),
        Decimal("1E+999999"),
        Decimal("1E+999999999999999999"),
        Decimal("1E-999999999999999999"),
        Decimal("123.456"),
        Decimal("99999999999999999999999999.99"),
        Decimal("999999999999999999999999999.99"),
    ]
)

DECIMALS = (
    st.decimals(allow_nan=True, allow_infinity=True)
    | SPECIAL_DECIMALS
    | st.builds(
        lambda sign, digits, exponent: Decimal((sign, tuple(digits), exponent)),
        st.integers(0, 1),
        st.lists(st.integers(0, 9), min_size=1, max_size=40),
        st.integers(-(10**6), 10**6),
    )
)


class Color(enum.IntEnum):
    """An int subclass, as ORM choices often are."""

    RED = 1


class Slug(enum.StrEnum):
    """A str subclass, as ORM text choices often are."""

    MITX = "mitxonline"


class Opaque:
    """A value with no JSON form."""

    def __repr__(self) -> str:
        return "Opaque()"


OTHER_SCALARS = st.one_of(
    st.binary(max_size=8),
    st.binary(max_size=8).map(bytearray),
    st.datetimes(),
    st.dates(),
    st.times(),
    st.complex_numbers(max_magnitude=10),
    st.sampled_from([Color.RED, Slug.MITX, Ellipsis, Opaque(), range(3), NotImplemented]),
)

SCALARS = st.one_of(st.none(), st.booleans(), INTEGERS, FLOATS, TEXT, DECIMALS, OTHER_SCALARS)

#: Hashable values that are safe to put in a set or use as a key; a
#: signaling NaN Decimal cannot be hashed.
HASHABLE = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(), TEXT, st.binary(max_size=4)
)

MAPPING_TYPES: tuple[Callable[[dict[Any, Any]], Any], ...] = (
    dict,
    collections.OrderedDict,
    collections.UserDict,
    types.MappingProxyType,
)


def _containers(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(
        st.lists(children, max_size=4),
        st.lists(children, max_size=4).map(tuple),
        st.sets(HASHABLE, max_size=3),
        st.frozensets(HASHABLE, max_size=3),
        st.dictionaries(TEXT, children, max_size=4),
        st.dictionaries(HASHABLE, children, max_size=3),
        st.tuples(st.sampled_from(MAPPING_TYPES), st.dictionaries(TEXT, children, max_size=3)).map(
            lambda pair: pair[0](pair[1])
        ),
    )


#: Any value an application might pass as ``user`` or ``data``, nested.
JSON_ISH = st.recursive(SCALARS, _containers, max_leaves=20)

# --- mutations of the shipped examples -------------------------------------------------

MONEY = re.compile(r"(0|[1-9][0-9]*)\.[0-9]{2}")


def paths_of(value: Any, prefix: tuple[Step, ...] = ()) -> Iterator[tuple[Step, ...]]:
    """Yield the path of every value inside ``value``, the root included."""
    yield prefix
    if isinstance(value, dict):
        for key, item in value.items():
            yield from paths_of(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from paths_of(item, (*prefix, index))


def get_at(document: Any, path: tuple[Step, ...]) -> Any:
    """Return the value at ``path``."""
    for step in path:
        document = document[step]
    return document


def money_variants(text: str) -> st.SearchStrategy[Any]:
    """Return other forms of an amount: Decimal, float, more places, scaled."""
    amount = Decimal(text)
    return st.sampled_from(
        [
            amount,
            float(amount),
            amount.normalize(),
            amount + Decimal("0.001"),
            amount * Decimal("1E+30"),
            Decimal(f"{text}E+999999"),
            -amount,
            int(amount),
            text + "\n",
            " " + text,
        ]
    )


@st.composite
def mutated_payloads(draw: st.DrawFn, payload: dict[str, Any]) -> dict[str, Any]:
    """Apply one to three random edits to a deep copy of ``payload``."""
    document = json.loads(json.dumps(payload))
    for _ in range(draw(st.integers(1, 3))):
        paths = list(paths_of(document))
        path = draw(st.sampled_from(paths))
        value = get_at(document, path)
        operation = draw(st.sampled_from(["drop", "add", "replace", "money"]))
        if operation == "drop" and path:
            del get_at(document, path[:-1])[path[-1]]
        elif operation == "add" and isinstance(value, dict):
            value[draw(TEXT)] = draw(JSON_ISH)
        elif operation == "add" and isinstance(value, list):
            value.insert(draw(st.integers(0, len(value))), draw(JSON_ISH))
        elif operation == "replace" and path:
            get_at(document, path[:-1])[path[-1]] = draw(JSON_ISH)
        elif operation == "money":
            money_paths = [
                found
                for found in paths
                if found
                and isinstance(get_at(document, found), str)
                and MONEY.fullmatch(get_at(document, found))
            ]
            if money_paths:
                chosen = draw(st.sampled_from(money_paths))
                replacement = draw(money_variants(get_at(document, chosen)))
                get_at(document, chosen[:-1])[chosen[-1]] = replacement
    return document


#: The ``systems`` argument of ``emit``: lists of slugs and everything else.
SYSTEMS = st.one_of(
    st.none(),
    TEXT,
    st.integers(),
    st.lists(st.sampled_from(["mitxonline", "learn"]) | TEXT, max_size=3),
    st.lists(JSON_ISH, max_size=3),
    st.sets(HASHABLE, max_size=3),
    st.binary(max_size=4),
    st.dictionaries(TEXT, st.integers(), max_size=2),
    st.lists(st.sampled_from(["mitxonline", "learn"]), max_size=2).map(iter),
    SPECIAL_DECIMALS,
)

#: Event names: the declared ones, near misses and arbitrary text.
EVENT_NAMES = (
    st.sampled_from(
        ["basket_add", "post_sale", "post_refund", "Post_Sale", "post_sale ", "presale", ""]
    )
    | TEXT
)

# --- configuration files --------------------------------------------------------------

#: YAML fragments that exercise the parser: flow collections, anchors,
#: aliases, tags, directives, block scalars and odd scalars.
YAML_FRAGMENTS = st.sampled_from(
    [
        "{",
        "}",
        "[",
        "]",
        "- ",
        ": ",
        "? ",
        "&a ",
        "*a",
        "*missing",
        "x: &a [*a]",
        "<<: *a",
        "!!binary ",
        "!!python/object:os.system ",
        "!!python/name:os.system",
        "!!set {a, b}",
        "!!omap [a: 1]",
        "!!timestamp 2001-12-14",
        "!custom ",
        "%YAML 1.1\n---\n",
        "%TAG ! tag:example.com,2000:\n",
        "---\n",
        "...\n",
        "|\n  block\n",
        ">-\n  folded\n",
        "'",
        '"',
        "\\",
        "#",
        "@",
        "`",
        "\t",
        "\x00",
        "\ufeff",
        "\u2028",
        "~",
        "null",
        "yes",
        "no",
        "on",
        ".inf",
        "-.inf",
        ".nan",
        "0x1F",
        "0o17",
        "1_000",
        "1e999",
        "9" * 400,
        "2001-12-14t21:59:43.10-05:00",
        "5s\n",
        "-1s",
        "0ms",
        "99999999999999999999999999d",
        "1.5s",
        "5 s",
        "{{ env.X }}",
        "{% for %}",
        "{{ ''.__class__ }}",
        "whsec_c2VjcmV0",
        "[" * 200 + "]" * 200,
        "{a: " * 200 + "1" + "}" * 200,
    ]
)

#: Scalars that yaml.safe_dump can write, in the types a YAML file can hold.
YAML_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    BIG_INTEGERS,
    st.floats(),
    st.text(max_size=12),
    st.sampled_from(
        [
            "5s",
            "5s\n",
            "-1s",
            "0s",
            "99999999999999999999d",
            "10h",
            "https://example.invalid/hook",
            "http://127.0.0.1:1/hook",
            "{{ env.NOPE }}",
            "{{ 1/0 }}",
            "{% raw %}",
            "../schemas/money.json",
            "/nonexistent.json",
            "../schemas",
            "/data/lines",
            "/",
            "~1",
            "basket_add",
            "post_sale",
            "mitxonline",
            "presale",
            "postsale",
            "class",
            "user.x.y",
            "UE_FLOW_KEY_MITXONLINE",
            "whsec_c2VjcmV0",
            "X-Header\r\nInjected: 1",
        ]
    ),
    st.dates(),
    st.datetimes(),
)

YAML_KEYS = st.one_of(
    st.text(max_size=8),
    st.integers(-3, 3),
    st.booleans(),
    st.none(),
    st.floats(allow_nan=False),
    st.sampled_from(["delivery", "retry", "schedule", "backoff", "hook", "routing", "related"]),
)


def _yaml_containers(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.lists(children, max_size=3) | st.dictionaries(YAML_KEYS, children, max_size=3)


#: Values that yaml.safe_dump can write, nested.
YAML_VALUES = st.recursive(YAML_SCALARS, _yaml_containers, max_leaves=8)


def nested(depth: int) -> Any:
    """Return a list nested ``depth`` levels deep."""
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


@st.composite
def mutated_documents(draw: st.DrawFn, document: Any, values: st.SearchStrategy[Any]) -> Any:
    """Apply one to three deletions, insertions or replacements to a parsed document."""
    document = json.loads(json.dumps(document, default=str))
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(list(paths_of(document))))
        target = get_at(document, path)
        operation = draw(st.sampled_from(["delete", "insert", "replace", "nest"]))
        if operation == "delete" and path:
            del get_at(document, path[:-1])[path[-1]]
        elif operation == "insert" and isinstance(target, dict):
            target[draw(YAML_KEYS)] = draw(values)
        elif operation == "insert" and isinstance(target, list):
            target.insert(draw(st.integers(0, len(target))), draw(values))
        elif operation == "replace" and path:
            get_at(document, path[:-1])[path[-1]] = draw(values)
        elif operation == "replace":
            document = draw(values)
        elif operation == "nest" and path:
            get_at(document, path[:-1])[path[-1]] = nested(draw(st.integers(10, 300)))
    return document


def dump_yaml(document: Any) -> bytes:
    """Write ``document`` as YAML the way a person might, keeping key order."""
    text = yaml.safe_dump(document, sort_keys=False, allow_unicode=True, width=1000)
    return text.encode("utf-8")


@st.composite
def text_edits(draw: st.DrawFn, original: bytes) -> bytes:
    """Insert YAML fragments or arbitrary text at random line starts or offsets."""
    text = original.decode("utf-8")
    for _ in range(draw(st.integers(1, 3))):
        fragment = draw(YAML_FRAGMENTS | st.text(max_size=10))
        lines = text.split("\n")
        index = draw(st.integers(0, len(lines) - 1))
        line = lines[index]
        column = draw(st.integers(0, len(line)))
        lines[index] = line[:column] + fragment + line[column:]
        text = "\n".join(lines)
    return text.encode("utf-8", errors="surrogatepass")


@st.composite
def byte_edits(draw: st.DrawFn, original: bytes) -> bytes:
    """Corrupt the bytes: truncate, insert random or invalid UTF-8 bytes, add tabs."""
    data = original
    for _ in range(draw(st.integers(1, 3))):
        operation = draw(st.sampled_from(["truncate", "insert", "overwrite", "tabs", "bom"]))
        position = draw(st.integers(0, len(data)))
        if operation == "truncate":
            data = data[:position]
        elif operation == "insert":
            noise = draw(
                st.binary(min_size=1, max_size=6)
                | st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x00", b"\r", b"\x85"])
            )
            data = data[:position] + noise + data[position:]
        elif operation == "overwrite" and position < len(data):
            data = data[:position] + bytes([draw(st.integers(0, 255))]) + data[position + 1 :]
        elif operation == "tabs":
            data = data.replace(b"  ", b"\t", draw(st.integers(1, 5)))
        elif operation == "bom":
            data = b"\xef\xbb\xbf" + data
    return data


#: Anchors and aliases written into a whole document: a self-referring
#: list, a merge key and a small "billion laughs" expansion.
ALIAS_DOCUMENTS = st.sampled_from(
    [
        b"events: &a {x: *a}\n",
        b"systems: &a [*a]\n",
        b"base: &b {type: presale}\nevents:\n  x:\n    <<: *b\n",
        b"a: &a [1, 1, 1, 1]\nb: &b [*a, *a, *a, *a]\nc: &c [*b, *b, *b, *b]\n"
        b"d: &d [*c, *c, *c, *c]\nevents: [*d, *d, *d, *d]\n",
    ]
)


@st.composite
def schema_edits(draw: st.DrawFn, original: bytes) -> bytes:
    """Edit a JSON Schema file: change its keywords, or corrupt its bytes."""
    if draw(st.booleans()):
        return draw(byte_edits(original))

    schema = json.loads(original)
    keyword = draw(
        st.sampled_from(["type", "pattern", "$ref", "properties", "required", "enum", "$schema"])
        | st.text(max_size=6)
    )
    value = draw(
        st.one_of(
            YAML_SCALARS.map(lambda scalar: scalar if not isinstance(scalar, datetime.date) else 1),
            st.sampled_from(
                [
                    "string",
                    ["string", "null"],
                    "nonsense",
                    "(?=a)",
                    "[",
                    "\\p{L}",
                    "(?P<name>a)",
                    "a{99999999}",
                    "#",
                    "#/nope",
                    "#/$defs/loop",
                    "product.json",
                    "missing.json",
                    "file:///nonexistent/schema.json",
                    "urn:example:nothing",
                    {"$ref": "#"},
                    {"not": {}},
                    {"x": {"type": "integer"}},
                    [],
                ]
            ),
        )
    )
    if isinstance(schema, dict) and draw(st.booleans()):
        schema[keyword] = value
    elif isinstance(schema, dict) and schema:
        del schema[draw(st.sampled_from(sorted(schema)))]
    return json.dumps(schema, indent=2).encode("utf-8")
