"""A small Jupyter client on the gateway's channels socket, for the tests (legacy framing or v1)."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
import uuid
from collections.abc import Callable
from typing import Any

V1 = "v1.kernel.websocket.jupyter.org"
Message = dict[str, Any]


def message(msg_type: str, content: dict[str, Any], channel: str = "shell") -> Message:
    header = {"msg_id": uuid.uuid4().hex, "msg_type": msg_type, "username": "test", "session": "test",
              "date": "2026-01-01T00:00:00.000000Z", "version": "5.3"}  # fmt: skip
    return {"header": header, "parent_header": {}, "metadata": {}, "content": content, "channel": channel}


def execute_request(code: str, **content: Any) -> Message:
    return message("execute_request", {"code": code, "silent": False, "store_history": True,
                                       "user_expressions": {}, "allow_stdin": True, "stop_on_error": True,
                                       **content})  # fmt: skip


def pack_v1(msg: Message) -> bytes:
    """A message in the v1 subprotocol's framing (written from the protocol's description)."""
    parts = [json.dumps(msg[key]).encode() for key in ("header", "parent_header", "metadata", "content")]
    channel = msg["channel"].encode()
    offsets = [8 * (len(parts) + 3), 8 * (len(parts) + 3) + len(channel)]
    for part in parts:
        offsets.append(offsets[-1] + len(part))
    head = len(offsets).to_bytes(8, "little") + b"".join(o.to_bytes(8, "little") for o in offsets)
    frame: bytes = head + channel + b"".join(parts)
    return frame


def unpack_v1(frame: bytes) -> Message:
    count = int.from_bytes(frame[:8], "little")
    offsets = [int.from_bytes(frame[8 * (i + 1) : 8 * (i + 2)], "little") for i in range(count)]
    pieces = [frame[a:b] for a, b in itertools.pairwise(offsets)]
    msg = {key: json.loads(piece) for key, piece in zip(("header", "parent_header", "metadata", "content"),
                                                       pieces[1:5], strict=True)}  # fmt: skip
    msg["channel"] = pieces[0].decode()
    msg["msg_type"] = msg["header"]["msg_type"]
    msg["buffers"] = pieces[5:]
    return msg


class JupyterSocket:
    def __init__(self, connection: Any, *, v1: bool = False) -> None:
        self.connection = connection
        self.v1 = v1

    async def send(self, msg: Message) -> str:
        await self.connection.send(pack_v1(msg) if self.v1 else json.dumps(msg))
        msg_id: str = msg["header"]["msg_id"]
        return msg_id

    async def recv(self, timeout: float = 60) -> Message:
        frame = await asyncio.wait_for(self.connection.recv(), timeout)
        if self.v1:
            assert isinstance(frame, bytes)
            return unpack_v1(frame)
        parsed: Message = json.loads(frame)
        return parsed

    async def until(self, done: Callable[[Message], bool], timeout: float = 60) -> list[Message]:
        """Messages received until one satisfies ``done`` (included)."""
        deadline = time.monotonic() + timeout
        seen: list[Message] = []
        while True:
            msg = await self.recv(max(0.1, deadline - time.monotonic()))
            seen.append(msg)
            if done(msg):
                return seen

    async def execute(self, code: str, timeout: float = 120, **content: Any) -> tuple[Message, list[Message]]:
        """Run ``code``: its reply, and the IOPub messages of that request up to its ``idle``."""
        msg_id = await self.send(execute_request(code, **content))
        return await self.answer(msg_id, timeout)

    async def answer(self, msg_id: str, timeout: float = 120) -> tuple[Message, list[Message]]:
        reply: Message | None = None
        outputs: list[Message] = []
        idle = False
        deadline = time.monotonic() + timeout
        while reply is None or not idle:
            msg = await self.recv(max(0.1, deadline - time.monotonic()))
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            if msg["channel"] == "shell":
                reply = msg
            elif msg["msg_type"] == "status":
                idle = msg["content"]["execution_state"] == "idle"
            elif msg["channel"] == "iopub":
                outputs.append(msg)
        return reply, outputs


def stdout(outputs: list[Message]) -> str:
    return "".join(m["content"]["text"] for m in outputs if m["msg_type"] == "stream")
