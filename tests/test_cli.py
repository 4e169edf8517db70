"""The ``ue-flow`` command line: check, emit and demo, each run as a real process."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from tests.conftest import (
    REDIS_URL,
    ROOT,
    load_example,
    queued_deliveries,
    redis_queued,
    write_config,
)

UE_FLOW = Path(sys.executable).parent / "ue-flow"

EVENT_ID = re.compile(r"evt_[0-9a-f]{32}")


def build_env(**extra: str) -> dict[str, str]:
    """The current environment without ue-flow settings, plus ``extra``."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("UE_FLOW_") and not name.endswith("_WEBHOOK_URL")
    }
    env.update(extra)
    return env


def run_cli(
    *args: str,
    env: dict[str, str] | None = None,
    stdin: str | None = None,
    timeout: float = 60,
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(UE_FLOW), *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=build_env() if env is None else env,
        cwd=ROOT,
        timeout=timeout,
    )


def write_payload(directory: Path, payload: object, name: str = "payload.json") -> Path:
    path = directory / name
    path.write_text(json.dumps(payload, indent=2), encoding="utf-8")
    return path


def list_keys(client: redis.Redis, namespace: str) -> list[bytes]:
    return sorted(client.scan_iter(match=f"{namespace}*"))


@pytest.fixture
def emit_env(tmp_path: Path, namespace: str) -> dict[str, str]:
    return build_env(
        UE_FLOW_BROKER_URL=REDIS_URL,
        UE_FLOW_NAMESPACE=namespace,
        UE_FLOW_CONFIG=str(write_config(tmp_path)),
    )


# --- ue-flow check ---------------------------------------------------------------------

EXAMPLES = sorted((path.parent.name, path) for path in (ROOT / "examples").glob("*/*.json"))


@pytest.mark.parametrize(
    ("event_name", "path"),
    EXAMPLES,
    ids=[f"{path.parent.name}/{path.stem}" for _, path in EXAMPLES],
)
def test_check_example_ok(event_name: str, path: Path) -> None:
    result = run_cli("check", event_name, str(path))

    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok: ")


def test_check_invalid_payload(tmp_path: Path) -> None:
    payload = load_example("post_sale", "two_systems")
    payload["data"]["lines"][0]["unit_price"] = 75.0
    path = write_payload(tmp_path, payload)

    result = run_cli("check", "post_sale", str(path))

    assert result.returncode == 1
    assert "$.data.lines[0].unit_price" in result.stderr
    assert "decimal string" in result.stderr
    assert result.stdout == ""


def test_check_stdin_valid() -> None:
    text = (ROOT / "examples" / "basket_add" / "add_course.json").read_text(encoding="utf-8")

    result = run_cli("check", "basket_add", "-", stdin=text)

    assert result.returncode == 0, result.stderr
    assert "ok: " in result.stdout


def test_check_stdin_invalid() -> None:
    payload = load_example("basket_add", "add_course")
    payload["data"]["action"] = "replace"

    result = run_cli("check", "basket_add", "-", stdin=json.dumps(payload))

    assert result.returncode == 1
    assert "$.data.action" in result.stderr


def test_check_unknown_event() -> None:
    path = ROOT / "examples" / "post_sale" / "two_systems.json"

    result = run_cli("check", "post_sail", str(path))

    assert result.returncode == 2
    assert "unknown event" in result.stderr
    assert "post_sail" in result.stderr


def test_check_event_mismatch() -> None:
    path = ROOT / "examples" / "basket_add" / "add_course.json"

    result = run_cli("check", "post_sale", str(path))

    assert result.returncode == 1
    assert "invalid post_sale payload" in result.stderr


def test_check_malformed_json(tmp_path: Path) -> None:
    path = tmp_path / "payload.json"
    path.write_text('{\n  "user": {},\n  "data": {,}\n}\n', encoding="utf-8")

    result = run_cli("check", "post_sale", str(path))

    assert result.returncode == 1
    assert f"{path}:3:" in result.stderr
    assert "invalid JSON" in result.stderr


def test_check_duplicate_key(tmp_path: Path) -> None:
    path = tmp_path / "payload.json"
    text = '{\n  "user": {"id": 1},\n  "data": {\n    "state": "a",\n    "state": "b"\n  }\n}\n'
    path.write_text(text, encoding="utf-8")

    result = run_cli("check", "post_sale", str(path))

    assert result.returncode == 1
    assert f"{path}:5:5: error: invalid JSON: duplicate key 'state'" in result.stderr


def test_check_duplicate_key_stdin() -> None:
    result = run_cli("check", "post_sale", "-", stdin='{"user": {}, "user": {}, "data": {}}')

    assert result.returncode == 1
    assert "duplicate key 'user'" in result.stderr


def test_closed_pipe_no_traceback() -> None:
    # The reader closes the pipe before the command, still importing, writes.
    process = subprocess.Popen(
        [str(UE_FLOW), "events", "--format", "json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=build_env(),
        cwd=ROOT,
    )
    assert process.stdout is not None
    process.stdout.close()
    _, stderr = process.communicate(timeout=60)

    assert process.returncode == 0
    assert b"Traceback" not in stderr


def test_check_extra_top_level_key(tmp_path: Path) -> None:
    payload = load_example("post_sale", "two_systems")
    payload["systems"] = ["learn"]
    path = write_payload(tmp_path, payload)

    result = run_cli("check", "post_sale", str(path))

    assert result.returncode == 1
    assert "keys user and data" in result.stderr


def test_check_missing_file(tmp_path: Path) -> None:
    result = run_cli("check", "post_sale", str(tmp_path / "absent.json"))

    assert result.returncode == 1
    assert "absent.json" in result.stderr


def test_check_missing_argument() -> None:
    result = run_cli("check", "post_sale")

    assert result.returncode == 2


def test_no_command_usage() -> None:
    result = run_cli()

    assert result.returncode == 2
    assert "usage: ue-flow" in result.stderr


# --- ue-flow emit ----------------------------------------------------------------------


def test_emit_queues_message(
    emit_env: dict[str, str], namespace: str, redis_client: redis.Redis
) -> None:
    path = ROOT / "examples" / "post_sale" / "two_systems.json"

    result = run_cli("emit", "post_sale", str(path), env=emit_env)
    event_id = result.stdout.strip()
    queued = queued_deliveries(redis_client, namespace)

    assert result.returncode == 0, result.stderr
    assert EVENT_ID.fullmatch(event_id), result.stdout
    # The example has lines of both systems, so each gets one delivery.
    assert sorted(queued) == ["learn", "mitxonline"]
    for slug, messages in queued.items():
        assert len(messages) == 1, slug
        assert messages[0]["args"][0] == event_id, slug
    assert redis_queued(redis_client, namespace, "events") == []


def test_emit_idempotency_key_queues_once(
    emit_env: dict[str, str], namespace: str, redis_client: redis.Redis
) -> None:
    path = str(ROOT / "examples" / "post_sale" / "two_systems.json")

    first = run_cli("emit", "post_sale", path, "--idempotency-key", "order-42", env=emit_env)
    second = run_cli("emit", "post_sale", path, "--idempotency-key", "order-42", env=emit_env)
    queued = queued_deliveries(redis_client, namespace)

    assert first.returncode == 0, first.stderr
    assert second.returncode == 0, second.stderr
    assert second.stdout == first.stdout
    assert [len(messages) for messages in queued.values()] == [1, 1]


def test_emit_message_has_no_key(
    emit_env: dict[str, str], namespace: str, redis_client: redis.Redis
) -> None:
    emit_env["UE_FLOW_KEY_MITXONLINE"] = "key-never-in-the-broker"
    path = ROOT / "examples" / "basket_add" / "add_course.json"

    result = run_cli("emit", "basket_add", str(path), env=emit_env)
    queued = queued_deliveries(redis_client, namespace)

    assert result.returncode == 0, result.stderr
    assert list(queued) == ["mitxonline"]
    assert len(queued["mitxonline"]) == 1
    assert "key-never-in-the-broker" not in json.dumps(queued["mitxonline"][0])


def test_emit_system_option(
    emit_env: dict[str, str], namespace: str, redis_client: redis.Redis
) -> None:
    path = ROOT / "examples" / "post_sale" / "two_systems.json"

    result = run_cli("emit", "post_sale", str(path), "--system", "learn", env=emit_env)
    queued = queued_deliveries(redis_client, namespace)

    assert result.returncode == 0, result.stderr
    # mitxonline owns lines of the example too, but --system leaves it out.
    assert list(queued) == ["learn"]
    assert len(queued["learn"]) == 1


def test_emit_unrouted_event(
    tmp_path: Path, emit_env: dict[str, str], namespace: str, redis_client: redis.Redis
) -> None:
    # learn owns the product but does not subscribe to basket_add.
    payload = load_example("basket_add", "add_course")
    payload["data"]["product"]["system"] = "learn"
    path = write_payload(tmp_path, payload)

    result = run_cli("emit", "basket_add", str(path), env=emit_env)
    event_id = result.stdout.strip()

    assert result.returncode == 0, result.stderr
    assert EVENT_ID.fullmatch(event_id), result.stdout
    assert "event.unrouted" in result.stderr
    assert event_id in result.stderr
    assert list_keys(redis_client, namespace) == []


def test_emit_invalid_payload(
    tmp_path: Path, emit_env: dict[str, str], namespace: str, redis_client: redis.Redis
) -> None:
    payload = load_example("post_sale", "two_systems")
    payload["data"]["total_price_paid"] = 1099.99
    path = write_payload(tmp_path, payload)

    result = run_cli("emit", "post_sale", str(path), env=emit_env)

    assert result.returncode == 1
    assert "$.data.total_price_paid" in result.stderr
    assert result.stdout == ""
    assert list_keys(redis_client, namespace) == []


def test_emit_unknown_system(
    emit_env: dict[str, str], namespace: str, redis_client: redis.Redis
) -> None:
    path = ROOT / "examples" / "post_sale" / "two_systems.json"

    result = run_cli("emit", "post_sale", str(path), "--system", "xpro", env=emit_env)

    assert result.returncode == 2
    assert "unknown system 'xpro'" in result.stderr
    assert list_keys(redis_client, namespace) == []


def test_emit_broker_down(tmp_path: Path) -> None:
    # Nothing normally listens on 127.0.0.1 port 1, so the connection is refused.
    env = build_env(
        UE_FLOW_BROKER_URL="redis://127.0.0.1:1/0",
        UE_FLOW_CONFIG=str(write_config(tmp_path)),
    )
    path = ROOT / "examples" / "basket_add" / "add_course.json"

    result = run_cli("emit", "basket_add", str(path), env=env)

    assert result.returncode == 1
    assert "nothing was queued" in result.stderr
    assert result.stdout == ""


# --- ue-flow demo ----------------------------------------------------------------------


def test_demo_runs() -> None:
    result = run_cli("demo", timeout=120)
    output = result.stdout + result.stderr
    references = sorted(
        {
            json.loads(path.read_text(encoding="utf-8"))["data"].get("reference_number")
            for path in (ROOT / "examples").glob("post_*/*.json")
        }
    )

    assert result.returncode == 0, output
    assert "mitxonline" in output
    assert "learn" in output
    for reference in references:
        assert reference in output, reference
    assert "signature and key verified" in output
