"""Every error is JSON with the documented shape and status, and the server keeps serving."""

from __future__ import annotations

import contextlib
import json
import socket
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import Server


def assert_error(answer: httpx.Response, status: int) -> None:
    assert answer.status_code == status, answer.text
    assert answer.headers["Content-Type"].startswith("application/json")
    body = answer.json()
    assert set(body) == {"error"}
    assert isinstance(body["error"]["code"], str)
    assert body["error"]["code"]
    assert isinstance(body["error"]["message"], str)
    assert "Traceback" not in answer.text


@pytest.fixture
def client(engineless: Server) -> Iterator[httpx.Client]:
    with engineless.client(timeout=30) as http:
        yield http


def test_engine_down_gives_503_on_create_and_degraded_health(client: httpx.Client) -> None:
    assert_error(client.post("/api/v1/sessions", json={}), 503)
    health = client.get("/api/v1/health")
    assert health.status_code == 503
    assert health.json()["status"] == "degraded"
    assert health.json()["docker"] is False
    assert health.json()["database"] is True


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/v1/sessions/session-unknown"),
        ("DELETE", "/api/v1/sessions/session-unknown"),
        ("POST", "/api/v1/sessions/session-unknown/interrupt"),
        ("POST", "/api/v1/sessions/session-unknown/restart"),
        ("GET", "/api/v1/sessions/..%2F..%2Fetc"),
        ("GET", "/api/v1/sessions/" + "x" * 300),
        ("GET", "/api/v1/no/such/route"),
    ],
)
def test_unknown_ids_and_routes_are_404(client: httpx.Client, method: str, path: str) -> None:
    assert_error(client.request(method, path), 404)


def test_execute_on_unknown_session_is_404(client: httpx.Client) -> None:
    assert_error(client.post("/api/v1/sessions/session-unknown/execute", json={"code": "1"}), 404)


@pytest.mark.parametrize("body", [b"{", b"not json", b"\xff\xfe", b"[1, 2]", b'"text"'])
def test_malformed_json_is_400(client: httpx.Client, body: bytes) -> None:
    assert_error(client.post("/api/v1/sessions", content=body), 400)


@pytest.mark.parametrize("body", [{}, {"code": 5}, {"code": None}, {"timeout": 3}])
def test_missing_code_is_422(client: httpx.Client, body: dict[str, object]) -> None:
    assert_error(client.post("/api/v1/sessions/session-x/execute", json=body), 422)


@pytest.mark.parametrize(
    "body", [{"memory_mb": "lots"}, {"cpus": -1}, {"idle_timeout": 1.5}, {"metadata": [1]}, {"surprise": 1}]
)
def test_invalid_create_bodies_are_422(client: httpx.Client, body: dict[str, object]) -> None:
    assert_error(client.post("/api/v1/sessions", json=body), 422)


def test_missing_or_wrong_token_is_401(engineless: Server) -> None:
    assert_error(httpx.get(f"{engineless.url}/api/v1/sessions"), 401)
    assert_error(
        httpx.get(f"{engineless.url}/api/v1/sessions", headers={"Authorization": "Bearer nope"}), 401
    )
    good = httpx.get(
        f"{engineless.url}/api/v1/sessions", headers={"Authorization": f"token {engineless.token}"}
    )
    assert good.status_code == 200


def test_wrong_method_is_json_405(client: httpx.Client) -> None:
    assert_error(client.put("/api/v1/sessions"), 405)


def test_oversized_code_is_413_and_huge_bodies_are_contained(
    client: httpx.Client, engineless: Server
) -> None:
    too_big = "x" * (1024 * 1024 + 1)
    assert_error(client.post("/api/v1/sessions/session-x/execute", json={"code": too_big}), 413)
    with httpx.Client(base_url=engineless.url, timeout=30) as fresh:
        answer = fresh.post("/api/v1/sessions", content=b"{" * (64 * 1024 * 1024),
                            headers={"Authorization": f"Bearer {engineless.token}"})  # fmt: skip
        assert_error(answer, 413)
    assert client.get("/api/v1/health").json()["database"] is True


def raw_exchange(server: Server, request: bytes, body: bytes = b"") -> bytes:
    """Send a request as bytes, then read whatever the server answers until it closes or goes quiet."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(request)
        with contextlib.suppress(OSError):
            sock.sendall(body)
        answer = b""
        sock.settimeout(5)
        with contextlib.suppress(TimeoutError, OSError):
            while chunk := sock.recv(65536):
                answer += chunk
    return answer


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/api/v1/sessions"),
        ("POST", "/api/v1/sessions/session-x/execute"),
        ("GET", "/api/v1/sessions"),
        ("PATCH", "/api/v1/sessions/session-x/files/a.csv"),
        ("GET", "/api/v1/health"),
    ],
)
def test_a_declared_length_past_the_limit_is_one_json_413(engineless: Server, method: str, path: str) -> None:
    """Regression: past Tornado's max_body_size the answer was a bare 400 and a closed connection."""
    head = (f"{method} {path} HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {engineless.token}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {10 * 2**30}\r\n\r\n")  # fmt: skip
    answer = raw_exchange(engineless, head.encode())
    assert answer.startswith(b"HTTP/1.1 413 "), answer[:300]
    assert b'"too-large"' in answer
    assert answer.count(b"HTTP/1.1 ") == 1, answer  # nothing after the JSON answer


def test_a_body_past_the_limit_is_a_json_413_however_it_comes(client: httpx.Client) -> None:
    mib = 1024 * 1024
    chunked = client.post("/api/v1/sessions", content=iter([b" " * mib] * 12))
    assert_error(chunked, 413)
    declared = client.post("/api/v1/sessions", content=b" " * (10 * mib))
    assert_error(declared, 413)
    ignored_body = client.request("GET", "/api/v1/sessions", content=b" " * (2 * mib))
    assert_error(ignored_body, 413)
    unauthenticated = httpx.post(f"{client.base_url}/api/v1/sessions", content=b" " * (10 * mib), timeout=30)
    assert_error(unauthenticated, 401)
    assert client.get("/api/v1/sessions").status_code == 200


def test_a_client_expecting_100_continue_gets_the_413_at_once(engineless: Server) -> None:
    head = (f"POST /api/v1/sessions HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {engineless.token}\r\n"
            f"Expect: 100-continue\r\nContent-Length: {100 * 2**20}\r\n\r\n")  # fmt: skip
    answer = raw_exchange(engineless, head.encode())
    assert answer.startswith(b"HTTP/1.1 413 "), answer[:300]
    assert b"100 Continue" not in answer


def test_405_lists_the_allowed_methods(client: httpx.Client) -> None:
    with httpx.Client(base_url=client.base_url, timeout=30) as fresh:  # answered before any body: then closed
        answer = fresh.request("TRACE", "/api/v1/health")
    assert_error(answer, 405)
    assert answer.headers["Allow"] == "GET"
    assert set(client.put("/api/v1/sessions").headers["Allow"].split(", ")) == {"GET", "POST"}


def test_query_string_tokens_are_refused_outside_websockets(engineless: Server) -> None:
    answer = httpx.get(f"{engineless.url}/api/v1/sessions?token={engineless.token}")
    assert_error(answer, 401)
    assert engineless.token not in engineless.log()


@pytest.mark.parametrize(
    "body",
    [b'{"cpus": NaN}', b'{"idle_timeout": -Infinity}', b'{"memory_mb": 2e308}',
     b'{"cpus": 1' + b"0" * 4400 + b"}", b'{"metadata": {"deep": [Infinity]}}'],
)  # fmt: skip
def test_non_finite_and_huge_numbers_are_400(client: httpx.Client, body: bytes) -> None:
    assert_error(client.post("/api/v1/sessions", content=body), 400)


def raw_request(server: Server, head: bytes) -> bytes:
    """Send bytes no HTTP client library would, and read the whole answer (the server closes)."""
    import socket

    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as connection:
        connection.sendall(head)
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    return answer


@pytest.mark.parametrize(
    ("value", "status"),
    [(b"\xd9\xa1\xd9\xa2", 400), (b"\xb2", 400), (b"12; drop", 400), (b"7" * 3000, 413), (b"1, 2", 400)],
)
def test_malformed_content_length_is_a_json_4xx_and_the_connection_closes(
    engineless: Server, value: bytes, status: int
) -> None:
    answer = raw_request(
        engineless,
        b"POST /api/v1/sessions HTTP/1.1\r\nHost: x\r\nContent-Length: " + value + b"\r\n\r\n{}",
    )
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(f"HTTP/1.1 {status} ".encode()), answer[:300]
    assert b"application/json" in head
    assert b"Connection: close" in head
    assert set(json.loads(body)) == {"error"}
