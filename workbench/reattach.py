"""Re-attaching kernels at start-up, a few at a time, while the server already serves.

Requests for a session still being re-attached wait for it (up to a deadline, then a 503 with
``Retry-After``); every other request is served at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine, Iterable
from typing import Any

from workbench.errors import EngineUnavailable

log = logging.getLogger(__name__)

CONCURRENCY = 8
WAIT_TIMEOUT = 30.0


class Reattach:
    """The sessions still to re-attach, each with a future that is done once it was handled."""

    def __init__(self, *, concurrency: int = CONCURRENCY, wait_timeout: float = WAIT_TIMEOUT) -> None:
        self.concurrency = concurrency
        self.wait_timeout = wait_timeout
        self._pending: dict[str, asyncio.Future[None]] = {}

    def expect(self, session_ids: Iterable[str]) -> None:
        loop = asyncio.get_running_loop()
        for session_id in session_ids:
            self._pending.setdefault(session_id, loop.create_future())

    @property
    def pending(self) -> int:
        return len(self._pending)

    def pending_for(self, session_id: str) -> bool:
        return session_id in self._pending

    async def wait(self, session_id: str) -> None:
        """Return once ``session_id`` is not (or no longer) being re-attached."""
        future = self._pending.get(session_id)
        if future is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(future), self.wait_timeout)
        except TimeoutError:
            msg = "the session's kernel is still being re-attached after a server restart; retry shortly"
            raise EngineUnavailable(msg, code="session-reattaching", headers={"Retry-After": "5"}) from None

    async def run(self, jobs: list[tuple[str, Coroutine[Any, Any, None]]]) -> None:
        """Run every session's job, at most ``concurrency`` at once; a failure is logged, never raised."""
        limit = asyncio.Semaphore(self.concurrency)

        async def one(session_id: str, job: Coroutine[Any, Any, None]) -> None:
            try:
                async with limit:
                    await job
            except Exception:
                log.exception("session %s: re-attaching its kernel failed", session_id)
            finally:
                job.close()  # never started when the semaphore wait was cancelled
                self.release(session_id)

        await asyncio.gather(*(one(session_id, job) for session_id, job in jobs))

    def release(self, session_id: str) -> None:
        future = self._pending.pop(session_id, None)
        if future is not None and not future.done():
            future.set_result(None)

    def release_all(self) -> None:
        for session_id in list(self._pending):
            self.release(session_id)
