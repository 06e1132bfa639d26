"""Signing webhook bodies, and checking a signature as a receiver does."""

from __future__ import annotations

import hashlib
import hmac

SIGNATURE_PREFIX = "sha256="


def sign(secret: str, body: bytes) -> str:
    """The X-DeployAlly-Signature value: "sha256=" + hex HMAC-SHA256 of body with secret."""
    return SIGNATURE_PREFIX + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def verify(secret: str, body: bytes, header: str) -> bool:
    """Receiver side: True if header is the signature of body with secret (constant time)."""
    given = header.strip()
    if not given.isascii():  # a signature is hex; other bytes cannot match (nor be encoded)
        return False
    return hmac.compare_digest(sign(secret, body).encode(), given.encode())
