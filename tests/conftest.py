"""Fixtures: a real ``workbench serve`` process on a free port, talking to the real Docker engine.

Docker-dependent tests are marked ``docker``.  Without an engine or the kernel image they are skipped
on a developer's machine, but under ``CI=true`` that is a failure, never a silent skip.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator
from typing import Any

import docker
import httpx
import pytest

from workbench.image import default_image_name
from workbench.testing import ServerProcess, throwaway_server

TOKEN = "test-admin-token"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _engine_problem() -> str | None:
    try:
        client = docker.from_env(timeout=10)
        client.ping()
    except Exception as exc:
        return f"no Docker engine: {exc}"
    try:
        client.images.get(default_image_name())
    except Exception:
        return f"kernel image {default_image_name()} missing: run `workbench image build`"
    finally:
        client.close()
    return None


@pytest.fixture(scope="session")
def engine() -> docker.DockerClient:
    problem = _engine_problem()
    if problem is not None:
        if IN_CI:
            pytest.fail(f"CI=true and {problem}")
        pytest.skip(problem)
    return docker.from_env(timeout=60)


Server = ServerProcess


@contextlib.contextmanager
def running_server(
    *extra: str, engine: docker.DockerClient | None = None, env: dict[str, str] | None = None
) -> Iterator[Server]:
    """A server of its own (fresh state directory); afterwards its kernels (given an engine) and files go."""
    with throwaway_server(*extra, token=TOKEN, env=env, remove_kernels=engine is not None) as instance:
        yield instance


@pytest.fixture(scope="session")
def server(engine: docker.DockerClient) -> Iterator[Server]:
    with running_server(engine=engine) as instance:
        yield instance


@pytest.fixture(scope="module")
def engineless() -> Iterator[Server]:
    """A server whose Docker engine is unreachable."""
    with running_server("--docker-host", "unix:///nonexistent/docker.sock") as instance:
        yield instance


@pytest.fixture
def api(server: Server) -> Iterator[httpx.Client]:
    with server.client() as client:
        yield client


@pytest.fixture
def session(api: httpx.Client) -> Iterator[dict[str, Any]]:
    """A fresh session, deleted afterwards."""
    answer = api.post("/api/v1/sessions", json={"memory_mb": 512})
    assert answer.status_code == 201, answer.text
    created: dict[str, Any] = answer.json()
    yield created
    api.delete(f"/api/v1/sessions/{created['id']}")


def run(api: httpx.Client, session_id: str, code: str, **extra: Any) -> dict[str, Any]:
    answer = api.post(f"/api/v1/sessions/{session_id}/execute", json={"code": code, **extra})
    assert answer.status_code == 200, answer.text
    result: dict[str, Any] = answer.json()
    return result


def interrupt_a_busy_loop(server: Server, interrupter: httpx.Client, session_id: str) -> tuple[Any, float]:
    """Run ``while True: pass`` in the session (from a client of its own), interrupt it through
    ``interrupter`` a second later; the execution's answer (``None`` if none within 30 s) and the seconds
    from the interrupt to that answer."""
    holder: dict[str, Any] = {}
    with server.client(timeout=60) as runner:

        def busy() -> None:
            code = {"code": "while True: pass"}
            holder["answer"] = runner.post(f"/api/v1/sessions/{session_id}/execute", json=code)

        thread = threading.Thread(target=busy)
        thread.start()
        time.sleep(1.0)
        started = time.monotonic()
        assert interrupter.post(f"/api/v1/sessions/{session_id}/interrupt").status_code == 204
        thread.join(30)
        elapsed = time.monotonic() - started
    answer = holder.get("answer")
    return (None if answer is None else answer.json()), elapsed
