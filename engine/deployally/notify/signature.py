"""Signing webhook bodies, and checking a signature as a receiver does.

Two schemes, both keyed with the webhook's secret:

- Standard Webhooks (https://www.standardwebhooks.com): `webhook-signature: v1,<base64
  HMAC-SHA256 of "{webhook-id}.{webhook-timestamp}.{body}">`, keyed as that specification
  reads a secret: the bytes a `whsec_<base64>` secret encodes, any other secret's UTF-8.
  The timestamp is signed, so a receiver can refuse a replayed request.
- `X-DeployAlly-Signature: sha256=<hex HMAC-SHA256 of the body>`, kept for receivers written
  before, keyed as it always was: with the secret's UTF-8 bytes exactly as registered, a
  `whsec_` secret whole. Those receivers check it with the string they were configured
  with; decoding it would break every one of them. It signs no time, so it cannot tell a
  replay.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Mapping

SIGNATURE_PREFIX = "sha256="
STANDARD_SECRET_PREFIX = "whsec_"  # how Standard Webhooks serializes a key: whsec_<base64>
STANDARD_KEY_BYTES = (24, 64)  # the specification's bounds for a symmetric key
VERSION = "v1"  # HMAC-SHA256 in Standard Webhooks' signature list
# Receivers refuse a request whose signed timestamp is further than this from their clock.
DEFAULT_TOLERANCE_S = 300

ID_HEADER = "webhook-id"
TIMESTAMP_HEADER = "webhook-timestamp"
SIGNATURE_HEADER = "webhook-signature"


def sign(secret: str, body: bytes) -> str:
    """The X-DeployAlly-Signature value: "sha256=" + hex HMAC-SHA256 of body, keyed with the
    secret string's UTF-8 bytes (a `whsec_` secret whole, never decoded)."""
    return SIGNATURE_PREFIX + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def verify(secret: str, body: bytes, header: str) -> bool:
    """Receiver side: True if header is the signature of body with secret (constant time)."""
    given = header.strip()
    if not given.isascii():  # a signature is hex; other bytes cannot match (nor be encoded)
        return False
    return hmac.compare_digest(sign(secret, body).encode(), given.encode())


def check_legacy(secret: str, body: bytes, header: str) -> str | None:
    """Receiver side of X-DeployAlly-Signature: None when it signs body with secret, else why not."""
    if verify(secret, body, header):
        return None
    if secret.startswith(STANDARD_SECRET_PREFIX):
        # The one way to get this wrong with the right secret: keying with the decoded bytes.
        return (
            "the signature does not match (X-DeployAlly-Signature is keyed with the whole "
            f"secret string, {STANDARD_SECRET_PREFIX} included, not with the bytes it encodes)"
        )
    return "the signature does not match"


# ---------------------------------------------------------------- Standard Webhooks


def signing_key(secret: str) -> bytes:
    """The HMAC key of a secret: the bytes a `whsec_<base64>` secret encodes, else its UTF-8.

    A plain secret (any other string) keys both schemes alike; a Standard Webhooks library
    given it as `whsec_` + base64(secret) derives the same key.
    """
    if secret.startswith(STANDARD_SECRET_PREFIX):
        encoded = secret.removeprefix(STANDARD_SECRET_PREFIX)
        # Padding is optional, as the reference libraries read it.
        return base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    return secret.encode("utf-8")


def secret_problem(secret: str) -> str | None:
    """Why a webhook secret cannot sign, or None: a `whsec_` secret must be base64 of 24-64 bytes."""
    if not secret.startswith(STANDARD_SECRET_PREFIX):
        return None
    try:
        key = signing_key(secret)
    except (binascii.Error, ValueError):
        return f"a {STANDARD_SECRET_PREFIX} secret must be followed by base64"
    low, high = STANDARD_KEY_BYTES
    if not low <= len(key) <= high:
        return (
            f"a {STANDARD_SECRET_PREFIX} secret encodes {low}-{high} bytes, this one {len(key)}"
        )
    return None


def standard_signature(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """`v1,<base64 HMAC-SHA256 of "{msg_id}.{timestamp}.{body}">` keyed with the secret's key."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(signing_key(secret), signed, hashlib.sha256).digest()
    return f"{VERSION},{base64.b64encode(digest).decode('ascii')}"


def standard_headers(secret: str, msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The three Standard Webhooks headers of one attempt: id, timestamp and signature."""
    return {
        ID_HEADER: msg_id,
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: standard_signature(secret, msg_id, timestamp, body),
    }


def check_standard(
    secret: str,
    body: bytes,
    headers: Mapping[str, str],
    *,
    now: float,
    tolerance_s: float = DEFAULT_TOLERANCE_S,
) -> str | None:
    """Receiver side: None when the headers sign body with secret at a time within
    `tolerance_s` of `now` (Unix seconds), else why not."""
    lower = {k.lower(): v for k, v in headers.items()}
    msg_id = lower.get(ID_HEADER, "")
    stamp = lower.get(TIMESTAMP_HEADER, "")
    signatures = lower.get(SIGNATURE_HEADER, "")
    missing = [
        n for n, v in ((ID_HEADER, msg_id), (TIMESTAMP_HEADER, stamp), (SIGNATURE_HEADER, signatures)) if not v
    ]
    if missing:
        return f"missing {', '.join(missing)}"
    if not (stamp.isascii() and stamp.isdigit()) or len(stamp) > 12:
        return f"{TIMESTAMP_HEADER} {stamp!r} is not Unix seconds"
    age = now - int(stamp)
    if age > tolerance_s:
        return f"{TIMESTAMP_HEADER} is {age:.0f} s old, beyond the {tolerance_s:g} s tolerance (a replay?)"
    if -age > tolerance_s:
        return f"{TIMESTAMP_HEADER} is {-age:.0f} s in the future, beyond the {tolerance_s:g} s tolerance"
    if not (msg_id.isascii() and signatures.isascii()):
        return "no v1 signature matches the body and secret"
    expected = standard_signature(secret, msg_id, int(stamp), body).encode()
    # A space-separated list (several during a key rotation); one match is enough.
    for given in signatures.split():
        if given.startswith(f"{VERSION},") and hmac.compare_digest(expected, given.encode()):
            return None
    return "no v1 signature matches the body and secret"
