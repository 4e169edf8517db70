"""Compact JSON text against the standard library's output."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import example, given, settings

from tests.fuzz_strategies import JSON_ISH
from ue_flow.errors import PayloadError
from ue_flow.jsontext import compact_json
from ue_flow.payload import normalize


def _standard(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


@given(value=JSON_ISH)
@settings(max_examples=300, deadline=None)
@example(value={"name": "Zoë 🛒 \u2028", "control": "\x00\x1f\x7f", "quote": '"\\'})
@example(value={"small": 5e-324, "large": 1e16, "third": 1 / 3, "negative": -0.0})
@example(value=[2**63 - 1, -(2**63), 2**64 - 1])
def test_text_decodes_like_json_dumps(value: Any) -> None:
    try:
        value = normalize("post_sale", value)
    except PayloadError:
        return

    assert json.loads(compact_json(value)) == json.loads(_standard(value))


@pytest.mark.parametrize("value", [{"id": 2**64}, {"id": -(2**63) - 1}, {1: "a"}])
def test_values_orjson_rejects_fall_back(value: Any) -> None:
    assert compact_json(value) == _standard(value)


def test_text_has_no_spaces_and_raw_unicode() -> None:
    assert compact_json({"a": [1, "é"], "b": None}) == '{"a":[1,"é"],"b":null}'
