"""Slow file work of one tenant neither blocks the event loop nor queues ahead of other tenants."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import Server, run
from workbench.fairness import FairPool
from workbench.usage import CachedUsage
from workbench.workspace import Workspace

# ---------------------------------------------------------------------------------------------- the pool


async def test_a_tenant_with_every_slot_stuck_does_not_delay_another() -> None:
    pool = FairPool(workers=4, per_tenant=2)
    release = threading.Event()
    started: list[str] = []

    def stuck(name: str) -> str:
        started.append(name)
        assert release.wait(30)
        return name

    try:
        greedy = [asyncio.ensure_future(pool.run("greedy", stuck, f"g{i}")) for i in range(6)]
        other = await asyncio.wait_for(pool.run("other", lambda: "served"), 10)
        assert other == "served"
        assert sorted(started) == ["g0", "g1"]  # the greedy tenant waits for its own turn
        release.set()
        assert sorted(await asyncio.gather(*greedy)) == [f"g{i}" for i in range(6)]
        assert pool._slots == {}  # idle tenants are forgotten
    finally:
        release.set()
        pool.close()


async def test_an_error_frees_the_slot() -> None:
    pool = FairPool(workers=2, per_tenant=1)

    def fail() -> None:
        raise OSError("disk on fire")

    try:
        with pytest.raises(OSError, match="disk on fire"):
            await pool.run("t", fail)
        assert await asyncio.wait_for(pool.run("t", lambda: 1), 10) == 1
    finally:
        pool.close()


# ---------------------------------------------------------------------------------------------- usage


def test_usage_is_walked_once_per_refresh_and_uploads_are_added(tmp_path: Path, monkeypatch: Any) -> None:
    walks: list[Path] = []
    real = Workspace.usage_bytes

    def counted(self: Workspace) -> int:
        walks.append(self.root)
        return real(self)

    monkeypatch.setattr(Workspace, "usage_bytes", counted)
    meter = CachedUsage(refresh=3600)
    ws = Workspace(
        tmp_path, quota_bytes=1 << 20, max_upload_bytes=1 << 20, allowed_extensions=(".csv",), meter=meter
    )
    for name in ("a.csv", "b.csv", "c.csv"):
        with ws.begin_upload(name) as upload:
            upload.write(b"x" * 100_000)
            upload.commit()
    assert len(walks) == 1
    assert meter.usage(ws) >= 200_000  # what the later uploads added, without a walk
    with ws.begin_upload("d.csv") as upload, pytest.raises(Exception, match="quota"):
        upload.write(b"x" * 800_000)
    assert len(walks) == 1
    meter.forget(tmp_path)
    meter.usage(ws)
    assert len(walks) == 2


# ---------------------------------------------------------------------------------------------- end to end

PLANT_AND_DIE = """
import os
try:
    for i in range(60_000):  # as many as fit: the runtime directory is a tiny file system of its own
        open(f'/run/workbench/k-planted-{i}', 'w').close()
except OSError:
    pass
os._exit(3)
"""


@pytest.mark.docker
async def test_a_kernel_that_fills_its_runtime_dir_and_dies_does_not_freeze_recovery(server: Server) -> None:
    with server.client() as api:
        answer = api.post("/api/v1/sessions", json={"memory_mb": 512})
        assert answer.status_code == 201, answer.text
        sid = answer.json()["id"]
    try:
        latencies: list[float] = []
        finished = False
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:

            async def probe() -> None:
                while not finished:
                    started = time.monotonic()
                    assert (await client.get("/api/v1/health")).status_code == 200
                    latencies.append(time.monotonic() - started)
                    await asyncio.sleep(0.02)

            prober = asyncio.create_task(probe())
            try:
                headers = {"Authorization": f"Bearer {server.token}"}
                died = await client.post(
                    f"/api/v1/sessions/{sid}/execute",
                    json={"code": PLANT_AND_DIE},
                    headers=headers,
                    timeout=120,
                )
                assert died.json()["reason"] == "died", died.text
                with server.client() as api:  # the fresh kernel answers (its start cleared the planted files)
                    deadline = time.monotonic() + 60
                    while api.get(f"/api/v1/sessions/{sid}").json()["kernel"]["state"] not in (
                        "idle",
                        "busy",
                    ):
                        assert time.monotonic() < deadline
                        await asyncio.sleep(0.2)
            finally:
                finished = True
                await prober
        with server.client() as api:
            assert (
                run(api, sid, "import os; len([n for n in os.listdir('/run/workbench') if 'planted' in n])")[
                    "outputs"
                ][0]["data"]["text/plain"]
                == "0"
            )
        assert max(latencies) < 2, sorted(latencies)[-5:]
    finally:
        with server.client() as api:
            api.delete(f"/api/v1/sessions/{sid}")
