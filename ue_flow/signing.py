"""Standard Webhooks v1 signatures, shared by the sender and the receiver.

A signature is ``v1,`` followed by the base64 HMAC-SHA256, keyed with the
decoded secret, of ``f"{msg_id}.{timestamp}."`` and the body bytes. The
``webhook-signature`` header contains one signature per active secret,
separated by spaces, so that a secret can be rotated without a gap.
Secrets are written ``whsec_`` followed by the base64 of the key bytes.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets as random_source
from collections.abc import Sequence

from .errors import Error

#: The header names, lower-case as the Standard Webhooks specification writes them.
ID_HEADER = "webhook-id"
TIMESTAMP_HEADER = "webhook-timestamp"
SIGNATURE_HEADER = "webhook-signature"

#: The prefix that marks a Standard Webhooks signing secret.
SECRET_PREFIX = "whsec_"

#: Accepted key sizes in bytes: a ue-flow secret is 24 to 64 random bytes.
MIN_SECRET_BYTES = 24
MAX_SECRET_BYTES = 64

#: The key size of generated secrets, in bytes: the size of an HMAC-SHA256 digest.
DEFAULT_SECRET_BYTES = 32

#: The maximum number of entries in a signature header. A sender needs one
#: per active secret, two during a rotation. A header with more is rejected
#: as malformed, so that a crafted header cannot make the receiver compare
#: without end.
MAX_SIGNATURES = 16

_VERSION = "v1"
_DIGEST_BYTES = hashlib.sha256().digest_size


class SignatureError(Error, ValueError):
    """Raised when a signature header is malformed or matches no secret.

    The message names what is wrong and is safe to log: it never contains
    a secret or a signature.
    """


def generate_secret(num_bytes: int = DEFAULT_SECRET_BYTES) -> str:
    """Return a new random secret, ``whsec_`` followed by base64 of ``num_bytes`` bytes."""
    if not MIN_SECRET_BYTES <= num_bytes <= MAX_SECRET_BYTES:
        message = (
            f"A signing secret must have {MIN_SECRET_BYTES} to {MAX_SECRET_BYTES} bytes, "
            f"not {num_bytes}."
        )
        raise ValueError(message)

    key = random_source.token_bytes(num_bytes)
    return SECRET_PREFIX + base64.b64encode(key).decode("ascii")


def parse_secret(secret: str) -> bytes:
    """Return the key bytes of a ``whsec_`` secret.

    Surrounding whitespace is ignored and missing base64 padding is
    restored. Raises ValueError when the secret is malformed; the message
    never contains the secret.
    """
    if not isinstance(secret, str):
        raise TypeError(f"A signing secret must be a str, not {type(secret).__name__}.")

    text = secret.strip()
    hint = "generate one with ue_flow.signing.generate_secret()"
    if not text.startswith(SECRET_PREFIX):
        message = f"Invalid signing secret: it does not start with {SECRET_PREFIX!r}; {hint}."
        raise ValueError(message)

    encoded = text.removeprefix(SECRET_PREFIX)
    encoded += "=" * (-len(encoded) % 4)
    try:
        key = base64.b64decode(encoded, validate=True)
    except ValueError:
        # Raised "from None" because the decoder's message can quote part of the secret.
        message = f"Invalid signing secret: the part after {SECRET_PREFIX!r} is not base64; {hint}."
        raise ValueError(message) from None

    if not MIN_SECRET_BYTES <= len(key) <= MAX_SECRET_BYTES:
        message = (
            f"Invalid signing secret: it decodes to {len(key)} bytes, but "
            f"{MIN_SECRET_BYTES} to {MAX_SECRET_BYTES} are required; {hint}."
        )
        raise ValueError(message)

    return key


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """Return the signature ``v1,<base64>`` of one message.

    ``timestamp`` is in Unix seconds, as sent in ``webhook-timestamp``, and
    ``body`` is the exact bytes sent.
    """
    if not msg_id:
        raise ValueError("The message id must be a non-empty str; it is sent as webhook-id.")

    digest = _digest(parse_secret(secret), msg_id, timestamp, body)
    return f"{_VERSION},{base64.b64encode(digest).decode('ascii')}"


def signature_header(secrets: Sequence[str], msg_id: str, timestamp: int, body: bytes) -> str:
    """Return the ``webhook-signature`` value: one signature per secret, space-separated."""
    _check_secrets(secrets)
    return " ".join(sign(secret, msg_id, timestamp, body) for secret in secrets)


def check_signature(
    secrets: Sequence[str], msg_id: str, timestamp: int, body: bytes, header: str
) -> None:
    """Raise SignatureError unless a v1 signature in ``header`` matches one of ``secrets``.

    Entries of other versions are ignored. The header is malformed, and
    rejected, when it is empty, contains more than MAX_SIGNATURES entries, an
    entry without a version, a v1 entry that is not base64 or not 32
    bytes long, or no v1 entry at all. Digests are compared in constant
    time. Raises ValueError when ``secrets`` is empty or contains a malformed
    secret, because that is a configuration mistake.
    """
    _check_secrets(secrets)
    keys = [parse_secret(secret) for secret in secrets]
    received = parse_signature_header(header)

    for key in keys:
        expected = _digest(key, msg_id, timestamp, body)
        if any(hmac.compare_digest(expected, digest) for digest in received):
            return

    message = (
        f"No signature in the {SIGNATURE_HEADER} header matches a signing secret; "
        "the body, webhook-id or webhook-timestamp was changed, or the secrets differ."
    )
    raise SignatureError(message)


def verify_signature(
    secrets: Sequence[str], msg_id: str, timestamp: int, body: bytes, header: str
) -> bool:
    """Return whether a v1 signature in ``header`` matches one of ``secrets``.

    Returns False for any malformed header, as described in check_signature.
    Raises ValueError only for a configuration mistake in ``secrets``.
    """
    try:
        check_signature(secrets, msg_id, timestamp, body, header)
    except SignatureError:
        return False

    return True


def parse_signature_header(header: str) -> list[bytes]:
    """Return the decoded v1 digests of a ``webhook-signature`` value.

    Raises SignatureError when the header is malformed; see check_signature.
    """
    if not isinstance(header, str):
        raise SignatureError(f"The {SIGNATURE_HEADER} header must be text.")

    entries = header.split()
    if not entries:
        raise SignatureError(f"The {SIGNATURE_HEADER} header is empty.")
    if len(entries) > MAX_SIGNATURES:
        message = (
            f"The {SIGNATURE_HEADER} header contains {len(entries)} signatures, "
            f"more than the {MAX_SIGNATURES} allowed."
        )
        raise SignatureError(message)

    digests = []
    for position, entry in enumerate(entries, start=1):
        version, comma, encoded = entry.partition(",")
        if not comma or not version:
            message = (
                f"Signature {position} in the {SIGNATURE_HEADER} header is malformed: "
                "it must be a version, a comma and the base64 signature, such as v1,<base64>."
            )
            raise SignatureError(message)
        if version == _VERSION:
            digests.append(_decode_digest(encoded, position))

    if not digests:
        raise SignatureError(f"The {SIGNATURE_HEADER} header contains no {_VERSION} signature.")

    return digests


def _decode_digest(encoded: str, position: int) -> bytes:
    try:
        digest = base64.b64decode(encoded, validate=True)
    except ValueError:
        # binascii.Error for a bad alphabet or padding, a plain ValueError for non-ASCII text.
        message = f"Signature {position} in the {SIGNATURE_HEADER} header is not valid base64."
        raise SignatureError(message) from None

    if len(digest) != _DIGEST_BYTES:
        message = (
            f"Signature {position} in the {SIGNATURE_HEADER} header decodes to {len(digest)} "
            f"bytes, but an HMAC-SHA256 has {_DIGEST_BYTES}."
        )
        raise SignatureError(message)

    return digest


def _digest(key: bytes, msg_id: str, timestamp: int, body: bytes) -> bytes:
    if isinstance(timestamp, bool) or not isinstance(timestamp, int):
        raise TypeError(f"The timestamp must be an int of Unix seconds, not {timestamp!r}.")
    if not isinstance(body, bytes | bytearray):
        raise TypeError(f"The body must be the bytes sent, not {type(body).__name__}.")

    signed = f"{msg_id}.{timestamp}.".encode() + bytes(body)
    return hmac.new(key, signed, hashlib.sha256).digest()


def _check_secrets(secrets: Sequence[str]) -> None:
    if isinstance(secrets, str):
        message = "Pass the signing secrets as a sequence of str, such as a tuple, not one str."
        raise TypeError(message)
    if not secrets:
        raise ValueError("At least one signing secret is required.")
