"""The warm pool against real kernel containers: a claimed kernel is a full session, and no slot leaks."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable

import docker
import httpx
import pytest

from tests.conftest import Server, run, running_server
from tests.test_tenants import workbench_cli

pytestmark = pytest.mark.docker

POOL_LABEL = "org.workbench.pool"


def metric(server: Server, name: str) -> float:
    for line in httpx.get(f"{server.url}/metrics", timeout=10).text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.split()[-1])
    return 0.0


def wait_for(condition: Callable[[], bool], timeout: float, server: Server) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            msg = f"condition not met within {timeout} s; the server's log:\n{server.log()[-6000:]}"
            raise AssertionError(msg)
        time.sleep(0.2)


def wait_for_pool(server: Server, size: int) -> None:
    """Warm kernels start one at a time, behind everything else this machine runs: a generous deadline."""
    wait_for(lambda: metric(server, "workbench_pool_ready") == size, timeout=240, server=server)


def pool_containers(engine: docker.DockerClient, server: Server) -> set[str]:
    instance = (server.state_dir / "instance-id").read_text().strip()
    found = engine.api.containers(
        all=True, filters={"label": [f"{POOL_LABEL}=true", f"org.workbench.instance={instance}"]}
    )
    return {item["Id"] for item in found}


def test_a_pooled_session_is_locked_down_empty_and_has_its_own_limits(engine: docker.DockerClient) -> None:
    with running_server(engine=engine, env={"WORKBENCH_POOL_SIZE": "2"}) as server, server.client() as api:
        wait_for_pool(server, 2)
        first = api.post("/api/v1/sessions", json={"memory_mb": 512}).json()["id"]
        leftovers = (
            "secret = 'first user'\n"
            "open('/data/mine.txt', 'w').write('first')\n"
            "open('/tmp/scratch', 'w').write('first')"
        )
        assert run(api, first, leftovers)["status"] == "ok"
        assert api.delete(f"/api/v1/sessions/{first}").status_code == 204
        wait_for(lambda: metric(server, "workbench_pool_ready") >= 1, timeout=240, server=server)
        price_list = "item,price\n茶,12\n".encode()
        assert api.put("/api/v1/library/价格表.csv", content=price_list).status_code == 201
        hits = metric(server, 'workbench_pool_claims_total{outcome="hit"}')
        created = api.post("/api/v1/sessions", json={"memory_mb": 384, "cpus": 0.5})
        assert created.status_code == 201, created.text
        second = created.json()
        try:
            assert metric(server, 'workbench_pool_claims_total{outcome="hit"}') == hits + 1
            assert second["limits"]["memory_mb"] == 384
            attrs = engine.api.inspect_container(f"workbench-{second['id']}")
            host = attrs["HostConfig"]
            assert attrs["Config"]["Labels"][POOL_LABEL] == "true"
            assert attrs["Config"]["Labels"]["org.workbench.session"] == second["id"]
            assert host["ReadonlyRootfs"] is True
            assert host["NetworkMode"] == "none"
            assert host["CapDrop"] == ["ALL"]
            assert "no-new-privileges" in host["SecurityOpt"]
            assert host["Memory"] == 384 * 2**20
            assert host["MemorySwap"] == host["Memory"]
            assert host["NanoCpus"] == 500_000_000
            assert host["PidsLimit"] == 256
            mounts = {mount["Destination"]: mount["Source"] for mount in attrs["Mounts"]}
            assert mounts["/data"] == str(server.state_dir / "workspaces" / second["id"])
            library = run(api, second["id"], "print(open('/library/价格表.csv').read())")
            assert library["stdout"] == "item,price\n茶,12\n\n"
            refused = run(api, second["id"], "open('/library/mine.csv', 'w')")
            assert refused["error"]["ename"] in ("OSError", "PermissionError")
            probe = (
                "import os\n"
                "print(os.listdir('/data'), os.listdir('/tmp'), 'secret' in dir(), len(In),\n"
                "      open('/sys/fs/cgroup/memory/memory.limit_in_bytes').read().strip())"
            )
            result = run(api, second["id"], probe)
            listing, scratch, has_secret, history, limit = result["stdout"].rsplit(" ", 4)
            assert listing == "[]"
            assert "scratch" not in scratch
            assert has_secret == "False"
            assert int(limit) == 384 * 2**20
            assert int(history) <= 4  # In[0] and this test's cells: nothing of anyone else
        finally:
            api.delete(f"/api/v1/sessions/{second['id']}")


def test_a_pooled_session_restarts_cold_and_keeps_its_files(engine: docker.DockerClient) -> None:
    with running_server(engine=engine, env={"WORKBENCH_POOL_SIZE": "1"}) as server, server.client() as api:
        wait_for_pool(server, 1)
        session_id = api.post("/api/v1/sessions", json={"memory_mb": 320}).json()["id"]
        try:
            run(api, session_id, "open('kept.txt', 'w').write('kept'); lost = 1")
            restarted = api.post(f"/api/v1/sessions/{session_id}/restart")
            assert restarted.status_code == 200, restarted.text
            result = run(api, session_id, "print(open('kept.txt').read(), 'lost' in dir())")
            assert result["stdout"] == "kept False\n"
            attrs = engine.api.inspect_container(f"workbench-{session_id}")
            assert POOL_LABEL not in attrs["Config"]["Labels"]
            assert attrs["HostConfig"]["Memory"] == 320 * 2**20
        finally:
            api.delete(f"/api/v1/sessions/{session_id}")


def test_kill_9_with_a_full_pool_leaves_no_orphan_and_refills(engine: docker.DockerClient) -> None:
    with running_server(engine=engine, env={"WORKBENCH_POOL_SIZE": "2"}) as server:
        wait_for(lambda: len(pool_containers(engine, server)) == 2, timeout=240, server=server)
        wait_for_pool(server, 2)
        before = pool_containers(engine, server)
        slots_before = set((server.state_dir / "workspaces").iterdir())
        server.stop(signal.SIGKILL)
        server.start()
        wait_for_pool(server, 2)
        after = pool_containers(engine, server)
        assert len(after) == 2
        assert not before & after
        assert not slots_before & set((server.state_dir / "workspaces").iterdir())


def test_the_pool_is_not_counted_against_a_tenant_cap(engine: docker.DockerClient) -> None:
    with running_server(engine=engine, env={"WORKBENCH_POOL_SIZE": "2"}) as server:
        wait_for_pool(server, 2)
        token = workbench_cli(server.state_dir, "tokens", "create", "--tenant", "ana", "--max-sessions", "1")
        with server.client(token=token["token"]) as ana:
            first = ana.post("/api/v1/sessions")
            assert first.status_code == 201, first.text
            assert ana.post("/api/v1/sessions").status_code == 429
            assert [s["id"] for s in ana.get("/api/v1/sessions").json()["sessions"]] == [first.json()["id"]]
