"""Noisy neighbour: while tenant A runs each attack of issue 11 (classes 2, 3, 4, 5 and 10), tenant B's
``GET /api/v1/sessions/{id}``, a 1 KB upload and an execute of ``1+1`` keep answering, and the server's
RSS stays under 1 GiB.

The goal is 250 ms at p99; the figures are printed against it.  Under the suite the bound asserted is a
stall bound (:data:`P99_LIMIT`, 1 s: the attacks found stalled everyone for 4-16 s), so that a busy CI
machine does not fail a test about stalls; ``bench/noisy_neighbour.py`` runs the same suite against the
250 ms goal (``NOISY_NEIGHBOUR_P99_LIMIT``).

The attacker is a separate process (``tests/noisy_attacker.py``), so that its own work never delays the
measurements.  B measures a fixed number of rounds (never "as many as fit in some time") while the attack
repeats; p99 over :data:`ROUNDS` rounds leaves out the two worst samples of each operation.  The
figures are printed (run with ``-s`` to see them).
"""

from __future__ import annotations

import contextlib
import math
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from tests.conftest import Server, running_server
from tests.test_flood import rss_mb
from tests.test_tenants import workbench_cli

pytestmark = pytest.mark.docker

ROUNDS = 200
P99_GOAL = 0.250
P99_LIMIT = float(os.environ.get("NOISY_NEIGHBOUR_P99_LIMIT", "1.0"))
RSS_LIMIT_MB = 1024
READY_TIMEOUT = 300
ATTACKS = [
    "huge_output",
    "many_fields",
    "scans",
    "ws_flood",
    "iopub_garbage",
]
ROOT = Path(__file__).resolve().parent.parent


class Neighbours:
    def __init__(self, server: Server) -> None:
        self.server = server
        self.a = self._token("attacker")
        self.b = self._token("bystander")
        with server.client(self.b) as client:
            answer = client.post("/api/v1/sessions", json={"memory_mb": 512})
            assert answer.status_code == 201, answer.text
            self.b_session: str = answer.json()["id"]

    def _token(self, tenant: str) -> str:
        token: str = workbench_cli(self.server.state_dir, "tokens", "create", "--tenant", tenant)["token"]
        return token


@pytest.fixture(scope="module")
def neighbours(engine: docker.DockerClient) -> Iterator[Neighbours]:
    with running_server(engine=engine) as server:
        yield Neighbours(server)


class RssWatch:
    """The server's peak RSS, sampled every 20 ms on a thread."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, rss_mb(self.pid))

    def __enter__(self) -> RssWatch:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(5)


@pytest.fixture
def attacker_session(neighbours: Neighbours) -> Iterator[str]:
    with neighbours.server.client(neighbours.a) as client:
        answer = client.post("/api/v1/sessions", json={"memory_mb": 3072})
        assert answer.status_code == 201, answer.text
        session_id: str = answer.json()["id"]
        yield session_id
        client.delete(f"/api/v1/sessions/{session_id}", timeout=120)


@contextlib.contextmanager
def attack(neighbours: Neighbours, kind: str, session_id: str) -> Iterator[None]:
    """Tenant A's attack ``kind``, repeating in its own process from when it is ready until the block ends."""
    server = neighbours.server
    args = [sys.executable, "-m", "tests.noisy_attacker", kind, server.url, neighbours.a, session_id]
    process = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        ready = threading.Event()
        threading.Thread(target=lambda: ready.set() if process.stdout and process.stdout.readline() else None,
                         daemon=True).start()  # fmt: skip
        assert ready.wait(READY_TIMEOUT), f"the {kind} attack did not get ready"
        yield
    finally:
        process.terminate()
        try:
            process.wait(2)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def p99(samples: list[float]) -> float:
    return sorted(samples)[math.ceil(0.99 * len(samples)) - 1]


def bystander_rounds(neighbours: Neighbours) -> dict[str, list[float]]:
    """Tenant B's three operations, :data:`ROUNDS` times each; their latencies in seconds."""
    sid = neighbours.b_session
    latencies: dict[str, list[float]] = {"get": [], "upload": [], "execute": []}
    content = b"n,v\n" + b"1,2\n" * 254  # 1 KB
    with neighbours.server.client(neighbours.b, timeout=60) as client:
        for i in range(ROUNDS):
            calls: dict[str, tuple[str, str, dict[str, Any]]] = {
                "get": ("GET", f"/api/v1/sessions/{sid}", {}),
                "upload": ("PUT", f"/api/v1/sessions/{sid}/files/probe{i % 4}.csv", {"content": content}),
                "execute": ("POST", f"/api/v1/sessions/{sid}/execute", {"json": {"code": "1+1"}}),
            }
            for name, (method, path, extra) in calls.items():
                started = time.perf_counter()
                answer = client.request(method, path, **extra)
                latencies[name].append(time.perf_counter() - started)
                assert answer.status_code in (200, 201), answer.text
            time.sleep(0.01)
    return latencies


@pytest.mark.parametrize("kind", ATTACKS)
def test_a_noisy_neighbour_does_not_slow_another_tenant(
    neighbours: Neighbours, attacker_session: str, kind: str
) -> None:
    server = neighbours.server
    assert server.process is not None
    with RssWatch(server.process.pid) as rss, attack(neighbours, kind, attacker_session):
        latencies = bystander_rounds(neighbours)
    figures = {name: p99(samples) for name, samples in latencies.items()}
    worst = {name: max(samples) for name, samples in latencies.items()}
    print(
        f"\n[noisy neighbour] {kind}: p99 "
        + ", ".join(f"{name} {1000 * value:.0f} ms" for name, value in figures.items())
        + "; max "
        + ", ".join(f"{name} {1000 * value:.0f} ms" for name, value in worst.items())
        + f"; server peak RSS {rss.peak:.0f} MB"
        + f"; goal p99 < {1000 * P99_GOAL:.0f} ms: "
        + ("met" if all(value < P99_GOAL for value in figures.values()) else "MISSED")
    )
    assert all(value < P99_LIMIT for value in figures.values()), figures
    assert rss.peak < RSS_LIMIT_MB
