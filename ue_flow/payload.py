"""Payload normalization: Python values to the JSON the wire carries."""

from __future__ import annotations

import decimal
import math
import sys
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from .errors import PayloadError

_TWO_PLACES = Decimal("0.01")

#: Amounts are quantized in this context rather than the caller's, so an
#: application's decimal settings cannot change them: 28 significant digits
#: (Python's default precision), and an error where a result would not fit.
_MONEY_CONTEXT = decimal.Context(prec=28, traps=[decimal.InvalidOperation])

#: The deepest nesting of lists and mappings a payload may have. Normalizing,
#: jsonschema and a receiver's ``json.loads`` recurse at least once per
#: level, and Python raises RecursionError at 1000 frames by default.
MAX_DEPTH = 100

#: An integer of at most this many bits has at most 4215 decimal digits, so
#: it converts to text under Python's default limit of 4300 digits
#: (``sys.int_info.default_max_str_digits``) without being tried.
_SAFE_INT_BITS = 14_000


def normalize(event_name: str, value: Any, path: str = "$") -> Any:
    """Return ``value`` as plain JSON data, with Decimals as two-place strings.

    A Decimal with at most two places becomes a string such as "100.00";
    one with more places keeps them, so money's schema rejects it instead
    of the engine rounding somebody's cents away. Floats pass through and
    the schemas reject them where money is expected. Values JSON cannot
    carry raise PayloadError, and so do strings with a lone surrogate
    (UTF-8 cannot encode them), integers longer than Python's int to str
    limit and nesting deeper than ``MAX_DEPTH``. A value that is plain
    JSON already is returned as it is, not copied.
    """
    if _is_plain_json(value, 0):
        return value
    return _convert(event_name, value, path, 0)


def _is_plain_json(value: Any, depth: int) -> bool:
    # The common case, checked without building the JSON paths that only an
    # error message needs. Exact type checks keep subclasses on the slow
    # path, and scalars in containers are checked in the loop, since a
    # function call per value would cost more than the check itself.
    kind = type(value)
    if kind is dict:
        for key in value:
            if type(key) is not str or not (key.isascii() or _is_utf8(key)):
                return False
        items = value.values()
    elif kind is list:
        items = value
    else:
        return _is_plain_scalar(value)
    if depth >= MAX_DEPTH:
        return False

    for item in items:
        kind = type(item)
        if kind is str:
            if not (item.isascii() or _is_utf8(item)):
                return False
        elif kind is dict or kind is list:
            if not _is_plain_json(item, depth + 1):
                return False
        elif not _is_plain_scalar(item):
            return False
    return True


def _is_plain_scalar(value: Any) -> bool:
    kind = type(value)
    if kind is str:
        return _is_utf8(value)
    if kind is int:
        return _is_writable_int(value)
    if kind is float:
        return math.isfinite(value)
    return kind is bool or value is None


def _is_utf8(text: str) -> bool:
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _is_writable_int(value: int) -> bool:
    if value.bit_length() <= _SAFE_INT_BITS:
        return True
    try:
        int.__repr__(value)
    except ValueError:
        return False
    return True


def _convert(event_name: str, value: Any, path: str, depth: int) -> Any:
    if value is None or isinstance(value, bool):
        return value
    # Subclasses such as Django's SafeString or an IntEnum become plain values,
    # which the validators and the JSON encoder accept.
    if isinstance(value, str):
        if not _is_utf8(value):
            rule = f"{value!r} contains a lone surrogate, which UTF-8 cannot encode"
            raise PayloadError(event_name, path, rule)
        return str.__str__(value)
    if isinstance(value, int):
        if not _is_writable_int(value):
            limit = sys.get_int_max_str_digits()
            rule = f"the integer has more than {limit} digits, too many for Python's json module"
            raise PayloadError(event_name, path, rule)
        return int(value)
    if isinstance(value, Decimal):
        return _decimal_text(event_name, value, path)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise PayloadError(event_name, path, f"{value!r} is not a JSON number")
        return value
    if isinstance(value, Mapping | list | tuple) and depth >= MAX_DEPTH:
        rule = f"the value is nested more than {MAX_DEPTH} levels deep"
        raise PayloadError(event_name, path, rule)
    if isinstance(value, Mapping):
        return _convert_mapping(event_name, value, path, depth)
    if isinstance(value, list | tuple):
        return [
            _convert(event_name, item, f"{path}[{index}]", depth + 1)
            for index, item in enumerate(value)
        ]

    rule = f"{type(value).__name__} is not JSON; use str, int, bool, None, Decimal, dict or list"
    raise PayloadError(event_name, path, rule)


def _convert_mapping(
    event_name: str, value: Mapping[Any, Any], path: str, depth: int
) -> dict[str, Any]:
    result = {}
    for key, item in value.items():
        if not isinstance(key, str):
            raise PayloadError(event_name, path, f"key {key!r} is not a string")
        if not _is_utf8(key):
            rule = f"key {key!r} contains a lone surrogate, which UTF-8 cannot encode"
            raise PayloadError(event_name, path, rule)
        result[key] = _convert(event_name, item, f"{path}.{key}", depth + 1)

    return result


def _decimal_text(event_name: str, value: Decimal, path: str) -> str:
    if not value.is_finite():
        raise PayloadError(event_name, path, f"{value} is not an amount")

    exponent = value.as_tuple().exponent
    if isinstance(exponent, int) and exponent >= -2:
        try:
            return str(value.quantize(_TWO_PLACES, context=_MONEY_CONTEXT))
        except decimal.InvalidOperation:
            rule = f"{value} has more than {_MONEY_CONTEXT.prec} digits with two decimal places"
            raise PayloadError(event_name, path, rule) from None

    return str(value)
