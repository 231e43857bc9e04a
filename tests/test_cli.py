"""The client side of the ``workbench`` command, run as a subprocess against a real server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import Server

pytestmark = pytest.mark.docker

UNICODE_NAME = "部门预算报告2023.csv"


def workbench_env(server: Server, **extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("WORKBENCH_")}
    return {**env, "WORKBENCH_URL": server.url, "WORKBENCH_TOKEN": server.token, **extra}


def cli(server: Server, *args: str, stdin: str | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "workbench", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=workbench_env(server, **env),
        timeout=120,
    )


@pytest.fixture
def sid(session: dict[str, Any]) -> str:
    session_id: str = session["id"]
    return session_id


def test_exec_streams_output_while_the_code_runs(server: Server, sid: str) -> None:
    code = "import time\nprint('first', flush=True)\ntime.sleep(3)\nprint('second')"
    with subprocess.Popen(
        [sys.executable, "-m", "workbench", "exec", sid, code],
        stdout=subprocess.PIPE,
        text=True,
        env=workbench_env(server),
    ) as process:
        assert process.stdout is not None
        assert process.stdout.readline() == "first\n"
        assert process.poll() is None  # still running: "first" came while the code slept
        assert process.stdout.read() == "second\n"
        assert process.wait(30) == 0


def test_exec_fails_with_the_traceback_on_an_exception(server: Server, sid: str) -> None:
    done = cli(server, "exec", sid, "print('before')\ndef f():\n    raise ValueError('bad value')\nf()")
    assert done.returncode == 1
    assert done.stdout == "before\n"
    assert "Traceback" in done.stderr
    assert "----> 4 f()" in done.stderr
    assert "ValueError: bad value" in done.stderr
    assert "\x1b[" not in done.stderr  # no colours when stderr is not a terminal


def test_exec_reads_code_from_stdin_and_state_persists(server: Server, sid: str) -> None:
    assert cli(server, "exec", sid, "-", stdin="total = 40 + 2\n").returncode == 0
    done = cli(server, "exec", sid, "total")
    assert (done.returncode, done.stdout) == (0, "42\n")


def test_exec_timeout_has_its_own_exit_status(server: Server, sid: str) -> None:
    done = cli(server, "exec", "--timeout", "1", sid, "import time; time.sleep(30)")
    assert done.returncode == 124
    assert "execution timeout" in done.stderr


def test_exec_json_prints_the_execution(server: Server, sid: str) -> None:
    done = cli(server, "exec", "--json", sid, "import sys; print('out'); print('err', file=sys.stderr); 1/0")
    assert done.returncode == 1
    result = json.loads(done.stdout)
    assert (result["status"], result["stdout"], result["stderr"]) == ("error", "out\n", "err\n")
    assert result["error"]["ename"] == "ZeroDivisionError"


def test_sessions_create_ls_rm(server: Server) -> None:
    created = cli(server, "sessions", "create", "--memory-mb", "256", "--metadata", '{"team": "财务"}')
    assert created.returncode == 0, created.stderr
    session_id = created.stdout.strip()
    listed = cli(server, "sessions", "ls")
    assert listed.stdout.splitlines()[0].split() == ["ID", "STATUS", "KERNEL", "CREATED", "LAST", "ACTIVITY"]
    assert any(line.startswith(f"{session_id}  ready") for line in listed.stdout.splitlines())
    as_json = {s["id"]: s for s in json.loads(cli(server, "sessions", "ls", "--json").stdout)}
    assert as_json[session_id]["metadata"] == {"team": "财务"}
    assert as_json[session_id]["limits"]["memory_mb"] == 256
    assert cli(server, "sessions", "rm", session_id).returncode == 0
    assert session_id not in cli(server, "sessions", "ls").stdout
    again = cli(server, "sessions", "rm", session_id)
    assert again.returncode == 1
    assert "[404 session-not-found]" in again.stderr


def test_sessions_create_json(server: Server, api: httpx.Client) -> None:
    created = json.loads(cli(server, "sessions", "create", "--json").stdout)
    try:
        assert created["status"] == "ready"
        assert created["kernel"]["state"] == "idle"
    finally:
        api.delete(f"/api/v1/sessions/{created['id']}")


def test_the_token_is_read_from_the_state_directory(server: Server, tmp_path: Path) -> None:
    (tmp_path / "admin-token").write_text(server.token + "\n")
    done = cli(server, "sessions", "ls", "--json", WORKBENCH_TOKEN="", WORKBENCH_STATE_DIR=str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert isinstance(json.loads(done.stdout), list)


def test_a_bad_token_says_how_to_give_one(server: Server) -> None:
    done = cli(server, "sessions", "ls", "--token", "wrong")
    assert done.returncode == 1
    assert "WORKBENCH_TOKEN" in done.stderr


def test_an_unreachable_server_is_a_clear_error(server: Server) -> None:
    done = cli(server, "sessions", "ls", "--url", "http://127.0.0.1:9")
    assert done.returncode == 1
    assert "cannot talk to the server at http://127.0.0.1:9" in done.stderr


def test_files_put_ls_get_rm_round_trip_a_unicode_name(server: Server, sid: str, tmp_path: Path) -> None:
    local = tmp_path / UNICODE_NAME
    local.write_bytes("部门,预算\n财务,120\n".encode())
    put = cli(server, "files", "put", sid, str(local), "报告/")
    assert (put.returncode, put.stdout) == (0, f"报告/{UNICODE_NAME}\n"), put.stderr
    listed = cli(server, "files", "ls", sid, "报告")
    assert listed.stdout.splitlines()[1].split()[-1] == f"报告/{UNICODE_NAME}"
    entries = {e["path"]: e for e in json.loads(cli(server, "files", "ls", "--json", "-r", sid).stdout)}
    assert entries["报告"]["type"] == "directory"
    uploaded = entries[f"报告/{UNICODE_NAME}"]
    assert (uploaded["name"], uploaded["type"]) == (UNICODE_NAME, "file")
    assert uploaded["size"] == local.stat().st_size
    (tmp_path / "down").mkdir()
    got = cli(server, "files", "get", sid, f"报告/{UNICODE_NAME}", str(tmp_path / "down"))
    assert got.returncode == 0, got.stderr
    assert (tmp_path / "down" / UNICODE_NAME).read_bytes() == local.read_bytes()
    assert cli(server, "files", "rm", sid, "报告").returncode == 1  # a directory needs -r
    assert cli(server, "files", "rm", "-r", sid, "报告").returncode == 0
    assert cli(server, "files", "ls", "--json", sid).stdout.strip() == "[]"


def test_files_get_of_a_missing_file_fails_cleanly(server: Server, sid: str, tmp_path: Path) -> None:
    done = cli(server, "files", "get", sid, "nope.csv", str(tmp_path / "nope.csv"))
    assert done.returncode == 1
    assert "404" in done.stderr
    assert not list(tmp_path.iterdir())
