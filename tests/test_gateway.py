"""The Jupyter gateway protocol on real kernels: REST, channels socket, tenants, shared view, deaths."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import sqlite3
from collections.abc import Iterator
from typing import Any

import docker
import httpx
import pytest
import websockets
from websockets.typing import Subprotocol

from tests.conftest import Server, running_server
from tests.jupyter_ws import V1, JupyterSocket, execute_request, message, stdout
from tests.test_tenants import Tenants

pytestmark = pytest.mark.docker


@pytest.fixture(scope="module")
def tenants(engine: docker.DockerClient) -> Iterator[Tenants]:
    with running_server("--reap-interval", "0.5", engine=engine) as server:
        yield Tenants(server)


@pytest.fixture
def kernel(tenants: Tenants) -> Iterator[str]:
    """A kernel started by tenant alpha through the gateway, deleted afterwards."""
    with gateway_client(tenants.server, tenants.alpha) as alpha:
        answer = alpha.post("/api/kernels", json={"name": "python3"})
        assert answer.status_code == 201, answer.text
        kernel_id: str = answer.json()["id"]
        yield kernel_id
        alpha.delete(f"/api/kernels/{kernel_id}")


def gateway_client(server: Server, token: str | None, *, prefix: bool = False) -> httpx.Client:
    """A client as jupyter_server's gateway client is: ``Authorization: token <t>``, or the path prefix."""
    if prefix:
        return httpx.Client(base_url=f"{server.url}/gateway/{token}", timeout=120)
    headers = {"Authorization": f"token {token}"} if token else {}
    return httpx.Client(base_url=server.url, headers=headers, timeout=120)


def channels_url(server: Server, kernel_id: str, token: str | None = None) -> str:
    prefix = f"/gateway/{token}" if token else ""
    return server.url.replace("http", "ws") + f"{prefix}/api/kernels/{kernel_id}/channels"


def header(token: str) -> dict[str, str]:
    return {"Authorization": f"token {token}"}


# ----------------------------------------------------------------------------------------------- REST


def test_api_and_the_kernelspec(tenants: Tenants) -> None:
    with gateway_client(tenants.server, tenants.alpha) as alpha:
        assert "version" in alpha.get("/api").json()
        specs = alpha.get("/api/kernelspecs").json()
        assert specs["default"] == "python3"
        spec = specs["kernelspecs"]["python3"]
        assert "Workbench sandbox" in spec["spec"]["display_name"]
        assert spec["spec"]["language"] == "python"
        assert alpha.get("/api/kernelspecs/python3").json() == spec
        for path in ("/api/kernelspecs/r", "/kernelspecs/python3/logo-64x64.png", "/kernelspecs/r/logo.svg"):
            answer = alpha.get(path)
            assert answer.status_code == 404, path
            assert set(answer.json()["error"]) == {"code", "message"}


def test_a_kernel_is_a_session_with_mapped_limits(tenants: Tenants) -> None:
    env = {"KERNEL_MEMORY_MB": "256", "KERNEL_CPUS": "0.5", "KERNEL_USERNAME": "ana", "PATH": "/evil",
           "KERNEL_WORKING_DIR": "/etc"}  # fmt: skip
    with gateway_client(tenants.server, tenants.alpha) as alpha:
        answer = alpha.post("/api/kernels", json={"name": "python3", "env": env})
        assert answer.status_code == 201, answer.text
        model = answer.json()
        try:
            assert set(model) >= {"id", "name", "last_activity", "execution_state", "connections"}
            assert model["name"] == "python3"
            assert model["execution_state"] == "idle"
            assert model["connections"] == 0
            dt.datetime.strptime(model["last_activity"], "%Y-%m-%dT%H:%M:%S.%fZ")
            session = alpha.get(f"/api/v1/sessions/{model['id']}", headers=header(tenants.alpha)).json()
            assert session["limits"]["memory_mb"] == 256
            assert session["limits"]["cpus"] == 0.5
            assert session["metadata"]["username"] == "ana"
            assert alpha.get(f"/api/kernels/{model['id']}").json()["id"] == model["id"]
        finally:
            assert alpha.delete(f"/api/kernels/{model['id']}").status_code == 204
        assert alpha.get(f"/api/kernels/{model['id']}").status_code == 404


def test_kernel_memory_is_capped_by_the_tenant_and_bad_values_are_refused(tenants: Tenants) -> None:
    with gateway_client(tenants.server, tenants.alpha) as alpha:
        answer = alpha.post("/api/kernels", json={"env": {"KERNEL_MEMORY": "2Gi"}})
        assert answer.status_code == 201, answer.text
        kernel_id = answer.json()["id"]
        try:
            session = alpha.get(f"/api/v1/sessions/{kernel_id}", headers=header(tenants.alpha)).json()
            limits = session["limits"]
            assert limits["memory_mb"] == 300  # alpha's cap
        finally:
            alpha.delete(f"/api/kernels/{kernel_id}")
        bodies: list[dict[str, Any]] = [
            {"env": {"KERNEL_CPUS": "many"}},
            {"env": {"KERNEL_MEMORY": "lots"}},
            {"env": []},
            {"env": {"KERNEL_MEMORY_MB": "1e400"}},
        ]
        for body in bodies:
            answer = alpha.post("/api/kernels", json=body)
            assert answer.status_code == 422, (body, answer.text)
        assert alpha.post("/api/kernels", json={"name": "ir"}).status_code == 404
        assert alpha.post("/api/kernels", content=b"{not json").status_code == 400


# ------------------------------------------------------------------------------------------ tenants


async def test_another_tenant_gets_404_everywhere_and_no_token_401(tenants: Tenants, kernel: str) -> None:
    server = tenants.server
    routes = [("GET", f"/api/kernels/{kernel}"), ("DELETE", f"/api/kernels/{kernel}"),
              ("POST", f"/api/kernels/{kernel}/interrupt"), ("POST", f"/api/kernels/{kernel}/restart"),
              ("GET", f"/api/kernels/{kernel}/channels")]  # fmt: skip
    for prefix in (False, True):
        with gateway_client(server, tenants.beta, prefix=prefix) as beta:
            for method, path in routes:
                answer = beta.request(method, path)
                assert answer.status_code == 404, (prefix, method, path, answer.text)
                assert answer.json()["error"]["code"] == "session-not-found"
            assert kernel not in {model["id"] for model in beta.get("/api/kernels").json()}
    for url, headers in ((channels_url(server, kernel), header(tenants.beta)),
                         (channels_url(server, kernel, tenants.beta), {})):  # fmt: skip
        with pytest.raises(websockets.InvalidStatus) as refused:
            async with websockets.connect(url, additional_headers=headers):
                pass
        assert refused.value.response.status_code == 404
    with gateway_client(server, tenants.alpha) as alpha:
        assert kernel in {model["id"] for model in alpha.get("/api/kernels").json()}

    anonymous_routes = [("GET", "/api"), ("GET", "/api/kernelspecs"), ("GET", "/api/kernelspecs/python3"),
                        ("GET", "/kernelspecs/python3/logo-64x64.png"), ("GET", "/api/kernels"),
                        ("POST", "/api/kernels"), *routes]  # fmt: skip
    for token, prefix in ((None, False), ("token None", False), ("wbt_wrong", True)):
        with gateway_client(server, token, prefix=prefix) as nobody:
            for method, path in anonymous_routes:
                answer = nobody.request(method, path)
                assert answer.status_code == 401, (token, method, path)
    for url in (channels_url(server, kernel), channels_url(server, kernel, "wbt_wrong")):
        with pytest.raises(websockets.InvalidStatus) as refused:
            async with websockets.connect(url):
                pass
        assert refused.value.response.status_code == 401
    with gateway_client(server, tenants.alpha, prefix=True) as alpha:
        assert alpha.get(f"/api/kernels/{kernel}").status_code == 200
        missing = alpha.get("/api/nothing-here")
        assert missing.status_code == 404
        assert tenants.alpha not in missing.text
    assert tenants.alpha not in server.log()
    assert tenants.beta not in server.log()


async def test_the_path_token_works_as_jupyter_server_mangles_it(tenants: Tenants, kernel: str) -> None:
    """GatewayKernelClient's socket URL is ``GatewayClient.url.lower().replace("http", "ws")``."""
    mangled = tenants.alpha.lower().replace("http", "ws")
    url = channels_url(tenants.server, kernel, mangled)
    with gateway_client(tenants.server, tenants.alpha, prefix=True) as alpha:
        assert alpha.get(f"/api/kernels/{kernel}").status_code == 200  # as the client does first
    async with websockets.connect(url) as connection:
        reply, outputs = await JupyterSocket(connection).execute("print(1 + 1)")
    assert reply["content"]["status"] == "ok"
    assert stdout(outputs) == "2\n"
    with pytest.raises(websockets.InvalidStatus):
        async with websockets.connect(channels_url(tenants.server, kernel, mangled + "x")):
            pass


# ------------------------------------------------------------------------------------- the channels


async def test_shared_view_with_the_workbench_websocket_and_records(tenants: Tenants, kernel: str) -> None:
    server = tenants.server
    v1_url = server.url.replace("http", "ws") + f"/api/v1/sessions/{kernel}/ws"
    async with (
        websockets.connect(channels_url(server, kernel), additional_headers=header(tenants.alpha)) as gw,
        websockets.connect(v1_url, additional_headers=header(tenants.alpha)) as v1,
    ):
        notebook = JupyterSocket(gw)
        msg_id = await notebook.send(execute_request("shared = 'from-gateway'\nprint(shared)"))
        reply, outputs = await notebook.answer(msg_id)
        assert reply["content"]["status"] == "ok"
        assert stdout(outputs) == "from-gateway\n"
        seen = await until_done(v1, msg_id)
        assert {"type": "stream", "id": msg_id, "name": "stdout", "text": "from-gateway\n"} in seen
        assert seen[-1]["status"] == "ok"

        await v1.send(json.dumps({"type": "execute", "id": "v1-run", "code": "print(shared.upper())"}))
        await until_done(v1, "v1-run")
        streams = await notebook.until(lambda m: m["msg_type"] == "stream")
        assert streams[-1]["content"]["text"] == "FROM-GATEWAY\n"
        assert streams[-1]["channel"] == "iopub"

        with gateway_client(server, tenants.alpha) as alpha:
            assert alpha.get(f"/api/kernels/{kernel}").json()["connections"] == 1
    records = executions(server, kernel)
    assert ("gateway", msg_id, "ok") in records
    assert ("ws", "v1-run", "ok") in records


async def until_done(connection: Any, request_id: str) -> list[dict[str, Any]]:
    events = []
    while True:
        event = json.loads(await asyncio.wait_for(connection.recv(), 60))
        if event.get("id") == request_id:
            events.append(event)
            if event["type"] == "done":
                return events


def executions(server: Server, session_id: str) -> list[tuple[str, str, str]]:
    with sqlite3.connect(f"file:{server.state_dir / 'workbench.db'}?mode=ro", uri=True) as db:
        rows = db.execute(
            "SELECT source, request_id, status FROM executions WHERE session_id = ?", (session_id,)
        ).fetchall()
    return [tuple(row) for row in rows]


async def test_input_interrupt_and_the_kernels_own_requests(tenants: Tenants, kernel: str) -> None:
    async with websockets.connect(channels_url(tenants.server, kernel, tenants.alpha)) as connection:
        notebook = JupyterSocket(connection)
        msg_id = await notebook.send(execute_request("name = input('who? ')\nprint('hi', name)"))
        request = (await notebook.until(lambda m: m["msg_type"] == "input_request"))[-1]
        assert request["channel"] == "stdin"
        assert request["content"]["prompt"] == "who? "
        answer = message("input_reply", {"value": "ana"}, "stdin")
        answer["parent_header"] = request["header"]
        await notebook.send(answer)
        reply, outputs = await notebook.answer(msg_id)
        assert reply["content"]["status"] == "ok"
        assert stdout(outputs) == "hi ana\n"

        info_id = await notebook.send(message("kernel_info_request", {}))
        info = (await notebook.until(lambda m: m["parent_header"].get("msg_id") == info_id
                                     and m["channel"] == "shell"))[-1]  # fmt: skip
        assert info["content"]["language_info"]["name"] == "python"
        complete_id = await notebook.send(message("complete_request", {"code": "na", "cursor_pos": 2}))
        completion = (await notebook.until(lambda m: m["parent_header"].get("msg_id") == complete_id
                                           and m["channel"] == "shell"))[-1]  # fmt: skip
        assert "name" in completion["content"]["matches"]

        msg_id = await notebook.send(
            execute_request("import time\nprint('sleeping', flush=True)\ntime.sleep(60)")
        )
        await notebook.until(lambda m: m["msg_type"] == "stream")
        with gateway_client(tenants.server, tenants.alpha) as alpha:
            assert alpha.post(f"/api/kernels/{kernel}/interrupt").status_code == 204
        reply, _ = await notebook.answer(msg_id, timeout=30)
        assert reply["content"]["status"] == "error"
        assert reply["content"]["ename"] == "KeyboardInterrupt"

        reply, outputs = await notebook.execute("print(name)")  # variables survived the interrupt
        assert stdout(outputs) == "ana\n"


async def test_a_kernel_death_and_a_cull_reach_the_notebook(tenants: Tenants) -> None:
    with gateway_client(tenants.server, tenants.alpha) as alpha:
        kernel_id = alpha.post("/api/kernels", json={"env": {"KERNEL_IDLE_TIMEOUT": "3"}}).json()["id"]
        try:
            async with websockets.connect(
                channels_url(tenants.server, kernel_id, tenants.alpha)
            ) as connection:
                notebook = JupyterSocket(connection)
                await notebook.execute("x = 1")
                msg_id = await notebook.send(
                    execute_request("import os, signal\nos.kill(os.getpid(), signal.SIGKILL)")
                )
                seen: list[dict[str, Any]] = []

                def replied_and_back(msg: dict[str, Any]) -> bool:
                    seen.append(msg)
                    states = [m["content"]["execution_state"] for m in seen if m["msg_type"] == "status"
                              and not m["parent_header"]]  # fmt: skip
                    replies = [
                        m
                        for m in seen
                        if m["parent_header"].get("msg_id") == msg_id and m["channel"] == "shell"
                    ]
                    return bool(replies) and "restarting" in states and states[-1] == "idle"

                await notebook.until(replied_and_back)
                reply = next(m for m in seen if m["msg_type"] == "execute_reply")
                assert reply["content"]["status"] == "error"
                reply, outputs = await notebook.execute("print('x' in dir())")  # a fresh kernel
                assert stdout(outputs) == "False\n"

                dead = await notebook.until(  # idle for 3 s: the reaper stops the kernel
                    lambda m: m["msg_type"] == "status" and m["content"]["execution_state"] == "dead",
                    timeout=60,
                )
                assert dead[-1]["channel"] == "iopub"
            assert alpha.get(f"/api/kernels/{kernel_id}").json()["execution_state"] == "idle"
        finally:
            alpha.delete(f"/api/kernels/{kernel_id}")


async def test_the_v1_subprotocol(tenants: Tenants, kernel: str) -> None:
    url = channels_url(tenants.server, kernel)
    async with websockets.connect(
        url, additional_headers=header(tenants.alpha), subprotocols=[Subprotocol(V1)]
    ) as connection:
        assert connection.subprotocol == V1
        reply, outputs = await JupyterSocket(connection, v1=True).execute("print('v1')\n6 * 7")
    assert reply["content"]["status"] == "ok"
    assert stdout(outputs) == "v1\n"
    assert [m["content"]["data"]["text/plain"] for m in outputs if m["msg_type"] == "execute_result"] == [
        "42"
    ]


async def test_bad_frames_are_dropped_and_the_socket_stays_open(tenants: Tenants, kernel: str) -> None:
    async with websockets.connect(
        channels_url(tenants.server, kernel), additional_headers=header(tenants.alpha)
    ) as gw:
        bad_header = message("execute_request", {"code": "1"})
        bad_header["header"] = "nope"
        bad_channel = message("kernel_info_request", {}, channel="iopub")
        no_code = execute_request("")
        no_code["content"]["code"] = None
        for frame in ("not json", "[1, 2]", json.dumps(bad_header), json.dumps(bad_channel), "[" * 100_000,
                      b"\xff\xff\xff\xff", b"\x00\x00\x00\x02\x00\x00\x00\x0c\xff\xff\xff\xff",
                      json.dumps(no_code)):  # fmt: skip
            await gw.send(frame)
        notebook = JupyterSocket(gw)
        reply, _ = await notebook.answer(no_code["header"]["msg_id"])
        assert reply["content"]["status"] == "error"
        reply, outputs = await notebook.execute("print('still here')")
        assert stdout(outputs) == "still here\n"


async def test_an_error_aborts_the_cells_queued_behind_it_as_a_kernel_does(
    tenants: Tenants, kernel: str
) -> None:
    """Run All: the cells sent before the error was known are aborted; a later one runs."""
    async with websockets.connect(
        channels_url(tenants.server, kernel), additional_headers=header(tenants.alpha)
    ) as gw:
        notebook = JupyterSocket(gw)
        failing = await notebook.send(execute_request("import time\ntime.sleep(1)\n1 / 0"))
        queued = await notebook.send(execute_request("print('queued')"))
        tolerant = await notebook.send(execute_request("print('runs anyway')", stop_on_error=False))
        reply, _ = await notebook.answer(failing)
        assert reply["content"]["ename"] == "ZeroDivisionError"
        reply, outputs = await notebook.answer(queued)
        assert reply["content"]["status"] == "aborted"
        assert outputs == []
        reply, outputs = await notebook.answer(tolerant)
        assert stdout(outputs) == "runs anyway\n"
        reply, outputs = await notebook.execute("print('later')")
        assert stdout(outputs) == "later\n"
