"""WSGI middleware that verifies deliveries before they reach the application.

A verified request reaches the application with the Envelope in
``environ["ue_flow.envelope"]`` and the body still readable from
``wsgi.input``. The middleware itself responds, with a short generic body:

- 401 for Unauthorized, 400 for PayloadError, 413 for a body over the limit,
  405 for a method other than POST;
- 200 for a Duplicate, without calling the application;
- 503 when the duplicate store fails, so that the sender retries.

When the application raises or responds with other than 2xx, the webhook-id is
forgotten, so that the sender's retry is processed again.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable, Iterator
from http import HTTPStatus
from types import TracebackType
from typing import Any

from .envelope import Envelope
from .responses import forget_after_failure, status_line, verify_request
from .verify import Receiver

#: The environ key holding the verified Envelope.
ENVELOPE_KEY = "ue_flow.envelope"

#: The largest body read, in bytes. Envelopes are a few kilobytes; an order
#: with hundreds of lines stays well below one mebibyte.
DEFAULT_MAX_BODY_BYTES = 1024 * 1024

ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None]
StartResponse = Callable[..., Callable[[bytes], object]]
WSGIApplication = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


class WebhookMiddleware:
    """Verify every request to ``app``, or only those whose path is in ``paths``."""

    def __init__(
        self,
        app: WSGIApplication,
        receiver: Receiver,
        *,
        paths: Iterable[str] | None = None,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    ) -> None:
        """Wrap ``app``. ``paths`` are matched against ``PATH_INFO``; None matches all."""
        if max_body_bytes < 1:
            raise ValueError(f"max_body_bytes must be at least 1, not {max_body_bytes}.")

        self._app = app
        self._receiver = receiver
        self._paths = None if paths is None else frozenset(paths)
        self._max_body_bytes = max_body_bytes

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        """Verify the request, then call the application or respond with the rejection status."""
        if self._paths is not None and environ.get("PATH_INFO", "") not in self._paths:
            return self._app(environ, start_response)

        if environ.get("REQUEST_METHOD") != "POST":
            return _answer(start_response, HTTPStatus.METHOD_NOT_ALLOWED, [("Allow", "POST")])

        body = _read_body(environ, self._max_body_bytes)
        if body is None:
            return _answer(start_response, HTTPStatus.REQUEST_ENTITY_TOO_LARGE)

        envelope, status = verify_request(self._receiver, body, request_headers(environ))
        if envelope is None:
            return _answer(start_response, status)

        environ[ENVELOPE_KEY] = envelope
        environ["wsgi.input"] = io.BytesIO(body)
        return self._call_app(environ, start_response, envelope)

    def _call_app(
        self, environ: dict[str, Any], start_response: StartResponse, envelope: Envelope
    ) -> Iterable[bytes]:
        statuses: list[str] = []

        def recording_start_response(
            status: str, headers: list[tuple[str, str]], exc_info: ExcInfo | None = None
        ) -> Callable[[bytes], object]:
            statuses.append(status)
            return start_response(status, headers, exc_info)

        try:
            result = self._app(environ, recording_start_response)
        except BaseException:
            forget_after_failure(self._receiver, envelope)
            raise

        return _ClosingIterator(result, lambda: self._after_answer(statuses, envelope))

    def _after_answer(self, statuses: list[str], envelope: Envelope) -> None:
        if statuses and statuses[-1].startswith("2"):
            return

        forget_after_failure(self._receiver, envelope)


class _ClosingIterator:
    """The application's iterable, with a callback run once when the server closes it."""

    def __init__(self, result: Iterable[bytes], on_close: Callable[[], None]) -> None:
        self._result = result
        self._on_close = on_close

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._result)

    def close(self) -> None:
        try:
            close = getattr(self._result, "close", None)
            if close is not None:
                close()
        finally:
            self._on_close()


def request_headers(environ: dict[str, Any]) -> dict[str, str]:
    """Return the request headers of a WSGI environ, with lower-case names."""
    headers = {
        name.removeprefix("HTTP_").replace("_", "-").lower(): value
        for name, value in environ.items()
        if name.startswith("HTTP_")
    }
    if "CONTENT_TYPE" in environ:
        headers["content-type"] = environ["CONTENT_TYPE"]

    return headers


def _read_body(environ: dict[str, Any], max_bytes: int) -> bytes | None:
    """Return the body, b"" without a valid Content-Length, or None when it is too large."""
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    if length > max_bytes:
        return None
    if length <= 0:
        return b""

    body: bytes = environ["wsgi.input"].read(length)
    return body


def _answer(
    start_response: StartResponse,
    status: HTTPStatus,
    extra_headers: list[tuple[str, str]] | None = None,
) -> list[bytes]:
    body = status_line(status).encode("ascii") + b"\n"
    headers = [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))]
    start_response(status_line(status), headers + (extra_headers or []))
    return [body]
