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


def fetches(type_name: str) -> Callable[[Fetch], Fetch]:
    """Register the fetcher of a Node type (it gets a tenant session and the row key)."""

    def register(fetch: Fetch) -> Fetch:
        _fetchers[type_name] = fetch
        return fetch

    return register


async def resolve_node(session: AsyncSession, global_id: str) -> Any | None:
    parsed = parse_id(global_id)
    if parsed is None or parsed[0] not in _fetchers:
        return None
    return await _fetchers[parsed[0]](session, parsed[1])
