"""Tenants: each sees and touches only its own sessions; the admin sees all; caps answer 429."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import docker
import httpx
import pytest
import websockets

from tests.conftest import Server, running_server

pytestmark = pytest.mark.docker


def workbench_cli(state_dir: Path, *args: str) -> Any:
    done = subprocess.run([sys.executable, "-m", "workbench", *args, "--state-dir", str(state_dir), "--json"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    return json.loads(done.stdout)


class Tenants:
    def __init__(self, server: Server) -> None:
        self.server = server
        self.alpha = self.make("--tenant", "alpha", "--max-sessions", "2", "--max-memory-mb", "300")
        self.beta = self.make("--tenant", "beta")

    def make(self, *args: str) -> str:
        token: str = workbench_cli(self.server.state_dir, "tokens", "create", *args)["token"]
        return token

    def client(self, token: str) -> httpx.Client:
        return self.server.client(token=token)


@pytest.fixture(scope="module")
def tenants(engine: docker.DockerClient) -> Iterator[Tenants]:
    with running_server(engine=engine) as server:
        yield Tenants(server)


@pytest.fixture(scope="module")
def alpha_session(tenants: Tenants) -> str:
    with tenants.client(tenants.alpha) as alpha:
        answer = alpha.post("/api/v1/sessions", json={"memory_mb": 4096})
        assert answer.status_code == 201, answer.text
        session_id: str = answer.json()["id"]
        assert answer.json()["limits"]["memory_mb"] == 300
        assert (
            alpha.put(f"/api/v1/sessions/{session_id}/files/secret.csv", content=b"a,b\n1,2\n").status_code
            == 201
        )
    return session_id


ROUTES = [
    ("GET", "/api/v1/sessions/{id}", None),
    ("DELETE", "/api/v1/sessions/{id}", None),
    ("POST", "/api/v1/sessions/{id}/interrupt", None),
    ("POST", "/api/v1/sessions/{id}/restart", None),
    ("POST", "/api/v1/sessions/{id}/execute", {"code": "print(open('secret.csv').read())"}),
    ("GET", "/api/v1/sessions/{id}/connection", None),
    ("GET", "/api/v1/sessions/{id}/files", None),
    ("GET", "/api/v1/sessions/{id}/files/secret.csv", None),
    ("PUT", "/api/v1/sessions/{id}/files/planted.csv", b"x,y\n"),
    ("PATCH", "/api/v1/sessions/{id}/files/secret.csv", {"new_path": "moved.csv"}),
    ("DELETE", "/api/v1/sessions/{id}/files/secret.csv", None),
    ("GET", "/api/v1/files/list/{id}", None),
    ("GET", "/api/v1/files/download/{id}/secret.csv", None),
]


def call(client: httpx.Client, method: str, path: str, body: Any) -> httpx.Response:
    if isinstance(body, bytes):
        return client.request(method, path, content=body)
    return client.request(method, path, json=body)


@pytest.mark.parametrize(("method", "path", "body"), ROUTES)
def test_another_tenants_session_is_unknown_on_every_route(
    tenants: Tenants, alpha_session: str, method: str, path: str, body: Any
) -> None:
    with tenants.client(tenants.beta) as beta:
        foreign = call(beta, method, path.format(id=alpha_session), body)
        unknown = call(beta, method, path.format(id="session-00000000-0000-4000-8000-000000000000"), body)
    assert foreign.status_code == 404, foreign.text
    assert foreign.json()["error"]["code"] == unknown.json()["error"]["code"]
    with tenants.client(tenants.alpha) as alpha:
        files = alpha.get(f"/api/v1/sessions/{alpha_session}/files").json()["files"]
    assert [entry["name"] for entry in files] == ["secret.csv"]


def test_another_tenants_multipart_upload_is_refused(tenants: Tenants, alpha_session: str) -> None:
    with tenants.client(tenants.beta) as beta:
        files = {"file": ("planted.csv", b"x\n", "text/csv")}
        assert beta.post(f"/api/v1/sessions/{alpha_session}/files", files=files).status_code == 404
        assert beta.post(f"/api/v1/files/upload/{alpha_session}", files=files).status_code == 404


async def test_another_tenants_websocket_is_refused(tenants: Tenants, alpha_session: str) -> None:
    url = tenants.server.url.replace("http", "ws") + f"/api/v1/sessions/{alpha_session}/ws"
    with pytest.raises(websockets.InvalidStatus) as refused:
        async with websockets.connect(url, additional_headers={"Authorization": f"Bearer {tenants.beta}"}):
            pass
    assert refused.value.response.status_code == 404
    async with websockets.connect(f"{url}?token={tenants.alpha}") as socket:
        await socket.send(json.dumps({"type": "execute", "id": "mine", "code": "print('ok')"}))
        while (event := json.loads(await socket.recv()))["type"] != "done":
            pass
    assert event["stdout"] == "ok\n"
    assert f"token={tenants.alpha}" not in tenants.server.log()


def test_lists_are_per_tenant_and_the_admin_sees_all(tenants: Tenants, alpha_session: str) -> None:
    with tenants.client(tenants.beta) as beta:
        beta_session = beta.post("/api/v1/sessions").json()["id"]
        assert [s["id"] for s in beta.get("/api/v1/sessions").json()["sessions"]] == [beta_session]
    with tenants.client(tenants.alpha) as alpha:
        assert [s["id"] for s in alpha.get("/api/v1/sessions").json()["sessions"]] == [alpha_session]
    with tenants.server.client() as admin:
        every = {s["id"] for s in admin.get("/api/v1/sessions").json()["sessions"]}
        assert {alpha_session, beta_session} <= every
        assert admin.get(f"/api/v1/sessions/{alpha_session}/files/secret.csv").content == b"a,b\n1,2\n"
        assert admin.delete(f"/api/v1/sessions/{beta_session}").status_code == 204


def test_the_session_cap_answers_429(tenants: Tenants, alpha_session: str) -> None:
    with tenants.client(tenants.alpha) as alpha:
        second = alpha.post("/api/v1/sessions")
        assert second.status_code == 201
        third = alpha.post("/api/v1/sessions")
        assert third.status_code == 429
        assert third.json()["error"]["code"] == "tenant-limit-reached"
        assert int(third.headers["Retry-After"]) > 0
        assert alpha.delete(f"/api/v1/sessions/{second.json()['id']}").status_code == 204
        fourth = alpha.post("/api/v1/sessions")
        assert fourth.status_code == 201
        alpha.delete(f"/api/v1/sessions/{fourth.json()['id']}")


def test_tenants_cannot_attach_and_revoked_tokens_stop_working(tenants: Tenants, alpha_session: str) -> None:
    with tenants.client(tenants.alpha) as alpha:
        refused = alpha.get(f"/api/v1/sessions/{alpha_session}/connection")
        assert refused.status_code == 403
    gamma = workbench_cli(tenants.server.state_dir, "tokens", "create", "--tenant", "gamma")
    assert workbench_cli(tenants.server.state_dir, "tokens", "revoke", gamma["id"])["revoked"] == [
        gamma["id"]
    ]
    with tenants.client(gamma["token"]) as revoked:
        assert revoked.get("/api/v1/sessions").status_code == 401
    listed = workbench_cli(tenants.server.state_dir, "tokens", "ls")
    assert gamma["token"] not in json.dumps(listed)


def test_concurrent_creates_stop_exactly_at_the_cap(tenants: Tenants) -> None:
    """Regression: check and insert were separate transactions; 20 creates capped at 5 gave 19."""
    gamma = tenants.make("--tenant", "gamma", "--max-sessions", "5")

    def create(_: int) -> httpx.Response:
        with tenants.client(gamma) as client:
            return client.post("/api/v1/sessions", json={"memory_mb": 256})

    with ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(create, range(20)))
    created = [answer.json()["id"] for answer in answers if answer.status_code == 201]
    try:
        assert sorted(answer.status_code for answer in answers) == [201] * 5 + [429] * 15
        assert {a.json()["error"]["code"] for a in answers if a.status_code == 429} == {
            "tenant-limit-reached"
        }
        with tenants.client(gamma) as client:
            assert len(client.get("/api/v1/sessions").json()["sessions"]) == 5
    finally:
        with tenants.client(gamma) as client:
            for session_id in created:
                client.delete(f"/api/v1/sessions/{session_id}")
