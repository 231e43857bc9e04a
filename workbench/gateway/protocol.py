"""Jupyter messages over a WebSocket, as jupyter_server frames them.

Two framings: the legacy one (no subprotocol: JSON text frames, or a binary frame of 32-bit big-endian
offsets, the JSON message, then its buffers) and ``v1.kernel.websocket.jupyter.org`` (every frame binary:
64-bit little-endian offsets, the channel name, header, parent header, metadata, content, buffers).
"""

from __future__ import annotations

import itertools
import json
import struct
from typing import Any

from jupyter_client.jsonutil import json_default

Message = dict[str, Any]

V1_SUBPROTOCOL = "v1.kernel.websocket.jupyter.org"
CLIENT_CHANNELS = ("shell", "control", "stdin")
MAX_BUFFERS = 64
IMPLIED_CHANNELS = {"input_reply": "stdin", "interrupt_request": "control", "shutdown_request": "control",
                    "debug_request": "control", "usage_request": "control"}  # fmt: skip
_V1_PARTS = ("header", "parent_header", "metadata", "content")


class FrameError(ValueError):
    """A frame that is not a Jupyter message a client may send."""


def _dumps(data: Any) -> str:
    return json.dumps(data, default=json_default, ensure_ascii=False)


def encode(message: Message, channel: str, *, v1: bool) -> str | bytes:
    """One kernel message as a WebSocket frame for a client of either framing."""
    buffers = [bytes(buffer) for buffer in message.get("buffers") or ()]
    if v1:
        parts = [_dumps(message.get(key, {})).encode() for key in _V1_PARTS]
        return _pack_v1(channel.encode(), [*parts, *buffers])
    body = {
        "header": message["header"],
        "parent_header": message.get("parent_header", {}),
        "metadata": message.get("metadata", {}),
        "content": message.get("content", {}),
        "msg_id": message["header"].get("msg_id"),
        "msg_type": message["header"].get("msg_type"),
        "channel": channel,
    }
    if not buffers:
        return _dumps(body)
    return _pack_legacy([_dumps(body).encode(), *buffers])


def decode(frame: str | bytes, *, v1: bool) -> tuple[str, Message]:
    """A client's frame as ``(channel, message)``, checked enough to be passed to a kernel."""
    try:
        if v1:
            if not isinstance(frame, bytes):
                raise FrameError("the v1 protocol sends binary frames")
            channel_bytes, parts = _unpack_v1(frame)
            if len(parts) < len(_V1_PARTS):
                raise FrameError("a v1 frame needs header, parent header, metadata and content")
            channel = channel_bytes.decode()
            message = {key: json.loads(part) for key, part in zip(_V1_PARTS, parts, strict=False)}
            message["buffers"] = parts[len(_V1_PARTS) :]
        elif isinstance(frame, bytes):
            first, *buffers = _unpack_legacy(frame)
            message = json.loads(first)
            if not isinstance(message, dict):
                raise FrameError("the message must be a JSON object")
            message["buffers"] = buffers
            channel = message.pop("channel", None)
        else:
            message = json.loads(frame)
            if not isinstance(message, dict):
                raise FrameError("the message must be a JSON object")
            channel = message.pop("channel", None)
    except (ValueError, UnicodeDecodeError, struct.error, IndexError, RecursionError) as exc:
        if isinstance(exc, FrameError):
            raise
        raise FrameError(f"unreadable frame: {exc}") from None
    return _checked(channel, message)


def _checked(channel: Any, message: Message) -> tuple[str, Message]:
    header = message.get("header")
    if channel is None and isinstance(header, dict):  # jupyter_server's GatewayKernelClient names none
        channel = IMPLIED_CHANNELS.get(str(header.get("msg_type")), "shell")
    if channel not in CLIENT_CHANNELS:
        raise FrameError(f"channel must be one of {', '.join(CLIENT_CHANNELS)}, not {str(channel)[:20]!r}")
    if not isinstance(header, dict):
        raise FrameError("the message needs a header object")
    for key in ("msg_id", "msg_type"):
        if not isinstance(header.get(key), str) or not 0 < len(header[key]) <= 200:
            raise FrameError(f"header.{key} must be a string of 1 to 200 characters")
    for key in ("parent_header", "metadata", "content"):
        if not isinstance(message.setdefault(key, {}), dict):
            raise FrameError(f"{key} must be an object")
    buffers = message.get("buffers") or []
    if not isinstance(buffers, list) or len(buffers) > MAX_BUFFERS:
        raise FrameError(f"at most {MAX_BUFFERS} binary buffers")
    # Only what the kernel's session serializes goes on: no stray keys, no buffers given as JSON.
    clean = {key: message[key] for key in ("header", "parent_header", "metadata", "content")}
    clean["buffers"] = [memoryview(b) for b in buffers if isinstance(b, bytes | bytearray | memoryview)]
    return channel, clean


def _pack_legacy(parts: list[bytes]) -> bytes:
    offsets = [4 * (len(parts) + 1)]
    for part in parts[:-1]:
        offsets.append(offsets[-1] + len(part))
    return struct.pack(f"!{len(parts) + 1}I", len(parts), *offsets) + b"".join(parts)


def _unpack_legacy(frame: bytes) -> list[bytes]:
    (count,) = struct.unpack("!I", frame[:4])
    if not 0 < count <= MAX_BUFFERS + 1:
        raise FrameError("bad part count in a binary frame")
    offsets = [*struct.unpack(f"!{count}I", frame[4 : 4 * (count + 1)]), len(frame)]
    _check_offsets(offsets, 4 * (count + 1), len(frame))
    return [frame[start:stop] for start, stop in itertools.pairwise(offsets)]


def _pack_v1(channel: bytes, parts: list[bytes]) -> bytes:
    count = len(parts) + 2
    offsets = [8 * (count + 1), 8 * (count + 1) + len(channel)]
    for part in parts:
        offsets.append(offsets[-1] + len(part))
    head = b"".join(value.to_bytes(8, "little") for value in (count, *offsets))
    return head + channel + b"".join(parts)


def _unpack_v1(frame: bytes) -> tuple[bytes, list[bytes]]:
    count = int.from_bytes(frame[:8], "little")
    if not 2 < count <= MAX_BUFFERS + 6:
        raise FrameError("bad offset count in a v1 frame")
    offsets = [int.from_bytes(frame[8 * (i + 1) : 8 * (i + 2)], "little") for i in range(count)]
    _check_offsets(offsets, 8 * (count + 1), len(frame))
    pieces = [frame[start:stop] for start, stop in itertools.pairwise(offsets)]
    return pieces[0], pieces[1:]


def _check_offsets(offsets: list[int], start: int, end: int) -> None:
    if offsets[0] != start or offsets[-1] > end or any(a > b for a, b in itertools.pairwise(offsets)):
        raise FrameError("bad offsets in a binary frame")
