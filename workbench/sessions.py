"""The session manager: the one place that ties database rows, kernels and workspaces together."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import functools
import logging
import os
import shutil
import uuid
from collections.abc import Callable, Coroutine, Mapping
from pathlib import Path
from typing import Any

from workbench import metrics, variables
from workbench.admission import Ticket, check_code, stored_code
from workbench.auth import Principal
from workbench.changes import ChangeLimits
from workbench.config import Settings
from workbench.db.models import ExecutionRow, SessionRow, utcnow
from workbench.db.store import CapReached, Database
from workbench.errors import Conflict, Invalid, KernelFailed, LimitReached, NotFound, WorkbenchError
from workbench.fairness import FairPool
from workbench.history import HistoryLog, kept_outputs
from workbench.kernels.connection import read_json, runtime_dir_for
from workbench.kernels.execution import Event, ExecutionResult
from workbench.kernels.launcher import ContainerLimits, KernelLauncher, LaunchRequest
from workbench.kernels.library_mount import attach_library, detach_library, prepare_slots
from workbench.kernels.runtime import Listener, SessionKernel
from workbench.library import Library, library_key
from workbench.pool import Slot, WarmPool
from workbench.reattach import Reattach
from workbench.runinfo import LastSnapshots, Meters, RunInfo
from workbench.usage import CachedUsage
from workbench.volumes import Volumes
from workbench.workspace import FileEntry, Workspace, wipe

log = logging.getLogger(__name__)

# "session_<uuid4>" matches jupyter_server's kernel-id pattern (\w+-\w+-\w+-\w+-\w+): a session id is a
# Jupyter kernel id as it is (JupyterLab in gateway mode routes nothing else). Older ids: "session-<uuid4>".
SESSION_ID_PREFIX = "session_"
CULLED = "idle-culled"
Unsubscribe = Callable[[], None]
MIN_CPUS = 0.1  # below this a kernel cannot even start within the start timeout
VARIABLES_TIMEOUT = 10.0  # seconds the kernel gets to list its variables before it is interrupted


def isoformat(moment: dt.datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


class SessionManager:
    def __init__(self, settings: Settings, db: Database, launcher: KernelLauncher) -> None:
        self.settings = settings
        self.db = db
        self.launcher = launcher
        self.kernels: dict[str, SessionKernel] = {}
        self._owners: dict[str, str] = {}
        self.owner = (settings.kernel_uid, settings.kernel_uid) if os.geteuid() == 0 else None
        self._blocking = asyncio.get_running_loop().run_in_executor
        self._background: set[asyncio.Task[Any]] = set()
        self.reattach = Reattach()
        self.volumes = Volumes(settings.state_dir / "volumes", mode=settings.workspace_fs,
                               quota_bytes=settings.workspace_quota_mb * 2**20, owner=self.owner)  # fmt: skip
        self._cold_starts = 0
        self._no_cold_starts = asyncio.Event()
        self._no_cold_starts.set()
        self.pool = WarmPool(
            settings.pool_size,
            make=self._make_slot,
            discard=self._discard_slot,
            room=self._pool_room,
            users_idle=self._no_cold_starts,
        )
        self.history = HistoryLog(db, budget_bytes=settings.history_output_kb * 1024)
        self._meters = Meters()
        self._snapshots = LastSnapshots()
        self.files = FairPool()  # file work, fair between tenants
        self.usage = CachedUsage()  # the upload quota's usage figures (a single seam)

    def _spawn(self, work: Coroutine[Any, Any, Any]) -> None:
        """Run bookkeeping in the background, keeping a reference until it is done."""
        task = asyncio.ensure_future(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # paths

    def workspace_path(self, session_id: str) -> Path:
        return self.settings.workspaces_dir / session_id

    def runtime_path(self, session_id: str) -> Path:
        return runtime_dir_for(self.settings.runtime_dir, session_id)

    def connection_path(self, session_id: str) -> Path:
        return self.settings.connections_dir / f"{session_id}.json"

    def link_path(self, session_id: str) -> Path:
        """The server's links to the kernel's sockets (see ``kernels.sockets``): out of the kernel's reach."""
        return self.settings.state_dir / "links" / self.runtime_path(session_id).name

    def library_path(self, tenant: str) -> Path:
        return self.settings.library_dir / library_key(tenant)

    def prepare_state_dir(self) -> None:
        for path, mode in (
            (self.settings.state_dir, 0o711),
            (self.settings.workspaces_dir, 0o711),
            (self.settings.runtime_dir, 0o711),
            (self.settings.connections_dir, 0o700),
            (self.settings.state_dir / "links", 0o700),
            (self.settings.library_dir, 0o711),
        ):
            path.mkdir(parents=True, exist_ok=True)
            path.chmod(mode)
        if self.pool.size > 0:
            try:
                prepare_slots(self.settings.library_slots_dir)
            except OSError as exc:
                log.warning(
                    "warm pool disabled: warm kernels need /library slot mounts (%s); run as root", exc
                )
                self.pool.size = 0

    def _make_private_dir(self, path: Path, mode: int) -> None:
        path.mkdir(mode=mode, exist_ok=True)
        if self.owner is not None:
            os.chown(path, *self.owner)
        path.chmod(mode)

    # views

    def to_json(self, row: SessionRow) -> dict[str, Any]:
        kernel = self.kernels.get(row.id)
        if self.reattach.pending_for(row.id):
            state = "starting"  # listed while its kernel is being re-attached after a server restart
        elif row.status in ("ready", "starting") and kernel is not None:
            state = "busy" if kernel.busy else kernel.state
        else:
            state = {"stopped": "stopped", "starting": "starting"}.get(row.status, "dead")
        return {
            "id": row.id,
            "status": row.status,
            "created_at": isoformat(row.created_at),
            "last_activity_at": isoformat(row.last_activity_at),
            "expires_at": isoformat(row.last_activity_at + dt.timedelta(seconds=self.settings.session_ttl)),
            "kernel": {"state": state},
            "limits": {"memory_mb": row.memory_mb, "cpus": row.cpus, "idle_timeout": row.idle_timeout},
            "metadata": row.metadata_,
        }

    # lookups

    async def get_row(self, session_id: str) -> SessionRow:
        await self.reattach.wait(session_id)
        row = await self.db.get_session(session_id) if _plausible_id(session_id) else None
        if row is None or row.status == "deleted":
            raise _unknown(session_id)
        return row

    async def check_access(self, session_id: str, principal: Principal) -> None:
        """A tenant may touch only its own sessions; any other id is as unknown as a made-up one."""
        if principal.admin:
            return
        owner = self._owners.get(session_id)
        if owner != principal.name:  # unknown and foreign ids take the same path: one database lookup
            row = await self.db.get_session(session_id) if _plausible_id(session_id) else None
            if row is None or row.tenant != principal.name:
                raise _unknown(session_id)

    async def get_live_row(self, session_id: str) -> SessionRow:
        row = await self.get_row(session_id)
        if row.status in ("expired", "failed"):
            msg = f"session {session_id!r} is {row.status}"
            raise NotFound(msg, code=f"session-{row.status}")
        return row

    async def workspace(self, session_id: str) -> Workspace:
        """The session's workspace, for file operations (a stopped session's files are still there)."""
        await self.get_live_row(session_id)
        self._snapshots.forget(session_id)  # the next run's change-set starts from a fresh scan
        settings = self.settings
        return Workspace(self.workspace_path(session_id), quota_bytes=settings.workspace_quota_mb * 2**20,
                         max_upload_bytes=settings.max_upload_mb * 2**20,
                         allowed_extensions=settings.upload_extensions, owner=self.owner,
                         meter=self.usage)  # fmt: skip

    async def library(self, principal: Principal) -> Library:
        """The caller's tenant library (made on first use), for file operations."""
        return await self._library(principal.name)

    async def _library(self, tenant: str) -> Library:
        settings = self.settings
        library = Library(self.library_path(tenant), quota_bytes=settings.library_quota_mb * 2**20,
                          max_upload_bytes=settings.max_upload_mb * 2**20,
                          allowed_extensions=settings.upload_extensions)  # fmt: skip
        await self._blocking(None, library.ensure)
        return library

    async def publish(self, principal: Principal, session_id: str, path: str, target: str) -> FileEntry:
        """Copy the file ``path`` of one of the caller's sessions to ``target`` in the caller's library."""
        await self.check_access(session_id, principal)
        workspace = await self.workspace(session_id)
        library = await self.library(principal)
        await self.touch(session_id, "file-publish", path)
        entry: FileEntry = await self._blocking(None, library.publish, workspace, path, target)
        return entry

    async def touch(self, session_id: str, kind: str, detail: str | None = None) -> None:
        """Record activity on a session (file operations, connections)."""
        await self.db.touch(session_id, kind, detail)

    async def list(self, principal: Principal) -> list[SessionRow]:
        return await self.db.list_sessions(tenant=None if principal.admin else principal.name)

    # create

    def _limits(self, body: Mapping[str, Any]) -> tuple[int, float, int, dict[str, Any]]:
        unknown = set(body) - {"idle_timeout", "memory_mb", "cpus", "metadata"}
        if unknown:
            msg = f"unknown field(s): {', '.join(sorted(unknown))}"
            raise Invalid(msg)
        settings = self.settings
        memory = _number(body, "memory_mb", settings.memory_mb, minimum=64, integer=True)
        cpus = _number(body, "cpus", settings.cpus, minimum=MIN_CPUS)
        idle = _number(body, "idle_timeout", settings.idle_timeout, minimum=1, integer=True)
        metadata = body.get("metadata", {})
        if not isinstance(metadata, dict):
            msg = "metadata must be an object"
            raise Invalid(msg)
        if len(repr(metadata)) > 16384:
            msg = "metadata is larger than 16 KiB"
            raise Invalid(msg)
        return (
            int(min(memory, settings.max_memory_mb)),
            float(min(cpus, settings.max_cpus)),
            int(min(idle, settings.max_idle_timeout)),
            metadata,
        )

    async def create(self, body: Mapping[str, Any], principal: Principal) -> SessionRow:
        memory_mb, cpus, idle_timeout, metadata = self._limits(body)
        if principal.max_memory_mb is not None:
            memory_mb = min(memory_mb, principal.max_memory_mb)
        slot = self.pool.claim()
        now = utcnow()
        try:
            row = await self._add_within_caps(
                SessionRow(
                    id=slot.session_id if slot is not None else new_session_id(),
                    status="starting",
                    created_at=now,
                    last_activity_at=now,
                    tenant=principal.name,
                    memory_mb=memory_mb,
                    cpus=cpus,
                    idle_timeout=idle_timeout,
                    metadata_=metadata,
                ),
                principal,
            )
        except BaseException:
            if slot is not None:
                self.pool.give_back(slot)
            raise
        if slot is not None and await self._adopt(row, slot):
            return await self._mark_ready(row.id, slot.kernel)
        return await self._cold_start(row)

    async def _adopt(self, row: SessionRow, slot: Slot) -> bool:
        """Hand a warm kernel to a new session, with the limits it asked for (a restart is cold)."""
        limits = self._container_limits(row)
        request = slot.kernel.request
        library = await self._library(row.tenant)
        try:
            if limits != request.limits:
                await self.launcher.update_limits(slot.kernel.kernel_id or "", limits)
            assert request.library is not None
            await self._blocking(None, attach_library, request.library, library.root)
        except Exception:
            log.exception("session %s: could not fit a warm kernel to its session; starting cold", row.id)
            await self._discard_slot(slot)
            return False
        slot.kernel.request = dataclasses.replace(request, limits=limits, library=library.root, pooled=False)
        self._register(row, slot.kernel)
        return True

    async def _cold_start(self, row: SessionRow) -> SessionRow:
        kernel = self._kernel_for(row)
        self._cold_starts += 1
        self._no_cold_starts.clear()
        try:
            await self._library(row.tenant)
            await self._provision(kernel.request)
            await kernel.start()
        except BaseException as exc:
            await self._discard(row.id, "failed", reason=str(exc)[:200])
            if isinstance(exc, WorkbenchError | asyncio.CancelledError):
                raise
            log.exception("session %s: kernel start failed", row.id)
            msg = "could not start the kernel"
            raise KernelFailed(msg) from exc
        finally:
            self._cold_starts -= 1
            if not self._cold_starts:
                self._no_cold_starts.set()
        return await self._mark_ready(row.id, kernel)

    async def _provision(self, request: LaunchRequest) -> None:
        """The kernel's workspace and runtime directory, before its container starts."""
        await self._blocking(None, self._make_private_dir, request.workspace, 0o770)
        await self._blocking(None, self._make_private_dir, request.runtime_dir, 0o700)
        await self._blocking(None, self._volume_call, self.volumes.provision, request.session_id)

    # the warm pool

    async def _make_slot(self) -> Slot:
        session_id = new_session_id()
        library_slot = self.settings.library_slots_dir / session_id
        kernel = self._new_kernel(session_id, self._container_limits(None), library=library_slot, pooled=True)
        slot = Slot(session_id, kernel)
        try:
            await self._blocking(None, functools.partial(library_slot.mkdir, mode=0o755))
            await self._provision(slot.kernel.request)
            await slot.kernel.start()
        except BaseException:
            await self._discard_slot(slot)
            raise
        return slot

    async def _discard_slot(self, slot: Slot) -> None:
        try:
            await slot.kernel.stop(remove=True, reason="discarded")
        finally:
            await self._blocking(None, self._remove_files, slot.session_id)

    def _pool_room(self) -> int:
        """Kernels the engine may still take: the pool counts towards ``max_sessions``."""
        return self.settings.max_sessions - self.running_kernels()

    async def _add_within_caps(self, row: SessionRow, principal: Principal) -> SessionRow:
        """Insert the row if the server and the tenant are both below their caps (one transaction)."""
        try:
            return await self.db.add_session_capped(
                row, max_live=self.settings.max_sessions, max_for_tenant=principal.max_sessions
            )
        except CapReached as full:
            if full.scope == "tenant":
                msg = f"tenant {principal.name!r} may run at most {principal.max_sessions} live sessions"
                raise LimitReached(msg, code="tenant-limit-reached", headers={"Retry-After": "30"}) from None
            msg = f"this server runs at most {self.settings.max_sessions} live sessions"
            raise LimitReached(msg, headers={"Retry-After": "30"}) from None

    async def _mark_ready(self, session_id: str, kernel: SessionKernel) -> SessionRow:
        row = await self.db.update_session(
            session_id,
            status="ready",
            container_id=kernel.kernel_id,
            kernel_started_at=utcnow(),
            status_reason=None,
        )
        assert row is not None
        return row

    def _kernel_for(self, row: SessionRow) -> SessionKernel:
        kernel = self.kernels.get(row.id)
        if kernel is None:
            kernel = self._new_kernel(
                row.id, self._container_limits(row), library=self.library_path(row.tenant)
            )
            if row.status == "stopped":
                kernel.down_reason = row.status_reason or "stopped"
            self._register(row, kernel)
        return kernel

    def _container_limits(self, row: SessionRow | None) -> ContainerLimits:
        """A session's limits; without a row, the defaults a warm kernel starts with."""
        settings = self.settings
        return ContainerLimits(
            memory_mb=row.memory_mb if row is not None else settings.memory_mb,
            cpus=row.cpus if row is not None else settings.cpus,
            pids_limit=settings.pids_limit,
            tmp_mb=settings.tmp_mb,
            shm_mb=settings.shm_mb,
        )

    def _new_kernel(
        self, session_id: str, limits: ContainerLimits, *, library: Path, pooled: bool = False
    ) -> SessionKernel:
        request = LaunchRequest(
            session_id=session_id,
            workspace=self.workspace_path(session_id),
            runtime_dir=self.runtime_path(session_id),
            limits=limits,
            library=library,
            pooled=pooled,
        )
        return SessionKernel(
            request,
            self.launcher,
            connection_file=self.connection_path(session_id),
            link_dir=self.link_path(session_id),
            owner=self.owner,
            start_timeout=self.settings.start_timeout,
            interrupt_grace=self.settings.interrupt_grace,
            max_output_bytes=self.settings.max_output_kb * 1024,
        )

    def _register(self, row: SessionRow, kernel: SessionKernel) -> None:
        kernel.subscribe(self._kernel_news(row.id))
        self.kernels[row.id] = kernel
        self._owners[row.id] = row.tenant

    def _kernel_news(self, session_id: str) -> Listener:
        """Keep the row's container id in step when a kernel is replaced behind a request's back."""

        def on_event(event: Event) -> None:
            if event["type"] == "kernel" and event["state"] == "dead":
                metrics.KERNEL_DEATHS.labels(event["reason"]).inc()
            if event["type"] == "kernel" and event["state"] == "idle":
                kernel = self.kernels.get(session_id)
                if kernel is not None:
                    self._spawn(
                        self.db.update_session(
                            session_id,
                            status="ready",
                            container_id=kernel.kernel_id,
                            kernel_started_at=utcnow(),
                        )
                    )

        return on_event

    # running kernels

    async def session_kernel(self, session_id: str) -> SessionKernel:
        """The session's kernel object, whether or not a kernel runs (subscribe before starting one)."""
        return self._kernel_for(await self.get_live_row(session_id))

    async def kernel(self, session_id: str) -> SessionKernel:
        """The session's kernel, started again if it was stopped (idle cull, vanished container)."""
        kernel = self.kernels.get(session_id)
        if kernel is not None and kernel.state not in ("stopped", "dead"):
            return kernel  # the hot path: no database round trip
        row = await self.get_live_row(session_id)
        kernel = self._kernel_for(row)
        if kernel.state in ("stopped", "dead"):
            await self._blocking(None, self._volume_call, self.volumes.ensure, session_id)
            await self._library(row.tenant)
            await kernel.ensure_running()
            await self._mark_ready(session_id, kernel)
        return kernel

    async def execute(
        self,
        session_id: str,
        code: str,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 (a time limit for the code, not a wait)
        request_id: str | None = None,
        source: str = "rest",
        allow_stdin: bool = False,
        files: bool = True,
        message: dict[str, Any] | None = None,
        ticket: Ticket | None = None,
    ) -> ExecutionResult:
        """Run ``code``; ``files=False`` skips the run's file change-set; ``ticket`` is its place in the
        session's queue if the caller took one already."""
        timeout = self.execute_timeout(timeout)
        check_code(code, self.settings.max_code_kb)
        kernel = await self.kernel(session_id)
        ticket = ticket or kernel.admission.admit()
        execution_id = uuid.uuid4().hex
        request_id = request_id or execution_id
        info = self._run_info(session_id, kernel, files)
        try:
            execution = await kernel.execute(
                request_id, code, timeout=timeout, allow_stdin=allow_stdin, hooks=info, message=message
            )
        finally:
            ticket.release()
        result = execution.complete()
        metrics.EXECUTIONS.labels(result.status).inc()
        metrics.EXECUTION_SECONDS.observe(result.duration_ms / 1000)
        finished = utcnow()
        error = result.error or {}
        # One write per execution, batched off the hot path (the history writer keeps them in order).
        self.history.record(ExecutionRow(
            id=execution_id, session_id=session_id, request_id=request_id, source=source,
            code=stored_code(code),
            status=result.status, execution_count=result.execution_count,
            started_at=finished - dt.timedelta(milliseconds=result.duration_ms), finished_at=finished,
            duration_ms=result.duration_ms, output_bytes=execution.output_bytes, truncated=result.truncated,
            error_name=error.get("ename"), error_value=error.get("evalue"), n=result.n,
            reason=result.reason and result.reason[:200], files=result.files, resources=result.resources,
            outputs=kept_outputs(execution), outputs_cut=result.truncated,
        ))  # fmt: skip
        return result

    def _run_info(self, session_id: str, kernel: SessionKernel, files: bool) -> RunInfo:
        settings = self.settings
        limits = ChangeLimits(
            max_files=settings.changes_max_files,
            max_entries=settings.changes_max_entries,
            hash_max_bytes=settings.changes_hash_kb * 1024,
        )
        return RunInfo(
            session_id,
            history=self.history,
            meters=self._meters,
            snapshots=self._snapshots,
            workspace=self.workspace_path(session_id),
            limits=limits if files and settings.changes else None,
            memory_limit_mb=kernel.request.limits.memory_mb,
        )

    async def variables(self, session_id: str, *, limit: int, wait: float) -> dict[str, Any]:
        """The kernel's user namespace (see ``workbench.variables``); a stopped kernel has none.

        Waits at most ``wait`` seconds for the running execution to end (else 409 ``kernel-busy``).
        """
        await self.get_live_row(session_id)
        kernel = self.kernels.get(session_id)
        expressions = {"variables": variables.expression(limit)}
        try:
            reply = (
                None
                if kernel is None
                else await kernel.inspect(expressions, wait=max(wait, 0.1), timeout=VARIABLES_TIMEOUT)
            )
        except TimeoutError:
            msg = f"the kernel was still busy after {wait:g} s; try again when it is idle"
            raise Conflict(msg, code="kernel-busy", headers={"Retry-After": "5"}) from None
        if reply is None:
            return {"variables": [], "count": 0, "truncated": False, "partial": False, "kernel": "stopped"}
        answer = variables.parse(reply)
        count = reply.get("content", {}).get("execution_count")
        answer["execution_count"] = count if isinstance(count, int) else None
        return answer

    def execute_timeout(self, requested: float | None) -> float:
        if requested is None:
            return self.settings.execute_timeout
        if isinstance(requested, bool) or not isinstance(requested, int | float) or requested <= 0:
            msg = "timeout must be a positive number of seconds"
            raise Invalid(msg)
        return float(min(requested, self.settings.max_execute_timeout))

    async def interrupt(self, session_id: str) -> None:
        await self.get_live_row(session_id)
        kernel = self.kernels.get(session_id)
        if kernel is not None:
            await kernel.interrupt()
        await self.db.touch(session_id, "interrupt")

    async def restart(self, session_id: str) -> SessionRow:
        row = await self.get_live_row(session_id)
        kernel = self._kernel_for(row)
        await kernel.restart("restart")
        await self.db.touch(session_id, "restart")
        return await self._mark_ready(session_id, kernel)

    async def subscribe(self, session_id: str, listener: Listener, *, replay: bool = False) -> Unsubscribe:
        """Send every event of the session to ``listener`` (with ``replay``, first what the running
        execution has said so far); returns the call that stops it."""
        kernel = await self.session_kernel(session_id)
        kernel.subscribe(listener, replay=replay)
        return lambda: kernel.unsubscribe(listener)

    def admit(self, session_id: str) -> Ticket:
        """A place in the session's queue for one execute (``queue-full`` when it holds too many)."""
        kernel = self.kernels.get(session_id)
        if kernel is None:
            msg = "the session's kernel is not available"
            raise WorkbenchError(msg)
        return kernel.admission.admit()

    def send_input(self, session_id: str, value: str) -> None:
        """Answer the running execution's ``input()``."""
        kernel = self.kernels.get(session_id)
        if kernel is not None:
            kernel.send_input(value)

    async def connection_info(self, session_id: str) -> dict[str, Any]:
        """The kernel's Jupyter connection as seen from the server host (a stopped session gets a kernel)."""
        kernel = await self.kernel(session_id)
        info = await self._blocking(None, read_json, kernel.connection_file)
        if info is None:
            msg = "the kernel's connection file is missing"
            raise KernelFailed(msg)
        return info

    async def health(self) -> tuple[bool, bool]:
        """Are the container engine and the database reachable?"""
        engine, database = await asyncio.gather(self.launcher.ping(), self.db.ping())
        return engine, database

    async def count_by_status(self) -> dict[str, int]:
        return await self.db.count_by_status()

    def running_kernels(self) -> int:
        return sum(1 for kernel in self.kernels.values() if kernel.kernel_id and kernel.state != "stopped")

    def is_busy(self, session_id: str) -> bool:
        kernel = self.kernels.get(session_id)
        return kernel is not None and kernel.busy

    def notify(self, session_id: str, event: Event) -> None:
        """Send ``event`` to every client connected to the session."""
        kernel = self.kernels.get(session_id)
        if kernel is not None:
            kernel.publish(event)

    async def cull(self, session_id: str) -> None:
        """Stop an idle kernel; the files stay and the next execute starts a fresh kernel."""
        kernel = self.kernels.get(session_id)
        if kernel is not None:
            await kernel.stop(remove=True, reason=CULLED)
        else:
            await self._remove_containers(session_id)
        await self.db.update_session(session_id, status="stopped", status_reason=CULLED, container_id=None)
        metrics.KERNELS_CULLED.inc()

    async def expire(self, session_id: str) -> None:
        await self._discard(session_id, "expired", reason="no activity for the session TTL")
        metrics.SESSIONS_EXPIRED.inc()

    async def delete(self, session_id: str) -> None:
        await self.get_row(session_id)
        await self._discard(session_id, "deleted")

    async def _discard(self, session_id: str, status: str, reason: str | None = None) -> None:
        """Remove the kernel, the workspace and the runtime files; the row stays for audit."""
        kernel = self.kernels.pop(session_id, None)
        self._owners.pop(session_id, None)
        self._snapshots.drop(session_id)
        self.history.forget(session_id)
        if kernel is not None:
            await kernel.stop(remove=True, reason=status)
        else:
            await self._remove_containers(session_id)
        await self._blocking(None, self._remove_files, session_id)
        await self.launcher.discard(session_id)
        await self.db.update_session(
            session_id, status=status, status_reason=reason, ended_at=utcnow(), container_id=None
        )

    async def _remove_containers(self, session_id: str) -> None:
        kernel_id = (await self.launcher.kernels()).get(session_id)
        if kernel_id is not None:
            await self.launcher.remove(kernel_id)

    def _volume_call(self, action: Callable[[str, Path, Path], None], session_id: str) -> None:
        action(session_id, self.workspace_path(session_id), self.runtime_path(session_id))

    def _remove_files(self, session_id: str) -> None:
        self._volume_call(self.volumes.release, session_id)
        library_slot = self.settings.library_slots_dir / session_id
        if library_slot.exists():  # a session that started as a warm kernel
            detach_library(library_slot)
            library_slot.rmdir()
        workspace = self.workspace_path(session_id)
        self.usage.forget(workspace)
        if workspace.exists():
            wipe(workspace)
        shutil.rmtree(self.runtime_path(session_id), ignore_errors=True)
        wipe(self.link_path(session_id))
        self.connection_path(session_id).unlink(missing_ok=True)

    # the engine's news

    def on_kernel_gone(self, session_id: str, kernel_id: str, reason: str) -> None:
        """The engine says a kernel container died or was removed (maybe behind our back)."""
        if self.pool.owns(session_id):
            log.warning("warm kernel %s: container %s (%s)", session_id, kernel_id[:12], reason)
            self.pool.forget(session_id)
            return
        kernel = self.kernels.get(session_id)
        if kernel is not None and kernel.owns(kernel_id):
            log.warning("session %s: kernel container %s (%s)", session_id, kernel_id[:12], reason)
            self._spawn(kernel.handle_death(kernel_id, reason))

    # server start and stop

    async def begin_reconcile(self) -> None:
        """Before serving: mount the workspaces again (after a reboot), and note the sessions to re-attach,
        so that requests for them wait (``reconcile``)."""
        await self._reconcile_volumes()
        self.reattach.expect(row.id for row in await self.db.list_sessions(("starting", "ready")))

    async def reconcile(self) -> None:
        """Match database rows with the engine's labelled containers after a (re)start, a few sessions at
        a time, while the server already serves (requests for a session wait for its turn)."""
        try:
            containers = await self.launcher.kernels()
            rows = await self.db.list_sessions(("starting", "ready"))
            await self.reattach.run(
                [(row.id, self._reattach_one(row, containers.pop(row.id, None))) for row in rows]
            )
            stopped = {row.id for row in await self.db.list_sessions(("stopped",))}
            for session_id, kernel_id in containers.items():
                if session_id not in stopped:
                    log.info("removing orphan kernel container of %s", session_id)
                await self.launcher.remove(kernel_id)
            await self._remove_unclaimed_files()
        finally:
            self.reattach.release_all()

    async def _reattach_one(self, row: SessionRow, kernel_id: str | None) -> None:
        kernel = self._kernel_for(row)
        state = await self.launcher.state(kernel_id) if kernel_id else None
        if kernel_id is not None and state is not None and state.running and await kernel.attach(kernel_id):
            await self._mark_ready(row.id, kernel)
            log.info("session %s: re-attached to its running kernel", row.id)
            return
        if kernel_id is None or state is None:
            log.warning("session %s: its kernel container is gone; stopped (files kept)", row.id)
        else:
            log.warning("session %s: kernel container %s (%s) cannot be re-attached; removed, the session is "
                        "stopped (files kept)", row.id, kernel_id[:12], state.status)  # fmt: skip
            await self.launcher.remove(kernel_id)
        kernel.kernel_id = None
        kernel.down_reason = "vanished"
        await self.db.update_session(
            row.id, status="stopped", status_reason="kernel gone at server start", container_id=None
        )

    async def _remove_unclaimed_files(self) -> None:
        """Warm kernels left by a previous run (no row ever named them): their directories go too."""
        names = await self._blocking(None, _session_dirs, self.settings.workspaces_dir)
        unclaimed = set(names) - await self.db.known_ids(names) if names else set()
        for session_id in unclaimed:
            log.info("removing the files of an unclaimed warm kernel %s", session_id)
            await self._blocking(None, self._remove_files, session_id)

    async def _reconcile_volumes(self) -> None:
        """Mount again what a reboot unmounted; release the volumes of sessions that are gone."""
        kept = {row.id for row in await self.db.list_sessions(("starting", "ready", "stopped"))}
        for session_id in kept:
            try:
                await self._blocking(None, self._volume_call, self.volumes.ensure, session_id)
            except KernelFailed:
                log.exception("session %s: its workspace file system is not mounted", session_id)
        for session_id in set(await self._blocking(None, self.volumes.images)) - kept:
            await self._blocking(None, self._volume_call, self.volumes.release, session_id)

    async def close(self, *, stop_kernels: bool) -> None:
        await self.pool.close()
        await self.history.flush()
        for session_id, kernel in list(self.kernels.items()):
            try:
                if stop_kernels:
                    await kernel.stop(remove=True, reason="server-shutdown")
                    await self.db.update_session(session_id, status="stopped", container_id=None)
                else:
                    await kernel.detach()
            except Exception:
                log.exception("session %s: error while shutting down", session_id)
        self.files.close()


def new_session_id() -> str:
    return f"{SESSION_ID_PREFIX}{uuid.uuid4()}"


def _session_dirs(root: Path) -> list[str]:
    """The names of session directories under ``root`` (a directory only the server writes)."""
    with os.scandir(root) as entries:
        return [entry.name for entry in entries if entry.name.startswith((SESSION_ID_PREFIX, "session-"))]


def _unknown(session_id: str) -> NotFound:
    return NotFound(f"no session {session_id[:64]!r}", code="session-not-found")


def _plausible_id(session_id: str) -> bool:
    return 0 < len(session_id) <= 64 and all(c.isascii() and (c.isalnum() or c in "-_") for c in session_id)


def _number(
    body: Mapping[str, Any], name: str, default: float, *, minimum: float, integer: bool = False
) -> float:
    value = body.get(name, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or (integer and value != int(value)):
        msg = f"{name} must be {'an integer' if integer else 'a number'}"
        raise Invalid(msg)
    if value < minimum:
        msg = f"{name} must be at least {minimum}"
        raise Invalid(msg)
    return value
