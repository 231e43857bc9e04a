"""Density: what an idle session costs, in the kernel container and in the server.

Starts its own server (real Docker engine, real kernel image, pool disabled so only sessions run),
creates N idle sessions with the default limits, each connected by one WebSocket client, and prints:
the memory an idle kernel container uses (its cgroup's usage, page cache included, and without it), the
server's resident memory growth per session, and how many idle sessions this machine's RAM holds:

    .venv/bin/python bench/density.py [-n 20]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from pathlib import Path

import docker
import websockets

from workbench.testing import ServerProcess, throwaway_server

CGROUP_ROOTS = (Path("/sys/fs/cgroup/memory/docker"), Path("/sys/fs/cgroup/system.slice"))


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    msg = f"no VmRSS for process {pid}"
    raise RuntimeError(msg)


def container_memory(client: docker.DockerClient, name: str) -> tuple[float, float]:
    """MiB used by a container's cgroup: all of it, and without the page cache (its working set)."""
    stats = client.api.stats(name, stream=False)["memory_stats"]
    usage = stats["usage"]
    detail = stats.get("stats", {})
    cache = detail.get("total_inactive_file", detail.get("inactive_file", 0))
    return usage / 2**20, (usage - cache) / 2**20


def machine_mib() -> float:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**20


async def hold_sockets(server: ServerProcess, session_ids: list[str]) -> list[websockets.ClientConnection]:
    headers = {"Authorization": f"Bearer {server.token}"}
    base = server.url.replace("http", "ws")
    return [
        await websockets.connect(f"{base}/api/v1/sessions/{sid}/ws", additional_headers=headers)
        for sid in session_ids
    ]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-n", type=int, default=20, help="idle sessions to start (default 20)")
    count = parser.parse_args().n
    env = {"WORKBENCH_POOL_SIZE": "0", "WORKBENCH_MAX_SESSIONS": str(count + 1)}
    engine = docker.from_env(timeout=120)
    with throwaway_server(token="bench", env=env) as server, server.client() as api:
        assert server.process is not None
        pid = server.process.pid
        warm = api.post("/api/v1/sessions")  # the server's own one-off costs (imports, pools) come first
        warm.raise_for_status()
        api.delete(f"/api/v1/sessions/{warm.json()['id']}").raise_for_status()
        before = rss_kib(pid)
        session_ids = []
        for _ in range(count):
            created = api.post("/api/v1/sessions")
            created.raise_for_status()
            session_ids.append(created.json()["id"])
        loop = asyncio.new_event_loop()
        sockets = loop.run_until_complete(hold_sockets(server, session_ids))
        time.sleep(5)  # let the kernels settle into idle
        after = rss_kib(pid)
        usage = [container_memory(engine, f"workbench-{sid}") for sid in session_ids]
        for socket in sockets:
            loop.run_until_complete(socket.close())
        loop.close()
        limit_mb = api.get(f"/api/v1/sessions/{session_ids[0]}").json()["limits"]["memory_mb"]
    total = statistics.median(u[0] for u in usage)
    working = statistics.median(u[1] for u in usage)
    ram = machine_mib()
    per_session_kib = (after - before) / count
    print(f"{count} idle sessions, default limits ({limit_mb} MiB each), one WebSocket client each")
    print(f"idle kernel container: median {total:.1f} MiB (cgroup usage), {working:.1f} MiB working set")
    print(f"server RSS {before / 1024:.1f} -> {after / 1024:.1f} MiB: {per_session_kib:.0f} KiB per session")
    held = int(ram / (working + per_session_kib / 1024))
    print(f"this machine ({ram / 1024:.1f} GiB RAM) holds about {held} idle sessions by working set, "
          f"{int(ram / limit_mb)} if every kernel may use its whole limit")  # fmt: skip


if __name__ == "__main__":
    main()
