"""Relay connections over keyset pagination: the cursor is the last row's sort key, opaque."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, Generic, TypeVar

import strawberry
from sqlalchemy import Select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute
from strawberry.types import Info
from strawberry.types.nodes import SelectedField, Selection

from services.errors import DomainError

T = TypeVar("T")
DEFAULT_PAGE = 20


@strawberry.type
class PageInfo:
    has_next_page: bool
    has_previous_page: bool
    start_cursor: str | None
    end_cursor: str | None


@strawberry.type
class Edge(Generic[T]):
    cursor: str
    node: T


@strawberry.type
class Connection(Generic[T]):
    edges: list[Edge[T]]
    page_info: PageInfo


def nodes_select(info: Info, name: str) -> bool:
    """Whether the query asks for `name` on the nodes of the connection `info` resolves
    (`edges { node { name } }`, through fragments too): the resolver that fetches the page can
    then fetch that field for all its nodes at once."""
    return any(
        _named(node.selections, name)
        for field in info.selected_fields
        for edges in _named(field.selections, "edges")
        for node in _named(edges.selections, "node")
    )


def _named(selections: list[Selection], name: str) -> list[SelectedField]:
    """The fields called `name` among `selections`, those in fragments included."""
    found = []
    for selection in selections:
        if not isinstance(selection, SelectedField):  # an inline fragment or fragment spread
            found.extend(_named(selection.selections, name))
        elif selection.name == name:
            found.append(selection)
    return found


def _encode(values: Sequence[Any]) -> str:
    plain = [v.isoformat() if isinstance(v, datetime) else str(v) for v in values]
    return base64.urlsafe_b64encode(json.dumps(plain).encode()).decode().rstrip("=")


def _decode(cursor: str, keys: Sequence[InstrumentedAttribute]) -> list[Any]:
    try:
        raw = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        if not isinstance(raw, list) or len(raw) != len(keys):
            raise ValueError
        return [_parse(value, key) for value, key in zip(raw, keys, strict=True)]
    except (ValueError, TypeError) as e:
        raise DomainError("INVALID_CURSOR", "this cursor is not valid here", "after") from e


def _parse(value: str, key: InstrumentedAttribute) -> Any:
    python_type = key.type.python_type
    if python_type is datetime:
        return datetime.fromisoformat(value)
    if python_type is uuid.UUID:
        return uuid.UUID(value)
    return python_type(value)


async def paginate(
    session: AsyncSession,
    stmt: Select,
    *,
    keys: Sequence[InstrumentedAttribute],
    first: int | None,
    after: str | None,
    max_page: int,
    node: Callable[[Any], T],
    descending: bool = True,
) -> Connection[T]:
    """One page of `stmt` (which selects one entity) ordered by `keys`, newest first by
    default. Fetches one row more than asked to know whether there is a next page."""
    limit = DEFAULT_PAGE if first is None else first
    if limit < 0:
        raise DomainError("INVALID_PAGE", "`first` must not be negative", "first")
    limit = min(limit, max_page)
    if after:
        position = tuple_(*keys)
        bound = tuple_(*_decode(after, keys))
        stmt = stmt.where(position < bound if descending else position > bound)
    order = [k.desc() if descending else k.asc() for k in keys]
    rows = list(await session.scalars(stmt.order_by(*order).limit(limit + 1)))
    has_next = len(rows) > limit
    rows = rows[:limit]
    edges = [
        Edge(cursor=_encode([getattr(row, k.key) for k in keys]), node=node(row)) for row in rows
    ]
    return Connection(
        edges=edges,
        page_info=PageInfo(
            has_next_page=has_next,
            has_previous_page=after is not None,
            start_cursor=edges[0].cursor if edges else None,
            end_cursor=edges[-1].cursor if edges else None,
        ),
    )
