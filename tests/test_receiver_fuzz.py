"""Property tests: no request makes the receiver raise an unexpected error or respond with 500.

Bodies are random bytes, JSON documents naming a trusted system with keys of
any str (lone surrogates included), and real envelopes with random data, each
sent with random headers or with valid signature headers.
"""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from ue_flow import signing
from ue_flow.errors import PayloadError
from ue_flow.receiver import (
    Duplicate,
    Envelope,
    MemoryDuplicateStore,
    Receiver,
    TrustedSystem,
    Unauthorized,
)
from ue_flow.receiver.django import webhook_view
from ue_flow.receiver.wsgi import WebhookMiddleware

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "basket_add" / "add_course.json"
NOW = 1_760_000_000
SLUG = "mitxonline"
KEY = "key-mitxonline-2f9c41d7e0"
UNSIGNED_SLUG = "learn"
UNSIGNED_KEY = "key-learn-8e01aa3b"
SECRET = signing.generate_secret()
WEBHOOK_HEADERS = [signing.ID_HEADER, signing.TIMESTAMP_HEADER, signing.SIGNATURE_HEADER]

#: The statuses an adapter may respond with: 200 for an accepted or duplicate
#: delivery, else 400 or 401.
EXPECTED_STATUSES = {200, 400, 401}

PROPERTY_SETTINGS = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

# --- strategies ----------------------------------------------------------------------

#: Any str, lone surrogates included, which st.text() leaves out by default.
ANY_TEXT = st.text(st.characters(exclude_categories=()), max_size=20)

#: Header values as a WSGI server passes them: bytes decoded as latin-1.
LATIN1_TEXT = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF), max_size=40)

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | ANY_TEXT,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(ANY_TEXT, children),
    max_leaves=12,
)


def envelope_document(data: Any = None, key: str = KEY, slug: str = SLUG) -> dict[str, Any]:
    payload = json.loads(EXAMPLE.read_text(encoding="utf-8"))
    return {
        "system_slug": slug,
        "system_key": key,
        "type": "presale",
        "user": payload["user"],
        "data": payload["data"] if data is None else data,
    }


def to_body(document: Any) -> bytes:
    # ensure_ascii escapes lone surrogates as \uXXXX, which are valid JSON.
    return json.dumps(document).encode()


documents_with_slug = st.fixed_dictionaries(
    {
        "system_slug": st.sampled_from([SLUG, UNSIGNED_SLUG]) | ANY_TEXT,
        "system_key": st.sampled_from([KEY, UNSIGNED_KEY]) | ANY_TEXT | JSON_VALUES,
    },
    optional={"type": ANY_TEXT, "user": JSON_VALUES, "data": JSON_VALUES},
)
envelopes_with_random_data = st.builds(
    envelope_document,
    data=st.none() | JSON_VALUES,
    key=st.sampled_from([KEY, UNSIGNED_KEY]) | ANY_TEXT,
    slug=st.sampled_from([SLUG, UNSIGNED_SLUG]),
)
BODIES = (
    st.binary(max_size=200)
    | JSON_VALUES.map(to_body)
    | documents_with_slug.map(to_body)
    | envelopes_with_random_data.map(to_body)
)

OTHER_HEADER_NAMES = st.from_regex(r"x-[a-z0-9-]{1,12}", fullmatch=True)
HEADER_NAMES = st.sampled_from(WEBHOOK_HEADERS) | OTHER_HEADER_NAMES


def header_values(text: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    plausible = st.sampled_from(["", " ", str(NOW), "evt_1", "v1,", "v1,%%%", "v1,AAAA v2,b"])
    return plausible | text


def random_headers(text: st.SearchStrategy[str]) -> st.SearchStrategy[dict[str, str]]:
    return st.dictionaries(HEADER_NAMES, header_values(text), max_size=4)


def signed_headers(body: bytes, msg_id: str = "evt_0001") -> dict[str, str]:
    return {
        signing.ID_HEADER: msg_id,
        signing.TIMESTAMP_HEADER: str(NOW),
        signing.SIGNATURE_HEADER: signing.signature_header([SECRET], msg_id, NOW, body),
    }


@st.composite
def deliveries(draw: st.DrawFn, text: st.SearchStrategy[str]) -> tuple[bytes, dict[str, str]]:
    """Draw a body and either random headers or valid signature headers for it."""
    body = draw(BODIES)
    if draw(st.booleans()):
        return body, draw(random_headers(text))

    # A few webhook-ids, so that some deliveries are duplicates of earlier ones.
    return body, signed_headers(body, msg_id=draw(st.sampled_from(["evt_1", "evt_2"])))


def make_receiver() -> Receiver:
    trusted = {
        SLUG: TrustedSystem(KEY, secrets=(SECRET,)),
        UNSIGNED_SLUG: TrustedSystem(UNSIGNED_KEY),
    }
    return Receiver(trusted, duplicates=MemoryDuplicateStore(), clock=lambda: NOW)


# --- Receiver.verify -----------------------------------------------------------------

RECEIVER = make_receiver()
SURROGATE_KEY_BODY = to_body(envelope_document(key="\ud800"))


@PROPERTY_SETTINGS
@given(delivery=deliveries(ANY_TEXT))
@example(delivery=(b'{"system_slug":"learn","x":' + b"1" * 5000 + b"}", {}))
@example(delivery=(b'{"system_slug":"learn","system_key":"\\ud800"}', {}))
@example(delivery=(SURROGATE_KEY_BODY, signed_headers(SURROGATE_KEY_BODY)))
def test_verify_raises_only_rejections(delivery: tuple[bytes, dict[str, str]]) -> None:
    body, headers = delivery

    # Any other exception fails the test.
    with contextlib.suppress(Unauthorized, PayloadError, Duplicate):
        RECEIVER.verify(body, headers)


# --- the adapters --------------------------------------------------------------------


def wsgi_status(app: Callable[..., Any], body: bytes, headers: dict[str, str]) -> int:
    environ: dict[str, Any] = {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": "/",
        "CONTENT_TYPE": "application/json",
        "CONTENT_LENGTH": str(len(body)),
        "wsgi.input": io.BytesIO(body),
    }
    for name, value in headers.items():
        environ["HTTP_" + name.upper().replace("-", "_")] = value

    statuses: list[str] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        statuses.append(status)
        return lambda data: None

    b"".join(app(environ, start_response))
    return int(statuses[-1].split()[0])


class AcceptingApp:
    """A WSGI application that accepts every verified delivery."""

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"processed"]


WSGI_APP = WebhookMiddleware(AcceptingApp(), make_receiver())


@PROPERTY_SETTINGS
@given(delivery=deliveries(LATIN1_TEXT))
@example(delivery=(b'{"system_slug":"learn","x":' + b"1" * 5000 + b"}", {}))
@example(delivery=(b'{"system_slug":"learn","system_key":"\\ud800"}', {}))
def test_wsgi_never_responds_500(delivery: tuple[bytes, dict[str, str]]) -> None:
    body, headers = delivery

    assert wsgi_status(WSGI_APP, body, headers) in EXPECTED_STATUSES


@pytest.fixture(scope="module")
def django_view() -> Iterator[Callable[[bytes, dict[str, str]], int]]:
    """Yield a function that posts a request to a decorated Django view and returns the status."""
    django = pytest.importorskip("django")
    settings_module = pytest.importorskip("django.conf").settings
    if not settings_module.configured:
        settings_module.configure(ALLOWED_HOSTS=["testserver"], USE_TZ=True)
        django.setup()
    http = pytest.importorskip("django.http")
    request_factory = pytest.importorskip("django.test").RequestFactory()

    @webhook_view(make_receiver())
    def view(request: Any, envelope: Envelope) -> Any:
        return http.HttpResponse("processed")

    def post(body: bytes, headers: dict[str, str]) -> int:
        request = request_factory.post(
            "/", data=body, content_type="application/json", headers=headers
        )
        status: int = view(request).status_code
        return status

    yield post


@PROPERTY_SETTINGS
@given(delivery=deliveries(LATIN1_TEXT))
@example(delivery=(b'{"system_slug":"learn","x":' + b"1" * 5000 + b"}", {}))
@example(delivery=(b'{"system_slug":"learn","system_key":"\\ud800"}', {}))
def test_django_never_responds_500(
    django_view: Callable[[bytes, dict[str, str]], int], delivery: tuple[bytes, dict[str, str]]
) -> None:
    body, headers = delivery

    assert django_view(body, headers) in EXPECTED_STATUSES
