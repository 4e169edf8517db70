"""Payload validation and normalization through ``validate_event``, with no broker."""

from __future__ import annotations

import copy
import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

import ue_flow
from tests.conftest import ROOT, load_example
from ue_flow.engine import validate_event
from ue_flow.errors import PayloadError
from ue_flow.loader import LoadedConfig, load_config

EXAMPLES = sorted((path.parent.name, path.stem) for path in (ROOT / "examples").glob("*/*.json"))


@pytest.fixture(scope="module")
def loaded() -> LoadedConfig:
    return load_config(ROOT / "config", environ={})


def load_two_systems() -> dict[str, Any]:
    return copy.deepcopy(load_example("post_sale", "two_systems"))


def expect_rejection(
    loaded: LoadedConfig, event_name: str, payload: dict[str, Any], **kwargs: Any
) -> PayloadError:
    with pytest.raises(PayloadError) as raised:
        validate_event(loaded, event_name, user=payload["user"], data=payload["data"], **kwargs)
    return raised.value


def test_examples_present() -> None:
    assert {event_name for event_name, _ in EXAMPLES} == {"basket_add", "post_sale", "post_refund"}


@pytest.mark.parametrize(("event_name", "name"), EXAMPLES, ids=[f"{e}/{n}" for e, n in EXAMPLES])
def test_example_valid(loaded: LoadedConfig, event_name: str, name: str) -> None:
    payload = load_example(event_name, name)

    result = validate_event(loaded, event_name, user=payload["user"], data=payload["data"])

    assert result == payload


DECIMALS = {
    "integer": (Decimal("100"), "100.00"),
    "one place": (Decimal("75.5"), "75.50"),
    "two places": (Decimal("49.99"), "49.99"),
    "zero": (Decimal("0"), "0.00"),
    "exponent": (Decimal("1E+2"), "100.00"),
}


@pytest.mark.parametrize(("amount", "text"), DECIMALS.values(), ids=DECIMALS.keys())
def test_decimal_money_normalized(loaded: LoadedConfig, amount: Decimal, text: str) -> None:
    payload = load_two_systems()
    payload["data"]["lines"][0]["unit_price"] = amount
    payload["data"]["total_price_paid"] = amount

    result = validate_event(loaded, "post_sale", user=payload["user"], data=payload["data"])

    assert result["data"]["lines"][0]["unit_price"] == text
    assert result["data"]["total_price_paid"] == text


def test_decimal_input_not_modified(loaded: LoadedConfig) -> None:
    payload = load_two_systems()
    payload["data"]["lines"][0]["unit_price"] = Decimal("75.5")

    validate_event(loaded, "post_sale", user=payload["user"], data=payload["data"])

    assert payload["data"]["lines"][0]["unit_price"] == Decimal("75.5")


BAD_MONEY = {
    "decimal with three places": Decimal("75.505"),
    "decimal with trailing zero": Decimal("75.500"),
    "negative decimal": Decimal("-5"),
    "float": 75.0,
    "integer": 75,
    "string without places": "75",
    "string with comma": "75,00",
}


@pytest.mark.parametrize("amount", BAD_MONEY.values(), ids=BAD_MONEY.keys())
def test_bad_money_rejected(loaded: LoadedConfig, amount: object) -> None:
    payload = load_two_systems()
    payload["data"]["lines"][0]["unit_price"] = amount

    error = expect_rejection(loaded, "post_sale", payload)

    assert error.path == "$.data.lines[0].unit_price"
    assert "decimal string with two places" in error.rule


def test_float_money_message(loaded: LoadedConfig) -> None:
    payload = load_two_systems()
    payload["data"]["lines"][0]["unit_price"] = 75.0

    message = str(expect_rejection(loaded, "post_sale", payload))

    assert "post_sale" in message
    assert "$.data.lines[0].unit_price" in message
    assert "decimal string" in message
    assert "75.0" in message


def test_missing_field_path(loaded: LoadedConfig) -> None:
    payload = load_two_systems()
    del payload["data"]["lines"][1]["product"]["sku"]

    error = expect_rejection(loaded, "post_sale", payload)

    assert error.event == "post_sale"
    assert error.path == "$.data.lines[1].product"
    assert "'sku' is a required property" in error.rule


def test_missing_user_field(loaded: LoadedConfig) -> None:
    payload = load_two_systems()
    del payload["user"]["username"]

    error = expect_rejection(loaded, "post_sale", payload)

    assert error.path == "$.user"
    assert "'username' is a required property" in error.rule


def test_extra_data_key_rejected(loaded: LoadedConfig) -> None:
    payload = load_two_systems()
    payload["data"]["coupon"] = "SPRING"

    error = expect_rejection(loaded, "post_sale", payload)

    assert error.path == "$.data"
    assert "'coupon' was unexpected" in error.rule


def test_unknown_event_rejected(loaded: LoadedConfig) -> None:
    error = expect_rejection(loaded, "post_sail", load_two_systems())

    assert error.event == "post_sail"
    assert error.path == "$"
    assert "unknown event" in error.rule
    assert "basket_add, post_refund, post_sale" in error.rule


def test_payload_error_hierarchy() -> None:
    error = PayloadError("post_sale", "$.data", "broken")

    assert isinstance(error, ValueError)
    assert isinstance(error, ue_flow.Error)
    assert ue_flow.PayloadError is PayloadError


NOT_JSON = {
    "datetime": (datetime.datetime(2026, 1, 1), "datetime is not JSON"),
    "set": ({"a"}, "set is not JSON"),
    "NaN": (float("nan"), "nan is not a JSON number"),
    "infinity": (float("inf"), "inf is not a JSON number"),
    "bytes": (b"x", "bytes is not JSON"),
    "path": (Path("x"), "is not JSON"),
    "decimal NaN": (Decimal("NaN"), "NaN is not an amount"),
}


@pytest.mark.parametrize(("value", "fragment"), NOT_JSON.values(), ids=NOT_JSON.keys())
def test_non_json_value_rejected(loaded: LoadedConfig, value: object, fragment: str) -> None:
    payload = load_two_systems()
    payload["data"]["lines"][0]["product"]["system_data"] = {"when": value}

    error = expect_rejection(loaded, "post_sale", payload)

    assert error.path == "$.data.lines[0].product.system_data.when"
    assert fragment in error.rule


def test_non_string_key_rejected(loaded: LoadedConfig) -> None:
    payload = load_two_systems()
    payload["data"]["lines"][0]["product"]["system_data"] = {1: "one"}

    error = expect_rejection(loaded, "post_sale", payload)

    assert error.path == "$.data.lines[0].product.system_data"
    assert "key 1 is not a string" in error.rule


def test_tuple_accepted_as_array(loaded: LoadedConfig) -> None:
    payload = load_two_systems()
    payload["data"]["lines"] = tuple(payload["data"]["lines"])

    result = validate_event(loaded, "post_sale", user=payload["user"], data=payload["data"])

    assert isinstance(result["data"]["lines"], list)


OWNERLESS = {
    "post_sale": ("post_sale", "two_systems", ("lines", 2), "$.data.lines[2].product.system"),
    "basket_add": ("basket_add", "add_course", (), "$.data.product.system"),
}


@pytest.mark.parametrize(
    ("event_name", "name", "where", "path"), OWNERLESS.values(), ids=OWNERLESS.keys()
)
def test_product_without_system_rejected(
    loaded: LoadedConfig, event_name: str, name: str, where: tuple[Any, ...], path: str
) -> None:
    payload = copy.deepcopy(load_example(event_name, name))
    holder = payload["data"]
    for key in where:
        holder = holder[key]
    del holder["product"]["system"]

    error = expect_rejection(loaded, event_name, payload)

    assert error.path == path
    assert "required to route the event" in error.rule


BAD_OWNER = {
    "boolean": True,
    "null": None,
    "list": ["mitxonline"],
}


@pytest.mark.parametrize("owner", BAD_OWNER.values(), ids=BAD_OWNER.keys())
def test_bad_owner_type_rejected(loaded: LoadedConfig, owner: object) -> None:
    payload = load_two_systems()
    payload["data"]["lines"][0]["product"]["system"] = owner

    error = expect_rejection(loaded, "post_sale", payload)

    assert error.path == "$.data.lines[0].product.system"


def test_systems_known_slugs_accepted(loaded: LoadedConfig) -> None:
    payload = load_two_systems()

    result = validate_event(
        loaded, "post_sale", user=payload["user"], data=payload["data"], systems=["learn"]
    )

    assert result == payload


BAD_SYSTEMS = {
    "unknown slug": (["mitx"], "unknown system 'mitx'; known: mitxonline, learn"),
    "plain string": ("learn", "systems must be a list of slugs, not the string 'learn'"),
}


@pytest.mark.parametrize(("systems", "fragment"), BAD_SYSTEMS.values(), ids=BAD_SYSTEMS.keys())
def test_bad_systems_rejected(loaded: LoadedConfig, systems: Any, fragment: str) -> None:
    error = expect_rejection(loaded, "post_sale", load_two_systems(), systems=systems)

    assert error.path == "systems"
    assert fragment in error.rule
