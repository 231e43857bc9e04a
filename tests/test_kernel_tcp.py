"""Kernels over TCP + CurveZMQ (``--kernel-transport tcp``): the Docker launcher puts each kernel on a
private internal network of the engine; the core behaviour is the same as over IPC, and a client
without the kernel's Curve keys gets no answer at all."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import stat
import uuid
from collections.abc import Iterator
from typing import Any

import docker
import docker.errors
import httpx
import pytest
import zmq
from jupyter_client.session import Session

from tests.conftest import Server, interrupt_a_busy_loop, run, running_server
from workbench.image import default_image_name
from workbench.kernels.connection import KERNEL_CONNECTION_FILE, runtime_dir_for
from workbench.kernels.launcher import ContainerLimits, DockerLauncher, LaunchRequest, container_name
from workbench.kernels.runtime import SessionKernel
from workbench.testing import short_tmp

pytestmark = pytest.mark.docker
NO_REPLY_WAIT_MS = 3000  # a Curve handshake on the engine's bridge takes milliseconds


@pytest.fixture(scope="module")
def tcp_server(engine: docker.DockerClient) -> Iterator[tuple[Server, str]]:
    network = f"workbench-test-{secrets.token_hex(4)}"
    try:
        with running_server(
            "--kernel-transport", "tcp", "--kernel-network", network, engine=engine
        ) as server:
            yield server, network
    finally:
        with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
            engine.networks.get(network).remove()


@pytest.fixture
def tcp_session(tcp_server: tuple[Server, str]) -> Iterator[tuple[httpx.Client, dict[str, Any]]]:
    server, _ = tcp_server
    with server.client() as api:
        answer = api.post("/api/v1/sessions", json={"memory_mb": 512})
        assert answer.status_code == 201, answer.text
        created: dict[str, Any] = answer.json()
        try:
            yield api, created
        finally:
            api.delete(f"/api/v1/sessions/{created['id']}")


def connection_of(api: httpx.Client, session_id: str) -> dict[str, Any]:
    answer = api.get(f"/api/v1/sessions/{session_id}/connection")
    assert answer.status_code == 200, answer.text
    info: dict[str, Any] = answer.json()
    return info


def test_variables_persist_and_output_streams_over_tcp(
    tcp_session: tuple[httpx.Client, dict[str, Any]],
) -> None:
    api, session = tcp_session
    sid = session["id"]
    assert run(api, sid, "x = 20")["status"] == "ok"
    result = run(api, sid, "print(x + 1)\nx * 2")
    assert result["status"] == "ok"
    assert result["stdout"] == "21\n"
    assert result["outputs"][0]["data"]["text/plain"] == "40"


def test_files_written_by_the_kernel_are_served(
    tcp_server: tuple[Server, str], tcp_session: tuple[httpx.Client, dict[str, Any]]
) -> None:
    api, session = tcp_session
    sid = session["id"]
    assert api.put(f"/api/v1/sessions/{sid}/files/in.csv", content=b"a\n1\n2\n").status_code == 201
    assert run(api, sid, "open('out.txt', 'w').write(str(len(open('in.csv').read())))")["status"] == "ok"
    answer = api.get(f"/api/v1/sessions/{sid}/files/out.txt")
    assert answer.status_code == 200
    assert answer.content == b"6"


def test_interrupt_stops_a_busy_loop_and_keeps_state(
    tcp_server: tuple[Server, str], tcp_session: tuple[httpx.Client, dict[str, Any]]
) -> None:
    server, _ = tcp_server
    api, session = tcp_session
    sid = session["id"]
    run(api, sid, "kept = 'yes'")
    result, _ = interrupt_a_busy_loop(server, api, sid)
    assert result is not None
    assert result["error"]["ename"] == "KeyboardInterrupt"
    assert run(api, sid, "kept")["outputs"][0]["data"]["text/plain"] == "'yes'"


def test_kernel_sits_on_the_internal_network_with_its_own_keys(
    engine: docker.DockerClient,
    tcp_server: tuple[Server, str],
    tcp_session: tuple[httpx.Client, dict[str, Any]],
) -> None:
    server, network = tcp_server
    api, session = tcp_session
    sid = session["id"]
    container = engine.containers.get(f"workbench-{sid}")
    settings = container.attrs["HostConfig"]
    assert settings["NetworkMode"] == network
    assert not settings.get("PortBindings")  # nothing published on the host
    assert list(container.attrs["NetworkSettings"]["Networks"]) == [network]
    # one network of that name, though warm kernels and this session were launched at the same time
    assert [item.name for item in engine.networks.list(names=[network])].count(network) == 1
    assert engine.networks.get(network).attrs["Internal"] is True
    info = connection_of(api, sid)
    assert info["transport"] == "tcp"
    assert info["ip"] == container.attrs["NetworkSettings"]["Networks"][network]["IPAddress"]
    assert len(info["curve_publickey"]) == len(info["curve_secretkey"]) == 40
    kernel_file = runtime_dir_for(server.state_dir / "runtime", sid) / KERNEL_CONNECTION_FILE
    assert stat.S_IMODE(os.stat(kernel_file).st_mode) == 0o600
    # every kernel has keys of its own
    other = api.post("/api/v1/sessions", json={"memory_mb": 512})
    assert other.status_code == 201, other.text
    try:
        assert connection_of(api, other.json()["id"])["curve_publickey"] != info["curve_publickey"]
    finally:
        api.delete(f"/api/v1/sessions/{other.json()['id']}")
    # the network is the only way out, and it leads nowhere
    probe = "import socket\ns = socket.socket()\ns.settimeout(3)\nprint(s.connect_ex(('1.1.1.1', 80)))"
    assert run(api, sid, probe)["stdout"].strip() != "0"


def _kernel_info_reply(info: dict[str, Any], *, curve: dict[str, bytes] | None) -> bool:
    """Ask the kernel's shell for kernel_info with a correctly signed message; is there any reply?"""
    context = zmq.Context()
    try:
        socket = context.socket(zmq.DEALER)
        socket.linger = 0
        if curve is not None:
            socket.curve_serverkey = curve["serverkey"]
            socket.curve_publickey = curve["publickey"]
            socket.curve_secretkey = curve["secretkey"]
        socket.connect(f"tcp://{info['ip']}:{info['shell_port']}")
        session = Session(key=info["key"].encode(), signature_scheme=info["signature_scheme"])
        session.send(socket, "kernel_info_request", {})
        return bool(socket.poll(NO_REPLY_WAIT_MS))
    finally:
        context.destroy(linger=0)


def test_only_the_kernels_keys_get_an_answer(tcp_session: tuple[httpx.Client, dict[str, Any]]) -> None:
    api, session = tcp_session
    info = connection_of(api, session["id"])
    right = {key: info[f"curve_{key}"].encode() for key in ("publickey", "secretkey")}
    assert _kernel_info_reply(info, curve={"serverkey": right["publickey"], **right})  # the control
    public, secret = zmq.curve_keypair()  # a wrong key pair: the server key does not match
    assert not _kernel_info_reply(info, curve={"serverkey": public, "publickey": public, "secretkey": secret})
    assert not _kernel_info_reply(info, curve=None)  # plain ZeroMQ: no handshake either
    # the kernel's public key alone is not enough: the client must hold the kernel's key pair (ZAP)
    foreign = {"serverkey": right["publickey"], "publickey": public, "secretkey": secret}
    assert not _kernel_info_reply(info, curve=foreign)


def test_a_network_that_is_not_internal_is_refused(engine: docker.DockerClient) -> None:
    network = f"workbench-test-open-{secrets.token_hex(4)}"
    engine.networks.create(network, driver="bridge")
    try:
        with (
            running_server("--kernel-transport", "tcp", "--kernel-network", network, engine=engine) as server,
            server.client() as api,
        ):
            answer = api.post("/api/v1/sessions", json={"memory_mb": 512})
            assert answer.status_code >= 500, answer.text
            assert "not internal" in answer.json()["error"]["message"]
    finally:
        engine.networks.get(network).remove()


def test_interrupt_by_control_message_as_the_kubernetes_launcher_does(
    engine: docker.DockerClient, tcp_server: tuple[Server, str]
) -> None:
    """Pods take no signals through the API: the runtime interrupts with ipykernel's interrupt_request."""
    _, network = tcp_server
    root = short_tmp()
    for name in ("workspace", "runtime"):
        (root / name).mkdir(mode=0o700)
        os.chown(root / name, 1000, 1000)
    launcher = DockerLauncher(
        image=default_image_name(), uid=1000, instance=f"test-{secrets.token_hex(4)}", transport="tcp",
        network=network,
    )  # fmt: skip
    launcher.interrupt_by_message = True
    limits = ContainerLimits(memory_mb=512, cpus=1.0, pids_limit=128, tmp_mb=16, shm_mb=16)
    request = LaunchRequest(f"session-{uuid.uuid4()}", root / "workspace", root / "runtime", limits)
    kernel = SessionKernel(request, launcher, connection_file=root / "connection.json", owner=(1000, 1000),
                           link_dir=root / "links", start_timeout=60, interrupt_grace=5,
                           max_output_bytes=1 << 20)  # fmt: skip

    async def scenario() -> dict[str, Any]:
        await kernel.start()
        try:
            busy = asyncio.create_task(
                kernel.execute("r1", "while True: pass", timeout=60, allow_stdin=False)
            )
            await asyncio.sleep(1.0)
            await kernel.interrupt()
            execution = await asyncio.wait_for(busy, 30)
            return execution.done_event()
        finally:
            await kernel.stop(remove=True)
            launcher.close()

    try:
        done = asyncio.run(scenario())
    finally:
        with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
            engine.api.remove_container(container_name(request.session_id), force=True)
        shutil.rmtree(root, ignore_errors=True)
    assert done["status"] == "error"
    assert done["error"]["ename"] == "KeyboardInterrupt"
