"""The one exception services raise for a rule the caller broke; the API turns it into a UserError."""

from __future__ import annotations


class DomainError(Exception):
    def __init__(self, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field

    def __reduce__(self) -> tuple:
        # Raised in a checking process too (services/templates.py): pickled with its fields.
        return (DomainError, (self.code, self.message, self.field))
