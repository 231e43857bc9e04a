"""Streaming execution over the WebSocket and NDJSON, against real kernels."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import httpx
import pytest

from tests.conftest import Server
from tests.wsclient import connect, execute, of, receive, send, until_done
from workbench.handlers.ws import origin_allowed

pytestmark = pytest.mark.docker


async def test_prints_in_order_with_done_last(server: Server, session: dict[str, Any]) -> None:
    async with connect(server, session["id"]) as socket:
        code = "import sys\nfor i in range(3):\n    print('行', i, flush=True)\nprint('err', file=sys.stderr)"
        events = await execute(socket, "a", code)
    mine = of(events, "a")
    assert mine[-1]["type"] == "done"
    assert mine[-1]["status"] == "ok"
    stdout = "".join(e["text"] for e in of(events, "a", "stream") if e["name"] == "stdout")
    assert stdout == "行 0\n行 1\n行 2\n"
    assert mine[-1]["stdout"] == stdout
    assert mine[-1]["stderr"] == "err\n"


async def test_matplotlib_figure_arrives_as_png(server: Server, session: dict[str, Any]) -> None:
    code = "import matplotlib.pyplot as plt\nplt.plot([1, 3, 2])\nplt.title('月度销售额')\nplt.show()"
    async with connect(server, session["id"]) as socket:
        events = await execute(socket, "fig", code)
    images = [e for e in of(events, "fig", "display_data") if "image/png" in e["data"]]
    assert len(images) == 1
    assert base64.b64decode(images[0]["data"]["image/png"]).startswith(b"\x89PNG")
    assert of(events, "fig")[-1]["status"] == "ok"
    assert "Glyph" not in of(events, "fig")[-1]["stderr"]  # the CJK font renders the title


async def test_dataframe_has_html(server: Server, session: dict[str, Any]) -> None:
    async with connect(server, session["id"]) as socket:
        events = await execute(
            socket, "df", "import pandas as pd\npd.DataFrame({'部门': ['财务'], 'x': [1]})"
        )
    result = of(events, "df", "execute_result")[0]
    assert "<table" in result["data"]["text/html"]
    assert "财务" in result["data"]["text/html"]


async def test_exception_gives_error_event_and_traceback(server: Server, session: dict[str, Any]) -> None:
    async with connect(server, session["id"]) as socket:
        events = await execute(socket, "boom", "def f():\n    raise ValueError('bad value')\nf()")
    errors = of(events, "boom", "error")
    assert errors[0]["ename"] == "ValueError"
    assert errors[0]["evalue"] == "bad value"
    assert errors[0]["traceback"]
    done = of(events, "boom")[-1]
    assert done["status"] == "error"
    assert done["error"]["ename"] == "ValueError"


async def test_input_is_answered_over_the_socket(server: Server, session: dict[str, Any]) -> None:
    async with connect(server, session["id"]) as socket:
        await send(socket, type="execute", id="ask", code="name = input('who? ')\nprint('hello', name)")
        event = await receive(socket)
        while event["type"] != "input_request":
            event = await receive(socket)
        assert event["prompt"] == "who? "
        await send(socket, type="input_reply", id="ask", value="李雷")
        events = await until_done(socket, "ask")
    assert of(events, "ask")[-1]["stdout"].endswith("hello 李雷\n")


async def test_interrupt_frame_stops_a_busy_loop(server: Server, session: dict[str, Any]) -> None:
    async with connect(server, session["id"]) as socket:
        await send(socket, type="execute", id="spin", code="while True: pass")
        await asyncio.sleep(1)
        started = asyncio.get_running_loop().time()
        await send(socket, type="interrupt")
        events = await until_done(socket, "spin", timeout=15)
        assert asyncio.get_running_loop().time() - started < 15
    assert of(events, "spin")[-1]["error"]["ename"] == "KeyboardInterrupt"


async def test_queued_executes_finish_in_order(server: Server, session: dict[str, Any]) -> None:
    async with connect(server, session["id"]) as socket:
        for n in range(3):
            await send(socket, type="execute", id=f"q{n}", code=f"import time; time.sleep(0.3); print({n})")
        events = await until_done(socket, "q2")
    dones = [e["id"] for e in events if e["type"] == "done"]
    assert dones == ["q0", "q1", "q2"]
    assert [of(events, f"q{n}")[-1]["stdout"] for n in range(3)] == ["0\n", "1\n", "2\n"]


async def test_a_second_client_sees_the_first_ones_output(server: Server, session: dict[str, Any]) -> None:
    async with connect(server, session["id"]) as first, connect(server, session["id"]) as second:
        events = await execute(first, "shared", "print('for everyone')")
        seen = await until_done(second, "shared")
    assert of(events, "shared")[-1]["stdout"] == "for everyone\n"
    assert [e["text"] for e in of(seen, "shared", "stream")] == ["for everyone\n"]


async def test_rest_executions_are_seen_on_the_socket(server: Server, session: dict[str, Any]) -> None:
    async with (
        connect(server, session["id"]) as socket,
        httpx.AsyncClient(
            base_url=server.url, headers={"Authorization": f"Bearer {server.token}"}, timeout=30
        ) as client,
    ):
        answer = await client.post(
            f"/api/v1/sessions/{session['id']}/execute", json={"code": "print('rest')"}
        )
        assert answer.json()["stdout"] == "rest\n"
        event = await receive(socket)
        while event["type"] != "done":
            event = await receive(socket)
        assert event["stdout"] == "rest\n"


@pytest.mark.parametrize(("frame", "fragment"), [
    ("not json", "not valid JSON"),
    ("[1]", "JSON object"),
    (json.dumps({"type": "execute", "id": "x"}), "code"),
    (json.dumps({"type": "execute", "code": "1"}), "id"),
    (json.dumps({"type": "dance"}), "unknown frame type"),
    ('{"type": "execute", "id": "x", "code": "1", "timeout": NaN}', "not valid JSON"),
    ('{"type": "execute", "id": "x", "code": "1", "timeout": 1e999}', "not valid JSON"),
])  # fmt: skip
async def test_a_bad_frame_gets_an_error_and_the_socket_stays_open(
    server: Server, session: dict[str, Any], frame: str, fragment: str
) -> None:
    async with connect(server, session["id"]) as socket:
        await socket.send(frame)
        event = await receive(socket)
        assert event["type"] == "error"
        assert "id" not in event
        assert fragment in event["message"]
        events = await execute(socket, "after", "1 + 1")
    assert of(events, "after")[-1]["status"] == "ok"


async def test_timeout_over_the_socket(server: Server, session: dict[str, Any]) -> None:
    async with connect(server, session["id"]) as socket:
        events = await execute(socket, "slow", "import time; time.sleep(30)", timeout=1)
        assert of(events, "slow")[-1]["status"] == "timeout"
        assert of(await execute(socket, "next", "2 + 2"), "next")[-1]["status"] == "ok"


async def test_reconnect_during_an_execution_gets_the_rest_and_done(
    server: Server, session: dict[str, Any]
) -> None:
    code = "import time\nfor i in range(6):\n    print(i, flush=True)\n    time.sleep(0.5)"
    async with connect(server, session["id"]) as socket:
        await send(socket, type="execute", id="long", code=code)
        await receive(socket)
    async with connect(server, session["id"]) as again:
        events = await until_done(again, "long")
    done = of(events, "long")[-1]
    assert done["status"] == "ok"
    assert done["stdout"] == "".join(f"{i}\n" for i in range(6))
    replayed = "".join(e["text"] for e in of(events, "long", "stream"))
    assert replayed == done["stdout"]


async def test_ndjson_streaming_over_rest(server: Server, session: dict[str, Any]) -> None:
    async with httpx.AsyncClient(
        base_url=server.url, headers={"Authorization": f"Bearer {server.token}"}, timeout=30
    ) as client:
        lines = []
        async with client.stream(
            "POST", f"/api/v1/sessions/{session['id']}/execute",
            json={"code": "import time\nprint(1, flush=True)\ntime.sleep(0.5)\nprint(2)"},
            headers={"Accept": "application/x-ndjson"},
        ) as answer:  # fmt: skip
            assert answer.headers["Content-Type"].startswith("application/x-ndjson")
            async for line in answer.aiter_lines():
                if line:
                    lines.append(json.loads(line))
    assert lines[-1]["type"] == "done"
    assert lines[-1]["stdout"] == "1\n2\n"
    assert [e["type"] for e in lines[:-1]] == ["stream", "stream"]


def test_socket_refusals_are_json(server: Server, session: dict[str, Any]) -> None:
    url = f"{server.url}/api/v1/sessions/{session['id']}/ws"
    headers = {"Authorization": f"Bearer {server.token}"}
    plain = httpx.get(url, headers=headers)
    assert plain.status_code == 400
    assert plain.json()["error"]["code"] == "websocket-required"
    upgrade = {**headers, "Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
               "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==", "Origin": "https://evil.example"}  # fmt: skip
    foreign = httpx.get(url, headers=upgrade)
    assert foreign.status_code == 403
    assert foreign.json()["error"]["code"] == "origin-not-allowed"
    unknown = httpx.get(url.replace(session["id"], "session-nope"), headers=upgrade)
    assert unknown.status_code == 404


@pytest.mark.parametrize(
    ("origin", "allowed"),
    [
        ("https://app.example.com", True),
        ("https://a.b.example.com", True),
        ("https://example.com", False),
        ("https://app.example.com.evil.net", False),
        ("https://evilexample.com", False),
        ("http://app.example.com", False),
        ("https://exact.test", True),
        ("https://exact.test:8443", False),
    ],
)
def test_origin_patterns_are_anchored(origin: str, allowed: bool) -> None:
    assert origin_allowed(origin, ("https://*.example.com", "https://exact.test")) is allowed
