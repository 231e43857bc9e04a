"""An output flood neither grows the server without bound nor stalls anyone else."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest

from tests.conftest import Server
from tests.wsclient import connect, of, receive, send

pytestmark = pytest.mark.docker

FLOOD = (
    "import sys\nline = 'y' * 1023 + '\\n'\n"
    "for _ in range(100 * 1024):\n    sys.stdout.write(line)\n"
    "print('end')"
)


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


async def test_a_100_mb_flood(server: Server, session: dict[str, Any]) -> None:
    assert server.process is not None
    pid = server.process.pid
    health_latencies: list[float] = []
    peak_rss = 0.0
    async with connect(server, session["id"]) as socket, httpx.AsyncClient(base_url=server.url) as client:
        await send(socket, type="execute", id="flood", code=FLOOD)
        done: dict[str, Any] | None = None
        received = 0

        async def probe() -> None:
            nonlocal peak_rss
            while done is None:
                started = time.monotonic()
                assert (await client.get("/api/v1/health", timeout=10)).status_code == 200
                health_latencies.append(time.monotonic() - started)
                peak_rss = max(peak_rss, rss_mb(pid))
                await asyncio.sleep(0.2)

        prober = asyncio.create_task(probe())
        while done is None:
            event = await receive(socket, timeout=120)
            if event["type"] == "stream" and "bytes of output skipped" in event["text"]:
                received += int(event["text"].split("[workbench: ")[1].split()[0])
            elif event["type"] == "stream" and "output cut at the source" in event["text"]:  # a huge message
                head, notice = event["text"].split("\n[workbench: output cut at the source: ")
                received += len(head) + int(notice.split()[0])
            elif event["type"] == "stream":
                received += len(event["text"])
            if event["type"] == "done" and event["id"] == "flood":
                done = event
        await prober
    assert done["status"] == "ok"
    assert done["truncated"] is True
    assert "output truncated" in done["stdout"]
    assert len(done["stdout"]) < 2 * 1024 * 1024
    assert received >= 100 * 2**20  # every byte was either delivered or announced as skipped
    assert max(health_latencies) < 1.0, health_latencies
    assert peak_rss < 400, peak_rss
    assert len(health_latencies) >= 3
    assert of([done], "flood")
