"""The Receiver: authenticates a delivery and turns its body into an Envelope.

Receiver.verify checks, in this order:

1. the body is JSON, else PayloadError (respond with 400);
2. its ``system_slug`` names a trusted system, else Unauthorized (401);
3. when that system has signing secrets, the ``webhook-id``,
   ``webhook-timestamp`` and ``webhook-signature`` headers are present and
   well formed, the timestamp is within the tolerance and a signature
   matches, else Unauthorized (401);
4. its ``system_key`` equals the system's key, else Unauthorized (401);
5. the body is a valid envelope, else PayloadError (400);
6. with a duplicate store, the webhook-id was not received before, else
   Duplicate (respond with 2xx, because the first delivery was processed).

The schema is checked after authentication, so that only the trusted
sender learns why a body is invalid.
"""

from __future__ import annotations

import hmac
import json
import os
import re
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .. import signing
from ..errors import Error, PayloadError
from .dedup import DuplicateStore
from .envelope import Envelope

#: Seconds a webhook-timestamp may lie in the past or the future: the
#: Standard Webhooks default of five minutes.
DEFAULT_TOLERANCE_SECONDS = 300

#: The longest accepted webhook-id. Ids are short; the cap bounds what an
#: unsigned request can make the duplicate store keep.
MAX_WEBHOOK_ID_LENGTH = 256

#: The prefix of the environment variables Receiver.from_env reads.
ENV_PREFIX = "UE_FLOW_TRUSTED_"

# Unix seconds as the sender writes them: ASCII digits only, at most 15 of them.
_TIMESTAMP = re.compile(r"[0-9]{1,15}")
_LIST_SEPARATORS = re.compile(r"[\s,]+")
_SHOWN_CHARACTERS = 64


class Unauthorized(Error):
    """Raised when a delivery is not from a trusted sender: respond with 401.

    ``reason`` names the check that failed and is safe to log, because it never
    contains a key, a secret or a signature.
    """

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class Duplicate(Error):
    """Raised when a delivery's webhook-id was already received: respond with 200.

    The sender retries until it gets a 2xx, so a duplicate is acknowledged
    and not processed again. ``envelope`` is the verified duplicate.
    """

    def __init__(self, envelope: Envelope) -> None:
        self.envelope = envelope
        message = (
            f"Delivery {envelope.webhook_id!r} to system {envelope.system_slug!r} "
            "was already received."
        )
        super().__init__(message)


@dataclass(frozen=True)
class TrustedSystem:
    """The key and signing secrets a receiver trusts for one system slug.

    ``secrets`` are ``whsec_`` strings; with none, deliveries are not
    required to be signed. Both are left out of the repr. Raises ValueError
    when the key is empty or a secret is malformed.
    """

    key: str = field(repr=False)
    secrets: tuple[str, ...] = field(default=(), repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.key, str) or not self.key:
            raise ValueError("A trusted system's key must be a non-empty str.")
        # Checked at run time: a caller may pass one str or a list despite the annotation.
        given: object = self.secrets
        if isinstance(given, str):
            message = "Pass a trusted system's secrets as a tuple of str, not one str."
            raise TypeError(message)

        object.__setattr__(self, "secrets", tuple(self.secrets))
        for position, secret in enumerate(self.secrets, start=1):
            try:
                signing.parse_secret(secret)
            except ValueError as error:
                raise ValueError(f"Secret {position} of a trusted system: {error}") from error


@dataclass(frozen=True)
class _Headers:
    webhook_id: str | None
    timestamp: str | None
    signature: str | None

    @classmethod
    def from_mapping(cls, headers: Mapping[str, Any]) -> _Headers:
        # Any object with items() is accepted, such as werkzeug's Headers, which is no Mapping.
        items = getattr(headers, "items", None)
        if not callable(items):
            message = (
                "The headers must be a mapping of header names to values, such as a dict, "
                f"not {type(headers).__name__}."
            )
            raise TypeError(message)

        lowered = {str(name).lower(): value for name, value in items()}
        return cls(
            webhook_id=_text(lowered.get(signing.ID_HEADER), signing.ID_HEADER),
            timestamp=_text(lowered.get(signing.TIMESTAMP_HEADER), signing.TIMESTAMP_HEADER),
            signature=_text(lowered.get(signing.SIGNATURE_HEADER), signing.SIGNATURE_HEADER),
        )


class Receiver:
    """Verifies deliveries for a set of trusted systems; see the module docstring."""

    def __init__(
        self,
        trusted: Mapping[str, TrustedSystem],
        *,
        tolerance_seconds: int = DEFAULT_TOLERANCE_SECONDS,
        duplicates: DuplicateStore | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """Build a receiver; raise ValueError or TypeError on a configuration mistake.

        ``trusted`` maps each system slug to what is trusted for it.
        ``tolerance_seconds`` bounds the age of a signed timestamp, in the
        past and in the future. ``duplicates`` enables duplicate detection.
        ``clock`` returns the current Unix time in seconds.
        """
        _check_trusted(trusted)
        if isinstance(tolerance_seconds, bool) or not isinstance(tolerance_seconds, int):
            raise TypeError(f"tolerance_seconds must be an int, not {tolerance_seconds!r}.")
        if tolerance_seconds < 1:
            raise ValueError(f"tolerance_seconds must be at least 1, not {tolerance_seconds}.")

        self._trusted = dict(trusted)
        self._tolerance_seconds = tolerance_seconds
        self._duplicates = duplicates
        self._clock = clock

    @classmethod
    def from_env(
        cls,
        slugs: Iterable[str] | None = None,
        *,
        environ: Mapping[str, str] | None = None,
        tolerance_seconds: int = DEFAULT_TOLERANCE_SECONDS,
        duplicates: DuplicateStore | None = None,
    ) -> Receiver:
        """Build a receiver from environment variables.

        For each slug, ``UE_FLOW_TRUSTED_<SLUG>_KEY`` contains the key and the
        optional ``UE_FLOW_TRUSTED_<SLUG>_SECRETS`` the signing secrets,
        separated by spaces or commas. ``<SLUG>`` is the slug upper-cased
        with every character other than a letter or digit replaced by
        ``_``. ``slugs`` defaults to the list in ``UE_FLOW_TRUSTED_SLUGS``.
        ``environ`` defaults to ``os.environ``. Raises ValueError naming the
        variable that is missing or invalid.
        """
        environ = os.environ if environ is None else environ
        if slugs is None:
            slugs = _split_list(environ.get(ENV_PREFIX + "SLUGS", ""))
            if not slugs:
                message = (
                    f"{ENV_PREFIX}SLUGS is not set: set it to the trusted system slugs, "
                    "or pass them to Receiver.from_env."
                )
                raise ValueError(message)

        if isinstance(slugs, str):
            raise TypeError('Pass the slugs as a list of str, such as ["learn"], not one str.')

        trusted = {slug: _trusted_from_env(slug, environ) for slug in slugs}
        return cls(trusted, tolerance_seconds=tolerance_seconds, duplicates=duplicates)

    def verify(self, body: bytes, headers: Mapping[str, Any]) -> Envelope:
        """Authenticate one delivery and return its envelope.

        ``body`` is the request body exactly as received. ``headers`` is
        any mapping of header names to values; names are matched without
        regard to case. Raises Unauthorized, PayloadError or Duplicate as
        listed in the module docstring, and DuplicateStoreError when the
        duplicate store fails. Raises TypeError when ``body`` is not bytes
        or ``headers`` has no ``items()`` method, because that is a mistake
        in the calling code, not in the request.
        """
        if not isinstance(body, bytes | bytearray):
            raise TypeError(f"The body must be the bytes received, not {type(body).__name__}.")

        document = _parse_json(bytes(body))
        slug, system = self._find_system(document)
        fields = _Headers.from_mapping(headers)
        _check_webhook_id(fields.webhook_id)
        if system.secrets:
            self._check_signature(system, slug, fields, bytes(body))
        _check_key(system, slug, document)

        # An unsigned delivery may lack a usable webhook-id; it then skips duplicate detection.
        webhook_id = fields.webhook_id if fields.webhook_id and fields.webhook_id.strip() else None
        envelope = Envelope.from_dict(document, webhook_id=webhook_id)
        self._check_duplicate(envelope)

        return envelope

    def forget(self, envelope: Envelope) -> None:
        """Forget that ``envelope`` was received, so that a retry is processed.

        Call it when processing failed after verify returned and the
        response is not a 2xx. It does nothing without a duplicate store or a
        webhook-id.
        """
        if self._duplicates is None or envelope.webhook_id is None:
            return

        self._duplicates.discard(_duplicate_key(envelope))

    def _find_system(self, document: Any) -> tuple[str, TrustedSystem]:
        slug = document.get("system_slug") if isinstance(document, dict) else None
        if not isinstance(slug, str):
            raise Unauthorized("The body has no system_slug string, so no system can be trusted.")

        system = self._trusted.get(slug)
        if system is None:
            reason = (
                f"system_slug {_shown(slug)} is not a trusted system; "
                "add it to the receiver's trusted systems if it should be."
            )
            raise Unauthorized(reason)

        return slug, system

    def _check_signature(
        self, system: TrustedSystem, slug: str, fields: _Headers, body: bytes
    ) -> None:
        webhook_id = _require(fields.webhook_id, signing.ID_HEADER, slug)
        timestamp_text = _require(fields.timestamp, signing.TIMESTAMP_HEADER, slug)
        timestamp = self._check_timestamp(timestamp_text)
        header = _require(fields.signature, signing.SIGNATURE_HEADER, slug)
        try:
            signing.check_signature(system.secrets, webhook_id, timestamp, body, header)
        except signing.SignatureError as error:
            raise Unauthorized(f"Signature check failed for system {slug!r}: {error}") from error

    def _check_timestamp(self, value: str) -> int:
        if not _TIMESTAMP.fullmatch(value):
            reason = (
                f"The {signing.TIMESTAMP_HEADER} header {_shown(value)} is not "
                "an integer number of Unix seconds."
            )
            raise Unauthorized(reason)

        timestamp = int(value)
        age = round(self._clock()) - timestamp
        if abs(age) > self._tolerance_seconds:
            direction = "in the past" if age > 0 else "in the future"
            reason = (
                f"The {signing.TIMESTAMP_HEADER} {timestamp} is {abs(age)} seconds {direction}, "
                f"more than the {self._tolerance_seconds} allowed; check both clocks."
            )
            raise Unauthorized(reason)

        return timestamp

    def _check_duplicate(self, envelope: Envelope) -> None:
        if self._duplicates is None or envelope.webhook_id is None:
            return

        if not self._duplicates.add(_duplicate_key(envelope)):
            raise Duplicate(envelope)


def _parse_json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except UnicodeDecodeError as error:
        raise PayloadError("envelope", "$", f"the body is not UTF-8: {error.reason}") from error
    except json.JSONDecodeError as error:
        rule = f"the body is not JSON: {error.msg} at line {error.lineno}, column {error.colno}"
        raise PayloadError("envelope", "$", rule) from error
    except RecursionError as error:
        raise PayloadError("envelope", "$", "the body nests too deeply to parse") from error
    except ValueError as error:
        # json.loads raises a plain ValueError for an integer of more than
        # sys.get_int_max_str_digits() digits (4300 by default). Its message
        # advises raising that limit, which is no use to the sender.
        rule = (
            "the body contains a number that cannot be parsed, such as an integer "
            f"of more than {sys.get_int_max_str_digits()} digits"
        )
        raise PayloadError("envelope", "$", rule) from error


def _check_key(system: TrustedSystem, slug: str, document: dict[str, Any]) -> None:
    key = document.get("system_key")
    if not isinstance(key, str):
        raise Unauthorized(f"The body has no system_key string for system {slug!r}.")

    # "surrogatepass" encodes the lone surrogates that a JSON \uXXXX escape can
    # produce, so a key of any str is compared, in constant time, without raising.
    received = key.encode("utf-8", "surrogatepass")
    expected = system.key.encode("utf-8", "surrogatepass")
    if not hmac.compare_digest(received, expected):
        raise Unauthorized(f"The system_key does not match the key of system {slug!r}.")


def _require(value: str | None, name: str, slug: str) -> str:
    # The value is returned as received, because the signature covers it.
    if value is None:
        raise Unauthorized(f"The {name} header is missing; system {slug!r} requires signatures.")
    if not value.strip():
        raise Unauthorized(f"The {name} header is empty; system {slug!r} requires signatures.")

    return value


def _check_webhook_id(webhook_id: str | None) -> None:
    if webhook_id is None or len(webhook_id) <= MAX_WEBHOOK_ID_LENGTH:
        return

    reason = (
        f"The {signing.ID_HEADER} header has {len(webhook_id)} characters, "
        f"more than the {MAX_WEBHOOK_ID_LENGTH} allowed."
    )
    raise Unauthorized(reason)


def _text(value: Any, name: str) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        # A lone surrogate cannot be signed or stored, because it has no UTF-8 encoding.
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise Unauthorized(f"The {name} header is not valid text.") from None
        return value
    if isinstance(value, bytes):
        try:
            return value.decode("ascii")
        except UnicodeDecodeError:
            raise Unauthorized(f"The {name} header is not ASCII text.") from None

    raise Unauthorized(f"The {name} header is not text but {type(value).__name__}.")


def _duplicate_key(envelope: Envelope) -> str:
    # The same event is delivered to several systems with the same webhook-id.
    return f"{envelope.system_slug}:{envelope.webhook_id}"


def _shown(value: str) -> str:
    """Return ``value`` quoted for a log line, cut to a bounded length."""
    if len(value) <= _SHOWN_CHARACTERS:
        return repr(value)

    return repr(value[:_SHOWN_CHARACTERS]) + f" (cut from {len(value)} characters)"


def _split_list(value: str) -> list[str]:
    return [item for item in _LIST_SEPARATORS.split(value) if item]


def _env_name(slug: str, suffix: str) -> str:
    return ENV_PREFIX + re.sub(r"[^A-Z0-9]", "_", slug.upper()) + "_" + suffix


def _trusted_from_env(slug: str, environ: Mapping[str, str]) -> TrustedSystem:
    key_name = _env_name(slug, "KEY")
    secrets_name = _env_name(slug, "SECRETS")
    key = environ.get(key_name, "").strip()
    if not key:
        raise ValueError(f"{key_name} is not set: set it to the key of system {slug!r}.")

    secrets = _split_list(environ.get(secrets_name, ""))
    try:
        return TrustedSystem(key, tuple(secrets))
    except ValueError as error:
        raise ValueError(f"{secrets_name}: {error}") from error


def _check_trusted(trusted: Mapping[str, TrustedSystem]) -> None:
    if not trusted:
        raise ValueError("A receiver needs at least one trusted system.")

    items: Iterable[tuple[object, object]] = trusted.items()
    for slug, system in items:
        if not isinstance(slug, str) or not slug:
            raise ValueError(f"A trusted system slug must be a non-empty str, not {slug!r}.")
        if not isinstance(system, TrustedSystem):
            message = (
                f"The trusted system {slug!r} must be a TrustedSystem, not {type(system).__name__}."
            )
            raise TypeError(message)
