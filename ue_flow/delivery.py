"""Sending one envelope over HTTP and classifying the answer."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import requests

from . import __version__

#: Sent with every delivery so that receivers can tell ue-flow's traffic apart.
USER_AGENT = f"ue-flow/{__version__}"


@dataclass(frozen=True)
class Outcome:
    """The result of one HTTP attempt.

    ``status`` is the HTTP status, or None when no answer came back, in
    which case ``error`` names the error class. ``duration_ms`` is the
    wall time of the attempt in integer milliseconds.
    """

    status: int | None
    duration_ms: int
    error: str | None = None
    retry_after: str | None = None

    @property
    def delivered(self) -> bool:
        """True only for a 2xx answer: redirects and errors are failures."""
        return self.status is not None and 200 <= self.status < 300


class Sender:
    """Posts envelopes with one keep-alive ``requests`` session per thread."""

    def __init__(self, connect_timeout_ms: int, read_timeout_ms: int) -> None:
        self._timeouts = (connect_timeout_ms / 1000, read_timeout_ms / 1000)
        self._local = threading.local()

    def _session(self) -> requests.Session:
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            # Proxies and credentials from the environment or .netrc must not
            # change where a webhook goes.
            session.trust_env = False
            session.headers["User-Agent"] = USER_AGENT
            self._local.session = session
        return session

    def post(self, url: str, body: bytes, headers: dict[str, str]) -> Outcome:
        """Post ``body`` once; never follow a redirect; never raise for HTTP errors."""
        started = time.perf_counter()
        try:
            response = self._session().post(
                url, data=body, headers=headers, timeout=self._timeouts, allow_redirects=False
            )
        except requests.RequestException as error:
            return Outcome(None, _elapsed_ms(started), error=type(error).__name__)

        # Reading the body keeps the connection reusable.
        response.content  # noqa: B018
        return Outcome(
            response.status_code,
            _elapsed_ms(started),
            retry_after=response.headers.get("Retry-After"),
        )


def _elapsed_ms(started: float) -> int:
    return round((time.perf_counter() - started) * 1000)
