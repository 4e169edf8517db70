"""Routing: which subscribed systems receive an event, and which lines each one gets."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from tests.conftest import ROOT, load_example
from ue_flow.config import Config
from ue_flow.loader import load_config
from ue_flow.routing import owners, route


@pytest.fixture(scope="module")
def config() -> Config:
    return load_config(ROOT / "config", environ={}).config


def route_example(
    config: Config, event_name: str, payload: dict[str, Any], only: list[str] | None = None
) -> dict[str, dict[str, Any]]:
    return route(config, config.events[event_name], payload, only)


def line_ids(part: dict[str, Any]) -> list[int]:
    return [line["id"] for line in part["data"]["lines"]]


def refund_line_ids(part: dict[str, Any]) -> list[int]:
    return [entry["line_id"] for entry in part["data"]["refund"]["lines"]]


def test_post_sale_two_systems(config: Config) -> None:
    parts = route_example(config, "post_sale", load_example("post_sale", "two_systems"))

    assert list(parts) == ["mitxonline", "learn"]
    assert line_ids(parts["mitxonline"]) == [101, 102]
    assert line_ids(parts["learn"]) == [103]


@pytest.mark.parametrize("slug", ["mitxonline", "learn"])
def test_post_sale_total_unchanged(config: Config, slug: str) -> None:
    parts = route_example(config, "post_sale", load_example("post_sale", "two_systems"))

    assert parts[slug]["data"]["total_price_paid"] == "1099.99"
    assert parts[slug]["data"]["reference_number"] == "mitol-production-42"
    assert parts[slug]["user"]["id"] == 4217


def test_post_sale_one_system(config: Config) -> None:
    parts = route_example(config, "post_sale", load_example("post_sale", "one_system"))

    assert list(parts) == ["mitxonline"]
    assert line_ids(parts["mitxonline"]) == [104]


@pytest.mark.parametrize("name", ["add_course", "remove_program"])
def test_basket_add_owner_only(config: Config, name: str) -> None:
    payload = load_example("basket_add", name)

    parts = route_example(config, "basket_add", payload)

    assert list(parts) == ["mitxonline"]
    assert parts["mitxonline"] == payload


def test_basket_add_not_subscribed(config: Config) -> None:
    # learn owns the product but does not subscribe to basket_add.
    payload = copy.deepcopy(load_example("basket_add", "add_course"))
    payload["data"]["product"]["system"] = "learn"

    parts = route_example(config, "basket_add", payload)

    assert parts == {}


OWNERS_BY_ID = {
    "id 1 is mitxonline": (1, ["mitxonline"]),
    "id 2 is learn (not subscribed)": (2, []),
    "unknown id": (99, []),
    "unconfigured slug": ("xpro", []),
}


@pytest.mark.parametrize(("owner", "expected"), OWNERS_BY_ID.values(), ids=OWNERS_BY_ID.keys())
def test_basket_add_owner_forms(config: Config, owner: object, expected: list[str]) -> None:
    payload = copy.deepcopy(load_example("basket_add", "add_course"))
    payload["data"]["product"]["system"] = owner

    parts = route_example(config, "basket_add", payload)

    assert list(parts) == expected


def test_post_sale_owner_by_id(config: Config) -> None:
    payload = copy.deepcopy(load_example("post_sale", "two_systems"))
    payload["data"]["lines"][1]["product"]["system"] = 1
    payload["data"]["lines"][2]["product"]["system"] = 2

    parts = route_example(config, "post_sale", payload)

    assert line_ids(parts["mitxonline"]) == [101, 102]
    assert line_ids(parts["learn"]) == [103]


def test_unconfigured_owner_dropped(config: Config) -> None:
    payload = copy.deepcopy(load_example("post_sale", "two_systems"))
    payload["data"]["lines"][1]["product"]["system"] = "xpro"

    parts = route_example(config, "post_sale", payload)

    assert line_ids(parts["mitxonline"]) == [101]
    assert line_ids(parts["learn"]) == [103]
    assert "xpro" not in parts


def test_owners_lists_each_line(config: Config) -> None:
    payload = copy.deepcopy(load_example("post_sale", "two_systems"))
    payload["data"]["lines"][1]["product"]["system"] = "xpro"

    found = owners(config, config.events["post_sale"], payload)

    assert found == ["mitxonline", None, "learn"]


def test_post_refund_lines_split(config: Config) -> None:
    parts = route_example(config, "post_refund", load_example("post_refund", "partial"))

    assert line_ids(parts["mitxonline"]) == [101, 102]
    assert line_ids(parts["learn"]) == [103]


def test_post_refund_entries_split(config: Config) -> None:
    parts = route_example(config, "post_refund", load_example("post_refund", "partial"))

    assert refund_line_ids(parts["mitxonline"]) == [101]
    assert refund_line_ids(parts["learn"]) == [103]


@pytest.mark.parametrize("slug", ["mitxonline", "learn"])
def test_post_refund_totals_unchanged(config: Config, slug: str) -> None:
    parts = route_example(config, "post_refund", load_example("post_refund", "partial"))

    assert parts[slug]["data"]["refund"]["total_refunded"] == "99.99"
    assert parts[slug]["data"]["total_price_paid"] == "1099.99"
    assert parts[slug]["data"]["refund"]["reason"] == "Requested within the refund window."


def test_refund_of_other_system_skipped(config: Config) -> None:
    payload = copy.deepcopy(load_example("post_refund", "partial"))
    payload["data"]["refund"]["lines"] = [{"line_id": 101, "amount": "50.00"}]
    payload["data"]["refund"]["total_refunded"] = "50.00"

    parts = route_example(config, "post_refund", payload)

    assert list(parts) == ["mitxonline"]
    assert refund_line_ids(parts["mitxonline"]) == [101]


def test_refund_of_unknown_line_skipped(config: Config) -> None:
    payload = copy.deepcopy(load_example("post_refund", "partial"))
    payload["data"]["refund"]["lines"] = [{"line_id": 999, "amount": "50.00"}]

    parts = route_example(config, "post_refund", payload)

    assert parts == {}


ONLY = {
    "learn": (["learn"], ["learn"]),
    "mitxonline": (["mitxonline"], ["mitxonline"]),
    "both": (["learn", "mitxonline"], ["mitxonline", "learn"]),
    "none": ([], []),
    "unknown slug": (["xpro"], []),
}


@pytest.mark.parametrize(("only", "expected"), ONLY.values(), ids=ONLY.keys())
def test_only_narrows(config: Config, only: list[str], expected: list[str]) -> None:
    parts = route_example(config, "post_sale", load_example("post_sale", "two_systems"), only)

    assert list(parts) == expected


def test_only_keeps_own_lines(config: Config) -> None:
    parts = route_example(config, "post_sale", load_example("post_sale", "two_systems"), ["learn"])

    assert line_ids(parts["learn"]) == [103]


EVENTS = [("post_sale", "two_systems"), ("post_refund", "partial"), ("basket_add", "add_course")]


@pytest.mark.parametrize(("event_name", "name"), EVENTS, ids=[event for event, _ in EVENTS])
def test_input_not_mutated(config: Config, event_name: str, name: str) -> None:
    payload = load_example(event_name, name)
    original = copy.deepcopy(payload)

    route_example(config, event_name, payload)

    assert payload == original


def test_parts_copy_filtered_path(config: Config) -> None:
    # Parts share unchanged values with the payload, but every container on
    # the way to a filtered array is their own.
    payload = load_example("post_sale", "two_systems")

    parts = route_example(config, "post_sale", payload)

    for part in parts.values():
        assert part is not payload
        assert part["data"] is not payload["data"]
        assert part["data"]["lines"] is not payload["data"]["lines"]
    assert parts["learn"]["data"]["lines"][0] is payload["data"]["lines"][2]
