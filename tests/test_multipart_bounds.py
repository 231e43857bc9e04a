"""A multipart body is refused as soon as it holds too many parts or too large part headers."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import Server
from tests.test_files import assert_error, files_url, multipart, new_session, tree, workspace_of
from workbench.errors import BadRequest
from workbench.uploads import MAX_FIELDS, MAX_PART_HEADER_BYTES, PartBounds


def form(count: int, header: bytes = b"") -> bytes:
    parts = [
        b'--B\r\nContent-Disposition: form-data; name="f%d"\r\n%s\r\nvalue\r\n' % (i, header)
        for i in range(count)
    ]
    return b"".join(parts) + b"--B--\r\n" + b"-" * 100  # an epilogue is ignored


def scan(body: bytes, piece: int, max_parts: int = 10) -> PartBounds:
    bounds = PartBounds(b"B", max_parts=max_parts)
    for start in range(0, len(body), piece):
        bounds.feed(body[start : start + piece])
    return bounds


@pytest.mark.parametrize("piece", [1, 2, 5, 17, 4096, 10**6])
def test_parts_are_counted_however_the_body_is_cut(piece: int) -> None:
    assert scan(form(10), piece).parts == 11  # and the closing delimiter
    with pytest.raises(BadRequest) as refused:
        scan(form(11), piece)
    assert refused.value.code == "too-many-parts"


@pytest.mark.parametrize("piece", [1, 300, 65536])
def test_a_long_part_header_is_refused(piece: int) -> None:
    scan(form(2, b"X-Note: " + b"n" * (MAX_PART_HEADER_BYTES - 200) + b"\r\n"), piece)
    with pytest.raises(BadRequest) as refused:
        scan(form(2, b"X-Note: " + b"n" * MAX_PART_HEADER_BYTES + b"\r\n"), piece)
    assert refused.value.code == "part-header-too-large"


def test_the_boundary_inside_file_content_without_crlf_is_not_a_part() -> None:
    body = b'--B\r\nContent-Disposition: form-data; name="file"; filename="a.csv"\r\n\r\n' + b"--B x\n" * 100
    assert scan(body + b"\r\n--B--\r\n", 7).parts == 2


# ---------------------------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def uploads(server: Server) -> Iterator[tuple[httpx.Client, str]]:
    with server.client() as client:
        session_id = new_session(client)
        yield client, session_id
        client.delete(f"/api/v1/sessions/{session_id}")


@pytest.mark.docker
def test_forty_thousand_empty_file_parts_are_refused_early(
    server: Server, uploads: tuple[httpx.Client, str]
) -> None:
    client, sid = uploads
    before = tree(workspace_of(server, sid))
    body, headers = multipart([("file", f"n{i}.csv", b"a\n") for i in range(40_000)])
    answer = client.post(files_url(sid), content=body, headers=headers)
    assert_error(answer, 400)
    assert answer.json()["error"]["code"] in {"too-many-parts", "too-many-files"}
    many_fields, headers = multipart(
        [(f"note{i}", None, b"") for i in range(20_000)] + [("file", "a.csv", b"a\n")]
    )
    answer = client.post(files_url(sid), content=many_fields, headers=headers)
    assert_error(answer, 400)
    assert answer.json()["error"]["code"] == "too-many-parts"
    assert tree(workspace_of(server, sid)) == before


@pytest.mark.docker
def test_a_part_header_of_a_megabyte_is_refused(server: Server, uploads: tuple[httpx.Client, str]) -> None:
    client, sid = uploads
    body, headers = multipart([("file", "a" * 1_000_000 + ".csv", b"a\n")])
    answer = client.post(files_url(sid), content=body, headers=headers)
    assert_error(answer, 400)
    assert answer.json()["error"]["code"] == "part-header-too-large"
    fields = [(f"extra{i}", None, b"x") for i in range(MAX_FIELDS - 1)]
    body, headers = multipart([*fields, ("file", "ok.csv", b"a\n")])
    answer = client.post(files_url(sid), content=body, headers=headers)
    assert answer.status_code == 201, answer.text
