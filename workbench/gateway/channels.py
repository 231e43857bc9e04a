"""One Jupyter client's channels on a session's kernel: the raw-message path of the gateway.

The client's messages go to the session's one kernel connection as they are (its own header and msg_id).
``execute_request`` goes through the session's execution queue like every other execute (so Workbench
WebSocket clients see it, and it is recorded); everything else is sent at once.  From the kernel, every
IOPub message goes to every client (the shared view); replies and input requests go to the client whose
request they answer.  Kernel lifecycle news becomes Jupyter ``status`` messages.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import uuid
from collections.abc import Callable
from typing import Any

from workbench.errors import WorkbenchError
from workbench.gateway.protocol import Message
from workbench.kernels.execution import Event
from workbench.kernels.runtime import SessionKernel
from workbench.sessions import SessionManager

log = logging.getLogger(__name__)

Deliver = Callable[[Message, str], None]

# Workbench's kernel lifecycle news as the Jupyter execution_state a front end understands: a kernel that
# died is replaced at once (jupyter_server's auto-restart says "restarting"); a stopped one (idle cull,
# session deleted or expired) is gone until restarted ("dead").
LIFECYCLE_STATES = {"restarting": "restarting", "dead": "restarting", "stopped": "dead", "idle": "idle"}
SESSION_ENDED = ("deleted", "expired", "failed")
PROTOCOL_VERSION = "5.3"
MAX_PENDING = 10_000


def new_message(msg_type: str, content: dict[str, Any], parent: dict[str, Any], session: str) -> Message:
    """A message Workbench itself sends to a client (a status, or the reply of a request it answers)."""
    header = {
        "msg_id": uuid.uuid4().hex,
        "msg_type": msg_type,
        "username": "workbench",
        "session": session,
        "date": dt.datetime.now(dt.UTC).isoformat(),
        "version": PROTOCOL_VERSION,
    }
    return {"header": header, "parent_header": parent, "metadata": {}, "content": content}


class KernelChannels:
    """The channels of one gateway WebSocket on one session."""

    def __init__(
        self, manager: SessionManager, kernel: SessionKernel, deliver: Deliver, on_gone: Callable[[], None]
    ) -> None:
        self.manager = manager
        self.kernel = kernel
        self.session_id = kernel.session_id
        self.deliver = deliver
        self.on_gone = on_gone
        self.session = uuid.uuid4().hex
        self._pending: dict[str, Message] = {}  # msg_id of this client's request -> its header
        # After an error, the executes this client had sent by then (numbered as they came) are aborted.
        self._arrived = 0
        self._abort_through = 0
        self._executes: asyncio.Queue[tuple[int, Message] | None] = asyncio.Queue()
        self._runner: asyncio.Task[None] | None = None

    def open(self) -> None:
        self.kernel.raw_listeners.add(self._on_raw)
        self.kernel.subscribe(self._on_event)
        self._runner = asyncio.create_task(self._run_executes())

    def close(self) -> None:
        """The client went away; executes it queued still run (their results are recorded)."""
        self.kernel.raw_listeners.discard(self._on_raw)
        self.kernel.unsubscribe(self._on_event)
        self._executes.put_nowait(None)

    # client -> kernel

    async def receive(self, channel: str, message: Message) -> None:
        header = message["header"]
        kind = header["msg_type"]
        if kind == "shutdown_request":
            await self._shutdown(message)
            return
        if channel == "shell" and kind == "execute_request":
            self._expect(header)
            self._arrived += 1
            self._executes.put_nowait((self._arrived, message))
            return
        answered = channel != "stdin" and kind.endswith("_request")  # comm messages get no reply
        if answered:
            self._expect(header)
        if not self.kernel.send_raw(channel, message) and answered:
            self._pending.pop(header["msg_id"], None)
            self._reply(header, kind, {"status": "error", **_error("KernelNotRunning", "no kernel runs")})

    def _expect(self, header: Message) -> None:
        """Remember whose request a reply answers (bounded: a kernel may never answer an unknown type)."""
        self._pending[header["msg_id"]] = header
        if len(self._pending) > MAX_PENDING:
            del self._pending[next(iter(self._pending))]

    async def _run_executes(self) -> None:
        """This client's executes in order (the session's queue orders them among all clients)."""
        while (queued := await self._executes.get()) is not None:
            number, message = queued
            header = message["header"]
            if number <= self._abort_through and message["content"].get("stop_on_error", True):
                self._abort(header)
            else:
                try:
                    await self._execute(message)
                except WorkbenchError as error:
                    self._finish(header, error.code, error.message)
                except Exception:
                    log.exception("session %s: gateway execute failed", self.session_id)
                    self._finish(header, "internal-error", "internal error")
                else:
                    self._finish(header, "KernelDied", "the kernel stopped before it answered")

    async def _execute(self, message: Message) -> None:
        content = message["content"]
        code = content.get("code")
        if not isinstance(code, str):
            raise _InvalidExecute("execute_request needs content.code (a string)")
        limit = self.manager.settings.max_code_kb * 1024
        if len(code.encode()) > limit:
            raise _InvalidExecute(f"the code is larger than {self.manager.settings.max_code_kb} KiB")
        await self.manager.execute(
            self.session_id,
            code,
            timeout=self.manager.settings.max_execute_timeout,
            request_id=message["header"]["msg_id"],
            source="gateway",
            allow_stdin=bool(content.get("allow_stdin", True)),
            message=message,
        )

    def _finish(self, header: Message, ename: str, evalue: str) -> None:
        """An execute the kernel never answered (refused, or the kernel died): answer it ourselves."""
        if self._pending.pop(header["msg_id"], None) is None:
            return
        self._abort_through = self._arrived
        content = {"status": "error", "execution_count": None, **_error(ename, evalue)}
        self.deliver(new_message("error", _error(ename, evalue), header, self.session), "iopub")
        self._reply(header, "execute_request", content)
        self._status(header, "idle")

    def _abort(self, header: Message) -> None:
        """After an error, executes queued behind it with ``stop_on_error`` are aborted, as a kernel does."""
        self._pending.pop(header["msg_id"], None)
        self._reply(header, "execute_request", {"status": "aborted"})
        self._status(header, "idle")

    async def _shutdown(self, message: Message) -> None:
        """The session's lifecycle is Workbench's: a restart request restarts; a plain shutdown is
        answered without stopping the kernel (``DELETE /api/kernels/{id}`` ends a session)."""
        restart = bool(message["content"].get("restart"))
        content = {"status": "ok", "restart": restart}
        if restart:
            try:
                await self.manager.restart(self.session_id)
            except WorkbenchError as error:
                content = {"status": "error", "restart": True, **_error(error.code, error.message)}
        self._reply(message["header"], "shutdown_request", content, channel="control")

    # kernel -> client

    def _on_raw(self, channel: str, message: Message) -> None:
        if channel == "iopub":
            self.deliver(message, channel)
            return
        parent = message.get("parent_header", {}).get("msg_id")
        if parent not in self._pending:
            return
        if channel != "stdin":
            del self._pending[parent]
            content = message.get("content", {})
            if message["header"]["msg_type"] == "execute_reply" and content.get("status") == "error":
                self._abort_through = self._arrived
        self.deliver(message, channel)

    def _on_event(self, event: Event) -> None:
        if event.get("type") != "kernel":
            return
        state = LIFECYCLE_STATES.get(event.get("state", ""))
        if state is not None:
            self._status({}, state)
        if event.get("state") == "stopped" and event.get("reason") in SESSION_ENDED:
            self.on_gone()

    # messages of our own

    def _reply(self, parent: Message, request: str, content: dict[str, Any], channel: str = "shell") -> None:
        kind = request.removesuffix("_request") + "_reply"
        self.deliver(new_message(kind, content, parent, self.session), channel)

    def _status(self, parent: Message, state: str) -> None:
        self.deliver(new_message("status", {"execution_state": state}, parent, self.session), "iopub")


class _InvalidExecute(WorkbenchError):
    code = "InvalidExecute"


def _error(ename: str, evalue: str) -> dict[str, Any]:
    return {"ename": ename, "evalue": evalue, "traceback": [f"{ename}: {evalue}"]}
