"""Payload normalization: Python values to the JSON the wire carries."""

from __future__ import annotations

import math
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from .errors import PayloadError

_TWO_PLACES = Decimal("0.01")


def normalize(event_name: str, value: Any, path: str = "$") -> Any:
    """Return ``value`` as plain JSON data, with Decimals as two-place strings.

    A Decimal with at most two places becomes a string such as "100.00";
    one with more places keeps them, so money's schema rejects it instead
    of the engine rounding somebody's cents away. Floats pass through and
    the schemas reject them where money is expected. Values JSON cannot
    carry raise PayloadError. A value that is plain JSON already is
    returned as it is, not copied.
    """
    if _is_plain_json(value):
        return value
    return _convert(event_name, value, path)


def _is_plain_json(value: Any) -> bool:
    # The common case, checked without building the JSON paths that only an
    # error message needs; exact type checks keep subclasses on the slow path.
    kind = type(value)
    if kind is str or kind is int or kind is bool or value is None:
        return True
    if kind is dict:
        return all(type(key) is str and _is_plain_json(item) for key, item in value.items())
    if kind is list:
        return all(_is_plain_json(item) for item in value)
    if kind is float:
        return math.isfinite(value)
    return False


def _convert(event_name: str, value: Any, path: str) -> Any:
    if value is None or isinstance(value, str | bool | int):
        return value
    if isinstance(value, Decimal):
        return _decimal_text(event_name, value, path)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise PayloadError(event_name, path, f"{value!r} is not a JSON number")
        return value
    if isinstance(value, Mapping):
        return _convert_mapping(event_name, value, path)
    if isinstance(value, list | tuple):
        return [_convert(event_name, item, f"{path}[{index}]") for index, item in enumerate(value)]

    rule = f"{type(value).__name__} is not JSON; use str, int, bool, None, Decimal, dict or list"
    raise PayloadError(event_name, path, rule)


def _convert_mapping(event_name: str, value: Mapping[Any, Any], path: str) -> dict[str, Any]:
    result = {}
    for key, item in value.items():
        if not isinstance(key, str):
            raise PayloadError(event_name, path, f"key {key!r} is not a string")
        result[key] = _convert(event_name, item, f"{path}.{key}")

    return result


def _decimal_text(event_name: str, value: Decimal, path: str) -> str:
    if not value.is_finite():
        raise PayloadError(event_name, path, f"{value} is not an amount")

    exponent = value.as_tuple().exponent
    if isinstance(exponent, int) and exponent >= -2:
        return str(value.quantize(_TWO_PLACES))

    return str(value)
