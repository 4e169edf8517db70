"""Checks of hooks, extra headers and referenced schemas, each at its file and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import write_config
from tests.test_config import (
    Broken,
    Edit,
    apply_edits,
    check_single_problem,
    load_problems,
)

MITXONLINE_HEADER = "      X-UE-Deployment: \"{{ env.UE_DEPLOYMENT | default('development') }}\"\n"

BROKEN = {
    "header overrides content-type": Broken(
        (Edit("config/systems.yaml", MITXONLINE_HEADER, "      content-type: text/plain\n"),),
        "config/systems.yaml",
        "content-type: text/plain",
        "systems/0/headers/content-type: header 'content-type' is set by ue-flow",
    ),
    "header overrides webhook-id": Broken(
        (Edit("config/systems.yaml", MITXONLINE_HEADER, "      Webhook-Id: x\n"),),
        "config/systems.yaml",
        "Webhook-Id: x",
        "cannot be overridden",
    ),
    "header template undefined": Broken(
        (Edit("config/systems.yaml", MITXONLINE_HEADER, "      X-Token: '{{ env.UE_TOKEN }}'\n"),),
        "config/systems.yaml",
        "X-Token:",
        "systems/0/headers/X-Token: template uses env.UE_TOKEN, which is not set",
    ),
    "header name invalid": Broken(
        (Edit("config/systems.yaml", MITXONLINE_HEADER, "      X Deployment: blue\n"),),
        "config/systems.yaml",
        "X Deployment: blue",
        "expected an HTTP header name",
    ),
    "header repeated in other case": Broken(
        (
            Edit(
                "config/systems.yaml",
                MITXONLINE_HEADER,
                MITXONLINE_HEADER + "      x-ue-deployment: blue\n",
            ),
        ),
        "config/systems.yaml",
        "x-ue-deployment: blue",
        "header names are case-insensitive",
    ),
    "hook payload names no argument": Broken(
        (
            Edit(
                "config/events.yaml",
                "payload: {user: user, data: order}",
                "payload: {user: user, data: basket.data}",
            ),
        ),
        "config/events.yaml",
        "data: basket.data",
        "events/post_sale/hook/payload/data: 'basket' is not a hook argument",
    ),
    "hook argument is keyword": Broken(
        (
            Edit(
                "config/events.yaml",
                "arguments: [user, refund]\n      payload: {user: user, data: refund}",
                "arguments: [user, class]\n      payload: {user: user, data: class}",
            ),
        ),
        "config/events.yaml",
        "arguments: [user, class]",
        "events/post_refund/hook/arguments/1: 'class' is a Python keyword",
    ),
    "hookspec used twice": Broken(
        (Edit("config/events.yaml", "hookspec: post_refund", "hookspec: post_sale  # again"),),
        "config/events.yaml",
        "# again",
        "hook 'post_sale' is already raised by 'post_sale'",
    ),
    "referenced schema not draft 2020-12": Broken(
        (Edit("schemas/money.json", '"type": "string"', '"type": "strin"'),),
        "schemas/money.json",
        '"type": "strin"',
        "not a valid draft 2020-12 schema at type",
    ),
    "referenced schema ref unresolvable": Broken(
        (Edit("schemas/line.json", '{"$ref": "product.json"}', '{"$ref": "produkt.json"}'),),
        "schemas/line.json",
        "produkt.json",
        "$ref 'produkt.json' does not resolve: schema file not found",
    ),
    "referenced schema pointer unresolvable": Broken(
        (Edit("schemas/product.json", '"money.json"}', '"money.json#/$defs/x"}'),),
        "schemas/product.json",
        "money.json#/$defs/x",
        "'/$defs/x' is not found in",
    ),
    "referenced schema invalid json": Broken(
        (Edit("schemas/money.json", '"title": "Money",', '"title": "Money"'),),
        "schemas/money.json",
        '"description"',
        "invalid JSON: Expecting ',' delimiter",
    ),
    "user schema not draft 2020-12": Broken(
        (Edit("schemas/user.json", '"type": "object"', '"type": "objekt"'),),
        "config/events.yaml",
        "user_schema:",
        "user_schema: ",
    ),
}


@pytest.mark.parametrize("case", BROKEN.values(), ids=BROKEN.keys())
def test_broken_config_reported(tmp_path: Path, case: Broken) -> None:
    check_single_problem(tmp_path, case)


def test_other_file_checked_after_schema_error(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    apply_edits(
        tmp_path,
        (
            Edit("config/events.yaml", "jitter: 0.1", "jitter: 1.5"),
            Edit("config/systems.yaml", "  - slug: learn", "  - slug: mitxonline  # copied"),
        ),
    )

    problems = load_problems(config)
    messages = sorted(problem.message for problem in problems)

    assert len(problems) == 2, messages
    assert "jitter: 1.5 is greater than the maximum of 1" in messages[0]
    assert "duplicate slug 'mitxonline'" in messages[1]


def test_events_checked_after_systems_error(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    apply_edits(
        tmp_path,
        (
            Edit("config/systems.yaml", "    id: 2\n", "    id: 2\n    colour: blue\n"),
            Edit("schemas/money.json", '"type": "string"', '"type": "strin"'),
        ),
    )

    problems = load_problems(config)

    assert {problem.path.name for problem in problems} == {"systems.yaml", "money.json"}


def test_shared_schema_reported_once(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    apply_edits(tmp_path, (Edit("schemas/money.json", '"type": "string"', '"type": "strin"'),))

    problems = load_problems(config)

    assert [problem.path.name for problem in problems] == ["money.json"]
    assert not any(problem.path.name == "events.yaml" for problem in problems)


def test_header_rendered_from_environ(tmp_path: Path) -> None:
    from ue_flow.loader import load_config

    config = write_config(tmp_path)

    loaded = load_config(config, environ={"UE_DEPLOYMENT": "staging"})

    assert loaded.config.systems["mitxonline"].headers == (("X-UE-Deployment", "staging"),)
    assert loaded.config.systems["learn"].headers == ()


def test_header_line_break_rejected(tmp_path: Path) -> None:
    config = write_config(tmp_path)

    problems = load_problems(config, environ={"UE_DEPLOYMENT": "a\r\nX-Injected: 1"})

    assert len(problems) == 1, problems
    assert "line break or control character" in problems[0].message
    assert "X-Injected" not in problems[0].message
