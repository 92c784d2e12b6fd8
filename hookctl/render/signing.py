"""Standard Webhooks signatures: `webhook-id`, `webhook-timestamp` and `webhook-signature`.

The signature is `v1,` and the base64 HMAC-SHA256 of `id.timestamp.body`, keyed with the
secret's bytes (the base64 after `whsec_`). During a rotation a rule lists several secrets and
every request carries one signature per secret, space-separated, so receivers verify with
either. See https://www.standardwebhooks.com/.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from collections.abc import Sequence

PREFIX = "whsec_"
SECRET_BYTES = 24  # as the reference libraries generate them
HEADERS = ("webhook-id", "webhook-timestamp", "webhook-signature")


def generate_secret() -> str:
    """A new random secret in the `whsec_<base64>` form receivers' libraries expect."""
    return PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def decode_secret(secret: str) -> bytes:
    """The key bytes of a `whsec_...` secret; ValueError (never echoing the secret) when malformed."""
    text = secret.strip()
    text = text[len(PREFIX) :] if text.startswith(PREFIX) else text
    try:
        key = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("not a Standard Webhooks secret (whsec_ followed by base64)") from None
    if len(key) < 16:
        raise ValueError("the secret is too short (at least 16 bytes after whsec_)")
    return key


def signature(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """One `v1,<base64>` signature of a message."""
    mac = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def sign_headers(
    keys: Sequence[bytes], msg_id: str, timestamp: int, body: bytes | None
) -> list[tuple[str, str]]:
    """The three Standard Webhooks headers, with one signature per key."""
    signatures = " ".join(signature(key, msg_id, timestamp, body or b"") for key in keys)
    return [
        ("webhook-id", msg_id),
        ("webhook-timestamp", str(timestamp)),
        ("webhook-signature", signatures),
    ]
