"""One look-up per key at a time, that no single caller can cancel for the others."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Hashable
from typing import Any, Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class SingleFlight(Generic[K, V]):
    """Runs `read(key)` as a task of its own, shared by every caller that asks
    for `key` while it runs. Callers await it through `asyncio.shield`, so a
    caller who is cancelled (a hang-up) leaves the look-up going for the rest."""

    def __init__(self, read: Callable[[K], Coroutine[Any, Any, V]]) -> None:
        self._read = read
        self._running: dict[K, asyncio.Task[V]] = {}

    def start(self, key: K) -> asyncio.Task[V]:
        """The look-up of `key` under way, or a new one."""
        task = self._running.get(key)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._read(key))
            self._running[key] = task
            task.add_done_callback(lambda _: self._running.pop(key, None))
        return task

    def running(self, key: K) -> bool:
        """Whether a look-up of `key` is under way."""
        return key in self._running

    async def get(self, key: K) -> V:
        """The result of the look-up of `key`, shared with other callers."""
        return await asyncio.shield(self.start(key))
