"""The verdict after an attempt: delivered, retry later, or give up."""

from __future__ import annotations

import email.utils
import random
from dataclasses import dataclass

from .config import RetryPolicy
from .delivery import Outcome

#: Statuses whose Retry-After header sets the earliest retry.
RETRY_AFTER_STATUSES = frozenset({429, 503})

#: The status that stops all deliveries to a system until it is enabled again.
GONE = 410

#: The error of an attempt stopped before connecting because the address is
#: refused. Retrying would only repeat it, so the delivery gives up at once.
REFUSED_ADDRESS = "DisallowedAddress"


@dataclass(frozen=True)
class Decision:
    """The verdict on one failed attempt.

    ``delay_ms`` is the wait before the retry, when ``retry`` is True;
    otherwise ``reason`` states why the delivery stops.
    """

    retry: bool
    delay_ms: int = 0
    reason: str = ""


def jittered(wait_ms: int, jitter: float) -> int:
    """Move ``wait_ms`` at random by up to ``jitter`` times itself."""
    spread = wait_ms * jitter
    return max(0, round(wait_ms + random.uniform(-spread, spread)))


def retry_after_ms(header: str | None, now_ms: int) -> int | None:
    """Parse a Retry-After value, seconds or an HTTP date, into a wait in ms.

    Returns None for a missing or unreadable value.
    """
    if header is None:
        return None

    text = header.strip()
    if text.isdigit():
        return int(text) * 1000
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0, int(when.timestamp() * 1000) - now_ms)


def decide(
    policy: RetryPolicy, outcome: Outcome, retries: int, started_ms: int, now_ms: int
) -> Decision:
    """Decide the fate of a failed attempt; ``retries`` counts earlier retries."""
    if outcome.status in policy.give_up_on:
        return Decision(False, reason=f"HTTP {outcome.status} is configured to give up")
    if outcome.error == REFUSED_ADDRESS:
        reason = (
            "the webhook URL resolves to a private or reserved address; fix its DNS or set "
            "allow_private_network: true, then replay"
        )
        return Decision(False, reason=reason)
    if retries >= policy.max_retries:
        return Decision(False, reason=f"retries exhausted after {retries + 1} attempts")

    delay = jittered(policy.wait_ms(retries), policy.jitter)
    if outcome.status in RETRY_AFTER_STATUSES:
        asked = retry_after_ms(outcome.retry_after, now_ms)
        if asked is not None:
            delay = max(delay, min(asked, policy.retry_after_cap_ms))

    if now_ms + delay - started_ms > policy.max_age_ms:
        return Decision(False, reason=f"maximum age of {policy.max_age_ms} ms reached")
    return Decision(True, delay_ms=delay)
