"""Requests in flight, so a graceful shutdown can let them finish."""

from __future__ import annotations

import asyncio


class InFlight:
    def __init__(self) -> None:
        self.count = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def started(self) -> None:
        self.count += 1
        self._idle.clear()

    def finished(self) -> None:
        self.count = max(0, self.count - 1)
        if self.count == 0:
            self._idle.set()

    async def drained(self) -> None:
        """Wait until no request is in flight (the caller bounds the wait)."""
        await self._idle.wait()
