"""What each run of a session did: its number, its file change-set and the resources it used.

The session manager hands one :class:`RunInfo` to each execute; the kernel's queue calls ``before`` once
the run's turn has come and ``after`` once it ended, before its ``done`` event goes out.  The blocking work
(walking the workspace, reading the cgroup) runs in a worker thread, one hop before and one after.
Nothing here may fail a run: a problem leaves ``files`` or ``resources`` empty and is logged.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

from workbench.changes import ChangeLimits, Snapshot, diff, snapshot
from workbench.history import HistoryLog
from workbench.kernels.execution import Execution
from workbench.kernels.resources import CgroupMeter, Reading, unmeasured

log = logging.getLogger(__name__)

KEEP_MAX_FILES = 10_000


class Meters:
    """The cgroup meter of each kernel container, found once."""

    def __init__(self) -> None:
        self._found: dict[str, CgroupMeter | None] = {}

    def get(self, kernel_id: str | None) -> CgroupMeter | None:
        """Blocking (a few ``stat`` calls the first time for a kernel)."""
        if kernel_id is None:
            return None
        if kernel_id not in self._found:
            if len(self._found) > 4096:
                self._found.clear()
            self._found[kernel_id] = CgroupMeter.find(kernel_id)
        return self._found[kernel_id]


class LastSnapshots:
    """The workspace snapshot each session's last run ended with, the start of its next run.

    So a run costs one scan of the workspace, not two, and what the kernel changes between runs (a
    background thread) is reported with the next run instead of never.  A file operation of the API
    forgets the session's snapshot (its changes are not the kernel's), and a snapshot taken while one
    was under way is not kept.  Used from worker threads: plain dict operations only.  Snapshots of more
    than ``KEEP_MAX_FILES`` files are not kept (memory: about 300 bytes a file), so bigger workspaces pay
    two scans per run.
    """

    def __init__(self) -> None:
        self._last: dict[str, Snapshot] = {}
        self._generation: dict[str, int] = {}

    def take(self, session_id: str) -> Snapshot | None:
        return self._last.pop(session_id, None)

    def generation(self, session_id: str) -> int:
        return self._generation.get(session_id, 0)

    def keep(self, session_id: str, taken: Snapshot, generation: int) -> None:
        if (
            taken.complete
            and len(taken.files) <= KEEP_MAX_FILES
            and self.generation(session_id) == generation
        ):
            self._last[session_id] = taken

    def forget(self, session_id: str) -> None:
        self._generation[session_id] = self.generation(session_id) + 1
        self._last.pop(session_id, None)

    def drop(self, session_id: str) -> None:
        """The session is gone."""
        self._generation.pop(session_id, None)
        self._last.pop(session_id, None)


class RunInfo:
    """The :class:`~workbench.kernels.runtime.RunHooks` of one run."""

    def __init__(
        self,
        session_id: str,
        *,
        history: HistoryLog,
        meters: Meters,
        snapshots: LastSnapshots,
        workspace: Path,
        limits: ChangeLimits | None,
        memory_limit_mb: int,
    ) -> None:
        self.session_id = session_id
        self.history = history
        self.meters = meters
        self.snapshots = snapshots
        self.workspace = workspace
        self.limits = limits
        self.memory_limit_mb = memory_limit_mb
        self.n: int | None = None
        self._before: Snapshot | None = None
        self._meter: CgroupMeter | None = None
        self._reading: Reading | None = None

    async def before(self, kernel_id: str | None) -> None:
        try:
            self.n = await self.history.next_n(self.session_id)
            await asyncio.get_running_loop().run_in_executor(None, self._begin, kernel_id)
        except Exception:
            log.exception("session %s: could not prepare the run's report", self.session_id)

    def _begin(self, kernel_id: str | None) -> None:
        self._meter = self.meters.get(kernel_id)
        if self._meter is not None:
            self._reading = self._meter.begin()
        if self.limits is not None:
            last = self.snapshots.take(self.session_id)
            self._before = last if last is not None else snapshot(self.workspace, self.limits.max_files)

    async def after(self, execution: Execution) -> None:
        result = execution.result
        if result is None:
            return
        result.n = self.n
        try:
            loop = asyncio.get_running_loop()
            files, resources = await loop.run_in_executor(None, self._end, result.reason)
        except Exception:
            log.exception("session %s: could not report on the run", self.session_id)
            return
        result.files, result.resources = files, resources

    def _end(self, reason: str | None) -> tuple[dict[str, Any] | None, dict[str, Any]]:
        resources = unmeasured(reason, self.memory_limit_mb)
        if self._meter is not None and self._reading is not None:
            measured = self._meter.end(self._reading, self.memory_limit_mb)
            if measured["peak_memory_mb"] is not None:
                resources = measured
        files = None
        if self.limits is not None and self._before is not None:
            generation = self.snapshots.generation(self.session_id)
            after = snapshot(self.workspace, self.limits.max_files)
            files = diff(self.workspace, self._before, after, self.limits)
            self.snapshots.keep(self.session_id, after, generation)
        return files, resources
