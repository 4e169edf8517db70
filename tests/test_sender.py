"""The HTTP sender on its own, against a receiver on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest import Receiver, start_receiver
from ue_flow.delivery import USER_AGENT, Sender

TIMEOUTS_MS = (2000, 2000)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    started = start_receiver(Receiver())
    yield started
    assert started.server is not None
    started.server.shutdown()
    started.server.server_close()


def test_post_sends_body_and_headers(receiver: Receiver) -> None:
    body = '{"type":"postsale","data":{"note":"café"}}'.encode()

    outcome = Sender().post(
        receiver.url,
        body,
        {"Content-Type": "application/json", "webhook-id": "evt_1"},
        TIMEOUTS_MS,
        allow_private_network=True,
    )

    assert outcome.delivered
    [request] = receiver.requests
    assert request.body == body
    assert request.headers["content-length"] == str(len(body))
    assert request.headers["content-type"] == "application/json"
    assert request.headers["webhook-id"] == "evt_1"
    assert request.headers["user-agent"] == USER_AGENT


def test_receiver_cookie_not_sent_back(receiver: Receiver) -> None:
    # A receiver's cookie would otherwise ride along with every later
    # delivery of the worker thread to that host.
    receiver.statuses.append((200, {"Set-Cookie": "session=abc123; Path=/"}))
    sender = Sender()

    for _ in range(2):
        outcome = sender.post(receiver.url, b"{}", {}, TIMEOUTS_MS, allow_private_network=True)
        assert outcome.delivered

    assert [request.headers.get("cookie") for request in receiver.requests] == [None, None]


def test_header_with_line_break_sends_nothing(receiver: Receiver) -> None:
    outcome = Sender().post(
        receiver.url,
        b"{}",
        {"X-Tenant": "a\r\nX-Injected: 1"},
        TIMEOUTS_MS,
        allow_private_network=True,
    )

    assert outcome.status is None
    assert outcome.error == "InvalidHeader"
    assert receiver.requests == []


def test_url_spaces_quoted(receiver: Receiver) -> None:
    url = receiver.url.replace("/webhook/", "/web hook/?q=a b")

    outcome = Sender().post(url, b"{}", {}, TIMEOUTS_MS, allow_private_network=True)

    assert outcome.delivered
    assert len(receiver.requests) == 1


def test_url_leading_whitespace_delivered(receiver: Receiver) -> None:
    outcome = Sender().post(
        " \t" + receiver.url, b"{}", {}, TIMEOUTS_MS, allow_private_network=True
    )

    assert outcome.delivered
    assert len(receiver.requests) == 1


@pytest.mark.parametrize("url", ["ftp://127.0.0.1/x", "http://", "not a url"])
def test_unusable_url_gives_error_outcome(url: str) -> None:
    outcome = Sender().post(url, b"{}", {}, TIMEOUTS_MS, allow_private_network=True)

    assert outcome.status is None
    assert outcome.error
