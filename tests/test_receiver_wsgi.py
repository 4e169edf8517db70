"""Tests of the WSGI middleware, called directly and behind a real HTTP server."""

from __future__ import annotations

import io
import json
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import pytest
import requests

from ue_flow import signing
from ue_flow.receiver import Envelope, MemoryDuplicateStore, Receiver, TrustedSystem
from ue_flow.receiver.wsgi import ENVELOPE_KEY, WebhookMiddleware, request_headers

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "basket_add" / "add_course.json"
NOW = 1_760_000_000
SLUG = "mitxonline"
KEY = "key-mitxonline-2f9c41d7e0"
MSG_ID = "evt_0001"
PATH = "/webhooks/ue/"


class RecordingApp:
    """A WSGI application that records each request and responds with ``status``."""

    def __init__(self, status: str = "200 OK") -> None:
        self.status = status
        self.calls: list[dict[str, Any]] = []

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        length = int(environ.get("CONTENT_LENGTH") or 0)
        self.calls.append(
            {"envelope": environ.get(ENVELOPE_KEY), "body": environ["wsgi.input"].read(length)}
        )
        start_response(self.status, [("Content-Type", "text/plain")])
        return [b"processed"]


class FailingApp:
    """A WSGI application that raises."""

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        raise RuntimeError("processing failed")


@pytest.fixture
def secret() -> str:
    return signing.generate_secret()


def make_receiver(secret: str, *, clock: Callable[[], float] = lambda: NOW) -> Receiver:
    trusted = {SLUG: TrustedSystem(KEY, (secret,))}
    return Receiver(trusted, duplicates=MemoryDuplicateStore(), clock=clock)


def envelope_body(key: str = KEY) -> bytes:
    payload = json.loads(EXAMPLE.read_text(encoding="utf-8"))
    envelope = {"system_slug": SLUG, "system_key": key, "type": "presale", **payload}
    return json.dumps(envelope, separators=(",", ":")).encode()


def signed_headers(secret: str, body: bytes, timestamp: int = NOW) -> dict[str, str]:
    return {
        "webhook-id": MSG_ID,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signing.signature_header([secret], MSG_ID, timestamp, body),
    }


def make_environ(
    body: bytes, headers: dict[str, str], *, method: str = "POST", path: str = PATH
) -> dict[str, Any]:
    environ: dict[str, Any] = {
        "REQUEST_METHOD": method,
        "PATH_INFO": path,
        "CONTENT_TYPE": "application/json",
        "CONTENT_LENGTH": str(len(body)),
        "wsgi.input": io.BytesIO(body),
    }
    for name, value in headers.items():
        environ["HTTP_" + name.upper().replace("-", "_")] = value
    return environ


def call(app: Callable[..., Iterable[bytes]], environ: dict[str, Any]) -> tuple[str, bytes]:
    statuses: list[str] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        statuses.append(status)
        return lambda data: None

    result = app(environ, start_response)
    try:
        body = b"".join(result)
    finally:
        close = getattr(result, "close", None)
        if close is not None:
            close()

    return statuses[-1], body


def test_wsgi_passes_envelope(secret: str) -> None:
    app = RecordingApp()
    middleware = WebhookMiddleware(app, make_receiver(secret))
    body = envelope_body()

    status, answer = call(middleware, make_environ(body, signed_headers(secret, body)))

    assert status == "200 OK"
    assert answer == b"processed"
    assert isinstance(app.calls[0]["envelope"], Envelope)
    assert app.calls[0]["envelope"].webhook_id == MSG_ID
    assert app.calls[0]["body"] == body


def test_wsgi_unauthorized(secret: str) -> None:
    app = RecordingApp()
    middleware = WebhookMiddleware(app, make_receiver(secret))
    body = envelope_body(key="key-guessed")

    status, answer = call(middleware, make_environ(body, signed_headers(secret, body)))

    assert status == "401 Unauthorized"
    assert answer == b"401 Unauthorized\n"
    assert app.calls == []


def test_wsgi_unauthorized_logged(secret: str, caplog: pytest.LogCaptureFixture) -> None:
    middleware = WebhookMiddleware(RecordingApp(), make_receiver(secret))
    body = envelope_body()
    headers = signed_headers(secret, body) | {"webhook-signature": "v1,%%%"}

    with caplog.at_level("WARNING", logger="ue_flow.receiver"):
        call(middleware, make_environ(body, headers))

    assert "not valid base64" in caplog.text
    assert KEY not in caplog.text


def test_wsgi_bad_request(secret: str) -> None:
    app = RecordingApp()
    middleware = WebhookMiddleware(app, make_receiver(secret))
    envelope = json.loads(envelope_body()) | {"extra": 1}
    body = json.dumps(envelope).encode()

    status, answer = call(middleware, make_environ(body, signed_headers(secret, body)))

    assert status == "400 Bad Request"
    assert answer == b"400 Bad Request\n"
    assert app.calls == []


def test_wsgi_method_not_allowed(secret: str) -> None:
    app = RecordingApp()
    middleware = WebhookMiddleware(app, make_receiver(secret))

    status, _ = call(middleware, make_environ(b"", {}, method="GET"))

    assert status == "405 Method Not Allowed"
    assert app.calls == []


def test_wsgi_body_too_large(secret: str) -> None:
    app = RecordingApp()
    middleware = WebhookMiddleware(app, make_receiver(secret), max_body_bytes=100)
    body = envelope_body()

    status, _ = call(middleware, make_environ(body, signed_headers(secret, body)))

    assert status == "413 Request Entity Too Large"
    assert app.calls == []


def test_wsgi_duplicate_acknowledged(secret: str) -> None:
    app = RecordingApp()
    middleware = WebhookMiddleware(app, make_receiver(secret))
    body = envelope_body()
    headers = signed_headers(secret, body)

    call(middleware, make_environ(body, headers))
    status, _ = call(middleware, make_environ(body, headers))

    assert status == "200 OK"
    assert len(app.calls) == 1


def test_wsgi_failed_answer_forgets(secret: str) -> None:
    app = RecordingApp(status="500 Internal Server Error")
    middleware = WebhookMiddleware(app, make_receiver(secret))
    body = envelope_body()
    headers = signed_headers(secret, body)

    call(middleware, make_environ(body, headers))
    app.status = "204 No Content"
    status, _ = call(middleware, make_environ(body, headers))

    assert status == "204 No Content"
    assert len(app.calls) == 2


def test_wsgi_raising_app_forgets(secret: str) -> None:
    receiver = make_receiver(secret)
    body = envelope_body()
    headers = signed_headers(secret, body)

    with pytest.raises(RuntimeError):
        call(WebhookMiddleware(FailingApp(), receiver), make_environ(body, headers))
    status, _ = call(WebhookMiddleware(RecordingApp(), receiver), make_environ(body, headers))

    assert status == "200 OK"


def test_wsgi_other_path_passes(secret: str) -> None:
    app = RecordingApp()
    middleware = WebhookMiddleware(app, make_receiver(secret), paths=[PATH])

    status, _ = call(middleware, make_environ(b"", {}, method="GET", path="/health"))

    assert status == "200 OK"
    assert app.calls[0]["envelope"] is None


def test_wsgi_rejects_max_body_bytes(secret: str) -> None:
    with pytest.raises(ValueError, match="max_body_bytes"):
        WebhookMiddleware(RecordingApp(), make_receiver(secret), max_body_bytes=0)


def test_request_headers_lower_case() -> None:
    environ = {"HTTP_WEBHOOK_ID": "evt_1", "CONTENT_TYPE": "application/json", "PATH_INFO": "/"}

    assert request_headers(environ) == {"webhook-id": "evt_1", "content-type": "application/json"}


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def server_url(secret: str) -> Iterator[str]:
    app = WebhookMiddleware(RecordingApp(), make_receiver(secret, clock=time.time), paths=[PATH])
    server: WSGIServer = make_server("127.0.0.1", 0, app, handler_class=_QuietHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}{PATH}"
    server.shutdown()
    server.server_close()
    thread.join()


def test_wsgi_server_accepts_signed(server_url: str, secret: str) -> None:
    body = envelope_body()
    headers = signed_headers(secret, body, timestamp=int(time.time()))

    answer = requests.post(server_url, data=body, headers=headers, timeout=5)

    assert answer.status_code == 200
    assert answer.text == "processed"


def test_wsgi_server_rejects_unsigned(server_url: str) -> None:
    answer = requests.post(server_url, data=envelope_body(), timeout=5)

    assert answer.status_code == 401
    assert answer.text == "401 Unauthorized\n"
