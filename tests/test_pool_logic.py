"""The warm pool's bookkeeping, with fake kernels (the real ones are in test_pool.py)."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any, cast

from workbench.kernels.runtime import SessionKernel
from workbench.pool import Slot, WarmPool


class FakeKernel:
    def __init__(self) -> None:
        self.state = "idle"


class Harness:
    def __init__(self, size: int, room: int = 100) -> None:
        self.numbers = itertools.count()
        self.made: list[Slot] = []
        self.discarded: list[str] = []
        self.room = room
        self.users_idle = asyncio.Event()
        self.users_idle.set()
        self.gate: asyncio.Event | None = None
        self.pool = WarmPool(size, make=self.make, discard=self.discard, room=lambda: self.room,
                             users_idle=self.users_idle)  # fmt: skip

    async def make(self) -> Slot:
        if self.gate is not None:
            await self.gate.wait()
        slot = Slot(f"session-{next(self.numbers)}", cast(SessionKernel, FakeKernel()))
        self.made.append(slot)
        return slot

    async def discard(self, slot: Slot) -> None:
        self.discarded.append(slot.session_id)


async def settle(condition: Any, timeout: float = 5) -> None:
    async def poll() -> None:
        while not condition():
            await asyncio.sleep(0.01)

    await asyncio.wait_for(poll(), timeout)


async def test_fills_to_its_size_and_never_hands_a_slot_out_twice() -> None:
    harness = Harness(size=3)
    harness.pool.start()
    await settle(lambda: harness.pool.ready == 3)
    claimed = [harness.pool.claim() for _ in range(6)]
    await settle(lambda: harness.pool.ready == 3)
    ids = [slot.session_id for slot in claimed if slot is not None]
    assert len(ids) == len(set(ids)) >= 3
    assert not {slot.session_id for slot in harness.pool._ready} & set(ids)
    await harness.pool.close()
    assert len(harness.discarded) == 3


async def test_an_empty_pool_answers_none() -> None:
    harness = Harness(size=0)
    harness.pool.start()
    assert harness.pool.claim() is None
    await harness.pool.close()
    assert harness.made == []


async def test_a_dead_slot_is_discarded_not_handed_out() -> None:
    harness = Harness(size=1)
    harness.pool.start()
    await settle(lambda: harness.pool.ready == 1)
    harness.made[0].kernel.state = "dead"
    first = harness.pool.claim()
    assert first is None
    await settle(lambda: harness.discarded == ["session-0"])
    await settle(lambda: harness.pool.ready == 1)
    second = harness.pool.claim()
    assert second is not None
    assert second.session_id == "session-1"
    await harness.pool.close()


async def test_refill_waits_while_users_start_kernels_and_respects_room() -> None:
    harness = Harness(size=4, room=2)
    harness.users_idle.clear()
    harness.pool.start()
    await asyncio.sleep(0.2)
    assert harness.made == []
    harness.users_idle.set()
    await settle(lambda: harness.pool.ready == 2)
    await asyncio.sleep(0.1)
    assert len(harness.made) == 2
    await harness.pool.close()


async def test_forget_drops_a_slot_the_engine_lost() -> None:
    harness = Harness(size=2)
    harness.pool.start()
    await settle(lambda: harness.pool.ready == 2)
    assert harness.pool.owns("session-0")
    harness.pool.forget("session-0")
    assert not harness.pool.owns("session-0")
    await settle(lambda: harness.pool.ready == 2 and "session-0" in harness.discarded)
    await harness.pool.close()


async def test_close_lets_a_kernel_being_started_finish_then_removes_it() -> None:
    harness = Harness(size=1)
    harness.gate = asyncio.Event()
    harness.pool.start()
    await asyncio.sleep(0.05)  # the refill is now inside make(), held by the gate
    closing = asyncio.ensure_future(harness.pool.close())
    await asyncio.sleep(0.05)
    assert not closing.done()  # a start is never cancelled half-way (the engine could finish it later)
    harness.gate.set()
    await asyncio.wait_for(closing, 5)
    assert harness.discarded == ["session-0"]
    assert harness.pool.ready == 0
