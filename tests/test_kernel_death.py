"""Kernels that die under running code: every execute still ends with ``done``, and the kernel comes back."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import Server, run
from tests.wsclient import connect, execute, of, receive, send

pytestmark = pytest.mark.docker


@pytest.fixture
def small_session(api: httpx.Client) -> Iterator[dict[str, Any]]:
    answer = api.post("/api/v1/sessions", json={"memory_mb": 256})
    assert answer.status_code == 201, answer.text
    yield answer.json()
    api.delete(f"/api/v1/sessions/{answer.json()['id']}")


async def _die(server: Server, session_id: str, code: str) -> tuple[list[dict[str, Any]], float]:
    """Run ``code`` that kills the kernel; the events until the kernel is back, and seconds to ``done``."""
    async with connect(server, session_id) as socket, connect(server, session_id) as watcher:
        await execute(socket, "setup", "open('kept.txt', 'w').write('still here')\nbefore = 1")
        started = time.monotonic()
        await send(socket, type="execute", id="die", code=code)
        events: list[dict[str, Any]] = []
        elapsed = float("inf")
        while not any(e["type"] == "kernel" and e["state"] == "idle" for e in events):
            events.append(await receive(socket, timeout=30))
            if events[-1]["type"] == "done" and events[-1]["id"] == "die":
                elapsed = time.monotonic() - started
        watched: list[dict[str, Any]] = []
        while not any(e["type"] == "kernel" and e["state"] == "dead" for e in watched):
            watched.append(await receive(watcher, timeout=30))
        after = await execute(socket, "after", "print(open('kept.txt').read())\nprint('before' in dir())")
    assert of(after, "after")[-1]["stdout"] == "still here\nFalse\n"
    return events, elapsed


async def test_os_exit_is_reported_and_the_kernel_comes_back(
    server: Server, small_session: dict[str, Any]
) -> None:
    events, elapsed = await _die(server, small_session["id"], "import os; os._exit(1)")
    assert elapsed < 10
    done = of(events, "die")[-1]
    assert done["type"] == "done"
    assert done["status"] == "error"
    assert done["reason"] == "died"
    kernel_events = [(e["state"], e["reason"]) for e in events if e["type"] == "kernel"]
    assert ("dead", "died") in kernel_events
    assert kernel_events[-1][0] == "idle"


async def test_memory_bomb_is_an_oom_of_that_kernel_only(
    server: Server, api: httpx.Client, small_session: dict[str, Any]
) -> None:
    with server.client() as client:
        neighbour = client.post("/api/v1/sessions", json={"memory_mb": 256}).json()
    try:
        run(api, neighbour["id"], "alive = True")
        bomb = "chunks = []\nwhile True:\n    chunks.append(b'x' * 32 * 2**20)"
        events, elapsed = await _die(server, small_session["id"], bomb)
        done = of(events, "die")[-1]
        assert done["status"] == "error"
        assert done["reason"] == "oom"
        assert "memory" in done["error"]["evalue"]
        assert elapsed < 10
        assert [e for e in events if e["type"] == "kernel" and e["reason"] == "oom"]
        assert run(api, neighbour["id"], "alive")["outputs"][0]["data"]["text/plain"] == "True"
    finally:
        api.delete(f"/api/v1/sessions/{neighbour['id']}")


async def test_done_arrives_within_ten_seconds_of_a_crash(
    server: Server, small_session: dict[str, Any]
) -> None:
    async with connect(server, small_session["id"]) as socket:
        started = time.monotonic()
        events = await execute(socket, "crash", "import ctypes; ctypes.string_at(0)")
        assert time.monotonic() - started < 10
    assert of(events, "crash")[-1]["status"] == "error"
