"""The reaper: stops idle kernels and expires forgotten sessions, driven by the database.

Every sweep reads the live sessions and decides from their ``last_activity_at``; it is idempotent (two
sweeps, or two servers, do the same thing), and a failure on one session is logged and retried on the
next sweep without stopping the others.

Rules (see the README): activity is creating, executing, file operations, interrupt, restart and opening
a WebSocket.  A connected but silent client does not count, so it cannot keep a session alive forever.
A kernel that is running code is never culled or expired.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging

from workbench.db.models import SessionRow, utcnow
from workbench.sessions import SessionManager, isoformat

log = logging.getLogger(__name__)


class Reaper:
    def __init__(self, manager: SessionManager) -> None:
        self.manager = manager
        self.settings = manager.settings
        self._warned: set[tuple[str, str, dt.datetime]] = set()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.reap_interval)
            try:
                await self.sweep()
            except Exception:  # the database may be briefly unreachable: try again next time
                log.exception("reaper sweep failed")

    async def sweep(self) -> None:
        now = utcnow()
        for row in await self.manager.db.list_sessions():
            try:
                await self._consider(row, now)
            except Exception:
                log.exception("session %s: reaper step failed (will retry)", row.id)

    async def _consider(self, row: SessionRow, now: dt.datetime) -> None:
        if self.manager.is_busy(row.id):
            return
        expires = row.last_activity_at + dt.timedelta(seconds=self.settings.session_ttl)
        culls = row.last_activity_at + dt.timedelta(seconds=row.idle_timeout)
        if now >= expires:
            log.info("session %s: expired after %d s without activity", row.id, self.settings.session_ttl)
            await self.manager.expire(row.id)
        elif row.status == "ready" and now >= culls:
            log.info("session %s: stopping its kernel, idle for %d s", row.id, row.idle_timeout)
            await self.manager.cull(row.id)
        else:
            self._warn(row, "expire", expires, now)
            if row.status == "ready":
                self._warn(row, "stop", culls, now)

    def _warn(self, row: SessionRow, action: str, due: dt.datetime, now: dt.datetime) -> None:
        """Tell connected clients, once, that the session will be stopped or expired soon."""
        if (due - now).total_seconds() > self.settings.expiring_notice or (
            row.id,
            action,
            due,
        ) in self._warned:
            return
        self._warned.add((row.id, action, due))
        archive = f"/api/v1/sessions/{row.id}/archive"  # where a client can save the files first
        self.manager.notify(
            row.id, {"type": "expiring", "at": isoformat(due), "action": action, "archive": archive}
        )
