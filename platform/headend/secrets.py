"""Encryption at rest for plugin secrets (gateway keys, tax licences, router passwords).

Fernet (AES-128-CBC + HMAC-SHA256) with the key from HEADEND_SECRET_ENCRYPTION_KEY, or, when
that is unset, one derived from SECRET_KEY by HKDF-SHA256, so development works out of the box.
Changing either key makes stored secrets unreadable: they must then be entered again.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from typing import Any

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from flask import current_app

_INFO = b"headend plugin secrets v1"


class SecretsUnreadable(RuntimeError):
    """Stored secrets do not decrypt with the configured key (it changed, or the row is bad)."""


def derive_key(secret_key: str) -> bytes:
    """A Fernet key (urlsafe base64 of 32 bytes) derived from the app's SECRET_KEY."""
    raw = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_INFO).derive(
        secret_key.encode()
    )
    return base64.urlsafe_b64encode(raw)


def cipher(config: Mapping[str, Any] | None = None) -> Fernet:
    config = current_app.config if config is None else config
    key = config.get("HEADEND_SECRET_ENCRYPTION_KEY")
    return Fernet(key if key else derive_key(config["SECRET_KEY"]))


def seal(values: Mapping[str, Any], config: Mapping[str, Any] | None = None) -> str | None:
    """JSON-encode and encrypt `values`; None when there is nothing to keep."""
    if not values:
        return None
    return cipher(config).encrypt(json.dumps(dict(values), sort_keys=True).encode()).decode()


def unseal(token: str | bytes | None, config: Mapping[str, Any] | None = None) -> dict:
    if not token:
        return {}
    data = token.encode() if isinstance(token, str) else token
    try:
        return json.loads(cipher(config).decrypt(data))
    except InvalidToken:
        raise SecretsUnreadable(
            "stored plugin secrets do not decrypt: was HEADEND_SECRET_ENCRYPTION_KEY or "
            "SECRET_KEY changed? Enter the secrets again."
        ) from None
