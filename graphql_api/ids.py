"""Opaque global IDs: base64url("Type:uuid"). Clients never see or build raw keys."""

from __future__ import annotations

import base64
import binascii
import uuid

import strawberry

from services.errors import DomainError


def encode_id(type_name: str, key: uuid.UUID) -> strawberry.ID:
    raw = f"{type_name}:{key}".encode()
    return strawberry.ID(base64.urlsafe_b64encode(raw).decode().rstrip("="))


def parse_id(value: str) -> tuple[str, uuid.UUID] | None:
    """(type, key) of a global ID, or None when it is not one of ours."""
    try:
        padded = value + "=" * (-len(value) % 4)
        type_name, _, key = base64.urlsafe_b64decode(padded.encode()).decode().partition(":")
        return type_name, uuid.UUID(key)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None


def decode_id(value: str, type_name: str, field: str = "id") -> uuid.UUID:
    """The key of a global ID of `type_name`; anything else is simply not found."""
    parsed = parse_id(value)
    if parsed is None or parsed[0] != type_name:
        raise DomainError("NOT_FOUND", f"no {type_name} with this id", field)
    return parsed[1]
