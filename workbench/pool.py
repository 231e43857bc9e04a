"""The warm pool: kernels started ahead of demand, so that a create only claims one.

A slot is a kernel container that is already running and ready (``kernel_info`` answered, IOPub
delivering), with its own empty workspace and runtime directory.  Its session id is chosen when the slot
is made, so that the container's name, labels and directories are those of the session that claims it:
a claimed slot is indistinguishable from a cold-started session.  A slot is handed out once and never
recycled; the pool then refills in the background, one cold start at a time, and only while no user is
waiting on a cold start of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Awaitable, Callable

from workbench import metrics
from workbench.kernels.runtime import SessionKernel

log = logging.getLogger(__name__)

RETRY_DELAYS = (1.0, 5.0, 30.0)


@dataclasses.dataclass
class Slot:
    session_id: str
    kernel: SessionKernel


class WarmPool:
    """Keep up to ``size`` ready slots (fewer when ``room()`` says the engine is near its capacity)."""

    def __init__(
        self,
        size: int,
        *,
        make: Callable[[], Awaitable[Slot]],
        discard: Callable[[Slot], Awaitable[None]],
        room: Callable[[], int],
        users_idle: asyncio.Event,
    ) -> None:
        self.size = size
        self._make = make
        self._discard = discard
        self._room = room
        self._users_idle = users_idle
        self._ready: list[Slot] = []
        self._wanted = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._failures = 0
        self._dropping: set[asyncio.Task[None]] = set()
        self._closing = False
        self._making = False

    @property
    def ready(self) -> int:
        return len(self._ready)

    def start(self) -> None:
        if self.size > 0:
            self._task = asyncio.create_task(self._refill_forever())
            self._wanted.set()

    def claim(self) -> Slot | None:
        """A ready slot, now no longer the pool's; ``None`` when the pool is empty."""
        while self._ready:
            slot = self._ready.pop(0)
            self._wanted.set()
            if slot.kernel.state == "idle":
                metrics.POOL_CLAIMS.labels("hit").inc()
                self._export()
                return slot
            self._drop(slot)  # died while waiting: never hand it out
        if self.size > 0:
            metrics.POOL_CLAIMS.labels("miss").inc()
        self._export()
        return None

    def give_back(self, slot: Slot) -> None:
        """A claimed slot that no session took (the create failed before the kernel was used)."""
        self._ready.insert(0, slot)
        self._export()

    def owns(self, session_id: str) -> bool:
        return any(slot.session_id == session_id for slot in self._ready)

    def forget(self, session_id: str) -> None:
        """The engine says a pool kernel died or was removed: drop its slot and make another."""
        for slot in [slot for slot in self._ready if slot.session_id == session_id]:
            self._ready.remove(slot)
            self._drop(slot)
        self._wanted.set()
        self._export()

    def _drop(self, slot: Slot) -> None:
        task = asyncio.ensure_future(self._discard(slot))
        self._dropping.add(task)
        task.add_done_callback(self._dropping.discard)

    async def close(self) -> None:
        """Stop refilling and remove every unclaimed kernel (they hold no one's work).

        A kernel being started is let finish first (within the start timeout), then removed: cancelling
        its start could leave a container the engine creates after the cancellation."""
        self._closing = True
        if self._task is not None:
            if not self._making:
                self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        slots, self._ready = self._ready, []
        await asyncio.gather(
            *(self._discard(slot) for slot in slots), *self._dropping, return_exceptions=True
        )
        self._export()

    async def _refill_forever(self) -> None:
        while not self._closing:
            await self._wanted.wait()
            self._wanted.clear()
            while not self._closing and len(self._ready) < min(self.size, self._room()):
                await self._wait_for_users()
                if not await self._refill_one():
                    break

    async def _wait_for_users(self) -> None:
        """User cold starts go first: refill only while none is running."""
        await self._users_idle.wait()

    async def _refill_one(self) -> bool:
        self._making = True
        try:
            slot = await self._make()
        except Exception as exc:
            self._making = False  # the retry's wait may be cancelled
            delay = RETRY_DELAYS[min(self._failures, len(RETRY_DELAYS) - 1)]
            self._failures += 1
            log.warning("warm pool: could not start a kernel (%s); retrying in %.0f s", exc, delay)
            await asyncio.sleep(delay)
            self._wanted.set()
            return False
        finally:
            self._making = False
        self._failures = 0
        self._ready.append(slot)
        self._export()
        return True

    def _export(self) -> None:
        metrics.POOL_READY.set(len(self._ready))
