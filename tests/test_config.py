"""Configuration loading: the shipped files, broken copies and ``ue-flow validate``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import ROOT, write_config
from ue_flow.errors import ConfigError, ConfigProblem
from ue_flow.examples import check_examples
from ue_flow.loader import load_config

UE_FLOW = Path(sys.executable).parent / "ue-flow"

LEARN_URL_TEMPLATE = (
    "{{ env.LEARN_WEBHOOK_URL | default('http://127.0.0.1:8072/api/v1/ecommerce/webhook/') }}"
)


@dataclass(frozen=True)
class Edit:
    """Replace the first ``old`` in ``file`` (relative to the copy's root) with ``new``."""

    file: str
    old: str
    new: str


@dataclass(frozen=True)
class Broken:
    """A copy of the shipped configuration with one mistake, and where it is reported.

    The expected line is the first line of ``file`` containing ``marker``.
    """

    edits: tuple[Edit, ...]
    file: str
    marker: str
    fragment: str


def apply_edits(root: Path, edits: tuple[Edit, ...]) -> None:
    for edit in edits:
        path = root / edit.file
        text = path.read_text(encoding="utf-8")
        assert edit.old in text, f"{edit.old!r} not found in {path}; the shipped file changed"
        path.write_text(text.replace(edit.old, edit.new, 1), encoding="utf-8")


def find_line(path: Path, marker: str) -> int:
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if marker in line:
            return number
    raise AssertionError(f"{marker!r} not found in {path}")


def load_problems(config: Path, environ: dict[str, str] | None = None) -> tuple[ConfigProblem, ...]:
    with pytest.raises(ConfigError) as raised:
        load_config(config, environ={} if environ is None else environ)
    return raised.value.problems


def edit_schema(root: Path, relative: str, key: str, value: object) -> None:
    path = root / relative
    schema = json.loads(path.read_text(encoding="utf-8"))
    schema[key] = value
    path.write_text(json.dumps(schema, indent=2), encoding="utf-8")


def build_env(**extra: str) -> dict[str, str]:
    """The current environment without ue-flow settings, plus ``extra``."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("UE_FLOW_") and not name.endswith("_WEBHOOK_URL")
    }
    env.update(extra)
    return env


def run_cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(UE_FLOW), *args], capture_output=True, text=True, env=build_env(), cwd=cwd, timeout=60
    )


# --- the shipped configuration ---------------------------------------------------------


def test_shipped_config_loads() -> None:
    loaded = load_config(ROOT / "config", environ={})

    assert set(loaded.config.events) == {"basket_add", "post_sale", "post_refund"}
    assert list(loaded.config.systems) == ["mitxonline", "learn"]
    assert set(loaded.validators) == set(loaded.config.events)


def test_shipped_config_settings() -> None:
    config = load_config(ROOT / "config", environ={}).config

    assert config.delivery.retry.schedule_ms[0] == 5_000
    assert config.delivery.retry.jitter == 0.1
    assert config.systems["mitxonline"].ue_id == 1
    assert config.systems["learn"].events == frozenset({"post_sale", "post_refund"})


def test_shipped_examples_valid() -> None:
    loaded = load_config(ROOT / "config", environ={})

    assert check_examples(loaded) == []


def test_url_template_reads_environ() -> None:
    environ = {"LEARN_WEBHOOK_URL": "https://learn.example.org/hook/"}

    config = load_config(ROOT / "config", environ=environ).config

    assert config.systems["learn"].url == "https://learn.example.org/hook/"


# --- one mistake per copy ----------------------------------------------------------------

BROKEN = {
    "yaml syntax error": Broken(
        (Edit("config/events.yaml", "    type: presale\n", "    type: presale: x\n"),),
        "config/events.yaml",
        "type: presale: x",
        "invalid YAML: mapping values are not allowed here",
    ),
    "duplicate key": Broken(
        (
            Edit(
                "config/events.yaml",
                "    hookspec: basket_add\n",
                "    hookspec: basket_add\n    hookspec: basket_add  # repeated\n",
            ),
        ),
        "config/events.yaml",
        "# repeated",
        "duplicate key 'hookspec'",
    ),
    "unknown key in system": Broken(
        (Edit("config/systems.yaml", "    id: 2\n", "    id: 2\n    colour: blue\n"),),
        "config/systems.yaml",
        "colour: blue",
        "systems/1: unknown key 'colour'; valid keys are",
    ),
    "unknown key in event": Broken(
        (
            Edit(
                "config/events.yaml",
                "    hookspec: post_sale\n",
                "    hookspec: post_sale\n    hookspek: post_sale\n",
            ),
        ),
        "config/events.yaml",
        "hookspek",
        "events/post_sale: unknown key 'hookspek'",
    ),
    "unknown event in subscription": Broken(
        (
            Edit(
                "config/systems.yaml",
                "events: [post_sale, post_refund]",
                "events: [post_sale, post_refund, basket_remove]",
            ),
        ),
        "config/systems.yaml",
        "basket_remove",
        "unknown event 'basket_remove'; events.yaml declares basket_add, post_refund, post_sale",
    ),
    "missing schema file": Broken(
        (
            Edit(
                "config/events.yaml",
                "schema: ../schemas/events/presale.json",
                "schema: ../schemas/events/presale-v2.json",
            ),
        ),
        "config/events.yaml",
        "presale-v2.json",
        "schema file not found",
    ),
    "duplicate slug": Broken(
        (Edit("config/systems.yaml", "  - slug: learn", "  - slug: mitxonline  # copied"),),
        "config/systems.yaml",
        "# copied",
        "duplicate slug 'mitxonline'; it is first used on line 9",
    ),
    "url not http or https": Broken(
        (Edit("config/systems.yaml", LEARN_URL_TEMPLATE, "ftp://127.0.0.1/hook"),),
        "config/systems.yaml",
        "ftp://",
        "invalid URL 'ftp://127.0.0.1/hook'",
    ),
    "http without allow_http": Broken(
        (
            Edit(
                "config/systems.yaml",
                "    allow_http: true\n    allow_private_network: true\n    events: [post_sale",
                "    allow_private_network: true\n    events: [post_sale",
            ),
        ),
        "config/systems.yaml",
        "LEARN_WEBHOOK_URL",
        "uses plain http; use https, or set allow_http: true",
    ),
    "url with credentials": Broken(
        (Edit("config/systems.yaml", "http://127.0.0.1:8072/", "http://user:pw@127.0.0.1:8072/"),),
        "config/systems.yaml",
        "user:pw@",
        "URL must not carry credentials",
    ),
    "undefined template variable": Broken(
        (Edit("config/systems.yaml", LEARN_URL_TEMPLATE, "{{ env.LEARN_WEBHOOK_URL }}"),),
        "config/systems.yaml",
        "{{ env.LEARN_WEBHOOK_URL }}",
        "template uses env.LEARN_WEBHOOK_URL, which is not set",
    ),
    "bad duration in schedule": Broken(
        (Edit("config/events.yaml", "[5s, 5m,", "[5s, 5 minutes,"),),
        "config/events.yaml",
        "5 minutes",
        "delivery/retry/schedule/1: invalid value '5 minutes'",
    ),
    "duration with trailing newline": Broken(
        (Edit("config/events.yaml", "[5s, 5m,", '["5s\\n", 5m,'),),
        "config/events.yaml",
        '"5s\\n"',
        "invalid duration '5s\\n'",
    ),
    "jitter out of range": Broken(
        (Edit("config/events.yaml", "jitter: 0.1", "jitter: 1.5"),),
        "config/events.yaml",
        "jitter: 1.5",
        "delivery/retry/jitter: 1.5 is greater than the maximum of 1",
    ),
    "missing key_env": Broken(
        (Edit("config/systems.yaml", "    key_env: UE_FLOW_KEY_LEARN\n", ""),),
        "config/systems.yaml",
        "- slug: learn",
        "'key_env' is a required property",
    ),
    "event name not a string": Broken(
        (Edit("config/events.yaml", "  basket_add:\n", "  1:\n"),),
        "config/events.yaml",
        # The key's value starts on the line after ``1:``.
        "    type: presale",
        "events: invalid key 1; expected an event name",
    ),
    "recursive alias": Broken(
        (Edit("config/events.yaml", "examples:", "loop: &a [*a]\nexamples:"),),
        "config/events.yaml",
        "loop: &a",
        "recursive alias",
    ),
}


def check_single_problem(tmp_path: Path, case: Broken) -> None:
    """Apply ``case`` to a copy of the config; expect exactly its one problem."""
    config = write_config(tmp_path)
    apply_edits(tmp_path, case.edits)

    problems = load_problems(config)

    assert len(problems) == 1, problems
    assert problems[0].path.resolve() == (tmp_path / case.file).resolve()
    assert problems[0].line == find_line(tmp_path / case.file, case.marker)
    assert case.fragment in problems[0].message


@pytest.mark.parametrize("case", BROKEN.values(), ids=BROKEN.keys())
def test_broken_config_reported(tmp_path: Path, case: Broken) -> None:
    check_single_problem(tmp_path, case)


def test_yaml_syntax_error_column(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    apply_edits(tmp_path, BROKEN["yaml syntax error"].edits)

    problems = load_problems(config)

    assert problems[0].column == len("    type: presale") + 1


SCHEMA_MISTAKES = {
    "not draft 2020-12": ("type", "objekt", "is not a valid draft 2020-12 schema at type"),
    "unresolvable ref": (
        "properties",
        {"action": {"enum": ["add"]}, "product": {"$ref": "../produkt.json"}},
        "produkt.json",
    ),
}


@pytest.mark.parametrize(
    ("key", "value", "fragment"), SCHEMA_MISTAKES.values(), ids=SCHEMA_MISTAKES.keys()
)
def test_broken_schema_reported(tmp_path: Path, key: str, value: object, fragment: str) -> None:
    config = write_config(tmp_path)
    edit_schema(tmp_path, "schemas/events/presale.json", key, value)

    problems = load_problems(config)

    assert len(problems) == 1, problems
    assert problems[0].path == config / "events.yaml"
    schema_line = find_line(config / "events.yaml", "schema: ../schemas/events/presale.json")
    assert problems[0].line == schema_line
    assert fragment in problems[0].message
    assert "\n" not in problems[0].message


EMPTY_OR_MISSING = {
    "empty systems.yaml": ("systems.yaml", "", 1, "file is empty"),
    "comment-only events.yaml": ("events.yaml", "# nothing yet\n", 1, "file is empty"),
    "events.yaml missing": ("events.yaml", None, 0, "file not found"),
}


@pytest.mark.parametrize(
    ("name", "text", "line", "fragment"), EMPTY_OR_MISSING.values(), ids=EMPTY_OR_MISSING.keys()
)
def test_empty_or_missing_file(
    tmp_path: Path, name: str, text: str | None, line: int, fragment: str
) -> None:
    config = write_config(tmp_path)
    if text is None:
        (config / name).unlink()
    else:
        (config / name).write_text(text, encoding="utf-8")

    problems = load_problems(config)

    assert len(problems) == 1, problems
    assert problems[0].path == config / name
    assert problems[0].line == line
    assert fragment in problems[0].message


def test_missing_directory_reported(tmp_path: Path) -> None:
    problems = load_problems(tmp_path / "nowhere")

    assert problems[0].path == tmp_path / "nowhere"
    assert "configuration directory not found" in problems[0].message


def test_systems_mistakes_reported_together(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    apply_edits(
        tmp_path, BROKEN["duplicate slug"].edits + BROKEN["unknown event in subscription"].edits
    )

    problems = load_problems(config)
    messages = [problem.message for problem in problems]

    assert len(problems) == 2, messages
    assert any("duplicate slug 'mitxonline'" in message for message in messages)
    assert any("unknown event 'basket_remove'" in message for message in messages)


def test_both_files_reported_together(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    apply_edits(
        tmp_path, BROKEN["jitter out of range"].edits + BROKEN["unknown key in system"].edits
    )

    problems = load_problems(config)

    assert {problem.path.name for problem in problems} == {"events.yaml", "systems.yaml"}


def test_empty_environ_not_replaced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # An empty mapping is a complete environment, so the loader must not fall back to os.environ.
    config = write_config(tmp_path)
    apply_edits(tmp_path, BROKEN["undefined template variable"].edits)
    monkeypatch.setenv("LEARN_WEBHOOK_URL", "https://learn.example.org/hook/")

    problems = load_problems(config, environ={})

    assert "template uses env.LEARN_WEBHOOK_URL, which is not set" in problems[0].message


# --- ue-flow validate ------------------------------------------------------------------


def test_validate_shipped_config() -> None:
    result = run_cli("validate", "--config", str(ROOT / "config"))

    assert result.returncode == 0, result.stderr
    assert "is valid" in result.stdout


def test_validate_default_config_dir() -> None:
    result = run_cli("validate")

    assert result.returncode == 0, result.stderr


def test_validate_broken_config_text(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    apply_edits(
        tmp_path, BROKEN["duplicate slug"].edits + BROKEN["unknown event in subscription"].edits
    )
    systems_file = config / "systems.yaml"

    result = run_cli("validate", "--config", str(config))
    lines = result.stderr.splitlines()

    assert result.returncode == 1
    assert lines[0].startswith(f"{systems_file}:{find_line(systems_file, '# copied')}:11: error: ")
    assert lines[1].startswith(f"{systems_file}:{find_line(systems_file, 'basket_remove')}:")
    assert "error: " in lines[1]
    assert "2 errors found" in result.stderr


def test_validate_broken_config_json(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    apply_edits(tmp_path, BROKEN["jitter out of range"].edits)

    result = run_cli("validate", "--config", str(config), "--format", "json")
    report = json.loads(result.stdout)

    assert result.returncode == 1
    assert report["valid"] is False
    assert len(report["errors"]) == 1
    assert report["errors"][0]["file"] == str(config / "events.yaml")
    assert report["errors"][0]["line"] == find_line(config / "events.yaml", "jitter: 1.5")
    assert "jitter" in report["errors"][0]["message"]


def test_validate_shipped_config_json() -> None:
    result = run_cli("validate", "--config", str(ROOT / "config"), "--format", "json")
    report = json.loads(result.stdout)

    assert result.returncode == 0
    assert report == {"valid": True, "errors": []}


def test_validate_missing_directory(tmp_path: Path) -> None:
    result = run_cli("validate", "--config", str(tmp_path / "nowhere"))

    assert result.returncode == 1
    assert "configuration directory not found" in result.stderr


def test_validate_unknown_option() -> None:
    result = run_cli("validate", "--colour")

    assert result.returncode == 2
    assert "unrecognized arguments: --colour" in result.stderr


def test_validate_broken_example(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    example = tmp_path / "examples" / "post_sale" / "two_systems.json"
    edit = Edit(
        "examples/post_sale/two_systems.json", '"unit_price": "49.99"', '"unit_price": 49.99'
    )
    apply_edits(tmp_path, (edit,))

    line = find_line(example, '"unit_price": 49.99')

    result = run_cli("validate", "--config", str(config))

    assert result.returncode == 1
    assert f"{example}:{line}:" in result.stderr
    assert "$.data.lines[2].unit_price" in result.stderr
    assert "decimal string" in result.stderr


def test_validate_malformed_example(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    example = tmp_path / "examples" / "basket_add" / "add_course.json"
    edit = Edit("examples/basket_add/add_course.json", '"action": "add",', '"action": "add"')
    apply_edits(tmp_path, (edit,))

    line = find_line(example, '"product": {')

    result = run_cli("validate", "--config", str(config))

    assert result.returncode == 1
    assert f"{example}:{line}:" in result.stderr
    assert "invalid JSON" in result.stderr


def test_validate_config_and_example_together(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    example = tmp_path / "examples" / "post_sale" / "two_systems.json"
    edits = (
        *BROKEN["unknown event in subscription"].edits,
        Edit("examples/post_sale/two_systems.json", '"unit_price": "49.99"', '"unit_price": 49.99'),
    )
    apply_edits(tmp_path, edits)

    line = find_line(example, '"unit_price": 49.99')

    result = run_cli("validate", "--config", str(config))

    assert result.returncode == 1
    assert f"{config / 'systems.yaml'}:" in result.stderr
    assert f"{example}:{line}:" in result.stderr
    assert "2 errors found" in result.stderr
