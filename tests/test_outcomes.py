"""The verdict on failed attempts: backoff, Retry-After, give-up rules."""

from __future__ import annotations

import email.utils

import pytest

from ue_flow.config import RetryPolicy
from ue_flow.delivery import Outcome
from ue_flow.outcomes import decide, jittered, retry_after_ms

NOW_MS = 1_800_000_000_000


def failed(
    status: int | None = 500, retry_after: str | None = None, error: str | None = None
) -> Outcome:
    return Outcome(status, 10, error=error, retry_after=retry_after)


def test_schedule_waits_in_order() -> None:
    policy = RetryPolicy(schedule_ms=(100, 200, 300), jitter=0)

    waits = [decide(policy, failed(), retries, NOW_MS, NOW_MS).delay_ms for retries in range(3)]

    assert waits == [100, 200, 300]


def test_schedule_exhausted_gives_up() -> None:
    policy = RetryPolicy(schedule_ms=(100, 200), jitter=0)

    decision = decide(policy, failed(), 2, NOW_MS, NOW_MS)

    assert not decision.retry
    assert "retries exhausted after 3 attempts" in decision.reason


def test_backoff_grows_to_cap() -> None:
    policy = RetryPolicy(base_ms=1_000, factor=2, cap_ms=5_000, retries=6, jitter=0)

    waits = [policy.wait_ms(retries) for retries in range(6)]

    assert waits == [1_000, 2_000, 4_000, 5_000, 5_000, 5_000]
    assert policy.max_retries == 6


def test_jitter_stays_within_fraction() -> None:
    waits = {jittered(1_000, 0.1) for _ in range(200)}

    assert min(waits) >= 900
    assert max(waits) <= 1_100
    assert len(waits) > 1


@pytest.mark.parametrize("status", [429, 503])
def test_retry_after_seconds_raises_wait(status: int) -> None:
    policy = RetryPolicy(schedule_ms=(100,), jitter=0)

    decision = decide(policy, failed(status, "30"), 0, NOW_MS, NOW_MS)

    assert decision.delay_ms == 30_000


def test_retry_after_ignored_for_500() -> None:
    policy = RetryPolicy(schedule_ms=(100,), jitter=0)

    assert decide(policy, failed(500, "30"), 0, NOW_MS, NOW_MS).delay_ms == 100


def test_retry_after_capped() -> None:
    policy = RetryPolicy(schedule_ms=(100,), jitter=0, retry_after_cap_ms=2_000)

    assert decide(policy, failed(503, "86400"), 0, NOW_MS, NOW_MS).delay_ms == 2_000


def test_retry_after_http_date() -> None:
    when = email.utils.formatdate((NOW_MS + 90_000) / 1000, usegmt=True)

    assert retry_after_ms(when, NOW_MS) == 90_000


@pytest.mark.parametrize("header", [None, "", "soon", "-5", "Mon, 99 Foo 2026 00:00:00 GMT"])
def test_retry_after_unreadable_is_none(header: str | None) -> None:
    assert retry_after_ms(header, NOW_MS) is None


def test_give_up_status_stops() -> None:
    policy = RetryPolicy(give_up_on=frozenset({422}))

    decision = decide(policy, failed(422), 0, NOW_MS, NOW_MS)

    assert not decision.retry
    assert "422" in decision.reason


def test_max_age_stops() -> None:
    policy = RetryPolicy(schedule_ms=(60_000,), jitter=0, max_age_ms=30_000)

    decision = decide(policy, failed(), 0, NOW_MS, NOW_MS)

    assert not decision.retry
    assert "maximum age" in decision.reason


def test_refused_address_stops() -> None:
    decision = decide(RetryPolicy(), failed(None, error="DisallowedAddress"), 0, NOW_MS, NOW_MS)

    assert not decision.retry
    assert "allow_private_network" in decision.reason
