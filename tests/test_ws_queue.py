"""Queued work is bounded: one code limit on every route, a bounded queue per session, stored code capped,
and the queue of a socket that went away is dropped when no other client watches the session."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import Server, run
from tests.test_files import new_session
from tests.wsclient import connect, execute, of, receive, send, until_done
from workbench.handlers.ws import _frame_id
from workbench.inbound import InboundBudget
from workbench.kernels.admission import MAX_PENDING, STORED_CODE_BYTES, check_code, stored_code

# ---------------------------------------------------------------------------------------------- units


def test_stored_code_is_cut_on_a_character_boundary_with_a_marker() -> None:
    code = "é" * STORED_CODE_BYTES  # two bytes each
    kept = stored_code(code)
    assert kept.startswith("é" * (STORED_CODE_BYTES // 2))
    assert kept.endswith("more bytes of code were run but not stored]\n")
    assert len(kept.encode()) < STORED_CODE_BYTES + 100
    assert stored_code("print(1)") == "print(1)"


def test_code_limit_counts_bytes_and_survives_lone_surrogates() -> None:
    check_code("\ud800" * 100, max_code_kb=1)
    with pytest.raises(Exception, match="larger than 1 KiB"):
        check_code("é" * 600, max_code_kb=1)


def test_a_tenant_past_its_inbound_budget_waits_and_others_do_not() -> None:
    budget = InboundBudget(rate=1000, burst=2000)
    assert [budget.delay("loud", 500) for _ in range(4)] == [0, 0, 0, 0]
    assert budget.delay("loud", 500) == pytest.approx(0.5, abs=0.05)
    assert budget.delay("quiet", 500) == 0


def test_the_id_of_a_frame_too_large_to_decode_is_found_near_its_start() -> None:
    assert _frame_id('{"type": "execute", "id": "run-7", "code": "' + "x" * 5000 + '"}') == "run-7"
    assert _frame_id(b'{"code": "x", "type": "execute"}') is None


# ---------------------------------------------------------------------------------------------- end to end

pytestmark = pytest.mark.docker


@pytest.fixture
def sid(server: Server) -> Iterator[str]:
    with server.client() as client:
        session_id = new_session(client)
        yield session_id
        client.delete(f"/api/v1/sessions/{session_id}")


async def hold(socket: Any, request_id: str = "hold") -> None:
    """Start an execute that waits for input, so that what comes next stays queued."""
    await send(socket, type="execute", id=request_id, code="answer = input('go? ')")
    while (await receive(socket))["type"] != "input_request":
        pass


async def test_a_session_holds_a_bounded_number_of_executes(server: Server, sid: str) -> None:
    async with connect(server, sid) as socket:
        await hold(socket)
        for i in range(MAX_PENDING + 10):
            await send(socket, type="execute", id=f"q{i}", code=f"n = {i}")
        refused: list[str] = []
        while len(refused) < 11:
            event = await receive(socket)
            if event["type"] == "error":
                assert event["code"] == "queue-full"
                refused.append(event["id"])
        assert refused == [f"q{i}" for i in range(MAX_PENDING - 1, MAX_PENDING + 10)]
        with server.client() as api:
            answer = api.post(f"/api/v1/sessions/{sid}/execute", json={"code": "1"})
            assert answer.status_code == 429
            assert answer.json()["error"]["code"] == "queue-full"
        await send(socket, type="input_reply", id="hold", value="yes")
        events = await until_done(socket, f"q{MAX_PENDING - 2}", timeout=120)
        assert len([e for e in events if e["type"] == "done" and e["status"] == "ok"]) == MAX_PENDING
    with server.client() as api:
        assert run(api, sid, "n")["outputs"][0]["data"]["text/plain"] == str(MAX_PENDING - 2)


async def test_code_over_the_limit_is_refused_on_the_socket_too(server: Server, sid: str) -> None:
    big = "x = 1  # " + "y" * (1024 * 1024)  # over the 1 MiB code limit, under the 2 MiB frame limit
    async with connect(server, sid) as socket:
        await send(socket, type="execute", id="big", code=big)
        events = await until_done(socket, "big")
        assert of(events, "big", "error")[0]["code"] == "too-large"
        assert of(events, "big", "done")[0]["status"] == "error"
        done = (await execute(socket, "small", "2 * 21"))[-1]
        assert done["outputs"][0]["data"]["text/plain"] == "42"


async def test_queued_executes_of_a_closed_socket_are_dropped_unless_someone_watches(
    server: Server, sid: str
) -> None:
    touch = "open('/data/{name}', 'w').close()"
    async with connect(server, sid) as socket:
        await hold(socket)
        for i in range(3):
            await send(socket, type="execute", id=f"gone{i}", code=touch.format(name=f"gone{i}.txt"))
    with server.client() as api:
        assert api.post(f"/api/v1/sessions/{sid}/interrupt").status_code == 204
        await asyncio.sleep(0.5)
        listing = run(api, sid, "import os; sorted(n for n in os.listdir('/data') if n.endswith('.txt'))")
        assert listing["outputs"][0]["data"]["text/plain"] == "[]"
    async with connect(server, sid) as watcher:
        async with connect(server, sid) as socket:
            await hold(socket)
            for i in range(3):
                await send(socket, type="execute", id=f"kept{i}", code=touch.format(name=f"kept{i}.txt"))
        await send(watcher, type="interrupt")
        await until_done(watcher, "kept2")
    with server.client() as api:
        listing = run(api, sid, "sorted(n for n in os.listdir('/data') if n.endswith('.txt'))")
        assert listing["outputs"][0]["data"]["text/plain"] == "['kept0.txt', 'kept1.txt', 'kept2.txt']"


def test_stored_code_is_bounded(server: Server, sid: str) -> None:
    code = "total = 1\n" + "#" * (700 * 1024)
    with server.client() as api:
        assert run(api, sid, code)["status"] == "ok"
    deadline = time.monotonic() + 30
    row = None
    while row is None:  # the record is written in the background
        assert time.monotonic() < deadline
        time.sleep(0.1)
        with contextlib.closing(sqlite3.connect(server.state_dir / "workbench.db")) as db:
            row = db.execute("select code from executions where session_id = ?", (sid,)).fetchone()
    (stored,) = row
    assert len(stored) < STORED_CODE_BYTES + 100
    assert stored.startswith("total = 1\n")
    assert "were run but not stored" in stored


def test_rest_refuses_code_over_the_limit_with_json(server: Server, sid: str) -> None:
    with server.client() as api:
        answer = api.post(f"/api/v1/sessions/{sid}/execute", json={"code": "é" * (600 * 1024)})
    assert answer.status_code == 413
    assert answer.json()["error"]["code"] == "too-large"
