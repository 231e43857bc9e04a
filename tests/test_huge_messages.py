"""A kernel message of hundreds of megabytes is cut where it is read, never decoded whole."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx
import pytest
import zmq
from jupyter_client.session import Session

from tests.conftest import Server, run
from tests.test_flood import rss_mb
from tests.wsclient import connect, execute, of
from workbench.kernels.frames import CUT_KEY, MAX_MESSAGE_BYTES, FrameReader

# ---------------------------------------------------------------------------------------------- the reader


class FakeSocket:
    """Hands out pre-made multipart messages as ``zmq.Frame`` lists, like ``recv_multipart(copy=False)``."""

    def __init__(self, *messages: list[bytes]) -> None:
        self.messages = list(messages)

    async def recv_multipart(self, copy: bool = True) -> list[zmq.Frame]:
        assert not copy
        return [zmq.Frame(part) for part in self.messages.pop(0)]


def wire(session: Session, kind: str, content: dict[str, Any] | bytes) -> list[bytes]:
    message = session.msg(kind, content={})
    message["parent_header"] = {"msg_id": "parent-1"}
    frames: list[bytes] = session.serialize(message)
    if isinstance(content, bytes):  # a hand-made content frame (signed again)
        frames[-1] = content
        frames[frames.index(b"<IDS|MSG>") + 1] = session.sign(frames[-4:])
    else:
        frames[-1] = session.pack(content)
        frames[frames.index(b"<IDS|MSG>") + 1] = session.sign(frames[-4:])
    return frames


def read(session: Session, *messages: list[bytes]) -> list[dict[str, Any]]:
    reader = FrameReader(session)

    async def all_of_them() -> list[dict[str, Any]]:
        socket = FakeSocket(*messages)
        return [await reader.read(socket) for _ in messages]

    return asyncio.run(all_of_them())


def test_a_huge_display_is_cut_to_a_preview_and_a_notice() -> None:
    session = Session(key=b"k" * 32)
    text = "é" * (3 * MAX_MESSAGE_BYTES)
    small = {"name": "stdout", "text": "fine\n"}
    huge, normal = read(
        session,
        wire(session, "display_data", {"data": {"text/plain": text}, "metadata": {}}),
        wire(session, "stream", small),
    )
    assert huge[CUT_KEY] > 2 * MAX_MESSAGE_BYTES
    shown = huge["content"]["data"]["text/plain"]
    assert shown.startswith("éééé")
    assert "output cut at the source" in shown
    assert len(shown.encode()) < MAX_MESSAGE_BYTES + 1000
    assert huge["parent_header"] == {"msg_id": "parent-1"}
    assert normal["content"] == small
    assert CUT_KEY not in normal


def test_a_huge_reply_keeps_its_status_and_a_huge_stream_its_name() -> None:
    session = Session(key=b"k" * 32)
    payload = json.dumps({"status": "ok", "execution_count": 7, "payload": ["x" * 2 * MAX_MESSAGE_BYTES]})
    stream = json.dumps({"name": "stderr", "text": "é" * MAX_MESSAGE_BYTES})  # as \u00e9 escapes
    reply, err = read(
        session, wire(session, "execute_reply", payload.encode()), wire(session, "stream", stream.encode())
    )
    assert reply["content"] == {"status": "ok", "execution_count": 7}
    assert err["content"]["name"] == "stderr"
    assert err["content"]["text"].startswith("é")


@pytest.mark.parametrize("damage", ["signature", "header"])
def test_a_forged_or_oversized_message_is_refused(damage: str) -> None:
    session = Session(key=b"k" * 32)
    frames = wire(session, "stream", {"name": "stdout", "text": "x" * 300_000})
    start = frames.index(b"<IDS|MSG>") + 1
    if damage == "signature":
        frames[start] = b"0" * 64
    else:
        frames[start + 3] = json.dumps({"pad": "m" * 100_000}).encode()  # metadata
        frames[start] = session.sign(frames[start + 1 : start + 5])
    with pytest.raises(ValueError, match=r"signature|header"):
        read(session, frames)


# ---------------------------------------------------------------------------------------------- end to end

HUGE_STREAM = "import sys\nsys.stdout.write('z' * 150_000_000)\nsys.stdout.flush()\nprint('after')"


@pytest.mark.docker
async def test_a_150_mb_print_neither_freezes_nor_grows_the_server(server: Server) -> None:
    assert server.process is not None
    pid = server.process.pid
    with server.client() as api:
        answer = api.post("/api/v1/sessions", json={"memory_mb": 2048})
        assert answer.status_code == 201, answer.text
        sid = answer.json()["id"]
    try:
        before = rss_mb(pid)
        latencies: list[float] = []
        peak = before
        finished = False
        async with httpx.AsyncClient(base_url=server.url) as client, connect(server, sid) as socket:

            async def probe() -> None:
                nonlocal peak
                while not finished:
                    started = time.monotonic()
                    assert (await client.get("/api/v1/health", timeout=10)).status_code == 200
                    latencies.append(time.monotonic() - started)
                    peak = max(peak, rss_mb(pid))
                    await asyncio.sleep(0.05)

            prober = asyncio.create_task(probe())
            try:
                events = await execute(socket, "big", HUGE_STREAM)
            finally:
                finished = True
                await prober
        done = of(events, "big", "done")[0]
        assert done["status"] == "ok"
        assert done["truncated"] is True
        text = "".join(e["text"] for e in of(events, "big", "stream"))
        assert "output cut at the source" in text
        assert "after" in text
        assert max(latencies) < 2, latencies
        assert peak - before < 400, (before, peak)  # the message itself is 150 MB; nothing decodes it whole
        with server.client() as api:
            assert run(api, sid, "1 + 1")["outputs"][0]["data"]["text/plain"] == "2"
    finally:
        with server.client() as api:
            api.delete(f"/api/v1/sessions/{sid}")
