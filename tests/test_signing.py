"""Tests of ue_flow.signing, checked against the official standardwebhooks package."""

from __future__ import annotations

import base64
import time
from datetime import UTC, datetime

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from ue_flow import signing
from ue_flow.errors import Error

# A test vector that many Standard Webhooks libraries check. The standardwebhooks
# package produces the same signature, as test_sign_matches_standardwebhooks shows.
VECTOR_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
VECTOR_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
VECTOR_TIMESTAMP = 1614265330
VECTOR_BODY = b'{"test": 2432232314}'
VECTOR_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="

BODY = '{"type":"presale","note":"Zoë"}'.encode()
MSG_ID = "evt_01J9Z3"


@pytest.fixture
def secret() -> str:
    return signing.generate_secret()


@pytest.fixture
def other_secret() -> str:
    return signing.generate_secret()


def _headers(msg_id: str, timestamp: int, signature: str) -> dict[str, str]:
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature,
    }


def _digest_b64(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    return signing.sign(secret, msg_id, timestamp, body).removeprefix("v1,")


# Secrets


def test_generate_secret_default_size(secret: str) -> None:
    assert secret.startswith("whsec_")
    assert len(signing.parse_secret(secret)) == 32


def test_generate_secret_is_random() -> None:
    assert signing.generate_secret() != signing.generate_secret()


@pytest.mark.parametrize("num_bytes", [24, 64])
def test_generate_secret_size_limits(num_bytes: int) -> None:
    assert len(signing.parse_secret(signing.generate_secret(num_bytes))) == num_bytes


@pytest.mark.parametrize("num_bytes", [0, 23, 65])
def test_generate_secret_rejects_size(num_bytes: int) -> None:
    with pytest.raises(ValueError, match=str(num_bytes)):
        signing.generate_secret(num_bytes)


def test_parse_secret_vector() -> None:
    assert signing.parse_secret(VECTOR_SECRET) == base64.b64decode(VECTOR_SECRET[6:])


def test_parse_secret_tolerates_whitespace(secret: str) -> None:
    assert signing.parse_secret(f"  {secret}\n") == signing.parse_secret(secret)


def test_parse_secret_restores_padding() -> None:
    key = bytes(range(32))
    unpadded = "whsec_" + base64.b64encode(key).decode().rstrip("=")

    assert signing.parse_secret(unpadded) == key


@pytest.mark.parametrize(
    ("secret", "expected"),
    [
        ("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "does not start with 'whsec_'"),
        ("whsec_not*base64*at*all*but*long*enough", "is not base64"),
        ("whsec_ñMfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "is not base64"),
        ("whsec_" + base64.b64encode(b"k" * 23).decode(), "decodes to 23 bytes"),
        ("whsec_" + base64.b64encode(b"k" * 65).decode(), "decodes to 65 bytes"),
        ("whsec_", "decodes to 0 bytes"),
    ],
)
def test_parse_secret_rejects(secret: str, expected: str) -> None:
    with pytest.raises(ValueError) as caught:
        signing.parse_secret(secret)

    message = str(caught.value)
    encoded = secret.removeprefix("whsec_")
    assert expected in message
    assert "generate_secret()" in message
    assert not encoded or encoded not in message


def test_parse_secret_message_hides_secret() -> None:
    secret = "whsec_SECRETVALUE%%%SECRETVALUE"

    with pytest.raises(ValueError) as caught:
        signing.parse_secret(secret)

    assert "SECRETVALUE" not in str(caught.value)
    assert caught.value.__cause__ is None
    assert caught.value.__suppress_context__


def test_parse_secret_rejects_bytes() -> None:
    with pytest.raises(TypeError, match="bytes"):
        signing.parse_secret(b"whsec_abc")  # type: ignore[arg-type]


# Signing


def test_sign_vector() -> None:
    assert signing.sign(VECTOR_SECRET, VECTOR_ID, VECTOR_TIMESTAMP, VECTOR_BODY) == VECTOR_SIGNATURE


def test_sign_matches_standardwebhooks() -> None:
    signed_at = datetime.fromtimestamp(VECTOR_TIMESTAMP, UTC)

    assert Webhook(VECTOR_SECRET).sign(VECTOR_ID, signed_at, VECTOR_BODY) == VECTOR_SIGNATURE


def test_sign_rejects_float_timestamp(secret: str) -> None:
    with pytest.raises(TypeError, match="Unix seconds"):
        signing.sign(secret, MSG_ID, 1614265330.0, BODY)  # type: ignore[arg-type]


def test_sign_rejects_str_body(secret: str) -> None:
    with pytest.raises(TypeError, match="bytes"):
        signing.sign(secret, MSG_ID, 1, "{}")  # type: ignore[arg-type]


def test_sign_rejects_empty_id(secret: str) -> None:
    with pytest.raises(ValueError, match="webhook-id"):
        signing.sign(secret, "", 1, BODY)


def test_signature_header_one_per_secret(secret: str, other_secret: str) -> None:
    header = signing.signature_header([secret, other_secret], MSG_ID, 1, BODY)

    assert header.split(" ") == [
        signing.sign(secret, MSG_ID, 1, BODY),
        signing.sign(other_secret, MSG_ID, 1, BODY),
    ]


def test_signature_header_rejects_one_str(secret: str) -> None:
    with pytest.raises(TypeError, match="not one str"):
        signing.signature_header(secret, MSG_ID, 1, BODY)


def test_signature_header_rejects_no_secrets() -> None:
    with pytest.raises(ValueError, match="At least one"):
        signing.signature_header([], MSG_ID, 1, BODY)


# Verification


def test_verify_accepts_own_signature(secret: str) -> None:
    header = signing.signature_header([secret], MSG_ID, 7, BODY)

    assert signing.verify_signature([secret], MSG_ID, 7, BODY, header)


def test_verify_accepts_vector() -> None:
    assert signing.verify_signature(
        [VECTOR_SECRET], VECTOR_ID, VECTOR_TIMESTAMP, VECTOR_BODY, VECTOR_SIGNATURE
    )


def test_verify_rejects_other_secret(secret: str, other_secret: str) -> None:
    header = signing.signature_header([other_secret], MSG_ID, 7, BODY)

    assert not signing.verify_signature([secret], MSG_ID, 7, BODY, header)


def test_verify_rejects_changed_body_byte(secret: str) -> None:
    header = signing.signature_header([secret], MSG_ID, 7, BODY)
    changed = BODY.replace(b"presale", b"presalf")

    assert len(changed) == len(BODY)
    assert not signing.verify_signature([secret], MSG_ID, 7, changed, header)


def test_verify_rejects_changed_id(secret: str) -> None:
    header = signing.signature_header([secret], MSG_ID, 7, BODY)

    assert not signing.verify_signature([secret], MSG_ID + "x", 7, BODY, header)


def test_verify_rejects_changed_timestamp(secret: str) -> None:
    header = signing.signature_header([secret], MSG_ID, 7, BODY)

    assert not signing.verify_signature([secret], MSG_ID, 8, BODY, header)


def test_verify_any_of_rotated_secrets(secret: str, other_secret: str) -> None:
    old_only = signing.signature_header([secret], MSG_ID, 7, BODY)
    new_only = signing.signature_header([other_secret], MSG_ID, 7, BODY)

    assert signing.verify_signature([secret, other_secret], MSG_ID, 7, BODY, old_only)
    assert signing.verify_signature([secret, other_secret], MSG_ID, 7, BODY, new_only)


def test_verify_ignores_unknown_versions(secret: str) -> None:
    valid = signing.sign(secret, MSG_ID, 7, BODY)
    header = f"v1a,{'A' * 88} v2,abc {valid}"

    assert signing.verify_signature([secret], MSG_ID, 7, BODY, header)


def test_verify_accepts_max_signatures(secret: str, other_secret: str) -> None:
    decoys = [signing.sign(other_secret, f"decoy{i}", 7, BODY) for i in range(15)]
    header = " ".join([*decoys, signing.sign(secret, MSG_ID, 7, BODY)])

    assert signing.verify_signature([secret], MSG_ID, 7, BODY, header)


def test_verify_never_raises_on_non_str(secret: str) -> None:
    assert not signing.verify_signature([secret], MSG_ID, 7, BODY, None)  # type: ignore[arg-type]


def test_verify_rejects_one_str(secret: str) -> None:
    with pytest.raises(TypeError, match="not one str"):
        signing.verify_signature(secret, MSG_ID, 7, BODY, "v1,abc")


def test_verify_rejects_bad_secret() -> None:
    with pytest.raises(ValueError, match="whsec_"):
        signing.verify_signature(["not-a-secret"], MSG_ID, 7, BODY, "v1,abc")


def _malformed_headers(secret: str) -> dict[str, str]:
    valid = signing.sign(secret, MSG_ID, 7, BODY)
    digest = valid.removeprefix("v1,")
    return {
        "empty": "",
        "spaces": "   ",
        "garbage base64": "v1,@@not base64@@",
        "non-ASCII base64": "v1,ünïcödé",
        "short digest": "v1," + base64.b64encode(b"x" * 16).decode(),
        "no comma": digest,
        "no version": "," + digest,
        "v2 only": "v2," + digest,
        "100 signatures": " ".join([valid] * 100),
        "17 signatures": " ".join([valid] * 17),
        "valid and garbage": f"{valid} v1,@@",
    }


@pytest.mark.parametrize(
    "case",
    [
        "empty",
        "spaces",
        "garbage base64",
        "non-ASCII base64",
        "short digest",
        "no comma",
        "no version",
        "v2 only",
        "100 signatures",
        "17 signatures",
        "valid and garbage",
    ],
)
def test_verify_rejects_malformed_header(secret: str, case: str) -> None:
    header = _malformed_headers(secret)[case]

    assert not signing.verify_signature([secret], MSG_ID, 7, BODY, header)
    with pytest.raises(signing.SignatureError) as caught:
        signing.check_signature([secret], MSG_ID, 7, BODY, header)

    assert isinstance(caught.value, Error)
    assert "webhook-signature" in str(caught.value)
    assert _digest_b64(secret, MSG_ID, 7, BODY) not in str(caught.value)


def test_check_signature_mismatch_message(secret: str, other_secret: str) -> None:
    header = signing.signature_header([other_secret], MSG_ID, 7, BODY)

    with pytest.raises(signing.SignatureError, match=r"No signature .* matches") as caught:
        signing.check_signature([secret], MSG_ID, 7, BODY, header)

    assert header.removeprefix("v1,") not in str(caught.value)


# Interoperability with the official standardwebhooks package


def test_standardwebhooks_verifies_ours(secret: str) -> None:
    timestamp = int(time.time())
    header = signing.signature_header([secret], MSG_ID, timestamp, BODY)

    payload = Webhook(secret).verify(BODY, _headers(MSG_ID, timestamp, header))

    assert payload == {"type": "presale", "note": "Zoë"}


def test_standardwebhooks_verifies_rotation(secret: str, other_secret: str) -> None:
    timestamp = int(time.time())
    header = signing.signature_header([secret, other_secret], MSG_ID, timestamp, BODY)
    headers = _headers(MSG_ID, timestamp, header)

    assert len(header.split(" ")) == 2
    assert Webhook(secret).verify(BODY, headers) is not None
    assert Webhook(other_secret).verify(BODY, headers) is not None


def test_standardwebhooks_rejects_third_secret(secret: str, other_secret: str) -> None:
    timestamp = int(time.time())
    header = signing.signature_header([secret, other_secret], MSG_ID, timestamp, BODY)

    with pytest.raises(WebhookVerificationError):
        Webhook(signing.generate_secret()).verify(BODY, _headers(MSG_ID, timestamp, header))


def test_ours_verifies_standardwebhooks(secret: str) -> None:
    timestamp = int(time.time())
    signed_at = datetime.fromtimestamp(timestamp, UTC)
    header = Webhook(secret).sign(MSG_ID, signed_at, BODY)

    assert signing.verify_signature([secret], MSG_ID, timestamp, BODY, header)
