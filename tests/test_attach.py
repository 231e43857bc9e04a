"""Debug attach: the connection endpoint, a real Jupyter client, and ``workbench attach`` in a terminal."""

from __future__ import annotations

import json
import os
import pty
import queue
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from jupyter_client.blocking.client import BlockingKernelClient

from tests.conftest import Server, run
from workbench.cli_client import _socket_problem
from workbench.client import Forbidden, Workbench

pytestmark = pytest.mark.docker


def connection(api: httpx.Client, session_id: str) -> dict[str, Any]:
    answer = api.get(f"/api/v1/sessions/{session_id}/connection")
    assert answer.status_code == 200, answer.text
    info: dict[str, Any] = answer.json()
    return info


@pytest.fixture
def jupyter(api: httpx.Client, session: dict[str, Any]) -> Iterator[BlockingKernelClient]:
    """A plain jupyter_client on the session's kernel, subscribed to IOPub before it is used."""
    client = BlockingKernelClient()
    client.load_connection_info(connection(api, session["id"]))  # type: ignore[arg-type]
    client.start_channels(hb=False)
    client.wait_for_ready(timeout=30)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # IOPub is a slow joiner: wait until a message gets through
        client.kernel_info()
        try:
            client.get_iopub_msg(timeout=0.5)
            break
        except queue.Empty:
            continue
    yield client
    client.stop_channels()


def jupyter_run(client: BlockingKernelClient, code: str) -> str:
    """Execute ``code`` with the Jupyter client; its stdout."""
    printed: list[str] = []

    def collect(message: dict[str, Any]) -> None:
        if message["header"]["msg_type"] == "stream":
            printed.append(message["content"]["text"])

    reply = client.execute_interactive(code, output_hook=collect, timeout=30)
    assert reply["content"]["status"] == "ok", reply["content"]
    return "".join(printed)


def test_connection_info_is_the_host_view_without_private_fields(
    api: httpx.Client, session: dict[str, Any]
) -> None:
    info = connection(api, session["id"])
    assert info["transport"] == "ipc"
    assert info["signature_scheme"] == "hmac-sha256"
    assert len(info["key"]) == 64
    assert "kernel_id" not in info
    assert Path(f"{info['ip']}-{info['shell_port']}").is_socket()


def test_connection_needs_a_token_and_a_session(server: Server, api: httpx.Client) -> None:
    anonymous = httpx.get(f"{server.url}/api/v1/sessions/session-x/connection")
    assert anonymous.status_code == 401
    assert anonymous.json()["error"]["code"] == "unauthorized"
    missing = api.get("/api/v1/sessions/session-does-not-exist/connection")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "session-not-found"


def test_a_jupyter_client_and_the_api_share_one_kernel(
    api: httpx.Client, session: dict[str, Any], jupyter: BlockingKernelClient
) -> None:
    run(api, session["id"], "from_api = '来自 API'")
    assert jupyter_run(jupyter, "print(from_api)") == "来自 API\n"
    jupyter_run(jupyter, "from_jupyter = 6 * 7")
    assert run(api, session["id"], "print(from_jupyter)")["stdout"] == "42\n"


class Terminal:
    """A command in a pseudo-terminal, read until expected text shows up."""

    def __init__(self, command: list[str], env: dict[str, str]) -> None:
        self.master, follower = pty.openpty()
        self.process = subprocess.Popen(command, stdin=follower, stdout=follower, stderr=follower, env=env)
        os.close(follower)
        self.output = ""

    def expect(self, text: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.output:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"{text!r} did not show up in:\n{self.output}"
            ready, _, _ = select.select([self.master], [], [], min(remaining, 0.5))
            if ready:
                self.output += os.read(self.master, 65536).decode(errors="replace")

    def type(self, text: str) -> None:
        os.write(self.master, text.encode())

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        os.close(self.master)


def test_workbench_attach_in_a_terminal_shares_variables_both_ways(
    server: Server, api: httpx.Client, session: dict[str, Any]
) -> None:
    run(api, session["id"], "shared_var = '共享变量 1'")
    env = {**os.environ, "WORKBENCH_URL": server.url, "WORKBENCH_TOKEN": server.token}
    command = [sys.executable, "-m", "workbench", "attach", session["id"], "--simple-prompt"]
    terminal = Terminal(command, env)
    try:
        terminal.expect("In [")
        terminal.type("print(shared_var)\n")
        terminal.expect("共享变量 1")
        terminal.type("from_console = sum(range(10))\n")
        terminal.type("\x04")  # Ctrl-D leaves the console and keeps the kernel
        terminal.expect("exit ([y]/n)?")
        terminal.type("y\n")
        terminal.expect("keeping kernel alive")
        assert terminal.process.wait(30) == 0
    finally:
        terminal.close()
    assert run(api, session["id"], "print(from_console)")["stdout"] == "45\n"


def test_only_the_admin_may_attach(server: Server) -> None:
    made = subprocess.run(
        [sys.executable, "-m", "workbench", "tokens", "create", "--tenant", "attach-test", "--json",
         "--state-dir", str(server.state_dir)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    tenant_token = json.loads(made.stdout)["token"]
    with Workbench(server.url, tenant_token) as tenant, tenant.create_session(memory_mb=256) as own:
        with pytest.raises(Forbidden) as caught:
            own.connection_info()
        assert (caught.value.status, caught.value.code) == (403, "admin-only")
        env = {**os.environ, "WORKBENCH_URL": server.url, "WORKBENCH_TOKEN": tenant_token}
        attach = subprocess.run(
            [sys.executable, "-m", "workbench", "attach", own.id], capture_output=True, text=True, env=env
        )
    assert attach.returncode == 1
    assert "[403 admin-only]" in attach.stderr


def test_attach_explains_where_it_must_run() -> None:
    info = {"transport": "ipc", "ip": "/nonexistent/runtime/k", "shell_port": 1}
    problem = _socket_problem(info)
    assert problem is not None
    assert "/nonexistent/runtime/k-1" in problem
    assert "ssh -t HOST workbench attach" in problem
