"""One ZeroMQ conversation with one running kernel.

A single reader task per channel receives every message (event-driven, no polling loop) and hands it
to the owner's callbacks; shell replies resolve the future of the request they answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

import zmq.asyncio
from jupyter_client.asynchronous.client import AsyncKernelClient

from workbench.errors import KernelFailed
from workbench.kernels.frames import FrameReader
from workbench.lognoise import Throttled

log = logging.getLogger(__name__)

Message = dict[str, Any]
MessageHandler = Callable[[Message], None]
RawHandler = Callable[[str, Message], None]


class KernelClient:
    """Shell, IOPub, stdin and control channels of one kernel, with readiness and dispatch."""

    def __init__(
        self,
        connection_info: dict[str, Any],
        *,
        on_iopub: MessageHandler,
        on_stdin: MessageHandler,
        on_raw: RawHandler | None = None,
        name: str = "a kernel",
    ) -> None:
        self._client = AsyncKernelClient(context=zmq.asyncio.Context.instance())
        self._client.load_connection_info(connection_info)  # type: ignore[arg-type]
        self._frames = FrameReader(self._client.session)
        self._on_iopub = on_iopub
        self._on_stdin = on_stdin
        self._on_raw = on_raw
        self._replies: dict[str, asyncio.Future[Message]] = {}
        self._iopub_seen = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._unreadable = Throttled(log, f"{name}: dropping unreadable kernel messages")
        self._unhandled = Throttled(log, f"{name}: error handling a kernel message")

    async def start(self, timeout: float, *, via_control: bool = False) -> None:
        """Connect, then wait until the kernel answers *and* IOPub delivers (slow joiner).

        A fresh kernel is asked on shell; one that outlived the server on control, which it answers even
        while its shell runs code."""
        self._client.start_channels(hb=False)
        channels = (
            ("iopub", self._client.iopub_channel, self._handle_iopub),
            ("shell", self._client.shell_channel, self._handle_reply),
            ("stdin", self._client.stdin_channel, self._on_stdin),
            ("control", self._client.control_channel, self._handle_reply),
        )
        self._tasks = [
            asyncio.create_task(self._read(name, channel, handler)) for name, channel, handler in channels
        ]
        await self._wait_ready(timeout, via_control)

    async def _wait_ready(self, timeout: float, via_control: bool) -> None:
        deadline = time.monotonic() + timeout
        answered = False
        while time.monotonic() < deadline:
            msg_id = self._control_kernel_info() if via_control else self._client.kernel_info()
            try:
                await asyncio.wait_for(self._expect_reply(msg_id), timeout=0.5)
                answered = True
            except TimeoutError:
                self.forget(msg_id)
            if answered:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._iopub_seen.wait(), timeout=0.3)
                if self._iopub_seen.is_set():
                    return
        msg = f"the kernel did not become ready within {timeout:.0f} s"
        raise KernelFailed(msg)

    async def _read(self, name: str, channel: Any, handler: MessageHandler) -> None:
        while True:
            try:
                message = await self._frames.read(channel.socket)  # not get_msg(): bounded
            except asyncio.CancelledError:
                raise
            except zmq.ZMQError:
                return
            except Exception as exc:  # a malformed or badly signed message must not kill the reader
                self._unreadable.report(exc)
                continue
            try:
                if self._on_raw is not None:  # before the handler: a raw reply precedes "finished"
                    self._on_raw(name, message)
                handler(message)
            except Exception as exc:
                self._unhandled.report(exc)
            await asyncio.sleep(0)  # a flooding kernel must not starve the clients' senders

    def _handle_iopub(self, message: Message) -> None:
        self._iopub_seen.set()
        self._on_iopub(message)

    def _handle_reply(self, message: Message) -> None:
        parent = message.get("parent_header", {}).get("msg_id")
        future = self._replies.pop(parent, None)
        if future is not None and not future.done():
            future.set_result(message)

    def _expect_reply(self, msg_id: str) -> asyncio.Future[Message]:
        future: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self._replies[msg_id] = future
        return future

    def _control_kernel_info(self) -> str:
        message = self._client.session.msg("kernel_info_request")
        self._client.control_channel.send(message)
        return str(message["header"]["msg_id"])

    def shell_answers(self) -> asyncio.Future[Message]:
        """The future of a shell ``kernel_info`` reply: it resolves once the shell is free."""
        return self._expect_reply(self._client.kernel_info())

    def execute(self, code: str, *, allow_stdin: bool = True) -> tuple[str, asyncio.Future[Message]]:
        """Send an execute request; returns its msg_id and the future of its shell reply."""
        msg_id = self._client.execute(code, allow_stdin=allow_stdin, stop_on_error=False)
        return msg_id, self._expect_reply(msg_id)

    def execute_silent(self, expressions: dict[str, str]) -> tuple[str, asyncio.Future[Message]]:
        """Evaluate ``expressions`` without a trace: no history, no ``execution_count`` change, no
        ``execute_input``; the values come back in the reply's ``user_expressions``."""
        msg_id = self._client.execute(
            "", silent=True, store_history=False, user_expressions=expressions, allow_stdin=False
        )
        return msg_id, self._expect_reply(msg_id)

    def send_input(self, value: str) -> None:
        self._client.input(value)

    def send(self, channel: str, message: Message) -> None:
        """Send a complete Jupyter message (a client's own header and msg_id) on ``channel``."""
        channels = {"shell": self._client.shell_channel, "control": self._client.control_channel,
                    "stdin": self._client.stdin_channel}  # fmt: skip
        channels[channel].send(message)

    def send_execute(self, message: Message) -> tuple[str, asyncio.Future[Message]]:
        """Send a client's own ``execute_request``; returns its msg_id and the future of its reply."""
        msg_id: str = message["header"]["msg_id"]
        future = self._expect_reply(msg_id)
        self._client.shell_channel.send(message)
        return msg_id, future

    def forget(self, msg_id: str) -> None:
        future = self._replies.pop(msg_id, None)
        if future is not None and not future.done():
            future.cancel()

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for future in self._replies.values():
            future.cancel()
        self._replies.clear()
        self._client.stop_channels()
        self._unreadable.flush()
        self._unhandled.flush()
