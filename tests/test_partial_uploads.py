"""Uploads in progress are never visible, and what a killed server left of them goes at the next start."""

from __future__ import annotations

import os
import signal
import socket
import time
from pathlib import Path

import docker
import pytest

from tests.conftest import running_server
from workbench.errors import BadRequest
from workbench.handlers.compat import top_level_files
from workbench.workspace import PARTIAL_DIR, Workspace, clear_partial_uploads


def make_ws(root: Path) -> Workspace:
    root.mkdir(parents=True, exist_ok=True)
    return Workspace(root, quota_bytes=8 << 20, max_upload_bytes=1 << 20, allowed_extensions=(".csv",))


def test_an_upload_in_a_subfolder_is_invisible_until_committed(tmp_path: Path) -> None:
    ws = make_ws(tmp_path / "ws")
    with ws.begin_upload("reports/q3.csv") as up:
        up.write(b"region,total\n")
        listed, _ = ws.list("", recursive=True)
        assert [entry.path for entry in listed] == ["reports"]  # the folder made for it, no file
        assert top_level_files(ws) == []
        assert ws.list("reports")[1] == 0
        up.commit()
    listed, _ = ws.list("", recursive=True)
    assert [entry.path for entry in listed] == ["reports", "reports/q3.csv"]


@pytest.mark.parametrize("path", [PARTIAL_DIR, f"{PARTIAL_DIR}/x.csv", f"{PARTIAL_DIR}/../a.csv"])
def test_the_partial_folder_cannot_be_named(tmp_path: Path, path: str) -> None:
    ws = make_ws(tmp_path / "ws")
    with ws.begin_upload("a.csv") as up:
        up.write(b"a\n")
        (temp,) = os.listdir(ws.root / PARTIAL_DIR)
        for call in (
            lambda: ws.list(path),
            lambda: ws.stat(path),
            lambda: ws.open_for_download(f"{PARTIAL_DIR}/{temp}"),
            lambda: ws.rename(f"{PARTIAL_DIR}/{temp}", "stolen.csv"),
            lambda: ws.delete(path, recursive=True),
            lambda: ws.begin_upload(f"{PARTIAL_DIR}/planted.csv"),
        ):
            with pytest.raises(BadRequest):
                call()
        up.commit()
    assert os.listdir(ws.root / PARTIAL_DIR) == []


def test_a_kernel_planted_file_or_link_in_place_of_the_folder_is_replaced(tmp_path: Path) -> None:
    ws = make_ws(tmp_path / "ws")
    outside = tmp_path / "outside"
    outside.mkdir()
    (ws.root / PARTIAL_DIR).symlink_to(outside)
    with ws.begin_upload("a.csv") as up:
        up.write(b"a\n")
        up.commit()
    assert os.listdir(outside) == []
    assert (ws.root / PARTIAL_DIR).is_dir()
    assert not (ws.root / PARTIAL_DIR).is_symlink()
    assert [entry.name for entry in ws.list()[0]] == ["a.csv"]


def test_start_up_clears_what_a_killed_server_left_and_spares_newer_uploads(tmp_path: Path) -> None:
    workspaces = tmp_path / "workspaces"
    first, second = make_ws(workspaces / "s1"), make_ws(workspaces / "s2")
    make_ws(workspaces / "never-uploaded")
    (workspaces / "stray-file").write_bytes(b"")
    stale = [first.begin_upload("old.csv"), second.begin_upload("deep/old.csv")]
    for upload in stale:
        upload.write(b"left behind\n")
    old = time.time() - 60
    for ws in (first, second):
        for name in os.listdir(ws.root / PARTIAL_DIR):
            os.utime(ws.root / PARTIAL_DIR / name, (old, old))
    start = time.time()
    current = first.begin_upload("new.csv")  # an upload of the server that just started
    current.write(b"a\n")
    assert clear_partial_uploads(workspaces, before=start) == 2
    assert os.listdir(second.root / PARTIAL_DIR) == []
    assert len(os.listdir(first.root / PARTIAL_DIR)) == 1
    current.commit()
    assert [entry.name for entry in first.list()[0]] == ["new.csv"]
    for upload in stale:
        upload.abort()
    assert clear_partial_uploads(tmp_path / "missing", before=start) == 0


# ---------------------------------------------------------------------------------------------- end to end


@pytest.mark.docker
def test_a_multipart_upload_cut_by_a_killed_server_leaves_nothing_visible(
    engine: docker.DockerClient,
) -> None:
    with running_server(engine=engine) as server, server.client() as client:
        answer = client.post("/api/v1/sessions", json={"memory_mb": 256})
        assert answer.status_code == 201, answer.text
        sid = answer.json()["id"]
        partial = server.state_dir / "workspaces" / sid / PARTIAL_DIR
        head = (
            f"POST /api/v1/sessions/{sid}/files HTTP/1.1\r\nHost: x\r\n"
            f"Authorization: Bearer {server.token}\r\n"
            "Content-Type: multipart/form-data; boundary=B\r\nContent-Length: 10000000\r\n\r\n"
            '--B\r\nContent-Disposition: form-data; name="path"\r\n\r\nreports/2024\r\n'
            '--B\r\nContent-Disposition: form-data; name="file"; filename="q3.csv"\r\n\r\n'
        )
        with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
            sock.sendall(head.encode() + b"region,total\n" * 100_000)
            deadline = time.monotonic() + 30
            while not (partial.is_dir() and os.listdir(partial)):  # the upload is under way
                assert time.monotonic() < deadline
                time.sleep(0.05)
            server.stop(signal.SIGKILL)
        assert len(os.listdir(partial)) == 1  # what a killed server leaves
        server.start()
        listed = client.get(f"/api/v1/sessions/{sid}/files", params={"recursive": "true"}).json()["files"]
        assert [entry["path"] for entry in listed] == ["reports", "reports/2024"]  # no file in them
        assert client.get(f"/api/v1/files/list/{sid}").json() == []
        deadline = time.monotonic() + 30
        while os.listdir(partial):  # cleared in the background at start
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert client.get(f"/api/v1/sessions/{sid}/files/{PARTIAL_DIR}").status_code == 400
