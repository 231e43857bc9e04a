"""WebSocket round trip and throughput against a raw jupyter_client on the same kernel, in one run.

Starts its own server, creates one session, then alternates blocks of executes of ``1`` through the
Workbench WebSocket, through the Jupyter gateway's channels socket (``/api/kernels/{id}/channels``: an
``execute_request`` in, until its ``execute_reply`` and its ``idle`` status are back, as a notebook waits)
and straight over ZeroMQ with jupyter_client (using the kernel's connection file):

    .venv/bin/python bench/ws_rtt.py [-n 300]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import websockets
import zmq.asyncio
from jupyter_client.asynchronous.client import AsyncKernelClient

from workbench.testing import ServerProcess, throwaway_server

TEN_MB = (  # flushed every MiB: one kernel message past 4 MiB is cut at the server's reader by design
    "import sys\nchunk = 'x' * 1023 + '\\n'\nfor i in range(10 * 1024):\n    sys.stdout.write(chunk)\n"
    "    if i % 1024 == 1023:\n        sys.stdout.flush()"
)


class Raw:
    """A plain jupyter_client on the session's kernel."""

    def __init__(self, info: dict[str, Any]) -> None:
        self.client = AsyncKernelClient(context=zmq.asyncio.Context.instance())
        self.client.load_connection_info(info)  # type: ignore[arg-type]
        self.client.start_channels(stdin=False, hb=False)

    async def execute(self, code: str) -> int:
        """Run ``code``; the bytes of stdout it printed."""
        msg_id = self.client.execute(code, stop_on_error=False)
        printed = 0
        while True:
            message = await self.client.get_iopub_msg()
            if message["parent_header"].get("msg_id") != msg_id:
                continue
            if message["msg_type"] == "stream":
                printed += len(message["content"]["text"])
            elif message["msg_type"] == "status" and message["content"]["execution_state"] == "idle":
                break
        await self.client.get_shell_msg()
        return printed


class Socket:
    def __init__(self, connection: Any) -> None:
        self.connection = connection
        self.count = 0

    async def execute(self, code: str) -> int:
        self.count += 1
        request_id = f"b{self.count}"
        await self.connection.send(json.dumps({"type": "execute", "id": request_id, "code": code}))
        printed = 0
        while True:
            event = json.loads(await self.connection.recv())
            if event.get("id") != request_id:
                continue
            if event["type"] == "stream":
                printed += len(event["text"])
            elif event["type"] == "done":
                return printed


class Gateway:
    """A Jupyter client on the gateway channels socket (legacy framing: JSON text frames)."""

    def __init__(self, connection: Any) -> None:
        self.connection = connection

    async def execute(self, code: str) -> int:
        msg_id = uuid.uuid4().hex
        header = {"msg_id": msg_id, "msg_type": "execute_request", "username": "bench", "session": "bench",
                  "date": "", "version": "5.3"}  # fmt: skip
        content = {"code": code, "silent": False, "store_history": True, "user_expressions": {},
                   "allow_stdin": False, "stop_on_error": True}  # fmt: skip
        message = {
            "header": header,
            "parent_header": {},
            "metadata": {},
            "content": content,
            "channel": "shell",
        }
        await self.connection.send(json.dumps(message))
        printed = 0
        replied = idle = False
        while not (replied and idle):
            answer = json.loads(await self.connection.recv())
            if answer["parent_header"].get("msg_id") != msg_id:
                continue
            kind = answer["msg_type"]
            if kind == "stream":
                printed += len(answer["content"]["text"])
            replied = replied or kind == "execute_reply"
            idle = idle or (kind == "status" and answer["content"]["execution_state"] == "idle")
        return printed


async def timings(run: Callable[[str], Awaitable[int]], n: int) -> list[float]:
    samples = []
    for _ in range(n):
        started = time.perf_counter()
        await run("1")
        samples.append((time.perf_counter() - started) * 1000)
    return samples


def summary(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[int(0.99 * (len(ordered) - 1))]


async def throughput(run: Callable[[str], Awaitable[int]]) -> float:
    started = time.perf_counter()
    printed = await run(TEN_MB)
    assert printed >= 10 * 2**20 * 0.99, printed
    return printed / 2**20 / (time.perf_counter() - started)


Run = Callable[[str], Awaitable[int]]


@contextlib.asynccontextmanager
async def connect(
    kind: str, server: ServerProcess, session_id: str, info: dict[str, Any]
) -> AsyncIterator[Run]:
    """One client, connected for one block only (so no client has to wade through the others' traffic)."""
    if kind == RAW:
        raw = Raw(info)
        try:
            yield raw.execute
        finally:
            raw.client.stop_channels()
        return
    path = f"/api/v1/sessions/{session_id}/ws" if kind == WEBSOCKET else f"/api/kernels/{session_id}/channels"
    url = server.url.replace("http", "ws") + path
    headers = {"Authorization": f"Bearer {server.token}"}
    async with websockets.connect(url, additional_headers=headers, max_size=2**26) as connection:
        yield Socket(connection).execute if kind == WEBSOCKET else Gateway(connection).execute


RAW, WEBSOCKET, GATEWAY = "raw jupyter_client ", "Workbench WebSocket", "gateway channels   "


async def measure(server: ServerProcess, n: int) -> None:
    with server.client() as client:
        session_id = client.post("/api/v1/sessions").json()["id"]
        info = client.get(f"/api/v1/sessions/{session_id}/connection").json()
    samples: dict[str, list[float]] = {RAW: [], WEBSOCKET: [], GATEWAY: []}
    for _ in range(3):  # alternate blocks so drift affects all alike
        for kind in samples:
            async with connect(kind, server, session_id, info) as run:
                await timings(run, 10)
                samples[kind] += await timings(run, n // 3)
    raw_p50 = summary(samples[RAW])[0]
    print(f"round trip of `1`, n={len(samples[RAW])} each")
    for kind, values in samples.items():
        p50, p99 = summary(values)
        print(f"  {kind} p50 {p50:6.2f} ms  p99 {p99:6.2f} ms  ({p50 / raw_p50:.2f}x of raw p50)")
    print("stdout throughput, 10 MB print")
    rates = {}
    for kind in samples:
        async with connect(kind, server, session_id, info) as run:
            rates[kind] = await throughput(run)
    for kind, rate in rates.items():
        print(f"  {kind} {rate:7.1f} MB/s  ({rate / rates[RAW]:.2f}x of raw)")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-n", type=int, default=300, help="round trips per client (default 300)")
    args = parser.parse_args()
    with throwaway_server(token="bench") as server:
        asyncio.run(measure(server, args.n))


if __name__ == "__main__":
    main()
