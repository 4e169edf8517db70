"""Keys and signing secrets: never in Redis, worker logs, command output or YAML."""

from __future__ import annotations

import base64
import contextlib
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.conftest import REDIS_URL, ROOT, Receiver, load_example, write_config
from ue_flow.engine import Engine
from ue_flow.loader import load_config
from ue_flow.signing import SECRET_PREFIX, generate_secret
from ue_flow.state import StateStores
from ue_flow.state.attempts import DELIVERED, Attempt

UE_FLOW = Path(sys.executable).parent / "ue-flow"

#: How long the test waits for deliveries and dead letters, in seconds.
WAIT_SECONDS = 30.0


@dataclass
class EchoServer:
    """An HTTP server on 127.0.0.1 that responds 500 and echoes the request's headers and body."""

    requests: list[bytes] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}/webhook/"


@contextlib.contextmanager
def echoing() -> Iterator[EchoServer]:
    echo = EchoServer()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            echo.requests.append(body)
            answer = str(self.headers).encode() + b"\n" + body
            self.send_response(500)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    echo.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=echo.server.serve_forever, daemon=True).start()
    try:
        yield echo
    finally:
        echo.server.shutdown()
        echo.server.server_close()


def _wait_until(check: Callable[[], bool], description: str) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    pytest.fail(f"timed out after {WAIT_SECONDS} s waiting for {description}")


def dump_namespace(client: redis.Redis, namespace: str) -> bytes:
    """Return every key name, member, field and value under ``namespace``, of every type."""
    chunks: list[bytes] = []
    for key in client.scan_iter(match=f"{namespace}*"):
        chunks.append(key)
        kind = client.type(key)
        if kind == b"string":
            chunks.append(client.get(key) or b"")
        elif kind == b"hash":
            for name, value in client.hgetall(key).items():
                chunks.extend((name, value))
        elif kind == b"list":
            chunks.extend(client.lrange(key, 0, -1))
        elif kind == b"set":
            chunks.extend(client.smembers(key))
        elif kind == b"zset":
            chunks.extend(member for member, _ in client.zrange(key, 0, -1, withscores=True))
        elif kind == b"stream":
            for entry_id, fields in client.xrange(key):
                chunks.append(entry_id)
                for name, value in fields.items():
                    chunks.extend((name, value))
        elif kind != b"none":  # b"none": the key expired after the scan.
            pytest.fail(f"key {key!r} has type {kind!r}, which this test cannot read")
    return b"\n".join(chunks)


def _needles(env: dict[str, str]) -> dict[str, str]:
    """Each configured key and secret, and each secret's base64 without its prefix."""
    found: dict[str, str] = {}
    for name in ("UE_FLOW_KEY_MITXONLINE", "UE_FLOW_KEY_LEARN"):
        found[name] = env[name]
    for name in ("UE_FLOW_SECRET_MITXONLINE", "UE_FLOW_SECRET_LEARN"):
        found[name] = env[name]
        found[f"{name} without prefix"] = env[name].removeprefix(SECRET_PREFIX)
    return found


def _run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(UE_FLOW), *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=60,
    )


def _validate_env() -> dict[str, str]:
    return {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("UE_FLOW_") and not name.endswith("_WEBHOOK_URL")
    }


# --- a full delivery cycle with real workers --------------------------------------------


@pytest.mark.slow
def test_cycle_leaves_no_secret(
    tmp_path: Path,
    namespace: str,
    worker_env: dict[str, str],
    receivers: dict[str, Receiver],
    start_worker: Any,
    redis_client: redis.Redis,
) -> None:
    # One retry, so learn's endpoint, which returns 500 every time, is dead
    # after two attempts. Mitxonline returns 500 once, then 200.
    config = write_config(tmp_path / "short", schedule=["100ms"])
    loaded = load_config(config)
    stores = StateStores.open(redis_client, namespace, loaded.config)
    receivers["mitxonline"].statuses = [500]

    with echoing() as echo:
        env = dict(
            worker_env,
            UE_FLOW_CONFIG=str(config),
            UE_FLOW_SECRET_MITXONLINE=generate_secret(),
            UE_FLOW_SECRET_LEARN=generate_secret(),
            LEARN_WEBHOOK_URL=echo.url,
        )
        worker = start_worker(env)
        engine = Engine.for_redis(loaded, REDIS_URL, namespace)
        basket_id = engine.emit("basket_add", **load_example("basket_add", "add_course"))
        sale_id = engine.emit("post_sale", **load_example("post_sale", "two_systems"))

        _wait_until(
            lambda: any(letter.system == "learn" for letter in stores.dead_letters.select()),
            "learn's dead letter",
        )
        for event_id in (basket_id, sale_id):
            _wait_until(
                lambda event_id=event_id: (
                    (record := stores.attempts.get(event_id, "mitxonline")) is not None
                    and record.status == DELIVERED
                ),
                f"the delivery of {event_id} to mitxonline",
            )
        worker.stop()

    # The scenario ran as planned, so each place below contains real traffic.
    assert len(receivers["mitxonline"].requests) == 3
    assert len(echo.requests) == 2
    assert env["UE_FLOW_KEY_LEARN"].encode() in echo.requests[0]
    learn_attempts: list[Attempt] = [
        attempt for attempt in stores.attempts.attempts(sale_id) if attempt.system == "learn"
    ]
    assert len(learn_attempts) == 2
    assert '"system_key":"***"' in learn_attempts[0].response

    stored = dump_namespace(redis_client, namespace)
    log = worker.output()
    assert sale_id.encode() in stored
    assert "delivery.given_up" in log
    for name, needle in _needles(env).items():
        assert needle.encode() not in stored, f"{name} is stored in Redis"
        assert needle not in log, f"{name} is in the worker log"

    commands = [
        ("validate", "--config", str(config)),
        ("check", "post_sale", str(ROOT / "examples" / "post_sale" / "two_systems.json")),
        ("deliveries", "--json"),
        ("deliveries", "--event", sale_id),
        ("dead-letters", "--json"),
        ("dead-letters",),
        ("systems", "--json"),
    ]
    for command in commands:
        result = _run_cli(*command, env=env)
        output = result.stdout + result.stderr
        assert result.returncode == 0, f"ue-flow {' '.join(command)} failed:\n{output}"
        for name, needle in _needles(env).items():
            assert needle not in output, f"ue-flow {' '.join(command)} prints {name}"


# --- ue-flow validate on secrets written into the YAML ----------------------------------


def _odd_secret() -> str:
    # Its base64 starts with "+/+/", characters that no variable name may
    # hold, so that a schema error quoting the value would print it.
    return SECRET_PREFIX + base64.b64encode(b"\xfb\xff\xbf" + os.urandom(30)).decode()


@dataclass(frozen=True)
class Placement:
    file: str
    find: str
    replace: str
    #: Part of the output expected besides the literal-secret error.
    expected_output: str = ""


#: Where a secret may be written. ``replace`` contains the placeholder ``{secret}``.
PLACEMENTS = {
    "secret_env value": Placement(
        "systems.yaml", "secret_env: UE_FLOW_SECRET_LEARN", 'secret_env: "{secret}"'
    ),
    "unknown key": Placement(
        "systems.yaml",
        "secret_env: UE_FLOW_SECRET_LEARN",
        'secret_env: UE_FLOW_SECRET_LEARN\n    signing_secret: "{secret}"',
    ),
    "url query": Placement(
        "systems.yaml",
        "{{ env.LEARN_WEBHOOK_URL | default('http://127.0.0.1:8072/api/v1/ecommerce/webhook/') }}",
        "https://hooks.example.com/webhook/?s={secret}",
    ),
    # The invalid-URL message quotes the URL, so the secret in it is masked.
    "invalid url": Placement(
        "systems.yaml",
        "{{ env.LEARN_WEBHOOK_URL | default('http://127.0.0.1:8072/api/v1/ecommerce/webhook/') }}",
        "ftp://hooks.example.com/webhook/?s={secret}",
        expected_output="invalid URL 'ftp://hooks.example.com/webhook/?s=whsec_***'",
    ),
    "events.yaml description": Placement(
        "events.yaml",
        "description: An item was added to or removed from a basket.",
        'description: "Signed with {secret}"',
    ),
}


@pytest.mark.parametrize("placement", PLACEMENTS.values(), ids=PLACEMENTS.keys())
def test_validate_rejects_literal_secret(tmp_path: Path, placement: Placement) -> None:
    config = write_config(tmp_path)
    path = config / placement.file
    secret = _odd_secret()
    text = path.read_text(encoding="utf-8")
    assert text.count(placement.find) == 1, f"{placement.find!r} not found once in {path}"
    text = text.replace(placement.find, placement.replace.replace("{secret}", secret))
    path.write_text(text, encoding="utf-8")
    line = next(number for number, row in enumerate(text.splitlines(), 1) if secret in row)

    result = _run_cli("validate", "--config", str(config), env=_validate_env())

    assert result.returncode == 1
    assert f"{path}:{line}:" in result.stderr
    assert "literal signing secret in YAML" in result.stderr
    assert "name the variable in secret_env" in result.stderr
    assert secret not in result.stdout + result.stderr
    assert secret.removeprefix(SECRET_PREFIX) not in result.stdout + result.stderr
    assert placement.expected_output in result.stderr


def test_validate_hides_literal_key(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    path = config / "systems.yaml"
    key = f"literal-key-{uuid.uuid4().hex}"
    text = path.read_text(encoding="utf-8")
    assert text.count("key_env: UE_FLOW_KEY_LEARN") == 1
    text = text.replace("key_env: UE_FLOW_KEY_LEARN", f'key_env: "{key}"')
    path.write_text(text, encoding="utf-8")
    line = next(number for number, row in enumerate(text.splitlines(), 1) if key in row)

    result = _run_cli("validate", "--config", str(config), env=_validate_env())

    assert result.returncode == 1
    assert f"{path}:{line}:" in result.stderr
    assert "not shown because it may be a key or secret" in result.stderr
    assert key not in result.stdout + result.stderr
