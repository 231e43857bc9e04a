"""The kernel of one session, across restarts: one shared client, one execution queue, many listeners.

Every execute (REST or WebSocket, from any client) goes through one FIFO queue; every event goes to
every listener (the shared view).  Timeouts escalate from an interrupt to a restart, and a kernel that
dies (crash, OOM kill, container removed) ends the running execution, is reported, and is replaced.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, TypeVar

from workbench.admission import Admission
from workbench.errors import KernelFailed
from workbench.kernels.client import KernelClient, Message, RawHandler
from workbench.kernels.connection import (
    KERNEL_CONNECTION_FILE,
    SOCKET_PREFIX,
    host_view,
    new_connection_info,
    read_json,
    socket_ports,
    write_private_json,
)
from workbench.kernels.execution import Event, Execution
from workbench.kernels.launcher import KernelLauncher, KernelState, LaunchRequest
from workbench.kernels.sockets import PinnedSockets, clear_runtime_dir, make_link_dir
from workbench.outbox import Outbox

log = logging.getLogger(__name__)
T = TypeVar("T")

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
ATTACH_TIMEOUT = 10.0
SOCKET_POLL = 0.05


async def _blocking(work: Callable[..., T], *args: Any) -> T:
    return await asyncio.get_running_loop().run_in_executor(None, work, *args)


class SessionKernel:
    """Lifecycle and execution queue of one session's kernel."""

    def __init__(
        self,
        request: LaunchRequest,
        launcher: KernelLauncher,
        *,
        connection_file: Path,
        link_dir: Path,
        owner: tuple[int, int] | None,
        start_timeout: float,
        interrupt_grace: float,
        max_output_bytes: int,
    ) -> None:
        self.request = request
        self.session_id = request.session_id
        self.launcher = launcher
        self.connection_file = connection_file
        self.link_dir = link_dir
        self.owner = owner
        self.start_timeout = start_timeout
        self.interrupt_grace = interrupt_grace
        self.max_output_bytes = max_output_bytes
        self.kernel_id: str | None = None
        self.state = "stopped"
        self.listeners: set[Listener] = set()
        self.raw_listeners: set[RawHandler] = set()  # every kernel message, as is (the gateway's path)
        self._client: KernelClient | None = None
        self._pins: PinnedSockets | None = None
        self._orphan: asyncio.Future[Message] | None = None
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
        return self._current is not None or self._queue.locked() or self._orphan is not None

    # lifecycle

    async def start(self, reason: str = "started") -> None:
        async with self._lifecycle:
            await self._start(reason)

    async def _start(self, reason: str) -> None:
        self.state = "starting"
        info = new_connection_info(self.launcher.transport)
        runtime_dir = self.request.runtime_dir
        try:
            await _blocking(clear_runtime_dir, runtime_dir)  # the kernel controls what is in there
            await _blocking(write_private_json, runtime_dir / KERNEL_CONNECTION_FILE, info, self.owner)
            self.kernel_id = await self.launcher.launch(self.request)
            host_info = host_view(info, runtime_dir, await self.launcher.address(self.kernel_id))
            await _blocking(
                write_private_json, self.connection_file, {**host_info, "kernel_id": self.kernel_id}
            )
            async with asyncio.timeout(self.start_timeout):
                await self._connect(host_info)
        except TimeoutError:
            self.state = "dead"
            msg = f"the kernel did not become ready within {self.start_timeout:.0f} s"
            raise KernelFailed(msg) from None
        except BaseException:
            self.state = "dead"
            raise
        self._announce("idle", reason)

    async def _pin(self, info: dict[str, Any]) -> PinnedSockets | None:
        """Over IPC, the kernel's sockets, pinned once the kernel has bound them all (see ``sockets``);
        the caller bounds the wait.  Over TCP there are no socket files (``None``)."""
        if info["transport"] != "ipc":
            return None
        pins = PinnedSockets(self.request.runtime_dir, self.link_dir, SOCKET_PREFIX, socket_ports(info))
        try:
            await _blocking(make_link_dir, self.link_dir)
            while not await _blocking(pins.pin):  # noqa: ASYNC110 (no event says the kernel has bound them)
                await asyncio.sleep(SOCKET_POLL)
        except BaseException:
            await _blocking(pins.close)
            raise
        return pins

    async def _connect(self, info: dict[str, Any]) -> None:
        pins = await self._pin(info)
        client = self._new_client(info, pins)
        try:
            await client.start()
        except BaseException:
            await self._drop(client, pins)
            raise
        self._client, self._pins = client, pins

    async def _drop(self, client: KernelClient, pins: PinnedSockets | None) -> None:
        await client.close()
        if pins is not None:
            await _blocking(pins.close)

    def _new_client(self, info: dict[str, Any], pins: PinnedSockets | None) -> KernelClient:
        address = info if pins is None else {**info, "ip": pins.ip}
        return KernelClient(address, on_iopub=self._on_iopub, on_stdin=self._on_stdin,
                            on_raw=self._on_raw, name=f"session {self.session_id}")  # fmt: skip

    async def attach(self, kernel_id: str) -> bool:
        """Adopt a kernel that outlived the server (its variables are still there), even one running code.

        ``False`` when the kernel cannot be reached at all (no connection file of its own, sockets gone or
        replaced); a kernel that does not answer is adopted as busy, and a timeout will restart it."""
        info = await _blocking(read_json, self.connection_file)
        if info is None or info.get("kernel_id") != kernel_id:
            log.warning("session %s: no connection file for kernel %s", self.session_id, kernel_id[:12])
            return False
        info = {key: value for key, value in info.items() if key != "kernel_id"}
        async with self._lifecycle:
            try:
                async with asyncio.timeout(ATTACH_TIMEOUT):
                    pins = await self._pin(info)
            except (TimeoutError, KernelFailed) as exc:
                reason = exc if isinstance(exc, KernelFailed) else "its sockets did not appear"
                log.warning("session %s: cannot reach kernel %s: %s", self.session_id, kernel_id[:12], reason)
                return False
            client = self._new_client(info, pins)
            try:
                async with asyncio.timeout(ATTACH_TIMEOUT):
                    await client.start(via_control=True)
            except TimeoutError:
                log.warning("session %s: kernel %s does not answer; adopted as busy (an execute that times "
                            "out restarts it)", self.session_id, kernel_id[:12])  # fmt: skip
            except BaseException:
                await self._drop(client, pins)
                raise
            self.kernel_id, self._client, self._pins, self.state = kernel_id, client, pins, "idle"
            await self._adopt_running_code(client)
        return True

    async def _adopt_running_code(self, client: KernelClient) -> None:
        """If the kernel's shell is still running code sent before the server stopped, the session is busy
        until that code ends (its output reaches no client: the requests that wanted it are gone)."""
        shell = client.shell_answers()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(shell), timeout=1.0)
        if shell.done():
            return
        self._orphan = shell
        log.warning("session %s: the kernel was running code when the server stopped; it goes on running "
                    "(variables kept), and its output reaches no client", self.session_id)  # fmt: skip

        def ended(future: asyncio.Future[Message]) -> None:
            if self._orphan is future:
                self._orphan = None
            if not future.cancelled():
                log.info("session %s: the code running when the server stopped has ended", self.session_id)

        shell.add_done_callback(ended)

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
        pins, self._pins = self._pins, None
        if client is not None:
            await client.close()
        if pins is not None:
            await _blocking(pins.close)

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
