"""The kernel's disk bound: a loop-mounted file system per workspace, a tiny tmpfs per runtime directory."""

from __future__ import annotations

import os
import shutil
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import httpx
import pytest

from tests.conftest import Server, run, running_server
from workbench.kernels.connection import runtime_dir_for
from workbench.volumes import RUNTIME_BYTES, Volumes, image_bytes, loop_supported, unmount
from workbench.workspace import Workspace

pytestmark = [
    pytest.mark.docker,
    pytest.mark.skipif(loop_supported() is not None, reason=f"no loop mounts: {loop_supported()}"),
]

QUOTA_MB = 300

FILL = """
import errno, os
written, failure = 0, None
chunk = b"x" * 2**20
try:
    with open({path!r}, "wb", buffering=0) as stream:
        while written < {limit}:
            written += stream.write(chunk)
            {sync}
except OSError as exc:
    failure = errno.errorcode.get(exc.errno, exc.errno)
print(written, failure)
"""


def fill(
    api: httpx.Client, sid: str, path: str, limit: int, *, chunk: int = 2**20, sync: bool = False
) -> tuple[int, str]:
    code = FILL.format(path=path, limit=limit, sync="os.fsync(stream.fileno())" if sync else "")
    code = code.replace("2**20", str(chunk))
    result = run(api, sid, code, timeout=600)
    assert result["status"] == "ok", result
    written, failure = result["stdout"].split()
    return int(written), failure


def mounts_below(path: Path) -> list[str]:
    """Mount points below ``path`` but the warm pool's ``library-slots`` (a bind mount of its own, made
    at start; see ``workbench.kernels.library_mount``)."""
    prefix, slots = str(path) + "/", str(path / "library-slots")
    with Path("/proc/self/mounts").open() as mounts:
        points = [line.split()[1] for line in mounts]
    return [point for point in points if point.startswith(prefix) and not point.startswith(slots)]


@pytest.fixture(scope="module")
def quota_server(engine: docker.DockerClient) -> Iterator[Server]:
    env = {"WORKBENCH_WORKSPACE_QUOTA_MB": str(QUOTA_MB)}
    with running_server(engine=engine, env=env) as instance:
        yield instance


@pytest.fixture
def qapi(quota_server: Server) -> Iterator[httpx.Client]:
    with quota_server.client() as client:
        yield client


@pytest.fixture
def qsession(qapi: httpx.Client) -> Iterator[dict[str, Any]]:
    answer = qapi.post("/api/v1/sessions", json={"memory_mb": 256})
    assert answer.status_code == 201, answer.text
    created: dict[str, Any] = answer.json()
    yield created
    qapi.delete(f"/api/v1/sessions/{created['id']}")


class HealthProbe(threading.Thread):
    """Times /api/v1/health until stopped."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.latencies: list[float] = []
        self.failures: list[str] = []
        self.done = threading.Event()

    def run(self) -> None:
        with httpx.Client(timeout=30) as client:
            while not self.done.is_set():
                began = time.monotonic()
                try:
                    status = client.get(f"{self.url}/api/v1/health").status_code
                except httpx.HTTPError as exc:
                    self.failures.append(repr(exc))
                else:
                    if status != 200:
                        self.failures.append(f"status {status}")
                self.latencies.append(time.monotonic() - began)
                self.done.wait(0.1)


def test_a_kernel_writing_2_gb_stops_at_the_quota(
    quota_server: Server, qapi: httpx.Client, qsession: dict[str, Any]
) -> None:
    sid = qsession["id"]
    image = quota_server.state_dir / "volumes" / f"{sid}.img"
    free_before = shutil.disk_usage(quota_server.state_dir).free
    probe = HealthProbe(quota_server.url)
    probe.start()
    try:
        written, failure = fill(qapi, sid, "/data/big.bin", 2 * 10**9)
    finally:
        probe.done.set()
        probe.join(60)
    free_after = shutil.disk_usage(quota_server.state_dir).free
    print(
        f"wrote {written / 2**20:.0f} MiB, then {failure}; health p100 {max(probe.latencies) * 1000:.0f} ms"
    )
    assert failure in {"ENOSPC", "EDQUOT"}
    assert 0.9 * QUOTA_MB * 2**20 <= written <= image_bytes(QUOTA_MB * 2**20)
    # The host allocated no more than the image, whatever the kernel tried (other work on the host may
    # change its free space too, so that figure only gets a generous bound).
    assert image.stat().st_blocks * 512 <= image_bytes(QUOTA_MB * 2**20)
    assert free_before - free_after < 1 * 10**9
    assert probe.latencies, "the health probe took no sample"
    assert not probe.failures
    assert max(probe.latencies) < 1.0
    # The server keeps serving the session: uploads see the full disk, deleting frees it again.
    upload = qapi.put(f"/api/v1/sessions/{sid}/files/more.txt", content=b"x" * 2**20)
    assert upload.status_code == 413, upload.text
    assert qapi.delete(f"/api/v1/sessions/{sid}/files/big.bin").status_code == 204
    deadline = time.monotonic() + 30  # the file system may count freed blocks at its next commit
    while (
        upload := qapi.put(f"/api/v1/sessions/{sid}/files/more.txt", content=b"x" * 2**20)
    ).status_code == 413:
        assert time.monotonic() < deadline, upload.text
        time.sleep(0.5)
    assert upload.status_code == 201, upload.text
    while image.stat().st_blocks * 512 > 64 * 2**20:  # discard gives the freed blocks back to the host
        assert time.monotonic() < deadline, image.stat().st_blocks
        time.sleep(0.5)


def test_other_sessions_are_untouched_by_a_full_workspace(
    qapi: httpx.Client, qsession: dict[str, Any]
) -> None:
    other = qapi.post("/api/v1/sessions", json={"memory_mb": 256}).json()
    try:
        written, failure = fill(qapi, qsession["id"], "/data/big.bin", 2 * 10**9, chunk=8 * 2**20)
        assert failure == "ENOSPC"
        assert written <= image_bytes(QUOTA_MB * 2**20)
        written, failure = fill(qapi, other["id"], "/data/mine.bin", 50 * 2**20)
        assert (written, failure) == (50 * 2**20, "None")
    finally:
        qapi.delete(f"/api/v1/sessions/{other['id']}")


def test_the_workspace_starts_empty_and_is_owned_by_the_kernel(
    qapi: httpx.Client, qsession: dict[str, Any]
) -> None:
    code = "import os; print(os.listdir('/data'), os.access('/data', os.W_OK), os.stat('/data').st_uid)"
    assert run(qapi, qsession["id"], code)["stdout"] == "[] True 1000\n"
    listing = qapi.get(f"/api/v1/sessions/{qsession['id']}/files").json()
    assert listing["files"] == []


def test_the_runtime_directory_takes_a_few_kib_at_most(qapi: httpx.Client, qsession: dict[str, Any]) -> None:
    sid = qsession["id"]
    written, failure = fill(qapi, sid, "/run/workbench/junk", 2**20, chunk=1024, sync=True)
    assert failure == "ENOSPC"
    assert written <= RUNTIME_BYTES - 4096  # the connection file holds a page
    many = "import os\nfor i in range(1000):\n    os.mkdir(f'/run/workbench/d{i}')"
    assert run(qapi, sid, many)["status"] == "error"  # out of inodes
    assert run(qapi, sid, "print('still talking')")["stdout"] == "still talking\n"
    restart = qapi.post(f"/api/v1/sessions/{sid}/restart")
    assert restart.status_code == 200, restart.text
    assert run(qapi, sid, "print('restarted')")["stdout"] == "restarted\n"


def test_deleting_a_session_leaves_no_mount_and_no_image(quota_server: Server, qapi: httpx.Client) -> None:
    sid = qapi.post("/api/v1/sessions", json={"memory_mb": 256}).json()["id"]
    state = quota_server.state_dir
    image = state / "volumes" / f"{sid}.img"
    workspace = state / "workspaces" / sid
    runtime = runtime_dir_for(state / "runtime", sid)
    assert image.exists()
    assert {str(workspace), str(runtime)} <= set(mounts_below(state))
    run(qapi, sid, "open('/data/a.txt', 'w').write('x')")
    assert qapi.delete(f"/api/v1/sessions/{sid}").status_code == 204
    assert not image.exists()
    assert not workspace.exists()
    assert not runtime.exists()
    assert {str(workspace), str(runtime)}.isdisjoint(mounts_below(state))


def test_a_reboot_is_survived_by_mounting_again(engine: docker.DockerClient) -> None:
    env = {"WORKBENCH_WORKSPACE_QUOTA_MB": "64"}
    with running_server(engine=engine, env=env) as server, server.client() as api:
        kept = api.post("/api/v1/sessions", json={"memory_mb": 256}).json()["id"]
        run(api, kept, "open('/data/kept.txt', 'w').write('survives')")
        state = server.state_dir
        # A server killed hard keeps its mounts; a reboot takes the mounts and the containers away.
        server.stop(signal.SIGKILL)
        engine.api.remove_container(f"workbench-{kept}", force=True)
        unmount(state / "workspaces" / kept)
        unmount(runtime_dir_for(state / "runtime", kept))
        assert not (state / "workspaces" / kept / "kept.txt").exists()
        # A session deleted while the server was down: its image is an orphan.
        orphan = state / "volumes" / "session-orphan.img"
        orphan.write_bytes(b"")
        server.start()
        assert str(state / "workspaces" / kept) in mounts_below(state)
        assert not orphan.exists()
        assert api.get(f"/api/v1/sessions/{kept}/files/kept.txt").content == b"survives"
        result = run(api, kept, "print(open('/data/kept.txt').read())")
        assert result["stdout"] == "survives\n"
        assert fill(api, kept, "/data/big.bin", 10**9, chunk=8 * 2**20)[1] == "ENOSPC"


def test_a_volume_that_cannot_be_made_gives_a_json_503(engine: docker.DockerClient) -> None:
    env = {"WORKBENCH_WORKSPACE_QUOTA_MB": str(2**40)}  # an image larger than ext4 allows for one file
    with running_server(engine=engine, env=env) as server, server.client() as api:
        answer = api.post("/api/v1/sessions", json={"memory_mb": 256})
        assert answer.status_code == 503
        assert answer.json()["error"]["code"] == "kernel-failed"
        assert api.get("/api/v1/health").status_code == 200
        assert list((server.state_dir / "volumes").iterdir()) == []
        assert mounts_below(server.state_dir) == []


def test_dir_mode_makes_plain_directories(engine: docker.DockerClient) -> None:
    with (
        running_server(engine=engine, env={"WORKBENCH_WORKSPACE_FS": "dir"}) as server,
        server.client() as api,
    ):
        sid = api.post("/api/v1/sessions", json={"memory_mb": 256}).json()["id"]
        assert run(api, sid, "print(1)")["stdout"] == "1\n"
        assert mounts_below(server.state_dir) == []
        assert not (server.state_dir / "volumes" / f"{sid}.img").exists()
        api.delete(f"/api/v1/sessions/{sid}")


def test_the_file_system_offers_the_quota_and_release_removes_it(tmp_path: Path) -> None:
    for quota_mb in (16, 300):
        workspace, runtime = tmp_path / "w", tmp_path / "r"
        for path, mode in ((workspace, 0o770), (runtime, 0o700)):
            path.mkdir()
            os.chown(path, 1000, 1000)
            path.chmod(mode)
        volumes = Volumes(tmp_path / "volumes", mode="loop", quota_bytes=quota_mb * 2**20, owner=(1000, 1000))
        volumes.provision("s", workspace, runtime)
        try:
            fs = os.statvfs(workspace)
            assert quota_mb * 2**20 <= fs.f_bavail * fs.f_frsize <= image_bytes(quota_mb * 2**20)
            assert os.listdir(workspace) == []
            for path, mode in ((workspace, 0o770), (runtime, 0o700)):
                st = path.stat()
                assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (1000, 1000, mode)
            volumes.ensure("s", workspace, runtime)  # idempotent
            (workspace / "one.bin").write_bytes(b"x" * 2**20)
            usage = Workspace(workspace, quota_bytes=quota_mb * 2**20, max_upload_bytes=2**20,
                              allowed_extensions=(".bin",)).usage_bytes()  # fmt: skip
            assert 2**20 <= usage <= 2**20 + 2**17
            assert volumes.images() == ["s"]
        finally:
            volumes.release("s", workspace, runtime)
        assert not os.path.ismount(workspace)
        assert not os.path.ismount(runtime)
        assert volumes.images() == []
        workspace.rmdir()
        runtime.rmdir()


def test_without_root_workspaces_are_plain_directories(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    volumes = Volumes(tmp_path / "volumes", mode="loop", quota_bytes=2**20, owner=None)
    assert not volumes.enabled
    assert "only uploads are held to the quota" in caplog.text
    (tmp_path / "w").mkdir()
    (tmp_path / "r").mkdir()
    volumes.provision("s", tmp_path / "w", tmp_path / "r")
    assert volumes.images() == []
    assert not os.path.ismount(tmp_path / "w")
