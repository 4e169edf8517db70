"""Tests of the Django view decorator; skipped when Django is not installed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ue_flow import signing
from ue_flow.receiver import Envelope, MemoryDuplicateStore, Receiver, TrustedSystem
from ue_flow.receiver.django import webhook_view

# Imported through importorskip, which skips this module without Django and
# types the modules as Any, because Django ships no type hints.
django = pytest.importorskip("django")
settings = pytest.importorskip("django.conf").settings
if not settings.configured:
    settings.configure(ALLOWED_HOSTS=["testserver"], USE_TZ=True)
    django.setup()

HttpResponse = pytest.importorskip("django.http").HttpResponse
RequestFactory = pytest.importorskip("django.test").RequestFactory

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "basket_add" / "add_course.json"
NOW = 1_760_000_000
SLUG = "mitxonline"
KEY = "key-mitxonline-2f9c41d7e0"
MSG_ID = "evt_0001"


@pytest.fixture
def secret() -> str:
    return signing.generate_secret()


def envelope_body(key: str = KEY) -> bytes:
    payload = json.loads(EXAMPLE.read_text(encoding="utf-8"))
    envelope = {"system_slug": SLUG, "system_key": key, "type": "presale", **payload}
    return json.dumps(envelope, separators=(",", ":")).encode()


def signed_headers(secret: str, body: bytes) -> dict[str, str]:
    return {
        "webhook-id": MSG_ID,
        "webhook-timestamp": str(NOW),
        "webhook-signature": signing.signature_header([secret], MSG_ID, NOW, body),
    }


def post(view: Any, body: bytes, headers: dict[str, str]) -> Any:
    request = RequestFactory().post(
        "/webhooks/ue/", data=body, content_type="application/json", headers=headers
    )
    return view(request)


def make_view(secret: str, status: int = 200) -> tuple[Any, list[Envelope]]:
    receiver = Receiver(
        {SLUG: TrustedSystem(KEY, (secret,))},
        duplicates=MemoryDuplicateStore(),
        clock=lambda: NOW,
    )
    received: list[Envelope] = []

    @webhook_view(receiver)
    def view(request: Any, envelope: Envelope) -> Any:
        received.append(envelope)
        return HttpResponse("processed", status=status)

    return view, received


def test_django_passes_envelope(secret: str) -> None:
    view, received = make_view(secret)
    body = envelope_body()

    response = post(view, body, signed_headers(secret, body))

    assert response.status_code == 200
    assert response.content == b"processed"
    assert received[0].webhook_id == MSG_ID
    assert received[0].system_slug == SLUG


def test_django_csrf_exempt(secret: str) -> None:
    view, _ = make_view(secret)

    assert view.csrf_exempt is True


def test_django_unauthorized(secret: str) -> None:
    view, received = make_view(secret)
    body = envelope_body(key="key-guessed")

    response = post(view, body, signed_headers(secret, body))

    assert response.status_code == 401
    assert response.content == b"401 Unauthorized\n"
    assert received == []


def test_django_bad_request(secret: str) -> None:
    view, received = make_view(secret)
    body = json.dumps(json.loads(envelope_body()) | {"extra": 1}).encode()

    response = post(view, body, signed_headers(secret, body))

    assert response.status_code == 400
    assert received == []


def test_django_method_not_allowed(secret: str) -> None:
    view, _ = make_view(secret)

    response = view(RequestFactory().get("/webhooks/ue/"))

    assert response.status_code == 405
    assert response["Allow"] == "POST"


def test_django_duplicate_acknowledged(secret: str) -> None:
    view, received = make_view(secret)
    body = envelope_body()
    headers = signed_headers(secret, body)

    post(view, body, headers)
    response = post(view, body, headers)

    assert response.status_code == 200
    assert len(received) == 1


def test_django_failed_answer_forgets(secret: str) -> None:
    view, received = make_view(secret, status=500)
    body = envelope_body()
    headers = signed_headers(secret, body)

    post(view, body, headers)
    response = post(view, body, headers)

    assert response.status_code == 500
    assert len(received) == 2
