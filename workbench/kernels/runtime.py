"""The kernel of one session, across restarts: one shared client, one execution queue, many listeners.

Every execute (REST or WebSocket, from any client) goes through one FIFO queue; every event goes to
every listener (the shared view).  Timeouts escalate from an interrupt to a restart, and a kernel that
dies (crash, OOM kill, container removed) ends the running execution, is reported, and is replaced.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from workbench.admission import Admission
from workbench.errors import KernelFailed
from workbench.kernels.client import KernelClient, Message, RawHandler
from workbench.kernels.connection import (
    KERNEL_CONNECTION_FILE,
    host_view,
    new_connection_info,
    read_json,
    write_private_json,
)
from workbench.kernels.execution import Event, Execution
from workbench.kernels.launcher import KernelLauncher, KernelState, LaunchRequest
from workbench.outbox import Outbox
from workbench.workspace import wipe

log = logging.getLogger(__name__)

Listener = Callable[[Event], None]


class RunHooks(Protocol):
    """Work done in the queue around one run: ``before`` it starts, ``after`` it ended (before ``done``)."""

    async def before(self, kernel_id: str | None) -> None: ...

    async def after(self, execution: Execution) -> None: ...


WATCH_INTERVAL = 0.5
REPLAY_BYTES = 1024 * 1024
ATTACH_TIMEOUT = 10.0
"""Seconds a kernel that outlived the server gets to answer before it is given up."""
DEATH_MESSAGES = {"oom": "the kernel ran out of memory", "removed": "the kernel's container was removed"}


class SessionKernel:
    """Lifecycle and execution queue of one session's kernel."""

    def __init__(
        self,
        request: LaunchRequest,
        launcher: KernelLauncher,
        *,
        connection_file: Path,
        owner: tuple[int, int] | None,
        start_timeout: float,
        interrupt_grace: float,
        max_output_bytes: int,
    ) -> None:
        self.request = request
        self.session_id = request.session_id
        self.launcher = launcher
        self.connection_file = connection_file
        self.owner = owner
        self.start_timeout = start_timeout
        self.interrupt_grace = interrupt_grace
        self.max_output_bytes = max_output_bytes
        self.kernel_id: str | None = None
        self.state = "stopped"
        self.listeners: set[Listener] = set()
        self.raw_listeners: set[RawHandler] = set()  # every kernel message, as is (the gateway's path)
        self._client: KernelClient | None = None
        self._current: Execution | None = None
        self._replay: Outbox | None = None
        self.down_reason = "started"
        self._death: str | None = None
        self._retired: set[str] = set()
        self._queue = asyncio.Lock()
        self._lifecycle = asyncio.Lock()
        self.admission = Admission()

    # listeners

    def subscribe(self, listener: Listener, *, replay: bool = False) -> None:
        """Add a listener; with ``replay``, it first gets what the running execution has said so far."""
        if replay and self._replay is not None:
            for event in self._replay.snapshot():
                listener(event)
        self.listeners.add(listener)

    def unsubscribe(self, listener: Listener) -> None:
        self.listeners.discard(listener)

    def publish(self, event: Event) -> None:
        if (
            self._replay is not None
            and self._current is not None
            and event.get("id") == self._current.request_id
        ):
            self._replay.put(event)
        for listener in list(self.listeners):
            try:
                listener(event)
            except Exception:
                log.exception("session %s: a listener failed", self.session_id)

    def _announce(self, state: str, reason: str) -> None:
        self.state = state
        self.publish({"type": "kernel", "state": state, "reason": reason})

    @property
    def connection_info(self) -> dict[str, Any] | None:
        return read_json(self.connection_file)

    @property
    def busy(self) -> bool:
        return self._current is not None or self._queue.locked()

    # lifecycle

    async def start(self, reason: str = "started") -> None:
        async with self._lifecycle:
            await self._start(reason)

    async def _start(self, reason: str) -> None:
        self.state = "starting"
        info = new_connection_info(self.launcher.transport)
        await asyncio.to_thread(self._prepare_runtime_dir, info)  # the kernel controls what is in there
        self.kernel_id = await self.launcher.launch(self.request)
        host_info = host_view(info, self.request.runtime_dir, await self.launcher.address(self.kernel_id))
        await asyncio.to_thread(
            write_private_json, self.connection_file, {**host_info, "kernel_id": self.kernel_id}
        )
        try:
            async with asyncio.timeout(self.start_timeout):
                await self._connect(host_info)
        except TimeoutError:
            self.state = "dead"
            msg = f"the kernel did not become ready within {self.start_timeout:.0f} s"
            raise KernelFailed(msg) from None
        self._announce("idle", reason)

    def _prepare_runtime_dir(self, info: dict[str, Any]) -> None:
        """Empty the runtime directory (no kernel runs now: stale sockets and whatever the last kernel left
        there, so that its small file system has room), then write the new kernel's connection file."""
        for name in os.listdir(self.request.runtime_dir):
            wipe(self.request.runtime_dir / name)
        write_private_json(self.request.runtime_dir / KERNEL_CONNECTION_FILE, info, self.owner)

    async def _connect(self, info: dict[str, Any]) -> None:
        client = KernelClient(info, on_iopub=self._on_iopub, on_stdin=self._on_stdin, on_raw=self._on_raw)
        try:
            await client.start()
        except BaseException:
            await client.close()
            raise
        self._client = client

    async def attach(self, kernel_id: str) -> bool:
        """Re-attach to a kernel that outlived the server (its variables are still there)."""
        info = await asyncio.to_thread(read_json, self.connection_file)
        if info is None or info.get("kernel_id") != kernel_id:
            return False
        async with self._lifecycle:
            self.kernel_id = kernel_id
            try:
                async with asyncio.timeout(ATTACH_TIMEOUT):
                    await self._connect({k: v for k, v in info.items() if k != "kernel_id"})
            except TimeoutError:
                return False
            self.state = "idle"
        return True

    async def restart(self, reason: str = "restart") -> None:
        """A fresh kernel (variables gone, files kept); a running execution ends as ``aborted``."""
        if self._current is not None:
            self._current.complete("aborted", reason=reason)
        async with self._lifecycle:
            await self._replace(reason)

    async def _replace(self, reason: str) -> None:
        self._announce("restarting", reason)
        await self._disconnect()
        await self._remove_kernel()
        await self._start(reason)

    async def ensure_running(self) -> None:
        """Start a kernel if there is none (after an idle cull, a crash, or a vanished container)."""
        async with self._lifecycle:
            if self._client is None or self.state in ("dead", "stopped"):
                await self._disconnect()
                await self._remove_kernel()
                self._announce("restarting", self.down_reason)
                await self._start(self.down_reason)

    async def stop(self, *, remove: bool = True, reason: str = "stopped") -> None:
        if self._current is not None:
            self._current.complete("aborted", reason=reason)
        async with self._lifecycle:
            await self._disconnect()
            if remove:
                await self._remove_kernel()
            self.down_reason = reason
            self._announce("stopped", reason)

    async def _remove_kernel(self) -> None:
        if self.kernel_id is not None:
            self._retired.add(self.kernel_id)
            await self.launcher.remove(self.kernel_id)
            self.kernel_id = None

    def owns(self, kernel_id: str) -> bool:
        """Is ``kernel_id`` this session's current kernel (not one it removed itself)?"""
        return kernel_id == self.kernel_id and kernel_id not in self._retired

    async def detach(self) -> None:
        """Drop the connection but leave the kernel running (server shutdown)."""
        await self._disconnect()

    async def _disconnect(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.close()

    async def interrupt(self) -> None:
        if self.launcher.interrupt_by_message and self._client is not None:
            self._client.interrupt()
        elif self.kernel_id is not None:
            await self.launcher.interrupt(self.kernel_id)

    async def probe(self) -> KernelState | None:
        return None if self.kernel_id is None else await self.launcher.state(self.kernel_id)

    # execution

    async def execute(
        self,
        request_id: str,
        code: str,
        *,
        timeout: float,  # noqa: ASYNC109 (a time limit for the code, not a wait)
        allow_stdin: bool,
        hooks: RunHooks | None = None,
        message: Message | None = None,
    ) -> Execution:
        """Queue ``code``; returns the finished execution (its ``result`` is set, ``done`` was published).

        ``message``: a client's own ``execute_request`` (its header and msg_id), sent as is.
        """
        execution = Execution(request_id, code, max_output_bytes=self.max_output_bytes, publish=self.publish)
        async with self._queue:
            await self.ensure_running()
            if hooks is not None:
                await hooks.before(self.kernel_id)
            await self._run(execution, timeout, allow_stdin, message)
            if hooks is not None:
                await hooks.after(execution)
            self.publish(execution.done_event())
            if self._death is not None:
                reason, self._death = self._death, None
                await self._recover(reason)
        return execution

    async def _run(
        self,
        execution: Execution,
        timeout: float,  # noqa: ASYNC109 (a time limit for the code, not a wait)
        allow_stdin: bool,
        message: Message | None = None,
    ) -> None:
        assert self._client is not None
        self._current = execution
        self._replay = Outbox(max_bytes=REPLAY_BYTES)
        self.state = "busy"
        execution.started = time.monotonic()
        if message is None:
            msg_id, reply = self._client.execute(execution.code, allow_stdin=allow_stdin)
        else:
            msg_id, reply = self._client.send_execute(message)
        execution.msg_id = msg_id
        reply.add_done_callback(execution.on_reply_future)
        watchdog = asyncio.create_task(self._watch(execution))
        try:
            await asyncio.wait_for(execution.finished.wait(), timeout)
        except TimeoutError:
            await self._escalate(execution)
        finally:
            watchdog.cancel()
            self._current = None
            self._replay = None
            if self._client is not None:
                self._client.forget(msg_id)
        execution.complete()
        if self.state == "busy":
            self.state = "idle"

    async def _escalate(self, execution: Execution) -> None:
        """Timeout: interrupt; if the kernel is still busy after the grace period, restart it."""
        await self.interrupt()
        try:
            await asyncio.wait_for(execution.finished.wait(), self.interrupt_grace)
        except TimeoutError:
            execution.complete("timeout", reason="interrupt did not land; kernel restarted")
            async with self._lifecycle:
                await self._replace("timeout")
        else:
            execution.complete("timeout", reason="interrupted")

    async def _watch(self, execution: Execution) -> None:
        """While code runs, notice a kernel that dies under it."""
        while not execution.finished.is_set():
            await asyncio.sleep(WATCH_INTERVAL)
            try:
                state = await self.probe()
            except Exception:  # the engine is flaky: try again on the next tick
                log.warning("session %s: could not inspect the kernel", self.session_id, exc_info=True)
                continue
            if state is None or not state.running:
                self._death = state.death_reason if state is not None else "removed"
                message = DEATH_MESSAGES.get(self._death, "the kernel died")
                execution.complete(
                    "error",
                    reason=self._death,
                    error={"ename": "KernelDied", "evalue": message, "traceback": []},
                )
                return

    async def handle_death(self, kernel_id: str, reason: str) -> None:
        """The engine reports ``kernel_id`` gone (while no code ran on it): replace it."""
        async with self._queue:
            if self.owns(kernel_id) and self.state != "stopped":
                state = await self.probe() if reason == "died" else None
                await self._recover(state.death_reason if state is not None else reason)

    async def _recover(self, reason: str) -> None:
        """The kernel is gone: tell everyone, and start a fresh kernel (files are kept)."""
        self._announce("dead", reason)
        self.down_reason = reason
        try:
            await self.ensure_running()
        except Exception:
            log.exception("session %s: could not restart the kernel after it %s", self.session_id, reason)

    async def inspect(
        self,
        expressions: dict[str, str],
        *,
        wait: float,
        timeout: float,  # noqa: ASYNC109 (a time limit for the evaluation, not a wait)
    ) -> Message | None:
        """Evaluate ``expressions`` silently, in the queue's turn (never beside a running execution).

        Nothing reaches the listeners (the kernel's messages for it answer no execution).  Waits at most
        ``wait`` seconds for the turn (``TimeoutError``), then ``timeout`` for the reply, after which the
        kernel is interrupted.  ``None`` when no kernel runs (a stopped kernel has no variables).
        """
        await asyncio.wait_for(self._queue.acquire(), wait)
        try:
            if self._client is None or self.state not in ("idle", "busy"):
                return None
            msg_id, reply = self._client.execute_silent(expressions)
            try:
                return await asyncio.wait_for(asyncio.shield(reply), timeout)
            except TimeoutError:
                await self.interrupt()
                try:
                    return await asyncio.wait_for(reply, self.interrupt_grace)
                except TimeoutError:
                    if self._client is not None:
                        self._client.forget(msg_id)
                    msg = "the kernel did not answer in time"
                    raise KernelFailed(msg, code="kernel-timeout") from None
        finally:
            self._queue.release()

    def send_input(self, value: str) -> None:
        if self._client is not None:
            self._client.send_input(value)

    def send_raw(self, channel: str, message: Message) -> bool:
        """Pass a client's Jupyter message to the kernel as is; False when no kernel is connected."""
        if self._client is None:
            return False
        self._client.send(channel, message)
        return True

    def _on_raw(self, channel: str, message: Message) -> None:
        for listener in list(self.raw_listeners):
            try:
                listener(channel, message)
            except Exception:
                log.exception("session %s: a raw listener failed", self.session_id)

    # kernel messages

    def _on_iopub(self, message: Message) -> None:
        current = self._current
        parent = message.get("parent_header", {}).get("msg_id")
        if current is not None and parent == current.msg_id:
            current.on_iopub(message)

    def _on_stdin(self, message: Message) -> None:
        current = self._current
        if current is not None and message["header"]["msg_type"] == "input_request":
            current.on_input_request(message)
