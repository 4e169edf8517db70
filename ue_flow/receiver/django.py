"""A Django view decorator that verifies deliveries before the view runs.

Django is imported only when the decorator is applied, so importing
ue_flow.receiver never needs Django. The decorated view is exempt from
CSRF checks, accepts only POST and is called as ``view(request, envelope,
*args, **kwargs)``. The decorator itself responds, with a short generic
body: 401 for Unauthorized, 400 for PayloadError, 405 for another method,
200 for a Duplicate without calling the view, and 503 when the duplicate
store fails. When the view raises or responds with other than 2xx, the
webhook-id is forgotten, so that the sender's retry is processed again.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

from .envelope import Envelope
from .responses import forget_after_failure, status_line, verify_request
from .verify import Receiver

# Django ships no type hints, so requests and responses are typed as Any, and
# Django modules are imported with importlib, which types their contents as Any.
WebhookView = Callable[..., Any]
DjangoView = Callable[..., Any]


def webhook_view(receiver: Receiver) -> Callable[[WebhookView], DjangoView]:
    """Return a decorator that verifies each request with ``receiver``.

    Raises ImportError when Django is not installed.
    """
    csrf = importlib.import_module("django.views.decorators.csrf")

    def decorate(view: WebhookView) -> DjangoView:
        @functools.wraps(view)
        def wrapper(request: Any, *args: Any, **kwargs: Any) -> Any:
            if request.method != "POST":
                return _answer(HTTPStatus.METHOD_NOT_ALLOWED, {"Allow": "POST"})

            envelope, status = verify_request(receiver, request.body, request.headers)
            if envelope is None:
                return _answer(status)

            return _call_view(receiver, view, envelope, request, *args, **kwargs)

        exempt_view: DjangoView = csrf.csrf_exempt(wrapper)
        return exempt_view

    return decorate


def _call_view(
    receiver: Receiver,
    view: WebhookView,
    envelope: Envelope,
    request: Any,
    *args: Any,
    **kwargs: Any,
) -> Any:
    try:
        response = view(request, envelope, *args, **kwargs)
    except BaseException:
        forget_after_failure(receiver, envelope)
        raise

    if not 200 <= response.status_code < 300:
        forget_after_failure(receiver, envelope)

    return response


def _answer(status: HTTPStatus, headers: dict[str, str] | None = None) -> Any:
    http = importlib.import_module("django.http")
    return http.HttpResponse(
        status_line(status) + "\n",
        status=status.value,
        content_type="text/plain; charset=utf-8",
        headers=headers,
    )
