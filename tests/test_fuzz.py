"""The live server fuzzed with its OpenAPI document (schemathesis): no 5xx, every error the documented JSON
shape, and no traceback or host path in any body.

The operations are collected from :func:`workbench.openapi.document`, the very document the server serves
(``tests/test_openapi.py`` checks they are equal), because ``schemathesis.pytest.from_fixture`` (loading
from the live URL) fails under pytest 9.2 (``'Function' object has no attribute '_nodeid'``).

Two runs: one with every well-formed ``session_id`` set to a live session of this module (its kernel,
workspace and files get the fuzzing), one with the ids schemathesis makes up (unknown or malformed: 404).
The WebSocket and ``/metrics`` are not fuzzed; a session the fuzzer creates is deleted at once.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema_rs
import pytest
import schemathesis
from schemathesis import Case
from schemathesis.config import SchemathesisConfig
from schemathesis.core import NotSet
from schemathesis.core.transport import Response
from schemathesis.schemas import APIOperation

import workbench
from tests.conftest import TOKEN, Server
from workbench.openapi import SESSION_ID_PATTERN, document

pytestmark = [pytest.mark.docker, pytest.mark.timeout(120)]
FuzzCase = Case[APIOperation[Any, Any, Any, Any]]

# Checks left out: positive_data_acceptance (any path is valid input, yet a missing file is a 404) and
# unsupported_method (405 answers lack `Allow`, RFC 9110; assert_clean still checks they are JSON).
# Unknown query fields are ignored by the server, so they are not generated as "invalid".  Valid creates
# start kernels (and cpus=0.01 takes a minute): only invalid ones are fuzzed.
CONFIG: dict[str, Any] = {
    "headers": {"Authorization": f"Bearer {TOKEN}"},
    "request-timeout": 30,
    "generation": {"max-examples": 25, "allow-extra-parameters": False, "database": "none"},
    "checks": {"positive_data_acceptance": {"enabled": False}, "unsupported_method": {"enabled": False}},
    "operations": [
        {"include-operation-id": operation, "generation": {"mode": "negative"}}
        for operation in ("createSession", "gatewayStartKernel", "gatewayStartKernelViaPath")
    ],
}
SCHEMA = schemathesis.openapi.from_dict(document(), config=SchemathesisConfig.from_dict(CONFIG)).exclude(
    path_regex=r"^/metrics$|/ws$|/channels$"
)
KERNEL_OR_USER_CONTENT = {"execute", "downloadFile", "fileHeaders", "compatDownloadFile"} | {
    "listExecutions", "getExecution", "exportNotebook", "runNotebook", "replayExecutions", "listVariables",
}  # fmt: skip
"""Operations whose successful answers carry what the kernel printed, or a user's file, verbatim."""
HOST_VIEW = {"getConnection"}
"""Admin only: the kernel's connection as seen from the server host, socket paths included by design."""
LIVE = SCHEMA.exclude(operation_id="deleteSession")  # the live session is deleted by its fixture only
STARTS = {"createSession", "gatewayStartKernel", "gatewayStartKernelViaPath"}
UNKNOWN = SCHEMA.exclude(path_regex=r"^(?!.*\{session_id\})")  # (`include` ignores filters with `operations`)
CREATE = jsonschema_rs.validator_for(document()["components"]["schemas"]["SessionCreate"])


def live_sessions(client: httpx.Client) -> set[str]:
    sessions = client.get("/api/v1/sessions").json()["sessions"]
    return {item["id"] for item in sessions if item["status"] in ("starting", "ready")}


@pytest.fixture(scope="module")
def fuzzed_session(server: Server) -> Iterator[str]:
    """The session the fuzzer works on; afterwards, no other session it made is left."""
    with server.client() as client:
        before = live_sessions(client)
        answer = client.post("/api/v1/sessions", json={"memory_mb": 256})
        assert answer.status_code == 201, answer.text
        session_id: str = answer.json()["id"]
        yield session_id
        left = live_sessions(client) - before
        client.delete(f"/api/v1/sessions/{session_id}")
    assert left == {session_id}


def operation_id(case: FuzzCase) -> str:
    return str(case.operation.definition.raw["operationId"])


def host_paths(server: Server) -> list[str]:
    return [str(server.state_dir.parent), str(Path(workbench.__file__).parent.parent)]


def assert_error_shape(response: Response) -> None:
    assert response.headers.get("content-type", [""])[0].startswith("application/json")
    if response.request.method == "HEAD":
        return  # no body, by HTTP
    body: Any = json.loads(response.content)
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message"}
    assert isinstance(body["error"]["code"], str)
    assert body["error"]["code"]
    assert isinstance(body["error"]["message"], str)


def assert_clean(case: FuzzCase, response: Response, server: Server) -> None:
    assert response.status_code < 500, server.log()[-4000:]
    if response.status_code >= 400:
        assert_error_shape(response)
    elif operation_id(case) in KERNEL_OR_USER_CONTENT | HOST_VIEW:
        return
    text = response.content.decode(errors="replace")
    assert "Traceback" not in text
    for path in host_paths(server):
        assert path not in text


def delete_if_created(case: FuzzCase, response: Response, server: Server) -> None:
    if operation_id(case) in STARTS and response.status_code == 201:
        with server.client() as client:
            client.delete(f"/api/v1/sessions/{json.loads(response.content)['id']}")


def fuzz(case: FuzzCase, server: Server) -> None:
    response = case.call(base_url=server.url)
    try:
        assert_clean(case, response, server)
        case.validate_response(response)
    finally:
        delete_if_created(case, response, server)


def readings(body: Any) -> Iterator[Any]:
    """What the server may read from ``body``: the JSON value sent, or raw text parsed as JSON."""
    if isinstance(body, NotSet):
        yield {}
    elif isinstance(body, str | bytes):
        with contextlib.suppress(ValueError):
            yield json.loads(body)
    else:
        yield body


def starts_a_kernel(case: FuzzCase) -> bool:
    """A create the server carries out (it reads any body as JSON, whatever its ``Content-Type``)."""
    return operation_id(case) == "createSession" and any(
        CREATE.is_valid(value) for value in readings(case.body)
    )


@LIVE.parametrize()
def test_fuzz_a_live_session(case: FuzzCase, server: Server, fuzzed_session: str) -> None:
    """Well-formed ids become the live session's; malformed ones stay (those cases are negative by them)."""
    if re.fullmatch(SESSION_ID_PATTERN, (case.path_parameters or {}).get("session_id", "")):
        case.path_parameters["session_id"] = fuzzed_session
    if not starts_a_kernel(case):
        fuzz(case, server)


@UNKNOWN.parametrize()
def test_fuzz_unknown_session_ids(case: FuzzCase, server: Server) -> None:
    fuzz(case, server)


# Beyond what schemathesis generates (JSON that Python's parser reads, headers that `requests` accepts):
# non-finite and huge numbers in every field of every JSON body, and framing headers no parser should trust.
HOSTILE_NUMBERS = ["NaN", "Infinity", "-Infinity", "1e400", "-1e999", "1" + "0" * 5000, "-" + "9" * 400]
HOSTILE_HEADERS: list[dict[str, str | bytes]] = [
    {"Range": "bytes=" + "9" * 5000 + "-"},
    {"Range": "bytes=0-" + "9" * 5000},
    {"Range": "bytes=-" + "1" * 4400},
    {"Range": "bytes=\u0661-\u0662".encode()},
    {"Content-Length": "9" * 5000},
    {"Content-Length": "\u0661\u0662".encode()},
    {"Content-Length": "12abc"},
    {"If-None-Match": '"' + "x" * 8000 + '"', "If-Range": "y" * 8000},
]


def hostile_bodies(operation: APIOperation[Any, Any, Any, Any]) -> Iterator[bytes]:
    for alternative in operation.body.items:
        if alternative.media_type == "application/json":
            for name in alternative.definition.get("schema", {}).get("properties", {}):
                for number in HOSTILE_NUMBERS:
                    yield f'{{"{name}": {number}, "code": "1", "new_path": "x.txt"}}'.encode()


def call_raw(case: FuzzCase, server: Server, **kwargs: Any) -> None:
    response = case.call(base_url=server.url, **kwargs)
    try:
        assert_clean(case, response, server)
    finally:
        delete_if_created(case, response, server)


def concrete(operation: APIOperation[Any, Any, Any, Any], session_id: str) -> FuzzCase:
    parameters = {
        "session_id": session_id,
        "path": "hostile.txt",
        "name": "hostile.txt",
        "filename": "hostile.txt",
        "token": TOKEN,
        "n": "1",
    }
    names = {parameter.name for parameter in operation.path_parameters}
    return operation.Case(path_parameters={name: parameters.get(name, "python3") for name in names})


OPERATIONS = [result.ok() for result in LIVE.get_all_operations()]  # type: ignore[union-attr]


@pytest.mark.parametrize("operation", OPERATIONS, ids=lambda operation: operation.label)
def test_non_finite_and_huge_numbers_are_4xx(operation: Any, server: Server, fuzzed_session: str) -> None:
    for body in hostile_bodies(operation):
        call_raw(concrete(operation, fuzzed_session), server, data=body,
                 headers={"Content-Type": "application/json"})  # fmt: skip


@pytest.mark.parametrize("operation", OPERATIONS, ids=lambda operation: operation.label)
def test_absurd_framing_headers_are_never_5xx(operation: Any, server: Server, fuzzed_session: str) -> None:
    with server.client() as client:
        assert client.put(
            f"/api/v1/sessions/{fuzzed_session}/files/hostile.txt", content=b"x" * 100
        ).is_success
    for headers in HOSTILE_HEADERS:
        call_raw(concrete(operation, fuzzed_session), server, headers=headers)
