"""Kernel messages read from ZeroMQ with a size bound: a huge message is cut before it is decoded.

``jupyter_client`` copies and JSON-decodes every message whole on the event loop; a kernel printing or
returning hundreds of megabytes would then freeze the server and grow it by several times that.  Here the
frames are received without copying (ZeroMQ's I/O thread holds them), their sizes are checked first, and:

* small messages are verified (HMAC) and decoded on the event loop, as usual;
* larger ones (over :data:`OFF_LOOP_BYTES`) are verified and decoded on a worker thread;
* a message whose content is over the reader's ``max_bytes`` is never decoded whole: its content is
  replaced by the start of its text (its first ``max_bytes``, when it has a text) and a notice saying how
  much was dropped, and the message is marked with :data:`CUT_KEY` (the size of its content).

Headers, parent headers and metadata larger than :data:`MAX_HEADER_BYTES` make the message unreadable
(:class:`ValueError`), as does a bad signature; binary buffers (used by widgets, not by the API) are
dropped.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import re
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import zmq
from jupyter_client.session import DELIM, Session

Message = dict[str, Any]

MAX_MESSAGE_BYTES = 4 * 1024 * 1024
"""Largest content of one kernel message that is decoded; larger ones are cut."""
OFF_LOOP_BYTES = 256 * 1024
"""Messages larger than this are verified and decoded on a worker thread."""
MAX_HEADER_BYTES = 64 * 1024
"""Largest header, parent header or metadata frame."""
CUT_KEY = "workbench_cut"
CUT_NOTICE = (
    "\n[workbench: output cut at the source: {dropped} bytes of this {kind} message dropped "
    "(a kernel message may have {limit} MiB)]\n"
)

_decoder = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kernel-messages")
"""One thread for the big messages of all kernels (hashing releases the GIL; nothing else waits on it)."""
_TEXT_KEYS = (b'"text"', b'"text/plain"', b'"evalue"')


class FrameReader:
    """Reads one message at a time from a channel's socket, within bounds."""

    def __init__(self, session: Session, *, max_bytes: int = MAX_MESSAGE_BYTES) -> None:
        self.session = session
        self.max_bytes = max_bytes

    async def read(self, socket: Any) -> Message:
        """The next message of ``socket`` (a ``zmq.asyncio`` socket); :class:`ValueError` if unreadable."""
        frames: list[zmq.Frame] = await socket.recv_multipart(copy=False)
        parts = _message_parts(frames)
        del frames
        if sum(len(part) for part in parts) <= OFF_LOOP_BYTES:
            return self._decode(parts)
        return await asyncio.get_running_loop().run_in_executor(_decoder, self._decode, parts)

    def _decode(self, parts: list[memoryview]) -> Message:
        if len(parts) < 5:
            msg = "malformed kernel message: fewer than 5 frames"
            raise ValueError(msg)
        signature, header, parent, metadata, content = parts[:5]
        if max(len(header), len(parent), len(metadata)) > MAX_HEADER_BYTES:
            msg = "kernel message with an oversized header"
            raise ValueError(msg)
        self._verify(bytes(signature), (header, parent, metadata, content))
        head = _object(header)
        kind = str(head.get("msg_type", ""))
        message: Message = {
            "header": head,
            "msg_id": head.get("msg_id"),
            "msg_type": kind,
            "parent_header": _object(parent),
            "metadata": _object(metadata),
            "buffers": [],
        }
        if len(content) <= self.max_bytes:
            message["content"] = _object(content)
        else:
            message["content"] = self._cut(kind, content)
            message[CUT_KEY] = len(content)
        return message

    def _verify(self, signature: bytes, parts: tuple[memoryview, ...]) -> None:
        auth = self.session.auth
        if auth is None:
            return
        digest = auth.copy()
        for part in parts:
            digest.update(part)
        if not hmac.compare_digest(signature, digest.hexdigest().encode()):
            msg = "kernel message with an invalid signature"
            raise ValueError(msg)

    def _cut(self, kind: str, content: memoryview) -> dict[str, Any]:
        """Stand-in content for a message too large to decode: the scalars the API uses, the first
        ``max_bytes`` of its text and a notice."""
        head = bytes(content[: self.max_bytes])
        text = _preview(head)
        dropped = len(content) - len(text.encode("utf-8", "replace"))
        text += CUT_NOTICE.format(dropped=dropped, kind=kind or "kernel", limit=self.max_bytes // 2**20)
        if kind == "stream":
            return {"name": _scalar(head, "name") or "stdout", "text": text}
        if kind in ("execute_result", "display_data", "update_display_data"):
            return {
                "data": {"text/plain": text},
                "metadata": {},
                "execution_count": _scalar(head, "execution_count"),
            }
        if kind == "error":
            return {"ename": _scalar(head, "ename") or "Error", "evalue": text, "traceback": []}
        return {
            key: value
            for key in ("status", "execution_count", "execution_state", "name", "prompt", "password")
            if (value := _scalar(head, key)) is not None
        }


def _message_parts(frames: list[zmq.Frame]) -> list[memoryview]:
    """The frames after the identities (signature, header, parent, metadata, content, buffers)."""
    for index, frame in enumerate(frames):
        if len(frame) == len(DELIM) and frame.bytes == DELIM:
            return [memoryview(f.buffer) for f in frames[index + 1 :]]
    msg = "malformed kernel message: no delimiter"
    raise ValueError(msg)


def _object(part: memoryview) -> dict[str, Any]:
    value = json.loads(bytes(part)) if len(part) else {}
    if not isinstance(value, dict):
        msg = "a kernel message part is not a JSON object"
        raise ValueError(msg)
    return value


_SCALAR = r'"{key}"\s*:\s*("(?:[^"\\]|\\.)*"|-?[0-9]+|true|false|null)'


def _scalar(head: bytes, key: str) -> Any:
    """A top-level string or number of a JSON object from the start of its text (best effort)."""
    match = re.search(_SCALAR.format(key=re.escape(key)).encode(), head)
    if match is None:
        return None
    value = json.loads(match.group(1))
    return value if isinstance(value, str | int | bool) else None


def _preview(head: bytes) -> str:
    """The start of the first long string (``text``, ``text/plain``, ``evalue``) in ``head``."""
    starts = [m.end() for key in _TEXT_KEYS if (m := re.search(re.escape(key) + rb'\s*:\s*"', head))]
    if not starts:
        return ""
    body = head[min(starts) :]
    end = re.search(rb'(?<!\\)(?:\\\\)*"', body)
    fragment = body[: end.end() - 1] if end else body
    for cut in range(7):  # the start may end in the middle of an escape such as \u00e9
        try:
            text = json.loads(b'"' + fragment[: len(fragment) - cut] + b'"')
        except ValueError:
            continue
        return str(text).encode("utf-8", "replace").decode("utf-8")
    return ""
