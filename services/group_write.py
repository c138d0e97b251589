"""Group commit: many callers' writes of the same kind made by one statement.

A caller's item waits for the write in progress, if any, then goes with every item that
arrived meanwhile. Under load the groups grow by themselves; alone, an item is written at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class GroupWrite(Generic[T, R]):
    def __init__(self, write: Callable[[list[T]], Awaitable[list[R]]]) -> None:
        self._write = write
        self._pending: list[tuple[T, asyncio.Future[R]]] = []
        self._writing: asyncio.Task | None = None

    async def __call__(self, item: T) -> R:
        """Writes `item` with the others of its group; its result. A caller that stops waiting
        does not stop the write: the item is written (or not) with its group all the same."""
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        if self._writing is None:
            self._writing = asyncio.ensure_future(self._drain())
        return await future

    async def _drain(self) -> None:
        try:
            while self._pending:
                group, self._pending = self._pending, []
                try:
                    results = await self._write([item for item, _ in group])
                except Exception as e:
                    for _, future in group:
                        if not future.done():
                            future.set_exception(e)
                    continue
                for (_, future), result in zip(group, results, strict=True):
                    if not future.done():
                        future.set_result(result)
        finally:
            self._writing = None
