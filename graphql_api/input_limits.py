"""The longest each string input may be. A limit is declared once, on the argument's or input
field's type (`Name`, `Email`, `Body`, …), where it becomes the schema's description; one field
extension on every mutation enforces what the schema says, before the resolver runs: a longer
value is a `TOO_LONG` UserError naming the field and the limit, and nothing is stored or cut."""

from __future__ import annotations

import types
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Annotated, Any

import strawberry
from strawberry.annotation import StrawberryAnnotation
from strawberry.extensions import FieldExtension
from strawberry.types.base import StrawberryObjectDefinition, has_object_definition
from strawberry.types.field import StrawberryField
from strawberry.types.info import Info
from strawberry.utils.str_converters import to_camel_case

from graphql_api.errors import UserError
from services import sandbox, templates


@dataclass(frozen=True)
class MaxLength:
    limit: int
    unit: str = "characters"  # or "bytes" (UTF-8), for bodies

    def measure(self, value: str) -> int:
        # surrogatepass: a lone surrogate (JSON allows "\ud800") counts, and is no crash here.
        return len(value.encode("utf-8", "surrogatepass")) if self.unit == "bytes" else len(value)

    @property
    def description(self) -> str:
        if self.unit == "bytes":
            return f"At most {self.limit // 1024:,} KB ({self.limit:,} bytes of UTF-8)."
        return f"At most {self.limit:,} {self.unit}."


NAME = MaxLength(templates.NAME_MAX_LENGTH)
EMAIL = MaxLength(254)  # RFC 5321's path limit
PASSWORD = MaxLength(1024)
SUBJECT = MaxLength(998)  # RFC 5322's line limit
BODY = MaxLength(sandbox.MAX_SOURCE_CHARACTERS, "bytes")  # so the sandbox takes any body
LOCAL_PART = MaxLength(64)  # RFC 5321
DOMAIN = MaxLength(253)  # RFC 1035
SHORT = MaxLength(64)  # regions, time zones


def argument(limit: MaxLength, optional: bool = False) -> Any:
    """A string type carrying its limit; as an argument's type it is described in the schema."""
    base = str | None if optional else str
    return Annotated[base, strawberry.argument(description=limit.description), limit]


def described(limit: MaxLength, **kwargs: Any) -> Any:
    """An input field's description: `subject: Subject = described(SUBJECT)`."""
    return strawberry.field(description=limit.description, **kwargs)


Name = argument(NAME)
Email = argument(EMAIL)
Password = argument(PASSWORD)
Subject = argument(SUBJECT)
OptionalName = argument(NAME, optional=True)
OptionalBody = argument(BODY, optional=True)
OptionalPassword = argument(PASSWORD, optional=True)
LocalPart = argument(LOCAL_PART)
DomainName = argument(DOMAIN)
Short = argument(SHORT)
OptionalShort = argument(SHORT, optional=True)


# --- enforcing -------------------------------------------------------------------------------

# A check walks one argument's value: yields (field path, the limit) for each value over it.
_Check = Callable[[Any, str], Iterator[tuple[str, MaxLength]]]


def _limit_of(annotation: Any) -> MaxLength | None:
    """The limit an annotated string type carries, Optional or not."""
    origin = typing.get_origin(annotation)
    if origin is Annotated:
        return next((m for m in annotation.__metadata__ if isinstance(m, MaxLength)), None)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _limit_of(inner[0]) if len(inner) == 1 else None
    return None


def _unwrapped(annotation: Any) -> Any:
    """The type inside Optional, lists and Annotated."""
    while True:
        origin = typing.get_origin(annotation)
        if origin is Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(annotation) if a is not type(None)]
            if len(args) != 1:
                return annotation
            annotation = args[0]
        elif origin is list:
            annotation = typing.get_args(annotation)[0]
        else:
            return annotation


def _check_for(annotation: Any) -> _Check | None:
    """How to check a value of this annotated type, or None when nothing in it is bounded."""
    limit = _limit_of(annotation)
    if limit is not None:

        def string(value: Any, path: str) -> Iterator[tuple[str, MaxLength]]:
            if isinstance(value, str) and limit.measure(value) > limit.limit:
                yield path, limit

        return string
    inner = _unwrapped(annotation)
    if not has_object_definition(inner):
        return None
    definition: StrawberryObjectDefinition = inner.__strawberry_definition__
    # The class's own hints keep the Annotated limits (the fields' annotations may be strings).
    hints = typing.get_type_hints(definition.origin, include_extras=True)
    fields = [
        (f.python_name, f.graphql_name or to_camel_case(f.python_name), check)
        for f in definition.fields
        if (check := _check_for(hints.get(f.python_name))) is not None
    ]
    if not fields:
        return None

    def input_object(value: Any, path: str) -> Iterator[tuple[str, MaxLength]]:
        for item, item_path in _items(value, path):
            for python_name, graphql_name, check in fields:
                yield from check(getattr(item, python_name, None), f"{item_path}.{graphql_name}")

    return input_object


def _items(value: Any, path: str) -> Iterator[tuple[Any, str]]:
    if isinstance(value, list):
        for index, item in enumerate(value):
            yield item, f"{path}.{index}"
    elif value is not None:
        yield value, path


def _resolved(annotation: StrawberryAnnotation) -> Any:
    """The argument's type with its Annotated limits (a plain type may still be a string)."""
    raw = annotation.raw_annotation
    return annotation.evaluate() if isinstance(raw, str) else raw


class BoundedInputs(FieldExtension):
    """Refuses a mutation whose string inputs are over their declared limits, before it runs."""

    def apply(self, field: StrawberryField) -> None:
        self.checks = [
            (a.python_name, a.graphql_name or to_camel_case(a.python_name), check)
            for a in field.arguments
            if (check := _check_for(_resolved(a.type_annotation))) is not None
        ]
        self.payload = field.type

    def _refusal(self, kwargs: dict[str, Any]) -> Any:
        for python_name, graphql_name, check in self.checks:
            for path, limit in check(kwargs.get(python_name), graphql_name):
                message = (
                    f"{path} is too long: {limit.description[0].lower()}{limit.description[1:]}"
                )
                return self.payload(
                    errors=[UserError(field=path, message=message, code="TOO_LONG")]
                )
        return None

    def resolve(self, next_: Callable[..., Any], source: Any, info: Info, **kwargs: Any) -> Any:
        return self._refusal(kwargs) or next_(source, info, **kwargs)

    async def resolve_async(
        self, next_: Callable[..., Any], source: Any, info: Info, **kwargs: Any
    ) -> Any:
        refusal = self._refusal(kwargs)
        if refusal is not None:
            return refusal
        return await next_(source, info, **kwargs)


def bound_mutations(mutation: type) -> None:
    """Puts BoundedInputs on every mutation that has a bounded input."""
    for field in mutation.__strawberry_definition__.fields:
        extension = BoundedInputs()
        extension.apply(field)
        if extension.checks:
            field.extensions.append(extension)
