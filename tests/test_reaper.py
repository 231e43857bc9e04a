"""The reaper and durability: idle kernels culled, expired sessions wiped, nothing lost on a crash."""

from __future__ import annotations

import asyncio
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

import docker
import httpx
import pytest

from tests.conftest import Server, run, running_server
from tests.wsclient import connect, execute, of, receive

pytestmark = pytest.mark.docker


def reaping_server(engine: docker.DockerClient, **env: str) -> Iterator[Server]:
    with running_server(engine=engine, env={"WORKBENCH_REAP_INTERVAL": "2", **env}) as server:
        yield server


@pytest.fixture(scope="module")
def culling(engine: docker.DockerClient) -> Iterator[Server]:
    yield from reaping_server(engine, WORKBENCH_IDLE_TIMEOUT="6", WORKBENCH_EXPIRING_NOTICE="5")


@pytest.fixture(scope="module")
def expiring(engine: docker.DockerClient) -> Iterator[Server]:
    yield from reaping_server(engine, WORKBENCH_SESSION_TTL="25")


def status(client: httpx.Client, session_id: str) -> str:
    answer: str = client.get(f"/api/v1/sessions/{session_id}").json()["status"]
    return answer


def wait_for(predicate: Any, timeout: float) -> float:
    started = time.monotonic()
    while not predicate():
        assert time.monotonic() - started < timeout, "condition not reached in time"
        time.sleep(0.25)
    return time.monotonic() - started


def test_idle_kernel_is_stopped_busy_one_is_not(culling: Server, engine: docker.DockerClient) -> None:
    with culling.client() as client:
        idle = client.post("/api/v1/sessions").json()["id"]
        busy = client.post("/api/v1/sessions").json()["id"]
        run(client, idle, "open('kept.txt', 'w').write('kept')\nlost = 1")
        holder: dict[str, Any] = {}
        code = "import time\ntime.sleep(14)\nprint('survived')"
        worker = threading.Thread(target=lambda: holder.update(answer=run(culling.client(), busy, code)))
        worker.start()
        waited = wait_for(lambda: status(client, idle) == "stopped", timeout=12)
        assert waited < 10
        with pytest.raises(docker.errors.NotFound):
            engine.api.inspect_container(f"workbench-{idle}")
        assert (culling.state_dir / "workspaces" / idle / "kept.txt").read_text() == "kept"
        worker.join(30)
        assert holder["answer"]["stdout"] == "survived\n"
        assert status(client, busy) == "ready"
        again = run(client, idle, "print(open('kept.txt').read())\nprint('lost' in dir())")
        assert again["stdout"] == "kept\nFalse\n"
        assert status(client, idle) == "ready"


async def test_connected_client_is_warned_then_told_variables_were_lost(culling: Server) -> None:
    with culling.client() as client:
        session_id = client.post("/api/v1/sessions").json()["id"]
    async with connect(culling, session_id) as socket:
        warning = await receive(socket, timeout=15)
        while warning["type"] != "expiring":
            warning = await receive(socket, timeout=15)
        assert warning["action"] == "stop"
        assert warning["at"].endswith("Z")
        assert warning["archive"] == f"/api/v1/sessions/{session_id}/archive"
        stopped = await receive(socket, timeout=15)
        while stopped["type"] != "kernel":
            stopped = await receive(socket, timeout=15)
        assert (stopped["state"], stopped["reason"]) == ("stopped", "idle-culled")
        events = await execute(socket, "back", "print('fresh')")
    kernel_news = [(e["state"], e["reason"]) for e in events if e["type"] == "kernel"]
    assert ("restarting", "idle-culled") in kernel_news
    assert of(events, "back")[-1]["stdout"] == "fresh\n"


def test_expired_session_is_wiped_even_when_hostile(expiring: Server, engine: docker.DockerClient) -> None:
    with expiring.client() as client:
        session_id = client.post("/api/v1/sessions").json()["id"]
        hostile = (
            "import os\n"
            "os.makedirs('many', exist_ok=True)\n"
            "for i in range(5000):\n    open(f'many/{i}', 'w').close()\n"
            "path = 'deep'\n"
            "for _ in range(300):\n    os.mkdir(path); os.chdir(path)\n"
            "os.chdir('/data')\n"
            "os.makedirs('locked/inner'); open('locked/inner/x', 'w').write('x'); os.chmod('locked', 0)\n"
            "open(b'bad-\\xff-name', 'w').close()\n"
            "os.symlink('/etc', 'link-out')\n"
        )
        assert run(client, session_id, hostile)["status"] == "ok"
        workspace = expiring.state_dir / "workspaces" / session_id
        assert workspace.exists()
        wait_for(lambda: not workspace.exists(), timeout=40)
        expired = client.get(f"/api/v1/sessions/{session_id}")
        assert expired.status_code == 200
        assert expired.json()["status"] == "expired"
        with pytest.raises(docker.errors.NotFound):
            engine.api.inspect_container(f"workbench-{session_id}")
        assert client.post(f"/api/v1/sessions/{session_id}/execute", json={"code": "1"}).status_code == 404
        assert session_id not in [s["id"] for s in client.get("/api/v1/sessions").json()["sessions"]]


def test_kill_9_and_restart_keep_container_variables_and_files(engine: docker.DockerClient) -> None:
    with running_server(engine=engine) as server:
        with server.client() as client:
            session_id = client.post("/api/v1/sessions").json()["id"]
            run(client, session_id, "answer = 42\nopen('f.txt', 'w').write('file')")
        container = engine.api.inspect_container(f"workbench-{session_id}")["Id"]
        server.stop(signal.SIGKILL)
        server.start()
        with server.client() as client:
            result = run(client, session_id, "print(answer, open('f.txt').read())")
            assert result["stdout"] == "42 file\n"
            assert client.get(f"/api/v1/sessions/{session_id}").json()["status"] == "ready"
        assert engine.api.inspect_container(f"workbench-{session_id}")["Id"] == container


def test_sigterm_finishes_requests_in_flight_and_leaves_kernels(engine: docker.DockerClient) -> None:
    with running_server(engine=engine) as server:
        with server.client() as client:
            session_id = client.post("/api/v1/sessions").json()["id"]
            holder: dict[str, Any] = {}
            body = {"code": "import time; time.sleep(2); x = 'kept'"}
            url = f"/api/v1/sessions/{session_id}/execute"
            worker = threading.Thread(target=lambda: holder.update(answer=client.post(url, json=body)))
            worker.start()
            time.sleep(0.8)
            assert server.process is not None
            server.process.send_signal(signal.SIGTERM)
            worker.join(30)
            assert holder["answer"].status_code == 200
            assert server.process.wait(30) == 0
        assert engine.api.inspect_container(f"workbench-{session_id}")["State"]["Running"]
        server.start()
        with server.client() as client:
            assert run(client, session_id, "print(x)")["stdout"] == "kept\n"


async def test_container_removed_behind_our_back(
    server: Server, engine: docker.DockerClient, session: dict[str, Any]
) -> None:
    session_id = session["id"]
    async with connect(server, session_id) as socket:
        await execute(socket, "setup", "open('kept.txt', 'w').write('kept')\nlost = 1")
        await asyncio.to_thread(engine.api.remove_container, f"workbench-{session_id}", force=True)
        started = time.monotonic()
        news = await receive(socket, timeout=10)
        while news["type"] != "kernel" or news["state"] != "dead":
            news = await receive(socket, timeout=10)
        assert time.monotonic() - started < 5
        assert news["reason"] in ("removed", "died")
        events = await execute(socket, "after", "print(open('kept.txt').read(), 'lost' in dir())")
    assert of(events, "after")[-1]["stdout"] == "kept False\n"


def test_metrics(api: httpx.Client, server: Server, session: dict[str, Any]) -> None:
    run(api, session["id"], "1")
    text = httpx.get(f"{server.url}/metrics").text
    for name in (
        'workbench_sessions{status="ready"}',
        "workbench_kernels_running",
        'workbench_executions_total{status="ok"}',
        "workbench_execution_duration_seconds_bucket",
        "workbench_kernels_culled_total",
        "workbench_sessions_expired_total",
        "workbench_websocket_connections",
        "workbench_uploaded_bytes_total",
        "workbench_downloaded_bytes_total",
    ):
        assert name in text, name
    ready = next(line for line in text.splitlines() if line.startswith('workbench_sessions{status="ready"}'))
    assert float(ready.split()[-1]) >= 1
