"""Sessions against real kernel containers: lifecycle, persistence, isolation, interrupts and timeouts."""

from __future__ import annotations

from typing import Any

import docker
import httpx
import pytest

from tests.conftest import Server, interrupt_a_busy_loop, run, running_server

pytestmark = pytest.mark.docker


def test_create_answers_a_ready_session(api: httpx.Client, session: dict[str, Any]) -> None:
    assert session["id"].startswith("session_")
    assert session["status"] == "ready"
    assert session["kernel"]["state"] == "idle"
    assert session["created_at"].endswith("Z")
    assert session["limits"] == {"memory_mb": 512, "cpus": 1.0, "idle_timeout": 1800}
    fetched = api.get(f"/api/v1/sessions/{session['id']}").json()
    assert fetched["id"] == session["id"]
    listed = [item["id"] for item in api.get("/api/v1/sessions").json()["sessions"]]
    assert session["id"] in listed


def test_limits_are_capped_by_server_maxima(api: httpx.Client) -> None:
    answer = api.post("/api/v1/sessions", json={"memory_mb": 10**9, "cpus": 64, "metadata": {"owner": "ana"}})
    assert answer.status_code == 201, answer.text
    created = answer.json()
    try:
        assert created["limits"]["memory_mb"] == 8192
        assert created["limits"]["cpus"] == 2.0
        assert created["metadata"] == {"owner": "ana"}
    finally:
        api.delete(f"/api/v1/sessions/{created['id']}")


def test_container_spec(engine: docker.DockerClient, server: Server, session: dict[str, Any]) -> None:
    attrs = engine.api.inspect_container(f"workbench-{session['id']}")
    host = attrs["HostConfig"]
    config = attrs["Config"]
    assert host["ReadonlyRootfs"] is True
    assert host["NetworkMode"] == "none"
    assert host["CapDrop"] == ["ALL"]
    assert "no-new-privileges" in host["SecurityOpt"]
    assert host["PidsLimit"] == 256
    assert host["Memory"] == 512 * 1024 * 1024
    assert host["MemorySwap"] == host["Memory"]
    assert host["NanoCpus"] == 1_000_000_000
    assert host["Init"] is True
    assert host["Tmpfs"]["/tmp"].endswith("size=100m,mode=1777")
    assert config["User"] == "1000:1000"
    assert config["WorkingDir"] == "/data"
    assert config["Labels"]["org.workbench.session"] == session["id"]
    mounts = {mount["Destination"]: mount for mount in attrs["Mounts"]}
    assert mounts["/data"]["Source"] == str(server.state_dir / "workspaces" / session["id"])
    assert mounts["/data"]["RW"] is True
    if config["Labels"].get("org.workbench.pool") == "true":  # a warm kernel: the library comes later
        assert mounts["/library"]["Source"] == str(server.state_dir / "library-slots" / session["id"])
        assert mounts["/library"]["Propagation"] == "rslave"
    else:
        assert mounts["/library"]["Source"] == str(server.state_dir / "library" / "admin")
    assert mounts["/library"]["RW"] is False
    assert attrs["NetworkSettings"]["Ports"] in ({}, None)


def test_variables_persist_between_executes(api: httpx.Client, session: dict[str, Any]) -> None:
    first = run(api, session["id"], "x = 41")
    assert first["status"] == "ok"
    second = run(api, session["id"], "x + 1")
    assert second["status"] == "ok"
    assert second["outputs"][0]["data"]["text/plain"] == "42"
    assert second["execution_count"] == first["execution_count"] + 1


def test_stdout_stderr_and_errors(api: httpx.Client, session: dict[str, Any]) -> None:
    result = run(api, session["id"], "import sys\nprint('你好')\nprint('oops', file=sys.stderr)")
    assert result["stdout"] == "你好\n"
    assert result["stderr"] == "oops\n"
    failed = run(api, session["id"], "1/0")
    assert failed["status"] == "error"
    assert failed["error"]["ename"] == "ZeroDivisionError"
    assert failed["error"]["traceback"]


def test_files_land_in_the_workspace_and_survive_restart(
    api: httpx.Client, server: Server, session: dict[str, Any]
) -> None:
    sid = session["id"]
    assert run(api, sid, "open('notes.txt', 'w').write('kept')\nvalue = 7")["status"] == "ok"
    assert (server.state_dir / "workspaces" / sid / "notes.txt").read_text() == "kept"
    restarted = api.post(f"/api/v1/sessions/{sid}/restart")
    assert restarted.status_code == 200
    assert restarted.json()["status"] == "ready"
    gone = run(api, sid, "value")
    assert gone["status"] == "error"
    assert gone["error"]["ename"] == "NameError"
    kept = run(api, sid, "print(open('notes.txt').read())")
    assert kept["stdout"] == "kept\n"


def test_the_root_filesystem_is_read_only(api: httpx.Client, session: dict[str, Any]) -> None:
    result = run(api, session["id"], "open('/etc/evil', 'w')")
    assert result["status"] == "error"
    assert result["error"]["ename"] in ("OSError", "PermissionError")
    assert "Read-only file system" in result["error"]["evalue"] or "Permission" in result["error"]["evalue"]


def test_the_network_is_unreachable(api: httpx.Client, session: dict[str, Any]) -> None:
    code = (
        "import socket\n"
        "s = socket.socket()\ns.settimeout(3)\n"
        "try:\n    s.connect(('1.1.1.1', 80))\n    print('connected')\n"
        "except OSError as e:\n    print('blocked', e.errno)\n"
        "print(sorted(n for _, n in socket.if_nameindex()))"
    )
    result = run(api, session["id"], code)
    assert result["stdout"].startswith("blocked")
    assert result["stdout"].strip().endswith("['lo']")


def test_tmp_fills_at_its_limit(api: httpx.Client, session: dict[str, Any]) -> None:
    code = (
        "written = 0\n"
        "try:\n"
        "    with open('/tmp/fill', 'wb') as f:\n"
        "        while written < 300 * 2**20:\n"
        "            f.write(b'x' * 2**20); f.flush(); written += 2**20\n"
        "except OSError as e:\n    print('full', e.errno)\n"
        "print(written // 2**20)\n"
        "import os; os.remove('/tmp/fill')"
    )
    result = run(api, session["id"], code)
    lines = result["stdout"].split()
    assert lines[0] == "full"
    assert lines[1] == "28"  # ENOSPC
    assert 80 <= int(lines[2]) <= 100


def test_interrupt_stops_a_busy_loop_and_keeps_state(
    api: httpx.Client, server: Server, session: dict[str, Any]
) -> None:
    sid = session["id"]
    run(api, sid, "kept = 'yes'")
    with server.client() as other:
        result, elapsed = interrupt_a_busy_loop(server, other, sid)
    assert result is not None
    assert elapsed < 10
    assert result["status"] == "error"
    assert result["error"]["ename"] == "KeyboardInterrupt"
    assert run(api, sid, "print(kept)")["stdout"] == "yes\n"


def test_timeout_interrupts_and_the_session_stays_usable(api: httpx.Client, session: dict[str, Any]) -> None:
    sid = session["id"]
    run(api, sid, "kept = 1")
    result = run(api, sid, "import time\nwhile True: time.sleep(0.1)", timeout=1)
    assert result["status"] == "timeout"
    assert run(api, sid, "kept + 1")["outputs"][0]["data"]["text/plain"] == "2"


def test_timeout_restarts_a_kernel_that_ignores_interrupts(
    api: httpx.Client, session: dict[str, Any]
) -> None:
    sid = session["id"]
    code = "import signal, time\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nwhile True: time.sleep(0.1)"
    result = run(api, sid, code, timeout=1)
    assert result["status"] == "timeout"
    after = run(api, sid, "1 + 1")
    assert after["status"] == "ok"
    assert after["outputs"][0]["data"]["text/plain"] == "2"


def test_delete_leaves_no_container_and_no_workspace(
    api: httpx.Client, engine: docker.DockerClient, server: Server
) -> None:
    created = api.post("/api/v1/sessions").json()
    sid = created["id"]
    run(api, sid, "open('a.txt', 'w').write('x')")
    workspace = server.state_dir / "workspaces" / sid
    assert workspace.exists()
    assert api.delete(f"/api/v1/sessions/{sid}").status_code == 204
    assert not workspace.exists()
    with pytest.raises(docker.errors.NotFound):
        engine.api.inspect_container(f"workbench-{sid}")
    assert api.get(f"/api/v1/sessions/{sid}").status_code == 404
    assert api.post(f"/api/v1/sessions/{sid}/execute", json={"code": "1"}).status_code == 404


def test_concurrent_creates_all_succeed(api: httpx.Client, server: Server) -> None:
    from concurrent.futures import ThreadPoolExecutor

    def create(_: int) -> httpx.Response:
        with server.client() as client:
            return client.post("/api/v1/sessions", json={"memory_mb": 256})

    with ThreadPoolExecutor(3) as pool:
        answers = list(pool.map(create, range(3)))
    ids = [answer.json()["id"] for answer in answers]
    try:
        assert [answer.status_code for answer in answers] == [201, 201, 201]
        assert len(set(ids)) == 3
        for sid in ids:
            assert run(api, sid, "21 * 2")["outputs"][0]["data"]["text/plain"] == "42"
    finally:
        for sid in ids:
            api.delete(f"/api/v1/sessions/{sid}")


def test_a_second_server_on_the_same_engine_leaves_our_kernels_alone(
    api: httpx.Client, engine: docker.DockerClient, session: dict[str, Any]
) -> None:
    run(api, session["id"], "mine = 'still here'")
    with running_server() as other, other.client() as client:  # reconciles its own (empty) state at start
        assert client.get("/api/v1/sessions").json()["sessions"] == []
        assert run(api, session["id"], "print(mine)")["stdout"] == "still here\n"


def test_exit_does_not_end_the_shared_kernel(api: httpx.Client, session: dict[str, Any]) -> None:
    sid = session["id"]
    run(api, sid, "kept = 'alive'")
    for code in ("exit()", "quit()", "exit"):
        assert run(api, sid, code)["status"] == "ok"
    assert run(api, sid, "print(kept)")["stdout"] == "alive\n"
    assert "_KeepKernelExit" not in run(api, sid, "print(dir())")["stdout"]
