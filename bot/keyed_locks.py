"""One asyncio lock per key (a chat, a user), dropped when nobody holds or awaits it.

Channels use it to handle one conversation's messages in arrival order (asyncio locks are FIFO)
while different conversations run concurrently.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable


class KeyedLocks:
    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    async def run(self, key: str, fn: Callable[[], Awaitable[None]]) -> None:
        lock, users = self._locks.get(key, (None, 0))
        if lock is None:
            lock = asyncio.Lock()
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                await fn()
        finally:
            lock, users = self._locks[key]
            if users <= 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)
