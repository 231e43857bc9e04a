"""One ZeroMQ conversation with one running kernel.

A single reader task per channel receives every message (event-driven, no polling loop) and hands it
to the owner's callbacks; shell replies resolve the future of the request they answer.

A kernel is ready only once *every* channel has completed its ZeroMQ handshake, then answered on shell
and delivered on IOPub.  The stdin channel matters most: the kernel sends ``input_request`` on a ROUTER
socket, which silently drops a message for a peer it does not know yet, so an ``input()`` run right
after start-up would wait forever for a reply nobody was asked for.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

import zmq.asyncio
from jupyter_client.asynchronous.client import AsyncKernelClient
from zmq.utils.monitor import recv_monitor_message

from workbench.kernels.frames import FrameReader
from workbench.lognoise import Throttled

log = logging.getLogger(__name__)

Message = dict[str, Any]
MessageHandler = Callable[[Message], None]
RawHandler = Callable[[str, Message], None]


class WatchedContext(zmq.asyncio.Context):
    """The process's ZeroMQ context (shadowed), watching each socket it makes from before it connects,
    so that no handshake can complete unseen."""

    # Declared here: pyzmq maps undeclared attribute names to socket options.
    watched: list[tuple[zmq.asyncio.Socket, zmq.asyncio.Socket]]

    def __init__(self) -> None:
        super().__init__(shadow=zmq.asyncio.Context.instance())
        self.watched = []

    def socket(self, socket_type: int, *args: Any, **kwargs: Any) -> Any:
        socket = super().socket(socket_type, *args, **kwargs)
        address = f"inproc://workbench-monitor-{id(socket):x}"
        socket.monitor(address, zmq.EVENT_HANDSHAKE_SUCCEEDED)
        watcher = zmq.asyncio.Context.instance().socket(zmq.PAIR)
        watcher.connect(address)
        self.watched.append((socket, watcher))
        return socket

    async def connected(self) -> None:
        """Wait until every socket made so far has completed a handshake with its peer."""
        for _, watcher in self.watched:
            await recv_monitor_message(watcher)

    def stop_watching(self) -> None:
        for socket, watcher in self.watched:
            with contextlib.suppress(zmq.ZMQError):
                socket.disable_monitor()
            watcher.close(linger=0)
        self.watched.clear()


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
        self._context = WatchedContext()
        self._client = AsyncKernelClient(context=self._context)
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

    async def start(self, *, via_control: bool = False) -> None:
        """Connect; wait until every channel's handshake is done (stdin included), then until the kernel
        answers *and* IOPub delivers (slow joiner).  The caller bounds the wait.

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
        try:
            await self._context.connected()
        finally:
            self._context.stop_watching()
        await self._wait_ready(via_control)

    async def _wait_ready(self, via_control: bool) -> None:
        answered = False
        while True:
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

    def interrupt(self) -> None:
        """ipykernel's ``interrupt_request`` on the control channel (for kernels no signal reaches)."""
        self._client.control_channel.send(self._client.session.msg("interrupt_request", {}))

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
        self._context.stop_watching()
        self._client.stop_channels()
        self._unreadable.flush()
        self._unhandled.flush()
