"""The HTTP response to each verification outcome, shared by the Django and WSGI adapters.

Rejections are logged through the standard logging module, under the
logger ``ue_flow.receiver``, because the adapters run inside the receiving
team's application and its logging setup. No line contains a key, a
secret or a signature.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

from ..errors import PayloadError
from .dedup import DuplicateStoreError
from .envelope import Envelope
from .verify import Duplicate, Receiver, Unauthorized

logger = logging.getLogger("ue_flow.receiver")


def verify_request(
    receiver: Receiver, body: bytes, headers: Mapping[str, Any]
) -> tuple[Envelope | None, HTTPStatus]:
    """Verify one request; return its envelope, or None and the status to respond with.

    The status is 401 for Unauthorized, 400 for PayloadError, 200 for a
    Duplicate and 503 when the duplicate store fails.
    """
    try:
        return receiver.verify(body, headers), HTTPStatus.OK
    except Unauthorized as error:
        logger.warning("Rejected a webhook delivery as unauthorized: %s", error.reason)
        return None, HTTPStatus.UNAUTHORIZED
    except PayloadError as error:
        logger.warning("Rejected an invalid webhook delivery: %s", error)
        return None, HTTPStatus.BAD_REQUEST
    except Duplicate as error:
        logger.info("Acknowledged a duplicate webhook delivery: %s", error)
        return None, HTTPStatus.OK
    except DuplicateStoreError as error:
        logger.error("Failed to check a webhook delivery for duplicates: %s", error)
        return None, HTTPStatus.SERVICE_UNAVAILABLE


def forget_after_failure(receiver: Receiver, envelope: Envelope) -> None:
    """Forget ``envelope``'s webhook-id after processing failed, logging a store failure."""
    try:
        receiver.forget(envelope)
    except DuplicateStoreError as error:
        logger.error(
            "Failed to forget webhook-id %r after a non-2xx response, so its retry will "
            "be treated as a duplicate: %s",
            envelope.webhook_id,
            error,
        )


def status_line(status: HTTPStatus) -> str:
    """Return the status line of ``status``, such as ``401 Unauthorized``."""
    return f"{status.value} {status.phrase}"
