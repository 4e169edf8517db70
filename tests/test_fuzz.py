"""Property tests: generated payloads and configurations raise only ue-flow's errors.

``validate_event`` must either return a payload that JSON can carry or
raise PayloadError with its event and a JSON path. ``load_config`` must
either succeed or raise ConfigError whose every problem has a file and a
line. Nothing here needs Redis or the network, and name resolution and
outgoing connections are blocked while these tests run.

In CI (when the ``CI`` variable is set) the tests run derandomized, so a
failure there reproduces with the same inputs on every run.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, currently_in_test_context, event, example, given, settings
from hypothesis import strategies as st

from tests.conftest import ROOT, load_example
from tests.fuzz_strategies import (
    ALIAS_DOCUMENTS,
    EVENT_NAMES,
    JSON_ISH,
    SYSTEMS,
    YAML_VALUES,
    byte_edits,
    dump_yaml,
    mutated_documents,
    mutated_payloads,
    nested,
    schema_edits,
    text_edits,
)
from ue_flow.engine import validate_event
from ue_flow.errors import ConfigError, ConfigProblem, PayloadError
from ue_flow.examples import check_examples
from ue_flow.loader import LoadedConfig, load_config
from ue_flow.payload import MAX_DEPTH, _convert, _is_plain_json, normalize
from ue_flow.routing import route

settings.register_profile(
    "fuzz", deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
settings.register_profile("fuzz-ci", parent=settings.get_profile("fuzz"), derandomize=True)
settings.load_profile("fuzz-ci" if os.environ.get("CI") else "fuzz")

#: Multiplies every property test's example count, for longer runs than CI's,
#: such as ``UE_FLOW_FUZZ_SCALE=20``.
SCALE = int(os.environ.get("UE_FLOW_FUZZ_SCALE", "1"))

EXAMPLES = {
    (path.parent.name, path.stem): load_example(path.parent.name, path.stem)
    for path in sorted((ROOT / "examples").glob("*/*.json"))
}

#: The copied files a configuration case edits, relative to the copy's root.
CONFIG_FILES = ("config/events.yaml", "config/systems.yaml")

SCHEMA_FILES = (
    "schemas/money.json",
    "schemas/product.json",
    "schemas/line.json",
    "schemas/user.json",
    "schemas/events/postsale.json",
    "schemas/events/postrefund.json",
)


@pytest.fixture(scope="module", autouse=True)
def no_network() -> Iterator[None]:
    """Make any name lookup or outgoing connection fail loudly instead of leaving the host."""

    def reject_network(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"fuzz test attempted network access: {args!r}")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(socket, "getaddrinfo", reject_network)
        patch.setattr(socket, "create_connection", reject_network)
        patch.setattr(socket.socket, "connect", reject_network)
        yield


@functools.cache
def shipped_config() -> LoadedConfig:
    # A plain function rather than a fixture, so that Hypothesis does not
    # print the whole configuration with every failing example.
    return load_config(ROOT / "config", environ={})


def record(outcome: str) -> None:
    """Count an outcome for ``--hypothesis-show-statistics``, inside Hypothesis tests only."""
    if currently_in_test_context():
        event(outcome)


# --- payloads ------------------------------------------------------------------------


def check_validation(
    loaded: LoadedConfig, event_name: str, user: Any, data: Any, systems: Any = None
) -> None:
    """Validate one event and check the outcome is a sendable payload or a located error."""
    try:
        payload = validate_event(loaded, event_name, user=user, data=data, systems=systems)
    except PayloadError as error:
        record("PayloadError")
        assert error.event == event_name
        assert isinstance(error.path, str)
        assert error.path.startswith("$") or error.path == "systems", error.path
        assert str(error)
        return

    record("valid")
    assert isinstance(payload, dict)
    # The envelope is written this way before it is signed and sent.
    body = json.dumps(payload, ensure_ascii=False, allow_nan=False).encode("utf-8")
    assert json.loads(body) == payload

    again = validate_event(loaded, event_name, user=payload["user"], data=payload["data"])
    assert again == payload

    event_type = loaded.config.events[event_name]
    routed = route(loaded.config, event_type, payload)
    assert set(routed) <= set(loaded.config.systems)


@given(
    event_name=st.sampled_from(["basket_add", "post_sale", "post_refund"]),
    user=JSON_ISH,
    data=JSON_ISH,
)
@settings(max_examples=300 * SCALE)
@example(event_name="post_sale", user={"id": 1}, data={"total_price_paid": Decimal("1E+30")})
@example(event_name="post_sale", user={"id": 1}, data={"x": "\ud800"})
@example(event_name="post_sale", user={"\udc80": 1}, data={})
@example(event_name="post_sale", user={"id": 10**4400}, data={})
@example(event_name="post_sale", user=nested(400), data={})
def test_arbitrary_values_rejected_cleanly(event_name: str, user: Any, data: Any) -> None:
    check_validation(shipped_config(), event_name, user, data)


@given(st.data())
@settings(max_examples=400 * SCALE)
def test_mutated_examples_rejected_cleanly(data: st.DataObject) -> None:
    event_name, name = data.draw(st.sampled_from(sorted(EXAMPLES)), label="example")
    payload = data.draw(mutated_payloads(EXAMPLES[event_name, name]), label="payload")
    # Sometimes validate one event's payload as another event.
    event_name = data.draw(st.sampled_from([event_name, *{key[0] for key in EXAMPLES}]))

    check_validation(shipped_config(), event_name, payload.get("user"), payload.get("data"))


@given(event_name=EVENT_NAMES, systems=SYSTEMS, example_key=st.sampled_from(sorted(EXAMPLES)))
@settings(max_examples=300 * SCALE)
@example(event_name="post_sale", systems=5, example_key=("post_sale", "two_systems"))
@example(event_name="post_sale", systems=[["learn"]], example_key=("post_sale", "two_systems"))
@example(event_name="post_sale", systems=[Decimal("sNaN")], example_key=("post_sale", "one_system"))
@example(event_name="post_sale", systems=b"learn", example_key=("post_sale", "two_systems"))
def test_event_names_and_systems_rejected_cleanly(
    event_name: str, systems: Any, example_key: tuple[str, str]
) -> None:
    payload = EXAMPLES[example_key]

    check_validation(shipped_config(), event_name, payload["user"], payload["data"], systems)


@given(value=JSON_ISH)
@settings(max_examples=300 * SCALE)
@example(value=nested(MAX_DEPTH))
@example(value=nested(MAX_DEPTH + 1))
@example(value={"a": [1, {"b": "\udc80"}]})
@example(value=[1, 2, [float("nan")]])
@example(value={"id": [10**4400]})
def test_plain_check_agrees_with_conversion(value: Any) -> None:
    # normalize returns plain JSON as it is after a quick check; the full
    # conversion must accept the same values and produce an equal copy.
    try:
        converted = _convert("post_sale", value, "$", 0)
    except PayloadError:
        with pytest.raises(PayloadError):
            normalize("post_sale", value)
        return

    normalized = normalize("post_sale", value)
    assert json.dumps(normalized) == json.dumps(converted)
    if _is_plain_json(value, 0):
        assert normalized is value


def test_decimal_beyond_precision_rejected() -> None:
    loaded = shipped_config()
    payload = load_example("post_sale", "one_system")
    payload["data"]["total_price_paid"] = Decimal("1E+30")

    with pytest.raises(PayloadError) as raised:
        validate_event(loaded, "post_sale", user=payload["user"], data=payload["data"])

    assert raised.value.path == "$.data.total_price_paid"


def test_lone_surrogate_rejected() -> None:
    loaded = shipped_config()
    payload = load_example("post_sale", "one_system")
    payload["user"]["first_name"] = "Zo\udceb"

    with pytest.raises(PayloadError) as raised:
        validate_event(loaded, "post_sale", user=payload["user"], data=payload["data"])

    assert raised.value.path == "$.user.first_name"


def test_deep_nesting_rejected() -> None:
    loaded = shipped_config()
    payload = load_example("post_sale", "one_system")
    payload["data"]["lines"][0]["product"]["system_data"] = nested(5000)

    with pytest.raises(PayloadError) as raised:
        validate_event(loaded, "post_sale", user=payload["user"], data=payload["data"])

    assert raised.value.path.startswith("$.data.lines[0].product.system_data")


def test_cyclic_value_rejected() -> None:
    loaded = shipped_config()
    payload = load_example("post_sale", "one_system")
    cycle: dict[str, Any] = {}
    cycle["self"] = cycle
    payload["data"]["lines"][0]["product"]["system_data"] = cycle

    with pytest.raises(PayloadError):
        validate_event(loaded, "post_sale", user=payload["user"], data=payload["data"])


def test_systems_not_iterable_rejected() -> None:
    loaded = shipped_config()
    payload = load_example("post_sale", "one_system")

    with pytest.raises(PayloadError) as raised:
        validate_event(loaded, "post_sale", user=payload["user"], data=payload["data"], systems=5)

    assert raised.value.path == "systems"


# --- configuration files ---------------------------------------------------------------


def copy_tree(destination: Path) -> Path:
    """Copy config/, schemas/ and examples/ into ``destination``; return its config dir."""
    for name in ("config", "schemas", "examples"):
        shutil.copytree(ROOT / name, destination / name)
    return destination / "config"


def check_problem(problem: ConfigProblem) -> None:
    assert isinstance(problem, ConfigProblem)
    assert isinstance(problem.path, Path)
    assert str(problem.path)
    assert isinstance(problem.line, int)
    assert problem.line >= 0
    assert isinstance(problem.column, int)
    assert problem.message


def check_loading(config_dir: Path, edited: Path) -> None:
    """Load ``config_dir`` and check the outcome is a config or located problems."""
    try:
        loaded = load_config(config_dir, environ={})
    except ConfigError as error:
        record("ConfigError")
        assert error.problems
        for problem in error.problems:
            check_problem(problem)
        # Only a YAML file that cannot be read as UTF-8 has problems at line 0.
        if edited.suffix == ".yaml" and is_utf8(edited.read_bytes()):
            for problem in error.problems:
                if problem.path == edited:
                    assert problem.line > 0, str(problem)
        return

    record("loaded")
    problems = check_examples(loaded)
    assert isinstance(problems, list)
    for problem in problems:
        check_problem(problem)


def is_utf8(content: bytes) -> bool:
    try:
        content.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def run_config_case(relative: str, content: bytes) -> None:
    with tempfile.TemporaryDirectory(prefix="ue_flow_fuzz_") as directory:
        config_dir = copy_tree(Path(directory))
        edited = Path(directory) / relative
        edited.write_bytes(content)
        check_loading(config_dir, edited)


def original(relative: str) -> bytes:
    return (ROOT / relative).read_bytes()


@given(relative=st.sampled_from(CONFIG_FILES), data=st.data())
@settings(max_examples=120 * SCALE)
def test_yaml_text_edits_reported(relative: str, data: st.DataObject) -> None:
    content = data.draw(text_edits(original(relative)), label="content")

    run_config_case(relative, content)


@given(relative=st.sampled_from(CONFIG_FILES), data=st.data())
@settings(max_examples=150 * SCALE)
def test_yaml_structure_edits_reported(relative: str, data: st.DataObject) -> None:
    document = yaml.safe_load(original(relative))
    mutated = data.draw(mutated_documents(document, YAML_VALUES), label="document")

    run_config_case(relative, dump_yaml(mutated))


@given(relative=st.sampled_from(CONFIG_FILES), data=st.data())
@settings(max_examples=100 * SCALE)
def test_yaml_byte_edits_reported(relative: str, data: st.DataObject) -> None:
    content = data.draw(byte_edits(original(relative)), label="content")

    run_config_case(relative, content)


@given(relative=st.sampled_from(CONFIG_FILES), content=ALIAS_DOCUMENTS)
@settings(max_examples=20 * SCALE)
def test_yaml_aliases_reported(relative: str, content: bytes) -> None:
    run_config_case(relative, content)


@given(relative=st.sampled_from(SCHEMA_FILES), data=st.data())
@settings(max_examples=100 * SCALE)
def test_schema_edits_reported(relative: str, data: st.DataObject) -> None:
    content = data.draw(schema_edits(original(relative)), label="content")

    run_config_case(relative, content)


@pytest.mark.parametrize("depth", [50, 2000])
def test_yaml_deep_nesting_reported(depth: int) -> None:
    content = b"events: " + b"[" * depth + b"]" * depth + b"\n"

    run_config_case("config/events.yaml", content)


# --- regressions found by fuzzing ------------------------------------------------------


def load_edited(directory: Path, edits: dict[str, str]) -> LoadedConfig:
    """Copy the shipped tree into ``directory``, replace files and load the copy."""
    config_dir = copy_tree(directory)
    for relative, content in edits.items():
        (directory / relative).write_text(content, encoding="utf-8")
    return load_config(config_dir, environ={})


def load_edited_problems(directory: Path, edits: dict[str, str]) -> tuple[ConfigProblem, ...]:
    with pytest.raises(ConfigError) as raised:
        load_edited(directory, edits)
    for problem in raised.value.problems:
        check_problem(problem)
    return raised.value.problems


def test_integer_event_key_reported(tmp_path: Path) -> None:
    events = original("config/events.yaml").decode("utf-8")
    edited = events.replace("  post_sale:\n", "  1:\n    x: 1\n  post_sale:\n    bogus: 1\n", 1)

    problems = load_edited_problems(tmp_path, {"config/events.yaml": edited})

    assert any("invalid key 1; expected an event name" in problem.message for problem in problems)


def test_control_character_reported(tmp_path: Path) -> None:
    events = original("config/events.yaml").decode("utf-8")
    edited = events.replace("type: presale", "type: pre\x01sale", 1)
    line = edited[: edited.index("\x01")].count("\n") + 1

    problems = load_edited_problems(tmp_path, {"config/events.yaml": edited})

    assert [problem.line for problem in problems] == [line]
    assert "special characters are not allowed" in problems[0].message


def test_alias_expansion_limited(tmp_path: Path) -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{level}: &a{level} [{', '.join([f'*a{level - 1}'] * 9)}]" for level in range(1, 9)]
    lines.append("events: *a8")

    problems = load_edited_problems(tmp_path, {"config/events.yaml": "\n".join(lines) + "\n"})

    assert "aliases are expanded" in problems[0].message
    assert problems[0].line > 0


def test_nul_in_schema_path_reported(tmp_path: Path) -> None:
    events = original("config/events.yaml").decode("utf-8")
    edited = events.replace("schema: ../schemas/events/presale.json", 'schema: "a\\0.json"', 1)

    problems = load_edited_problems(tmp_path, {"config/events.yaml": edited})

    assert any("NUL" in problem.message for problem in problems)


def test_nul_in_ref_reported(tmp_path: Path) -> None:
    money = json.dumps({"$ref": "a%00b.json"})

    problems = load_edited_problems(tmp_path, {"schemas/money.json": money})

    assert [problem.path.name for problem in problems] == ["money.json"]
    assert "NUL" in problems[0].message


def test_deep_schema_reported(tmp_path: Path) -> None:
    nesting = '{"a": {"type": "object", "properties": '
    presale = '{"type": "object", "properties": ' + nesting * 300 + "{}" + "}}" * 300 + "}"

    problems = load_edited_problems(tmp_path, {"schemas/events/presale.json": presale})

    assert any("nested too deeply" in problem.message for problem in problems)


def test_unparseable_deep_schema_reported(tmp_path: Path) -> None:
    problems = load_edited_problems(tmp_path, {"schemas/money.json": "[" * 100_000})

    assert any("nested too deeply" in problem.message for problem in problems)


@pytest.mark.parametrize(
    "money",
    [
        {"$ref": "#"},
        {"$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"$ref": "#/$defs/a"}}, "$ref": "#/$defs/a"},
        {"type": "string", "pattern": "\\p{L}"},
    ],
    ids=["self reference", "reference cycle", "ECMA-262 pattern"],
)
def test_schema_jsonschema_cannot_evaluate(tmp_path: Path, money: dict[str, Any]) -> None:
    loaded = load_edited(tmp_path, {"schemas/money.json": json.dumps(money)})
    payload = load_example("post_sale", "one_system")
    payload["data"]["lines"][0]["quantity"] = 0

    with pytest.raises(PayloadError) as raised:
        validate_event(loaded, "post_sale", user=payload["user"], data=payload["data"])

    assert raised.value.path.startswith("$.data")
    for problem in check_examples(loaded):
        check_problem(problem)


@pytest.mark.parametrize(
    ("pointer", "rule"),
    [("/{data/lines", "missing"), ("/data/reference_number", "must be an array")],
    ids=["missing", "not an array"],
)
def test_routing_items_pointer_checked(tmp_path: Path, pointer: str, rule: str) -> None:
    events = original("config/events.yaml").decode("utf-8")
    edited = events.replace("items: /data/lines", f"items: {pointer}", 1)
    loaded = load_edited(tmp_path, {"config/events.yaml": edited})
    payload = load_example("post_sale", "one_system")

    with pytest.raises(PayloadError) as raised:
        validate_event(loaded, "post_sale", user=payload["user"], data=payload["data"])

    assert rule in raised.value.rule
    problems = check_examples(loaded)
    assert {problem.path.parent.name for problem in problems} == {"post_sale"}


def test_routing_related_pointer_checked(tmp_path: Path) -> None:
    events = original("config/events.yaml").decode("utf-8")
    edited = events.replace("- items: /data/refund/lines", "- items: /data/refund", 1)
    loaded = load_edited(tmp_path, {"config/events.yaml": edited})
    payload = load_example("post_refund", "partial")
    event_type = loaded.config.events["post_refund"]

    with pytest.raises(PayloadError) as raised:
        route(loaded.config, event_type, payload)

    assert raised.value.path == "$.data.refund"


@pytest.mark.parametrize("tagged", ["!!timestamp 2001-12-14x", "!!int abc", "!!bool maybe"])
def test_misfit_tag_reported(tmp_path: Path, tagged: str) -> None:
    events = original("config/events.yaml").decode("utf-8")
    edited = events.replace("jitter: 0.1", f"jitter: {tagged}", 1)
    line = edited[: edited.index(tagged)].count("\n") + 1

    problems = load_edited_problems(tmp_path, {"config/events.yaml": edited})

    assert [problem.line for problem in problems] == [line]
    assert "is not a valid" in problems[0].message
