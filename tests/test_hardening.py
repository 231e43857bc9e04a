"""Hostile code against the container spec: every bomb and privileged call is contained, and a neighbour
session answers throughout.

Each attack is bounded by the test itself (a fixed number of forks, bytes or seconds), so a missing
protection shows up as a failed assertion, never as a host brought down.
"""

from __future__ import annotations

import contextlib
import json
import re
import stat
import threading
import time
from collections.abc import Iterator
from typing import Any

import docker
import httpx
import pytest

from tests.conftest import Server, run, running_server
from workbench.config import Settings
from workbench.kernels.connection import KERNEL_CONNECTION_FILE, runtime_dir_for
from workbench.kernels.launcher import container_name

pytestmark = pytest.mark.docker

LIMITS = Settings()  # the test server runs with the defaults
RESPONSIVE_SECONDS = 2.0


@contextlib.contextmanager
def new_session(api: httpx.Client, **limits: Any) -> Iterator[str]:
    answer = api.post("/api/v1/sessions", json=limits)
    assert answer.status_code == 201, answer.text
    session_id: str = answer.json()["id"]
    try:
        yield session_id
    finally:
        api.delete(f"/api/v1/sessions/{session_id}")


@pytest.fixture(scope="module")
def neighbour(server: Server) -> Iterator[str]:
    """A session minding its own business next to the attacks."""
    with server.client() as client, new_session(client, memory_mb=256) as session_id:
        yield session_id


@pytest.fixture(scope="module")
def intruder(server: Server) -> Iterator[str]:
    """A session whose code tries what a kernel must not do."""
    with server.client() as client, new_session(client, memory_mb=512) as session_id:
        yield session_id


def report(api: httpx.Client, session_id: str, code: str) -> Any:
    """Run ``code``, which prints one JSON value last; that value."""
    result = run(api, session_id, code, timeout=120)
    assert result["status"] == "ok", result
    return json.loads(result["stdout"].splitlines()[-1])


class Prober(threading.Thread):
    """Executes ``1`` in a session again and again, timing each round trip, until stopped."""

    def __init__(self, server: Server, session_id: str) -> None:
        super().__init__(daemon=True)
        self.server = server
        self.session_id = session_id
        self.halt = threading.Event()
        self.latencies: list[float] = []
        self.failures: list[str] = []

    def run(self) -> None:
        with self.server.client(timeout=30) as client:
            while not self.halt.wait(0.1):
                self.probe(client)

    def probe(self, client: httpx.Client) -> None:
        started = time.monotonic()
        try:
            answer = client.post(f"/api/v1/sessions/{self.session_id}/execute", json={"code": "1"})
        except httpx.HTTPError as error:
            self.failures.append(repr(error))
            return
        self.latencies.append(time.monotonic() - started)
        if answer.status_code != 200 or answer.json()["status"] != "ok":
            self.failures.append(answer.text)


@contextlib.contextmanager
def probing(server: Server, session_id: str) -> Iterator[None]:
    """A neighbour probed while the block runs; afterwards it must have answered every probe quickly."""
    prober = Prober(server, session_id)
    prober.start()
    try:
        yield
    finally:
        prober.halt.set()
        prober.join(60)
    assert prober.failures == []
    assert len(prober.latencies) >= 3
    assert max(prober.latencies) < RESPONSIVE_SECONDS, prober.latencies


def assert_serving(api: httpx.Client, session_id: str) -> None:
    """The attacked session answers again, and so does the server."""
    assert run(api, session_id, "40 + 2")["outputs"][0]["data"]["text/plain"] == "42"
    assert api.get("/api/v1/health").json()["status"] == "ok"


# ------------------------------------------------------------------------------------------- resources

FORK_BOMB = """
import json, os, signal, time
children, outcome = [], "unbounded"
try:
    for _ in range({tries}):
        pid = os.fork()
        if pid == 0:
            time.sleep(120)
            os._exit(0)
        children.append(pid)
except OSError as error:
    outcome = error.errno
finally:
    for pid in children:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
print(json.dumps([outcome, len(children)]))
"""
SPAWN_BOMB = """
import json, subprocess
children, outcome = [], "unbounded"
try:
    for _ in range({tries}):
        children.append(subprocess.Popen(["sleep", "1000"]))
except OSError as error:
    outcome = error.errno
finally:
    for child in children:
        child.kill()
        child.wait()
print(json.dumps([outcome, len(children)]))
"""


@pytest.mark.parametrize("bomb", [FORK_BOMB, SPAWN_BOMB], ids=["os.fork", "subprocess.Popen"])
def test_a_fork_bomb_stops_at_the_pids_limit(
    server: Server, api: httpx.Client, neighbour: str, bomb: str
) -> None:
    # 1 GiB, so that the forked kernels' page tables don't run out of memory before the pids run out
    with new_session(api, memory_mb=1024) as hostile:
        with probing(server, neighbour):
            outcome, children = report(api, hostile, bomb.format(tries=4 * LIMITS.pids_limit))
        assert outcome == 11  # EAGAIN
        assert children < LIMITS.pids_limit
        assert_serving(api, hostile)


MEMORY_BOMB = "chunks = []\nwhile True:\n    chunks.append(bytearray(32 * 2**20))"


def test_a_memory_bomb_is_an_oom_of_that_container_only(
    server: Server, api: httpx.Client, neighbour: str
) -> None:
    with new_session(api, memory_mb=256) as hostile:
        with probing(server, neighbour):
            result = run(api, hostile, MEMORY_BOMB, timeout=60)
        assert (result["status"], result["reason"]) == ("error", "oom")  # the engine's OOMKilled
        assert_serving(api, hostile)


FILL = """
import json, os
written, outcome = 0, "unbounded"
try:
    with open({path!r}, "wb") as stream:
        while written < 4 * {size_mb}:
            stream.write(b"x" * 2**20)
            stream.flush()
            written += 1
except OSError as error:
    outcome = error.errno
finally:
    os.unlink({path!r})
print(json.dumps([outcome, written]))
"""


@pytest.mark.parametrize(
    ("path", "size_mb"), [("/dev/shm/fill", LIMITS.shm_mb), ("/tmp/fill", LIMITS.tmp_mb)]
)
def test_shm_and_tmp_fill_up_at_their_size(api: httpx.Client, intruder: str, path: str, size_mb: int) -> None:
    outcome, written_mb = report(api, intruder, FILL.format(path=path, size_mb=size_mb))
    assert outcome == 28  # ENOSPC
    assert written_mb <= size_mb


CPU_HOG = """
import json, os, signal, time

def used():
    try:
        return int(open("/sys/fs/cgroup/cpuacct/cpuacct.usage").read()) / 1e9
    except FileNotFoundError:  # cgroup v2
        return int(dict(line.split() for line in open("/sys/fs/cgroup/cpu.stat"))["usage_usec"]) / 1e6

spinners = []
for _ in range(4):
    pid = os.fork()
    if pid == 0:
        while True:
            pass
    spinners.append(pid)
try:
    time.sleep(0.5)
    started, before = time.monotonic(), used()
    time.sleep(4)
    print(json.dumps((used() - before) / (time.monotonic() - started)))
finally:
    for pid in spinners:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
"""


def test_a_cpu_hog_gets_its_quota_and_its_neighbour_answers(
    server: Server, api: httpx.Client, neighbour: str
) -> None:
    with new_session(api, memory_mb=512, cpus=0.5) as hostile, probing(server, neighbour):
        cpus_used = report(api, hostile, CPU_HOG)
    assert cpus_used < 0.5 * 1.3  # four spinning processes, held to half a CPU


# ------------------------------------------------------------------------------------------ privileges

PRIVILEGED = """
import ctypes, errno, json, os, platform, socket, stat
libc = ctypes.CDLL(None, use_errno=True)
KEYCTL = {{"x86_64": 250, "aarch64": 219}}[platform.machine()]
CLONE_NEWUSER, CLONE_NEWNS, CLONE_NEWNET = 0x10000000, 0x00020000, 0x40000000
os.makedirs("/tmp/mountpoint", exist_ok=True)
try:
    answer = {call}
except OSError as error:
    answer = error.errno
else:
    answer = ctypes.get_errno() if answer == -1 else "allowed"
print(json.dumps(errno.errorcode.get(answer, answer)))
"""


@pytest.mark.parametrize(
    ("call", "refusal"),
    [
        ("os.mknod('/data/null', stat.S_IFCHR | 0o666, os.makedev(1, 3))", "EPERM"),
        ("os.setuid(0)", "EPERM"),
        ("os.setgid(0)", "EPERM"),
        ("os.chroot('/tmp')", "EPERM"),
        ("libc.mount(b'none', b'/tmp/mountpoint', b'tmpfs', 0, None)", "EPERM"),
        ("libc.unshare(CLONE_NEWUSER)", "EPERM"),
        ("libc.unshare(CLONE_NEWNS | CLONE_NEWNET)", "EPERM"),
        ("libc.syscall(KEYCTL, 0, -3, 0)", "EPERM"),  # KEYCTL_GET_KEYRING_ID of the session keyring
        ("socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)", "EPERM"),
        ("open('/usr/lib/planted', 'w')", "EROFS"),
    ],
    ids=["mknod", "setuid", "setgid", "chroot", "mount", "unshare-user", "unshare-ns", "keyctl", "raw-socket",
         "write-root"],
)  # fmt: skip
def test_privileged_operations_are_denied(api: httpx.Client, intruder: str, call: str, refusal: str) -> None:
    assert report(api, intruder, PRIVILEGED.format(call=call)) == refusal


SETUID_ROOT = """
import json, subprocess, time
su = subprocess.Popen(["su", "root", "-c", "id"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                      stderr=subprocess.PIPE)
time.sleep(1)  # su waits at its password prompt
uids = [line.split()[1:] for line in open(f"/proc/{su.pid}/status") if line.startswith("Uid:")][0]
su.kill()
su.communicate()
print(json.dumps(uids))
"""


def test_a_setuid_root_program_runs_without_privileges(api: httpx.Client, intruder: str) -> None:
    """no-new-privileges: ``su`` (setuid root in the image) keeps the kernel's uid, effective and saved."""
    assert report(api, intruder, SETUID_ROOT) == [str(LIMITS.kernel_uid)] * 4


IDENTITY = """
import json
status = dict(line.split(":", 1) for line in open("/proc/self/status"))
print(json.dumps({key: status[key].split() for key in ("Uid", "Gid", "Groups", "CapInh", "CapPrm", "CapEff",
                                                       "CapBnd", "CapAmb", "NoNewPrivs", "Seccomp")}))
"""


def test_the_kernel_runs_as_the_kernel_uid_without_capabilities(api: httpx.Client, intruder: str) -> None:
    uid = str(LIMITS.kernel_uid)
    no_capabilities = ["0000000000000000"]
    assert report(api, intruder, IDENTITY) == {
        "Uid": [uid] * 4,
        "Gid": [uid] * 4,
        "Groups": [uid],
        "CapInh": no_capabilities,
        "CapPrm": no_capabilities,
        "CapEff": no_capabilities,
        "CapBnd": no_capabilities,
        "CapAmb": no_capabilities,
        "NoNewPrivs": ["1"],
        "Seccomp": ["2"],  # a filter: the engine's default seccomp profile
    }


# ----------------------------------------------------------------------------------------- isolation

DATA_MOUNT = """
import json
print(json.dumps([line.split()[3] for line in open("/proc/self/mountinfo") if line.split()[4] == "/data"][0]))
"""
REACH = """
import json, os
def attempt(action, *args):
    try:
        action(*args)
    except OSError as error:
        return error.errno
    return "reached"
print(json.dumps([sorted(os.listdir("/data")), attempt(os.listdir, {folder!r}),
                  attempt(open, {folder!r} + "/secret.txt")]))
"""


def test_a_session_cannot_reach_another_sessions_workspace(
    server: Server, api: httpx.Client, intruder: str
) -> None:
    with new_session(api, memory_mb=256) as victim:
        run(api, victim, "open('secret.txt', 'w').write('mine')")
        folder = str(server.state_dir / "workspaces" / victim)
        # Its own file system (WORKBENCH_WORKSPACE_FS=loop) hides the host path from mountinfo; a plain
        # directory shows it. The intruder is told the path either way...
        assert report(api, victim, DATA_MOUNT) in {"/", folder}
        listing, listed, opened = report(api, intruder, REACH.format(folder=folder))
    assert "secret.txt" not in listing
    assert listed == opened == 2  # ENOENT: ...but it names nothing in another container


def test_connection_files_are_private(server: Server, intruder: str) -> None:
    runtime = runtime_dir_for(server.state_dir / "runtime", intruder)
    kernel_side = (runtime / KERNEL_CONNECTION_FILE).stat()
    assert (stat.S_IMODE(kernel_side.st_mode), kernel_side.st_uid) == (0o600, LIMITS.kernel_uid)
    assert (stat.S_IMODE(runtime.stat().st_mode), runtime.stat().st_uid) == (0o700, LIMITS.kernel_uid)
    connections = server.state_dir / "connections"
    assert stat.S_IMODE(connections.stat().st_mode) == 0o700
    assert stat.S_IMODE((connections / f"{intruder}.json").stat().st_mode) == 0o600


def hmac_key(api: httpx.Client, session_id: str) -> str:
    answer = api.get(f"/api/v1/sessions/{session_id}/connection")
    assert answer.status_code == 200, answer.text
    assert answer.json()["signature_scheme"] == "hmac-sha256"
    key: str = answer.json()["key"]
    assert re.fullmatch("[0-9a-f]{64}", key), "at least 256 bits"
    return key


def test_hmac_keys_are_256_bits_and_never_shared(api: httpx.Client, intruder: str, neighbour: str) -> None:
    before = hmac_key(api, intruder)
    assert hmac_key(api, neighbour) != before
    assert api.post(f"/api/v1/sessions/{intruder}/restart").status_code == 200
    assert hmac_key(api, intruder) != before


# -------------------------------------------------------------------------------------------- runtime


def test_an_explicit_runtime_is_used(engine: docker.DockerClient) -> None:
    with (
        running_server(engine=engine, env={"WORKBENCH_RUNTIME": "runc"}) as runc,
        runc.client() as client,
        new_session(client, memory_mb=256) as session_id,
    ):
        assert run(client, session_id, "1 + 1")["status"] == "ok"
        assert engine.api.inspect_container(container_name(session_id))["HostConfig"]["Runtime"] == "runc"
