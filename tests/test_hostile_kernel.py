"""A kernel working against its own server: restarts, its runtime directory, its import path, its sockets.

Each test uses its own server (most kill it with ``SIGKILL`` and start it again).
"""

from __future__ import annotations

import datetime as dt
import re
import signal
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import docker
import httpx
import pytest

from tests.conftest import Server, run, running_server

pytestmark = pytest.mark.docker


def create(client: httpx.Client, memory_mb: int = 256) -> str:
    answer = client.post("/api/v1/sessions", json={"memory_mb": memory_mb})
    assert answer.status_code == 201, answer.text
    session_id: str = answer.json()["id"]
    return session_id


def container_id(engine: docker.DockerClient, session_id: str) -> str:
    return str(engine.api.inspect_container(f"workbench-{session_id}")["Id"])


def wait_until(predicate: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.2)


def in_background(server: Server, session_id: str, code: str) -> threading.Thread:
    """Send an execute whose answer nobody waits for (the server is killed under it)."""

    def send() -> None:
        try:
            with server.client() as client:
                client.post(f"/api/v1/sessions/{session_id}/execute", json={"code": code, "timeout": 120})
        except httpx.HTTPError:
            pass

    worker = threading.Thread(target=send, daemon=True)
    worker.start()
    return worker


def test_a_kernel_busy_at_a_kill_9_is_adopted_with_its_variables(engine: docker.DockerClient) -> None:
    with running_server(engine=engine) as server:
        with server.client() as client:
            session_id = create(client)
            run(client, session_id, "totals = {'rows': 3}\nopen('report.csv', 'w').write('a,b\\n1,2\\n')")
            before = container_id(engine, session_id)
            code = (
                "import time\nend = time.time() + 8\nwhile time.time() < end:\n    pass\ntotals['rows'] += 1"
            )
            worker = in_background(server, session_id, code)
            wait_until(
                lambda: client.get(f"/api/v1/sessions/{session_id}").json()["kernel"]["state"] == "busy", 20
            )
        server.stop(signal.SIGKILL)
        worker.join(5)
        server.start()
        with server.client() as client:
            assert client.get(f"/api/v1/sessions/{session_id}").json()["status"] == "ready"
            # queued behind the adopted execution, which ends normally: its side effect is there
            result = run(client, session_id, "print(totals['rows'], open('report.csv').read().count('\\n'))")
            assert result["status"] == "ok", result
            assert result["stdout"] == "4 2\n"
        assert container_id(engine, session_id) == before
        assert "was running code when the server stopped" in server.log()


def serving_since(server: Server) -> dt.datetime:
    """When the server last logged that it serves (once its imports and migrations are done)."""
    line = [line for line in server.log().splitlines() if "workbench serving on" in line][-1]
    return dt.datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")


def test_health_answers_at_once_while_twenty_kernels_are_re_attached(engine: docker.DockerClient) -> None:
    """Half the kernels are frozen (``docker pause``), so re-attaching them takes longer than a start-up
    may: the server answers anyway, then adopts them all.  (``bench/restart.py`` prints the figures.)"""
    with running_server(engine=engine) as server:
        with server.client() as client, ThreadPoolExecutor(4) as pool:
            sessions = list(pool.map(lambda _: create(client, memory_mb=96), range(20)))
            for number, session_id in enumerate(sessions):
                run(client, session_id, f"mark = {number}")
        server.stop(signal.SIGKILL)
        frozen = sessions[::2]
        for session_id in frozen:
            engine.api.pause(f"workbench-{session_id}")
        try:
            started = time.monotonic()
            server.start()
            answered_at = dt.datetime.now()  # the clock of the log
            answered = time.monotonic() - started
            with server.client() as client:
                listing = client.get("/api/v1/sessions")
                assert listing.status_code == 200
                assert len(listing.json()["sessions"]) == 20
                states = {item["id"]: item["kernel"]["state"] for item in listing.json()["sessions"]}
                assert {states[session_id] for session_id in frozen} == {"starting"}
            still_attaching = server.log().count("re-attached to its running kernel") < 20
        finally:
            for session_id in frozen:
                engine.api.unpause(f"workbench-{session_id}")
        serving = answered_at - serving_since(server)
        print(f"health answered {answered:.2f} s after the process started (Python start-up included), "
              f"{serving.total_seconds():.2f} s after it began to serve")  # fmt: skip
        assert serving < dt.timedelta(seconds=2)
        assert still_attaching
        with server.client() as client:
            for number, session_id in enumerate(sessions):
                assert run(client, session_id, "print(mark)")["stdout"] == f"{number}\n"
                assert container_id(engine, session_id)
        assert server.log().count("re-attached to its running kernel") == 20


def plant_link_to(client: httpx.Client, session_id: str, name: str, target: str) -> None:
    code = f"import os\nos.remove('/run/workbench/{name}')\nos.symlink({target!r}, '/run/workbench/{name}')"
    assert run(client, session_id, code)["status"] == "ok"


def test_the_server_never_follows_a_link_planted_in_its_runtime_dir(engine: docker.DockerClient) -> None:
    with running_server(engine=engine) as server:
        decoy_path = server.state_dir.parent / "decoy.sock"
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as decoy:
            decoy.bind(str(decoy_path))
            decoy.listen(64)
            decoy.setblocking(False)
            with server.client() as client:
                session_id = create(client)
                plant_link_to(client, session_id, "k-4", str(decoy_path))  # the control socket
            server.stop(signal.SIGKILL)
            server.start()
            with server.client() as client:
                assert run(client, session_id, "print('fresh')")["stdout"] == "fresh\n"
            with pytest.raises(BlockingIOError):
                decoy.accept()
        assert "something other than a socket" in server.log()


def test_whatever_the_kernel_plants_in_its_runtime_directory_a_restart_works(server: Server) -> None:
    plant = (
        "import os\n"
        "os.remove('/run/workbench/kernel.json'); os.mkdir('/run/workbench/kernel.json')\n"
        "os.makedirs('/run/workbench/k-9/deeper'); os.mkfifo('/run/workbench/k-8')\n"
        "os.symlink('/etc/passwd', '/run/workbench/.kernel.json.0000')\n"
        "os.chmod('/run/workbench/k-9/deeper', 0); os.chmod('/run/workbench/k-9', 0)\n"
    )
    with server.client() as client:
        session_id = create(client)
        try:
            assert run(client, session_id, plant)["status"] == "ok"
            for _ in range(2):
                answer = client.post(f"/api/v1/sessions/{session_id}/restart")
                assert answer.status_code == 200, answer.text
                assert run(client, session_id, "print(1 + 1)")["stdout"] == "2\n"
            listing = run(client, session_id, "import os; print(sorted(os.listdir('/run/workbench')))")
            assert "k-9" not in listing["stdout"]
        finally:
            client.delete(f"/api/v1/sessions/{session_id}")


def test_nothing_in_the_workspace_runs_when_a_kernel_starts(server: Server) -> None:
    marker = "open('/data/ran-{}', 'w').write('planted code ran')\n"
    plant = (
        f"open('ipykernel_launcher.py', 'w').write({marker.format('launcher')!r})\n"
        f"open('traitlets.py', 'w').write({marker.format('traitlets')!r})\n"
        "import os; os.makedirs('zmq', exist_ok=True)\n"
        f"open('zmq/__init__.py', 'w').write({marker.format('zmq')!r})\n"
        "open('helper_of_mine.py', 'w').write('VALUE = 7\\n')\n"
    )
    with server.client() as client:
        session_id = create(client)
        try:
            assert run(client, session_id, plant)["status"] == "ok"
            assert client.post(f"/api/v1/sessions/{session_id}/restart").status_code == 200
            check = (
                "import os, traitlets, helper_of_mine\n"
                "print(sorted(name for name in os.listdir('.') if name.startswith('ran-')))\n"
                "print('site-packages' in traitlets.__file__, helper_of_mine.VALUE)"
            )
            assert run(client, session_id, check)["stdout"] == "[]\nTrue 7\n"
        finally:
            client.delete(f"/api/v1/sessions/{session_id}")


def test_garbage_on_a_kernels_sockets_is_summarized_not_logged_per_frame(engine: docker.DockerClient) -> None:
    flood = (
        "import json\n"
        "from jupyter_client.session import Session\n"
        "kernel = get_ipython().kernel\n"
        "forged = Session(key=b'not-the-key', signature_scheme='hmac-sha256')\n"
        "real = json.load(open('/run/workbench/kernel.json'))\n"
        "signed = Session(key=real['key'].encode(), signature_scheme='hmac-sha256')\n"
        "parent = kernel.get_parent()\n"
        "for i in range(1500):\n"
        "    forged.send(kernel.iopub_socket, 'stream', {'name': 'stdout', 'text': 'x'})\n"
        "    signed.send(kernel.iopub_socket, 'execute_result', '[1, 2]', parent=parent)\n"
        "print('flooded')"
    )
    with running_server(engine=engine) as server:
        with server.client() as client:
            session_id = create(client)
            before = len(server.log())
            # IOPub's high-water mark may drop the flood's own output, even its final `idle`: then the run
            # ends at its timeout; either way the session goes on.
            result = run(client, session_id, flood, timeout=20)
            assert result["status"] in ("ok", "timeout"), result
            assert run(client, session_id, "print(2 + 2)")["stdout"] == "4\n"
            written = server.log()[before:]
        assert written.count("Traceback") <= 10, written[-3000:]
        assert len(written) < 64 * 1024
        assert re.search(r"and \d+ more|unreadable kernel messages", written)
