"""A thread pool for file work shared by all tenants, where no tenant can take every thread.

File operations block (they run on threads), and a tenant whose workspace holds 300,000 files makes its
listings slow.  On a plain shared pool its calls would queue ahead of everyone else's; here each tenant
has at most :data:`PER_TENANT` calls on the pool at once and waits for its own turn beyond that, so the
other tenants always find a free thread.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol, TypeVar

WORKERS = 8
PER_TENANT = 2

_T = TypeVar("_T")


class Runner(Protocol):
    """``await run(function, *args)``: ``function(*args)`` on a thread."""

    def __call__(self, function: Callable[..., _T], /, *args: Any) -> Awaitable[_T]: ...


class FairPool:
    def __init__(self, workers: int = WORKERS, per_tenant: int = PER_TENANT) -> None:
        self.per_tenant = per_tenant
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="files")
        self._slots: dict[str, asyncio.Semaphore] = {}
        self._users: dict[str, int] = {}

    async def run(self, tenant: str, function: Callable[..., _T], *args: Any) -> _T:
        """``function(*args)`` on the pool, once ``tenant`` has fewer than ``per_tenant`` calls on it."""
        slots = self._slots.setdefault(tenant, asyncio.Semaphore(self.per_tenant))
        self._users[tenant] = self._users.get(tenant, 0) + 1
        try:
            async with slots:
                return await asyncio.get_running_loop().run_in_executor(self._pool, function, *args)
        finally:
            self._users[tenant] -= 1
            if not self._users[tenant]:  # forget idle tenants
                del self._users[tenant], self._slots[tenant]

    def runner(self, tenant: str) -> Runner:
        async def run(function: Callable[..., _T], *args: Any) -> _T:
            return await self.run(tenant, function, *args)

        return run

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
