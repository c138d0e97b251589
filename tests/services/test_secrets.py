"""Secrets at rest: AES-256-GCM under named keys, with rotation."""

from __future__ import annotations

import base64
import os

import pytest
from pydantic import SecretStr

from penguinmails.settings import Settings
from services.secrets import SecretError, decrypt, encrypt


def _key() -> SecretStr:
    return SecretStr(base64.b64encode(os.urandom(32)).decode())


def _with_keys(settings: Settings, current: str, **keys: SecretStr) -> Settings:
    return settings.model_copy(update={"encryption_keys": keys, "encryption_key_id": current})


def test_a_secret_decrypts_to_what_was_encrypted_and_is_not_stored_in_clear(settings: Settings):
    key_id, blob = encrypt(settings, b"hunter2-hunter2")

    assert key_id == settings.encryption_key_id
    assert b"hunter2" not in blob
    assert decrypt(settings, key_id, blob) == b"hunter2-hunter2"


def test_encrypting_the_same_secret_twice_gives_different_blobs(settings: Settings):
    _, first = encrypt(settings, b"same")
    _, second = encrypt(settings, b"same")

    assert first != second


def test_after_rotation_new_secrets_use_the_new_key_and_old_ones_still_decrypt(
    settings: Settings,
):
    k1 = _key()
    before = _with_keys(settings, "k1", k1=k1)
    old_id, old_blob = encrypt(before, b"old secret")

    after = _with_keys(settings, "k2", k2=_key(), k1=k1)
    new_id, new_blob = encrypt(after, b"new secret")

    assert (old_id, new_id) == ("k1", "k2")
    assert decrypt(after, old_id, old_blob) == b"old secret"
    assert decrypt(after, new_id, new_blob) == b"new secret"


def test_a_key_id_that_is_no_longer_configured_is_a_clear_error(settings: Settings):
    key_id, blob = encrypt(_with_keys(settings, "k1", k1=_key()), b"secret")

    with pytest.raises(SecretError, match="'k1' is not configured"):
        decrypt(_with_keys(settings, "k2", k2=_key()), key_id, blob)


def test_a_tampered_or_truncated_blob_does_not_decrypt(settings: Settings):
    key_id, blob = encrypt(settings, b"secret")
    flipped = bytes([blob[0], blob[1] ^ 1]) + blob[2:]

    for bad in (flipped, blob[:-1], blob[:5], b""):
        with pytest.raises(SecretError, match="does not decrypt"):
            decrypt(settings, key_id, bad)


def test_a_blob_relabelled_with_another_key_id_does_not_decrypt(settings: Settings):
    # The same key material under two ids: only the key id bound at encryption decrypts.
    same = _key()
    two_names = _with_keys(settings, "k1", k1=same, k2=same)
    _, blob = encrypt(two_names, b"secret")

    with pytest.raises(SecretError, match="does not decrypt"):
        decrypt(two_names, "k2", blob)


def test_without_configured_keys_the_key_is_derived_from_the_secret_key(settings: Settings):
    development = _with_keys(settings, "dev")
    key_id, blob = encrypt(development, b"secret")
    same_secret = _with_keys(settings, "dev")
    other_secret = development.model_copy(update={"secret_key": SecretStr("another-secret")})

    assert key_id == "dev"
    assert decrypt(same_secret, key_id, blob) == b"secret"
    with pytest.raises(SecretError, match="does not decrypt"):
        decrypt(other_secret, key_id, blob)
    with pytest.raises(SecretError, match="'old' is not configured"):
        decrypt(development, "old", blob)


def test_production_refuses_to_derive_a_key_from_the_secret_key(settings: Settings):
    production = settings.model_copy(update={"environment": "production", "encryption_keys": {}})

    with pytest.raises(SecretError, match="must be set in production"):
        encrypt(production, b"secret")


def test_a_configured_key_of_the_wrong_size_is_refused(settings: Settings):
    short = SecretStr(base64.b64encode(os.urandom(16)).decode())

    with pytest.raises(SecretError, match="must be 32 bytes"):
        encrypt(_with_keys(settings, "k1", k1=short), b"secret")
    with pytest.raises(SecretError, match="not valid base64"):
        encrypt(_with_keys(settings, "k1", k1=SecretStr("not base64!")), b"secret")
