"""Sending one envelope over HTTP and reporting what came back."""

from __future__ import annotations

import functools
import threading
import time
from dataclasses import dataclass

import requests
import urllib3

from . import __version__
from .urlsafety import DisallowedAddress, VettedAdapter

#: Sent with every delivery so that receivers can tell ue-flow's traffic apart.
USER_AGENT = f"ue-flow/{__version__}"

#: The most of a response body that is read; the rest is dropped with the connection.
MAX_RESPONSE_BYTES = 65_536

#: The headers of every delivery before its own: those requests sends by
#: default, with ue-flow's User-Agent.
BASE_HEADERS = {
    **{name: str(value) for name, value in requests.utils.default_headers().items()},
    "User-Agent": USER_AGENT,
}

#: Distinct URLs whose prepared form is kept. A configuration has one per system.
PREPARED_URLS = 256


@dataclass(frozen=True)
class Outcome:
    """The result of one HTTP attempt.

    ``status`` is the HTTP status, or None when no response came back, in
    which case ``error`` names the error class. ``duration_ms`` is the
    wall time of the attempt in integer milliseconds. ``response`` is the
    start of the response body, decoded leniently.
    """

    status: int | None
    duration_ms: int
    error: str | None = None
    retry_after: str | None = None
    response: str = ""

    @property
    def delivered(self) -> bool:
        """True only for a 2xx response: redirects and errors are failures."""
        return self.status is not None and 200 <= self.status < 300

    @property
    def summary(self) -> str:
        """The status or error in a few words, such as ``HTTP 503``."""
        return self.error or f"HTTP {self.status}"


class Sender:
    """Posts envelopes with keep-alive ``requests`` sessions, one per thread and address policy."""

    def __init__(self) -> None:
        self._local = threading.local()

    def _session(self, allow_private_network: bool) -> requests.Session:
        # Separate sessions keep separate connection pools, so a connection
        # opened for a system that allows private addresses is never reused
        # for one that does not.
        sessions: dict[bool, requests.Session] | None = getattr(self._local, "sessions", None)
        if sessions is None:
            sessions = self._local.sessions = {}
        session = sessions.get(allow_private_network)
        if session is None:
            session = requests.Session()
            # Proxies and credentials from the environment or .netrc must not
            # change where a webhook goes or what it carries.
            session.trust_env = False
            adapter = VettedAdapter(allow_private_network=allow_private_network)
            session.mount("http://", adapter)
            session.mount("https://", adapter)
            sessions[allow_private_network] = session
        return session

    def post(
        self,
        url: str,
        body: bytes,
        headers: dict[str, str],
        timeouts_ms: tuple[int, int],
        *,
        allow_private_network: bool = False,
    ) -> Outcome:
        """Post ``body`` once without following redirects; never raise for HTTP errors.

        ``timeouts_ms`` is the connect and the read timeout in milliseconds.
        Unless ``allow_private_network`` is true, a host that is or resolves
        to a loopback, private or other non-public address gets nothing, and
        the outcome's error is ``DisallowedAddress``. Credentials in the URL
        are not sent, and the configuration loader rejects such URLs.
        """
        started = time.perf_counter()
        timeouts = (timeouts_ms[0] / 1000, timeouts_ms[1] / 1000)
        try:
            session = self._session(allow_private_network)
            request = _prepared_post(url, {**BASE_HEADERS, **headers}, body)
            # The session's transport adapter sends the prepared request
            # as Session.send would, minus what a webhook never uses:
            # redirects, hooks, proxies from the environment and a cookie
            # jar that a receiver could fill.
            response = session.get_adapter(str(request.url)).send(
                request, stream=True, timeout=timeouts, verify=True, cert=None, proxies={}
            )
            with response:
                content = _read_body(response, started + sum(timeouts))
        # Reading the raw body raises urllib3's own errors, not requests'.
        # ValueError covers what http.client raises for a header value it
        # cannot encode and a timeout too large for the platform.
        except (
            DisallowedAddress,
            requests.RequestException,
            urllib3.exceptions.HTTPError,
            OSError,
            ValueError,
            OverflowError,
        ) as error:
            return Outcome(None, _elapsed_ms(started), error=type(error).__name__)

        return Outcome(
            response.status_code,
            _elapsed_ms(started),
            retry_after=response.headers.get("Retry-After"),
            response=content.decode("utf-8", errors="replace"),
        )


def _prepared_post(url: str, headers: dict[str, str], body: bytes) -> requests.PreparedRequest:
    """Return a POST of ``body`` to ``url`` as ``requests`` prepares it, headers checked."""
    request = requests.PreparedRequest()
    request.prepare_method("POST")
    request.url = _prepared_url(url)
    request.prepare_headers(headers)
    request.prepare_body(body, None)
    return request


@functools.lru_cache(maxsize=PREPARED_URLS)
def _prepared_url(url: str) -> str:
    # Preparing a URL (parsing, IDNA, quoting) costs more than the rest of
    # a request, and a system's URL is the same for each of its deliveries.
    request = requests.PreparedRequest()
    request.prepare_url(url, None)
    return str(request.url)


def _read_body(response: requests.Response, deadline: float) -> bytes:
    """Read up to MAX_RESPONSE_BYTES of the body, raising TimeoutError past ``deadline``.

    The read timeout applies to each read, so a response that trickles in a
    byte at a time would otherwise hold the worker thread for as long as
    the receiver likes. ``deadline`` is a ``time.perf_counter`` value.
    NOTE: headers that trickle in are still bounded only per read.
    """
    chunks: list[bytes] = []
    size = 0
    while size < MAX_RESPONSE_BYTES:
        # read1 returns what has arrived, so the deadline is checked between
        # trickles rather than after a full buffer.
        chunk = response.raw.read1(4096, decode_content=True)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
        if time.perf_counter() > deadline:
            raise TimeoutError("the response body arrived too slowly")
    return b"".join(chunks)[:MAX_RESPONSE_BYTES]


def _elapsed_ms(started: float) -> int:
    return round((time.perf_counter() - started) * 1000)
