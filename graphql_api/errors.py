"""UserError: a rule the caller broke, returned inside the payload (never a GraphQL error)."""

from __future__ import annotations

import strawberry

from services.errors import DomainError


@strawberry.type
class UserError:
    field: str | None
    message: str
    code: str

    @classmethod
    def from_domain(cls, error: DomainError) -> UserError:
        return cls(field=error.field, message=error.message, code=error.code)


def user_errors(error: DomainError) -> list[UserError]:
    return [UserError.from_domain(error)]
