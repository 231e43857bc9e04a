"""The kernel client's readiness, against an in-process fake kernel (no Docker needed).

Regression: a kernel used to count as ready once it answered on shell and delivered on IOPub, while its
stdin channel could still be connecting.  The kernel sends ``input_request`` on a ROUTER socket, which
drops a message for a peer it does not know yet: ``input()`` run right after start-up then waited
forever (``tests/test_client.py::test_input_is_answered_by_on_input`` hung).  The fake kernel below
binds stdin late, so the old readiness check returns before stdin is connected.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import zmq
import zmq.asyncio
from jupyter_client.session import Session

from workbench.kernels.client import KernelClient, Message
from workbench.testing import short_tmp

STDIN_DELAY = 1.0
"""Seconds the fake kernel waits before it binds its stdin socket (its other sockets are bound at once)."""


class FakeKernel:
    """Answers ``kernel_info`` on shell (with IOPub status), and can ask for input on stdin."""

    def __init__(self, directory: Path, *, stdin_delay: float) -> None:
        key = secrets.token_hex(16)
        self.info: dict[str, Any] = {
            "transport": "ipc", "ip": str(directory / "k"), "key": key, "signature_scheme": "hmac-sha256",
            "shell_port": 1, "iopub_port": 2, "stdin_port": 3, "control_port": 4, "hb_port": 5,
        }  # fmt: skip
        self.session = Session(key=key.encode(), signature_scheme="hmac-sha256")
        context = zmq.asyncio.Context.instance()
        self.shell = context.socket(zmq.ROUTER)
        self.iopub = context.socket(zmq.PUB)
        self.control = context.socket(zmq.ROUTER)
        self.stdin = context.socket(zmq.ROUTER)
        self.stdin.router_mandatory = True  # an unknown peer is an error here, not a silent drop
        for socket, port in ((self.shell, 1), (self.iopub, 2), (self.control, 4)):
            socket.bind(f"ipc://{directory}/k-{port}")
        self.stdin_address = f"ipc://{directory}/k-3"
        self.stdin_delay = stdin_delay
        self.client_identity: list[bytes] = []
        self.tasks = [asyncio.create_task(self.serve_shell()), asyncio.create_task(self.bind_stdin_late())]

    async def bind_stdin_late(self) -> None:
        await asyncio.sleep(self.stdin_delay)
        self.stdin.bind(self.stdin_address)

    async def serve_shell(self) -> None:
        while True:
            identities, message = self.session.feed_identities(await self.shell.recv_multipart())
            request = self.session.deserialize(message)
            self.client_identity = identities
            for state in ("busy", "idle"):
                self.session.send(self.iopub, "status", {"execution_state": state}, parent=request)
            reply = {"status": "ok", "protocol_version": "5.3", "implementation": "fake"}
            self.session.send(self.shell, "kernel_info_reply", reply, parent=request, ident=identities)

    def ask_for_input(self) -> None:
        """What ``input()`` does in ipykernel: an ``input_request`` to the shell request's sender."""
        content = {"prompt": "who? ", "password": False}
        self.session.send(self.stdin, "input_request", content, ident=self.client_identity)

    def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        for socket in (self.shell, self.iopub, self.control, self.stdin):
            socket.close(linger=0)


@pytest.fixture
async def fake_kernel() -> AsyncIterator[FakeKernel]:
    directory = short_tmp()
    kernel = FakeKernel(directory, stdin_delay=STDIN_DELAY)
    try:
        yield kernel
    finally:
        kernel.close()
        for path in directory.iterdir():
            path.unlink()
        directory.rmdir()


async def test_ready_means_stdin_is_connected_too(fake_kernel: FakeKernel) -> None:
    asked: list[Message] = []
    client = KernelClient(fake_kernel.info, on_iopub=lambda message: None, on_stdin=asked.append)
    try:
        async with asyncio.timeout(30):
            await client.start()
        fake_kernel.ask_for_input()  # raises EHOSTUNREACH if the client's stdin is not connected yet
        async with asyncio.timeout(10):
            while not asked:
                await asyncio.sleep(0.01)
    finally:
        await client.close()
    assert asked[0]["header"]["msg_type"] == "input_request"
    assert asked[0]["content"]["prompt"] == "who? "


async def test_a_kernel_whose_stdin_never_connects_is_never_ready() -> None:
    directory = short_tmp()
    kernel = FakeKernel(directory, stdin_delay=3600)
    client = KernelClient(kernel.info, on_iopub=lambda message: None, on_stdin=lambda message: None)
    try:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(2):
                await client.start()
    finally:
        await client.close()
        kernel.close()
        for path in directory.iterdir():
            with contextlib.suppress(OSError):
                path.unlink()
        directory.rmdir()
