"""Group commit: many callers' writes of the same kind made by one statement.

A caller's item waits for the write in progress, if any, then goes with every item that
arrived meanwhile (and in the same turn of the event loop). Under load the groups grow by
themselves; alone, an item is written at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")
R = TypeVar("R")


class GroupWrite(Generic[T, R]):
    def __init__(
        self,
        write: Callable[[list[T]], Awaitable[list[R]]],
        on_idle: Callable[[], None] | None = None,
    ) -> None:
        self._write, self._on_idle = write, on_idle
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
            # Callers woken by the same event (a batch's messages meeting idle connections, a
            # server's replies read in one go) join in the same loop iteration: let them in.
            await asyncio.sleep(0)
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
            if self._on_idle is not None:
                self._on_idle()


class GroupWrites(Generic[K, T, R]):
    """A GroupWrite per key (e.g. a tenant: its rows go in statements of its own), made on first
    use and dropped when idle, shared by every caller of the process."""

    def __init__(self, write: Callable[[K, list[T]], Awaitable[list[R]]]) -> None:
        self._write = write
        self._writers: dict[K, GroupWrite[T, R]] = {}

    async def __call__(self, key: K, item: T) -> R:
        writer = self._writers.get(key)
        if writer is None:
            writer = self._writers[key] = GroupWrite(
                lambda items: self._write(key, items), lambda: self._writers.pop(key, None)
            )
        return await writer(item)
