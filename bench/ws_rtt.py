"""WebSocket round trip and throughput against a raw jupyter_client on the same kernel, in one run.

Starts its own server, creates one session, then alternates blocks of executes of ``1`` through the
Workbench WebSocket and straight over ZeroMQ with jupyter_client (using the kernel's connection file):

    .venv/bin/python bench/ws_rtt.py [-n 300]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

import websockets
import zmq.asyncio
from jupyter_client.asynchronous.client import AsyncKernelClient

from workbench.testing import ServerProcess, throwaway_server

TEN_MB = "import sys\nchunk = 'x' * 1023 + '\\n'\nfor _ in range(10 * 1024):\n    sys.stdout.write(chunk)"


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


async def measure(server: ServerProcess, n: int) -> None:
    with server.client() as client:
        session_id = client.post("/api/v1/sessions").json()["id"]
        info = client.get(f"/api/v1/sessions/{session_id}/connection").json()
    raw = Raw(info)
    url = server.url.replace("http", "ws") + f"/api/v1/sessions/{session_id}/ws"
    async with websockets.connect(url, additional_headers={"Authorization": f"Bearer {server.token}"},
                                  max_size=2**26) as connection:  # fmt: skip
        socket = Socket(connection)
        await timings(raw.execute, 20)
        await timings(socket.execute, 20)
        raw_samples: list[float] = []
        ws_samples: list[float] = []
        for _ in range(3):  # alternate blocks so drift affects both alike
            raw_samples += await timings(raw.execute, n // 3)
            ws_samples += await timings(socket.execute, n // 3)
        raw_p50, raw_p99 = summary(raw_samples)
        ws_p50, ws_p99 = summary(ws_samples)
        print(f"round trip of `1`, n={len(raw_samples)} each")
        print(f"  raw jupyter_client  p50 {raw_p50:6.2f} ms  p99 {raw_p99:6.2f} ms")
        print(f"  Workbench WebSocket p50 {ws_p50:6.2f} ms  p99 {ws_p99:6.2f} ms")
        print(f"  ratio (WebSocket / raw) p50 {ws_p50 / raw_p50:.2f}x  p99 {ws_p99 / raw_p99:.2f}x")
        raw_rate = await throughput(raw.execute)
        ws_rate = await throughput(socket.execute)
        print("stdout throughput, 10 MB print")
        print(f"  raw jupyter_client  {raw_rate:7.1f} MB/s")
        print(f"  Workbench WebSocket {ws_rate:7.1f} MB/s  ({ws_rate / raw_rate:.2f}x of raw)")
    raw.client.stop_channels()


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
