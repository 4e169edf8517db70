"""Exit statuses and wording of command line and configuration error messages."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from tests.conftest import ROOT, write_config
from tests.test_cli import build_env, list_keys, run_cli
from ue_flow.engine import check_keys
from ue_flow.errors import ConfigError, ConfigProblem
from ue_flow.loader import load_config
from ue_flow.worker import EXIT_CONFIG, dramatiq_queues

PAYLOAD = str(ROOT / "examples" / "post_sale" / "two_systems.json")

VALID_EVENTS = "valid events: basket_add, post_sale, post_refund"
VALID_SYSTEMS = "valid systems: mitxonline, learn"


@pytest.fixture
def cli_env(tmp_path: Path, namespace: str) -> dict[str, str]:
    return build_env(
        UE_FLOW_BROKER_URL="redis://127.0.0.1:6379/0",
        UE_FLOW_NAMESPACE=namespace,
        UE_FLOW_CONFIG=str(write_config(tmp_path)),
    )


# --- usage errors ----------------------------------------------------------------------

USAGE_ERRORS = {
    "emit unknown event": (("emit", "NOSUCH_EVENT", PAYLOAD), "'NOSUCH_EVENT'", VALID_EVENTS),
    "emit unknown system": (
        ("emit", "post_sale", PAYLOAD, "--system", "nosuch"),
        "'nosuch'",
        VALID_SYSTEMS,
    ),
    "check unknown event": (("check", "NOSUCH_EVENT", PAYLOAD), "'NOSUCH_EVENT'", VALID_EVENTS),
    "render unknown event": (("render", "NOSUCH", PAYLOAD), "'NOSUCH'", VALID_EVENTS),
    "render unknown system": (
        ("render", "post_sale", PAYLOAD, "--system", "nosuch"),
        "'nosuch'",
        VALID_SYSTEMS,
    ),
    "redeliver unknown system": (
        ("redeliver", "evt_0", "--system", "nosuch"),
        "'nosuch'",
        VALID_SYSTEMS,
    ),
    "deliveries unknown system": (("deliveries", "--system", "nosuch"), "'nosuch'", VALID_SYSTEMS),
    "dead-letters unknown system": (
        ("dead-letters", "--system", "nosuch"),
        "'nosuch'",
        VALID_SYSTEMS,
    ),
    "replay unknown system": (("replay", "--system", "nosuch"), "'nosuch'", VALID_SYSTEMS),
    "systems enable unknown": (("systems", "enable", "nosuch"), "'nosuch'", VALID_SYSTEMS),
    "systems enable no slug": (("systems", "enable"), "needs a SLUG", VALID_SYSTEMS),
    "deliveries limit zero": (("deliveries", "--limit", "0"), "'0'", "positive integer"),
    "deliveries limit negative": (("deliveries", "--limit", "-5"), "'-5'", "positive integer"),
}


@pytest.mark.parametrize(
    ("args", "bad_value", "choices"), USAGE_ERRORS.values(), ids=USAGE_ERRORS.keys()
)
def test_usage_error_exits_2(
    cli_env: dict[str, str],
    namespace: str,
    redis_client: redis.Redis,
    args: tuple[str, ...],
    bad_value: str,
    choices: str,
) -> None:
    result = run_cli(*args, env=cli_env)

    assert result.returncode == 2, result.stderr
    assert bad_value in result.stderr
    assert choices in result.stderr
    assert result.stdout == ""
    assert list_keys(redis_client, namespace) == []


def test_emit_unknown_event_not_blamed_on_file(cli_env: dict[str, str]) -> None:
    result = run_cli("emit", "NOSUCH_EVENT", PAYLOAD, env=cli_env)

    assert PAYLOAD not in result.stderr


def test_check_invalid_payload_exits_1(tmp_path: Path) -> None:
    path = tmp_path / "payload.json"
    path.write_text('{"user": {}, "data": {}}', encoding="utf-8")

    result = run_cli("check", "post_sale", str(path))

    assert result.returncode == 1
    assert f"{path}: error: invalid post_sale payload" in result.stderr


def test_emit_non_subscriber_exits_1(cli_env: dict[str, str]) -> None:
    # A configured system that does not subscribe is a payload problem, not a usage error.
    payload = str(ROOT / "examples" / "basket_add" / "add_course.json")

    result = run_cli("emit", "basket_add", payload, "--system", "learn", env=cli_env)

    assert result.returncode == 1, result.stderr


# --- problem positions -----------------------------------------------------------------


def test_problem_without_position() -> None:
    problem = ConfigProblem(Path("/nonexistent.json"), 0, 0, "file not found")

    assert str(problem) == "/nonexistent.json: error: file not found"


def test_problem_with_position() -> None:
    problem = ConfigProblem(Path("config/events.yaml"), 7, 17, "bad")

    assert str(problem) == "config/events.yaml:7:17: error: bad"


def test_missing_directory_absolute() -> None:
    result = run_cli("validate", "--config", "nowhere")

    assert result.returncode == 1
    expected = f"{(ROOT / 'nowhere').resolve()}: error: configuration directory not found"
    assert result.stderr.startswith(expected)
    assert ":0:0" not in result.stderr


def test_broker_url_problem_without_position(tmp_path: Path) -> None:
    env = build_env(UE_FLOW_BROKER_URL="bogus://x", UE_FLOW_CONFIG=str(write_config(tmp_path)))

    result = run_cli("emit", "post_sale", PAYLOAD, env=env)

    assert result.returncode == 1
    assert result.stderr.startswith("UE_FLOW_BROKER_URL: error: ")


# --- configuration messages ------------------------------------------------------------


def edited_problems(tmp_path: Path, name: str, old: str, new: str) -> tuple[ConfigProblem, ...]:
    config = write_config(tmp_path)
    path = config / name
    text = path.read_text(encoding="utf-8")
    assert old in text, f"{old!r} not found in {path}; the shipped file changed"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")
    with pytest.raises(ConfigError) as raised:
        load_config(config, environ={})
    return raised.value.problems


def line_of(path: Path, text: str) -> int:
    lines = path.read_text(encoding="utf-8").splitlines()
    return next(number for number, line in enumerate(lines, start=1) if text in line)


def test_slug_pattern_states_rule(tmp_path: Path) -> None:
    problems = edited_problems(tmp_path, "systems.yaml", "slug: learn", "slug: Learn!")

    assert len(problems) == 1, problems
    message = problems[0].message
    assert message.startswith("systems/1/slug: invalid value 'Learn!'; expected a slug")
    assert "a lower-case letter, then lower-case letters, digits, - or _" in message
    assert "at most 63 characters" in message


def test_duration_type_states_rule(tmp_path: Path) -> None:
    problems = edited_problems(tmp_path, "events.yaml", "read_timeout: 10s", "read_timeout: 5")

    assert len(problems) == 1, problems
    assert problems[0].message == (
        "delivery/read_timeout: invalid value 5; expected a duration: "
        "an integer followed by ms, s, m, h or d, such as 5s or 2h"
    )


def test_plain_type_error_names_type(tmp_path: Path) -> None:
    problems = edited_problems(
        tmp_path,
        "events.yaml",
        "  read_timeout: 10s\n",
        "  read_timeout: 10s\n  max_in_flight: x\n",
    )

    assert len(problems) == 1, problems
    message = problems[0].message
    assert message.startswith("delivery/max_in_flight: invalid value 'x'; expected an integer. ")
    assert "Deliveries to one system in flight at once" in message


def test_env_name_pattern_states_rule(tmp_path: Path) -> None:
    problems = edited_problems(
        tmp_path, "systems.yaml", "key_env: UE_FLOW_KEY_LEARN", "key_env: 1-learn"
    )

    assert len(problems) == 1, problems
    message = problems[0].message
    assert "expected an environment variable name: a letter or _" in message
    assert "such as UE_FLOW_KEY_MITXONLINE. Put the key" in message
    assert "1-learn" not in message


def test_env_name_number_not_shown(tmp_path: Path) -> None:
    # YAML reads an unquoted numeric key as an integer, which is still not shown.
    problems = edited_problems(
        tmp_path, "systems.yaml", "key_env: UE_FLOW_KEY_LEARN", "key_env: 271828182845"
    )

    assert len(problems) == 1, problems
    assert "expected an environment variable name" in problems[0].message
    assert "271828182845" not in problems[0].message


def test_pointer_pattern_states_rule(tmp_path: Path) -> None:
    problems = edited_problems(
        tmp_path, "events.yaml", "owner: /data/product/system", "owner: data/product"
    )

    assert len(problems) == 1, problems
    assert "invalid value 'data/product'; expected a JSON pointer" in problems[0].message
    assert "which starts with /" in problems[0].message


def test_event_name_key_reported_at_entry(tmp_path: Path) -> None:
    problems = edited_problems(tmp_path, "events.yaml", "  post_refund:\n", "  Post-Refund:\n")
    events_file = tmp_path / "config" / "events.yaml"

    assert len(problems) == 1, problems
    message = problems[0].message
    assert message.startswith("events: invalid key 'Post-Refund'; expected an event name")
    assert "lower-case letters, digits or _, such as post_sale" in message
    assert "^[a-z]" not in message
    # The positions store where the key's value starts: the line after the key.
    assert problems[0].line == line_of(events_file, "  Post-Refund:") + 1


def test_event_name_not_string_states_rule(tmp_path: Path) -> None:
    problems = edited_problems(tmp_path, "events.yaml", "  basket_add:\n", "  1:\n")

    assert len(problems) == 1, problems
    assert problems[0].message.startswith("events: invalid key 1; expected an event name")


# --- wording ---------------------------------------------------------------------------


def test_validate_counts_one_error(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    events_file = config / "events.yaml"
    text = events_file.read_text(encoding="utf-8")
    events_file.write_text(text.replace("read_timeout: 10s", "read_timeout: 5"), encoding="utf-8")

    result = run_cli("validate", "--config", str(config))

    assert result.returncode == 1
    assert result.stderr.splitlines()[-1] == "1 error found"


def test_dead_letters_and_replay_counts(cli_env: dict[str, str]) -> None:
    listed = run_cli("dead-letters", env=cli_env)
    replayed = run_cli("replay", "--all", env=cli_env)

    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.splitlines()[-1] == "0 dead letters"
    assert replayed.returncode == 0, replayed.stderr
    assert replayed.stdout.strip() == "replayed 0 dead letters"


def test_invalid_secret_said_once(tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path), environ={}).config
    environ = {
        "UE_FLOW_KEY_MITXONLINE": "key",
        "UE_FLOW_KEY_LEARN": "key",
        "UE_FLOW_SECRET_MITXONLINE": "whsec_tooshort",
        "UE_FLOW_SECRET_LEARN": "whsec_tooshort",
    }

    with pytest.raises(ConfigError) as raised:
        check_keys(config, environ, systems=["learn"])

    messages = [problem.message for problem in raised.value.problems]
    assert len(messages) == 1, messages
    assert "UE_FLOW_SECRET_LEARN holds an invalid signing secret: it " in messages[0]
    assert messages[0].lower().count("invalid signing secret") == 1


def test_broker_down_punctuation(tmp_path: Path) -> None:
    # Nothing normally listens on 127.0.0.1 port 1, so the connection is refused.
    env = build_env(
        UE_FLOW_BROKER_URL="redis://127.0.0.1:1/0", UE_FLOW_CONFIG=str(write_config(tmp_path))
    )

    result = run_cli("emit", "post_sale", PAYLOAD, env=env)

    assert result.returncode == 1
    assert "; nothing was queued" in result.stderr
    assert ".;" not in result.stderr


# --- worker queues ---------------------------------------------------------------------

DRAMATIQ_QUEUES = {
    "no -Q": ([], None),
    "-Q one queue": (["ue_flow", "-Q", "deliver.mitxonline"], ["deliver.mitxonline"]),
    "--queues two": (
        ["ue_flow", "--queues", "events", "deliver.learn"],
        ["events", "deliver.learn"],
    ),
    "-Q with no names": (["ue_flow", "-p", "1", "-Q"], None),
    "other options": (["ue_flow", "-p", "1", "-t", "4", "-Q", "events"], ["events"]),
    "joined short options": (["ue_flow", "-vQ", "deliver.learn"], ["deliver.learn"]),
    "joined thread count": (["ue_flow", "-t4", "-Q", "deliver.learn"], ["deliver.learn"]),
    "invalid command line": (["-Q", "deliver.learn"], None),
}


@pytest.mark.parametrize(("argv", "expected"), DRAMATIQ_QUEUES.values(), ids=DRAMATIQ_QUEUES.keys())
def test_dramatiq_queues_parsed(argv: list[str], expected: list[str] | None) -> None:
    assert dramatiq_queues(argv) == expected


def worker_command(*queues: str) -> list[str]:
    return [sys.executable, "-m", "dramatiq", "ue_flow", "-p", "1", "-t", "1", "-Q", *queues]


def assert_worker_ready(env: dict[str, str], log_path: Path, *queues: str) -> None:
    """Start ``dramatiq ue_flow -Q queues``, wait until it is ready, then stop it."""
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            worker_command(*queues),
            env=env,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + 30
            while b"Worker process is ready" not in log_path.read_bytes():
                assert process.poll() is None, log_path.read_text(errors="replace")
                assert time.monotonic() < deadline, log_path.read_text(errors="replace")
                time.sleep(0.1)
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def test_worker_needs_only_consumed_keys(worker_env: dict[str, str], tmp_path: Path) -> None:
    env = dict(worker_env)
    del env["UE_FLOW_KEY_LEARN"]
    del env["UE_FLOW_SECRET_LEARN"]
    assert_worker_ready(env, tmp_path / "worker.log", "deliver.mitxonline")


def test_worker_rejects_undeclared_queue(worker_env: dict[str, str]) -> None:
    result = subprocess.run(
        worker_command("deliver.nosuch"),
        env=worker_env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == EXIT_CONFIG
    assert "-Q names deliver.nosuch, which no actor declares" in result.stderr
    assert "deliver.learn, deliver.mitxonline, events" in result.stderr


def test_worker_routing_queue_needs_no_keys(worker_env: dict[str, str], tmp_path: Path) -> None:
    env = {
        name: value
        for name, value in worker_env.items()
        if not name.startswith(("UE_FLOW_KEY_", "UE_FLOW_SECRET_"))
    }
    assert_worker_ready(env, tmp_path / "worker.log", "events")
