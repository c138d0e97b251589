"""The Node interface and `node(id:)`: each type registers how to fetch one of its rows."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import strawberry
from sqlalchemy.ext.asyncio import AsyncSession

from graphql_api.ids import parse_id

Fetch = Callable[[AsyncSession, uuid.UUID], Awaitable[Any]]
_fetchers: dict[str, Fetch] = {}


@strawberry.interface
class Node:
    id: strawberry.ID


def register_node(type_name: str, model: type, shape: Callable[[Any], Any]) -> None:
    """Make `node(id:)` answer for a type: its row by primary key, through the caller's tenant
    session (so RLS decides what exists), shaped into the GraphQL object."""

    async def fetch(session: AsyncSession, key: uuid.UUID) -> Any | None:
        row = await session.get(model, key)
        return shape(row) if row is not None else None

    _fetchers[type_name] = fetch


async def resolve_node(session: AsyncSession, global_id: str) -> Any | None:
    parsed = parse_id(global_id)
    if parsed is None or parsed[0] not in _fetchers:
        return None
    return await _fetchers[parsed[0]](session, parsed[1])
