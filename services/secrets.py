"""Secrets at rest (SMTP passwords, DKIM private keys): AES-256-GCM under a named key, so keys
can rotate while older ciphertexts still decrypt."""

from __future__ import annotations

import base64
import binascii
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from penguinmails.settings import Settings

NONCE_BYTES = 12
KEY_BYTES = 32
# Changing this makes every secret encrypted under the derived development key unreadable.
_DERIVED_KEY_INFO = b"penguinmails secrets at rest v1"


class SecretError(Exception):
    """A secret cannot be encrypted or decrypted: unknown key id, bad key, or a blob that is
    not what was stored (tampered, truncated, or under another key)."""


def encrypt(settings: Settings, plaintext: bytes) -> tuple[str, bytes]:
    """Encrypt under the current key: returns (key id, nonce + ciphertext + tag)."""
    key_id = settings.encryption_key_id
    nonce = os.urandom(NONCE_BYTES)
    # The key id is associated data: a blob relabelled with another id does not decrypt.
    ciphertext = AESGCM(_key(settings, key_id)).encrypt(nonce, plaintext, key_id.encode())
    return key_id, nonce + ciphertext


def decrypt(settings: Settings, key_id: str, blob: bytes) -> bytes:
    """Decrypt a blob stored with `key_id` (the current key or any older one still configured)."""
    key = _key(settings, key_id)
    nonce, ciphertext = blob[:NONCE_BYTES], blob[NONCE_BYTES:]
    try:
        return AESGCM(key).decrypt(nonce, ciphertext, key_id.encode())
    except (InvalidTag, ValueError) as e:
        raise SecretError(
            f"secret under key {key_id!r} does not decrypt: tampered, truncated or wrong key"
        ) from e


def _key(settings: Settings, key_id: str) -> bytes:
    if not settings.encryption_keys:
        return _derived_key(settings, key_id)
    secret = settings.encryption_keys.get(key_id)
    if secret is None:
        raise SecretError(
            f"encryption key {key_id!r} is not configured (PENGUINMAILS_ENCRYPTION_KEYS has "
            f"{sorted(settings.encryption_keys)}); keep retired keys until nothing uses them"
        )
    try:
        key = base64.b64decode(secret.get_secret_value(), validate=True)
    except binascii.Error as e:
        raise SecretError(f"encryption key {key_id!r} is not valid base64") from e
    if len(key) != KEY_BYTES:
        raise SecretError(f"encryption key {key_id!r} must be {KEY_BYTES} bytes, not {len(key)}")
    return key


def _derived_key(settings: Settings, key_id: str) -> bytes:
    """Development and tests: one key, derived from secret_key. Refused in production, where
    rotating secret_key would otherwise make every stored secret unreadable."""
    if settings.environment == "production":
        raise SecretError("PENGUINMAILS_ENCRYPTION_KEYS must be set in production")
    if key_id != settings.encryption_key_id:
        raise SecretError(
            f"encryption key {key_id!r} is not configured (only the derived key "
            f"{settings.encryption_key_id!r} exists without PENGUINMAILS_ENCRYPTION_KEYS)"
        )
    hkdf = HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None, info=_DERIVED_KEY_INFO)
    return hkdf.derive(settings.secret_key.get_secret_value().encode())
