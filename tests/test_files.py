"""The file manager of a session's workspace, end to end: real server, real kernels.

Upload (raw PUT and multipart), listing, download headers and ranges, rename, delete, the upload checks
(415 and 413 leave nothing behind), aborted uploads, activity.  The hostile cases live in
``test_files_hostile.py``, the original service's routes in ``test_compat.py``.
"""

from __future__ import annotations

import io
import os
import socket
import time
import zipfile
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import docker
import httpx
import pytest

from tests.conftest import Server, run, running_server
from workbench.workspace import PARTIAL_DIR

pytestmark = pytest.mark.docker

NAME = "部门预算报告2023.csv"
CSV = "部门,预算\n研发,120\n市场,80\n".encode()


# ---------------------------------------------------------------------------------------------- helpers


def files_url(session_id: str, path: str | None = None) -> str:
    base = f"/api/v1/sessions/{session_id}/files"
    return base if path is None else f"{base}/{quote(path)}"


def workspace_of(server: Server, session_id: str) -> Path:
    return server.state_dir / "workspaces" / session_id


def tree(top: Path) -> dict[str, tuple[int, bytes | None]]:
    """Every entry below ``top`` (hidden ones too, links not followed): mtime and content of files."""
    found: dict[str, tuple[int, bytes | None]] = {}
    for dirpath, dirnames, filenames in os.walk(top):
        for name in dirnames + filenames:
            path = Path(dirpath, name)
            if name == PARTIAL_DIR and dirpath == str(top):
                continue  # made by the first upload and changed by every one; what it holds is compared
            st = path.lstat()
            content = path.read_bytes() if path.is_file() and not path.is_symlink() else None
            found[str(path.relative_to(top))] = (st.st_mtime_ns, content)
    return found


def multipart(parts: list[tuple[str, str | bytes | None, bytes]]) -> tuple[bytes, dict[str, str]]:
    """A ``multipart/form-data`` body built by hand: (field, filename or None, content); names go raw."""
    boundary = b"wb-test-boundary"
    chunks = []
    for field, filename, content in parts:
        disposition = b'form-data; name="' + field.encode() + b'"'
        if filename is not None:
            disposition += (
                b'; filename="' + (filename.encode() if isinstance(filename, str) else filename) + b'"'
            )
        chunks.append(
            b"--" + boundary + b"\r\nContent-Disposition: " + disposition + b"\r\n\r\n" + content + b"\r\n"
        )
    body = b"".join(chunks) + b"--" + boundary + b"--\r\n"
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary.decode()}"}


def assert_error(answer: httpx.Response, status: int) -> None:
    assert answer.status_code == status, answer.text
    assert answer.headers["Content-Type"].startswith("application/json")
    assert set(answer.json()["error"]) == {"code", "message"}


def new_session(client: httpx.Client) -> str:
    answer = client.post("/api/v1/sessions", json={"memory_mb": 512})
    assert answer.status_code == 201, answer.text
    session_id: str = answer.json()["id"]
    return session_id


@pytest.fixture
def other_session(api: httpx.Client) -> Iterator[str]:
    session_id = new_session(api)
    yield session_id
    api.delete(f"/api/v1/sessions/{session_id}")


# ---------------------------------------------------------------------------------------------- uploads


def test_unicode_csv_put_listed_read_by_pandas_and_downloaded(
    api: httpx.Client, server: Server, session: dict[str, Any]
) -> None:
    sid = session["id"]
    answer = api.put(files_url(sid, NAME), content=CSV)
    assert answer.status_code == 201, answer.text
    assert answer.json() == {
        "name": NAME, "path": NAME, "type": "file", "size": len(CSV),
        "modified": answer.json()["modified"], "mime": "text/csv",
    }  # fmt: skip
    assert answer.headers["Location"] == files_url(sid, NAME)
    on_host = workspace_of(server, sid) / NAME
    assert on_host.read_bytes() == CSV

    listed = api.get(files_url(sid)).json()
    assert listed["total"] == 1
    (entry,) = listed["files"]
    mtime = datetime.fromtimestamp(on_host.stat().st_mtime, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert (entry["name"], entry["size"], entry["modified"]) == (NAME, len(CSV), mtime)

    result = run(api, sid, f"import pandas as pd; print(pd.read_csv('{NAME}').shape)")
    assert result["stdout"].strip() == "(2, 2)", result

    download = api.get(files_url(sid, NAME))
    assert download.status_code == 200
    assert download.content == CSV
    assert download.headers["Content-Type"] == "text/csv"
    assert download.headers["X-Content-Type-Options"] == "nosniff"
    disposition = download.headers["Content-Disposition"]
    assert disposition.startswith('attachment; filename="2023.csv"; ')
    assert unquote(disposition.split("filename*=UTF-8''")[1]) == NAME
    assert download.headers["ETag"].startswith('"')
    assert download.headers["Accept-Ranges"] == "bytes"


def test_download_ranges_and_etag(api: httpx.Client, session: dict[str, Any]) -> None:
    url = files_url(session["id"], NAME)
    api.put(url, content=CSV)
    etag = api.get(url).headers["ETag"]

    part = api.get(url, headers={"Range": "bytes=0-5"})
    assert part.status_code == 206
    assert part.headers["Content-Range"] == f"bytes 0-5/{len(CSV)}"
    assert part.content == CSV[:6]
    tail = api.get(url, headers={"Range": "bytes=-4"})
    assert (tail.status_code, tail.content) == (206, CSV[-4:])
    rest = api.get(url, headers={"Range": "bytes=10-"})
    assert (rest.status_code, rest.content) == (206, CSV[10:])
    several = api.get(url, headers={"Range": "bytes=0-1,4-5"})  # not supported: the whole file
    assert (several.status_code, several.content) == (200, CSV)
    stale = api.get(url, headers={"Range": "bytes=0-1", "If-Range": '"another-version"'})
    assert (stale.status_code, stale.content) == (200, CSV)

    outside = api.get(url, headers={"Range": f"bytes={len(CSV)}-"})
    assert_error(outside, 416)
    assert outside.headers["Content-Range"] == f"bytes */{len(CSV)}"

    cached = api.get(url, headers={"If-None-Match": etag})
    assert (cached.status_code, cached.content, cached.headers["ETag"]) == (304, b"", etag)
    head = api.head(url)
    assert (head.status_code, head.headers["Content-Length"], head.content) == (200, str(len(CSV)), b"")

    api.put(url, content=CSV + b"HR,5\n")
    changed = api.get(url, headers={"If-None-Match": etag})
    assert changed.status_code == 200
    assert changed.headers["ETag"] != etag


def test_kernel_made_xlsx_and_parquet_go_by_multipart_to_another_session(
    api: httpx.Client, server: Server, session: dict[str, Any], other_session: str
) -> None:
    make = (
        "import pandas as pd\n"
        "df = pd.DataFrame({'部门': ['研发', '市场'], '预算': [120, 80]})\n"
        "df.to_excel('预算.xlsx', index=False)\n"
        "df.to_parquet('预算.parquet')"
    )
    assert run(api, session["id"], make)["status"] == "ok"
    xlsx = api.get(files_url(session["id"], "预算.xlsx"))
    parquet = api.get(files_url(session["id"], "预算.parquet"))
    assert xlsx.headers["Content-Type"] == "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    assert parquet.content[:4] == parquet.content[-4:] == b"PAR1"

    answer = api.post(
        files_url(other_session),
        data={"path": "收件箱"},
        files=[("file", ("预算.xlsx", xlsx.content)), ("file", ("预算.parquet", parquet.content))],
    )
    assert answer.status_code == 201, answer.text
    assert [entry["path"] for entry in answer.json()["files"]] == ["收件箱/预算.xlsx", "收件箱/预算.parquet"]
    assert (workspace_of(server, other_session) / "收件箱" / "预算.xlsx").read_bytes() == xlsx.content

    check = (
        "import pandas as pd\n"
        "a = pd.read_excel('收件箱/预算.xlsx'); b = pd.read_parquet('收件箱/预算.parquet')\n"
        "print(a.equals(b), a.shape)"
    )
    result = run(api, other_session, check)
    assert result["stdout"].strip() == "True (2, 2)", result


def zip_without_content_types() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("xl/workbook.xml", "<workbook/>")
    return buffer.getvalue()


REFUSED = [
    pytest.param("tool.exe", b"MZ\x90\x00\x03", id="extension"),
    pytest.param("data.csv.exe", b"a,b\n1,2\n", id="double-extension"),
    pytest.param("report.xlsx", b"PK\x03\x04 this is not a zip", id="fake-xlsx"),
    pytest.param("report.xlsx", zip_without_content_types(), id="zip-not-xlsx"),
    pytest.param("old.xls", b"<html>not OLE2</html>", id="fake-xls"),
    pytest.param("data.json", b'{"a": [1, 2', id="bad-json"),
    pytest.param("data.parquet", b"PAR1 and then nothing", id="fake-parquet"),
    pytest.param("data.csv", b"a,b\n\x00\x01\x02\x03", id="binary-csv"),
]


@pytest.fixture(scope="module")
def shared_session(server: Server) -> Iterator[tuple[httpx.Client, str]]:
    """One session for many quick requests that leave its workspace as they found it."""
    with server.client() as client:
        session_id = new_session(client)
        yield client, session_id
        client.delete(f"/api/v1/sessions/{session_id}")


@pytest.mark.parametrize(("name", "content"), REFUSED)
@pytest.mark.parametrize("route", ["put", "multipart"])
def test_refused_upload_answers_415_and_leaves_nothing(
    server: Server, shared_session: tuple[httpx.Client, str], route: str, name: str, content: bytes
) -> None:
    client, sid = shared_session
    before = tree(workspace_of(server, sid))
    if route == "put":
        answer = client.put(files_url(sid, f"new/folder/{name}"), content=content)
    else:
        answer = client.post(files_url(sid), data={"path": "new/folder"}, files={"file": (name, content)})
    assert_error(answer, 415)
    assert tree(workspace_of(server, sid)) == before  # no file, no .part, no folder made for it


def test_multipart_checks_the_form(server: Server, shared_session: tuple[httpx.Client, str]) -> None:
    client, sid = shared_session
    before = tree(workspace_of(server, sid))
    late_path, headers = multipart([("file", "a.csv", b"x\n"), ("path", None, b"sub")])
    assert_error(client.post(files_url(sid), content=late_path, headers=headers), 400)
    no_file, headers = multipart([("path", None, b"sub")])
    assert_error(client.post(files_url(sid), content=no_file, headers=headers), 400)
    no_name, headers = multipart([("file", None, b"x\n")])
    assert_error(client.post(files_url(sid), content=no_name, headers=headers), 400)
    cut, headers = multipart([("file", "a.csv", b"x\n" * 1000)])
    assert_error(client.post(files_url(sid), content=cut[:500], headers=headers), 400)
    assert_error(client.post(files_url(sid), content=b"a,b\n", headers={"Content-Type": "text/csv"}), 415)
    assert tree(workspace_of(server, sid)) == before


def test_multipart_commits_in_order_and_keeps_the_files_before_a_refused_one(
    api: httpx.Client, server: Server, session: dict[str, Any]
) -> None:
    sid = session["id"]
    files = [("file", ("a.csv", b"a\n1\n")), ("file", ("b.json", b"[1, 2]")), ("file", ("c.parquet", b"no"))]
    answer = api.post(files_url(sid), files=files)
    assert_error(answer, 415)
    assert "a.csv, b.json" in answer.json()["error"]["message"]
    assert sorted(tree(workspace_of(server, sid))) == ["a.csv", "b.json"]


# ---------------------------------------------------------------------------------------------- limits


@pytest.fixture(scope="module")
def small(engine: docker.DockerClient) -> Iterator[Server]:
    """A server with a 1 MiB upload limit and a 3 MiB workspace quota."""
    limits = {"WORKBENCH_MAX_UPLOAD_MB": "1", "WORKBENCH_WORKSPACE_QUOTA_MB": "3"}
    with running_server(engine=engine, env=limits) as instance:
        yield instance


def send_raw(server: Server, head: str, body: bytes = b"") -> bytes:
    """Send a request by hand (headers, then maybe part of a body) and read the answer until EOF."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(head.encode() + b"\r\n\r\n" + body)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


def test_too_big_is_refused_early_and_as_it_arrives(small: Server) -> None:
    mib = 1024 * 1024
    with small.client() as client:
        sid = new_session(client)
        # The declared length is enough: 413 before a byte of the body is sent.
        head = (f"PUT {files_url(sid, 'big.csv')} HTTP/1.1\r\nHost: test\r\n"
                f"Authorization: Bearer {small.token}\r\nContent-Length: {10 * 1024 * mib}")  # fmt: skip
        answer = send_raw(small, head)
        assert answer.startswith(b"HTTP/1.1 413 "), answer[:200]
        assert b'"too-large"' in answer
        # Without a length (chunked), it is refused once the limit is passed.
        chunked = client.put(files_url(sid, "big.csv"), content=iter([b"a,b\n" * (mib // 8)] * 3))
        assert_error(chunked, 413)
        declared = client.put(files_url(sid, "big.csv"), content=b"a,b\n" * (mib // 3))
        assert_error(declared, 413)
        form = client.post(files_url(sid), files={"file": ("big.csv", b"a,b\n" * (mib // 3))})
        assert_error(form, 413)
        assert tree(workspace_of(small, sid)) == {}


def test_over_quota_is_refused_and_leaves_nothing(small: Server) -> None:
    almost_a_mib = b"a,b\n" * 230_000
    with small.client() as client:
        sid = new_session(client)
        for index in range(3):
            assert client.put(files_url(sid, f"part{index}.csv"), content=almost_a_mib).status_code == 201
        before = tree(workspace_of(small, sid))
        assert_error(client.put(files_url(sid, "one-more.csv"), content=almost_a_mib), 413)
        form = client.post(files_url(sid), files={"file": ("one-more.csv", almost_a_mib)})
        assert_error(form, 413)
        assert tree(workspace_of(small, sid)) == before


def test_client_that_disconnects_mid_upload_leaves_nothing(server: Server, session: dict[str, Any]) -> None:
    sid = session["id"]
    auth = f"Host: test\r\nAuthorization: Bearer {server.token}"
    put_head = f"PUT {files_url(sid, 'cut.csv')} HTTP/1.1\r\n{auth}\r\nContent-Length: 4000000"
    body, headers = multipart([("file", "cut.csv", b"a,b\n" * 1_000_000)])
    form_head = (f"POST {files_url(sid)} HTTP/1.1\r\n{auth}\r\nContent-Type: {headers['Content-Type']}\r\n"
                 f"Content-Length: {len(body)}")  # fmt: skip
    for head, partial in ((put_head, b"a,b\n" * 500_000), (form_head, body[:2_000_000])):
        with socket.create_connection(("127.0.0.1", server.port)) as sock:
            sock.sendall(head.encode() + b"\r\n\r\n" + partial)
            time.sleep(0.3)  # the server has begun writing the file
    deadline = time.monotonic() + 5
    while tree(workspace_of(server, sid)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert tree(workspace_of(server, sid)) == {}


# ---------------------------------------------------------------------------------------------- listing


def test_listing_is_sorted_recursive_and_paginated(api: httpx.Client, session: dict[str, Any]) -> None:
    sid = session["id"]
    make = "import os\nos.makedirs('many/deep')\nfor i in range(2500): open(f'many/f{i:04}.txt', 'w').close()"
    assert run(api, sid, make + "\nopen('many/deep/last.csv', 'w').write('x\\n')")["status"] == "ok"

    pages = [
        api.get(files_url(sid), params={"path": "many", "limit": 1000, "offset": offset}).json()
        for offset in (0, 1000, 2000)
    ]
    assert [page["total"] for page in pages] == [2501] * 3
    assert [len(page["files"]) for page in pages] == [1000, 1000, 501]
    paths = [entry["path"] for page in pages for entry in page["files"]]
    assert paths == sorted(paths)
    assert paths[0] == "many/deep"
    assert pages[0]["files"][0]["type"] == "directory"

    everything = api.get(files_url(sid), params={"recursive": "true", "limit": 10000}).json()
    assert everything["total"] == 2503
    assert "many/deep/last.csv" in {entry["path"] for entry in everything["files"]}
    top = api.get(files_url(sid)).json()
    assert [entry["path"] for entry in top["files"]] == ["many"]
    assert (top["limit"], top["offset"]) == (10000, 0)
    one = api.get(files_url(sid), params={"path": "many/deep/last.csv"}).json()
    assert [(entry["path"], entry["size"]) for entry in one["files"]] == [("many/deep/last.csv", 2)]

    assert_error(api.get(files_url(sid), params={"limit": "20000"}), 400)
    assert_error(api.get(files_url(sid), params={"limit": "ten"}), 400)
    assert_error(api.get(files_url(sid), params={"recursive": "perhaps"}), 400)
    assert_error(api.get(files_url(sid), params={"path": "nowhere"}), 404)


# ---------------------------------------------------------------------------------------------- downloads


def test_active_content_is_served_inert(api: httpx.Client, session: dict[str, Any]) -> None:
    sid = session["id"]
    make = (
        "open('page.html', 'w').write('<script>alert(1)</script>')\n"
        "open('pic.svg', 'w').write('<svg xmlns=\"http://www.w3.org/2000/svg\" onload=\"alert(1)\"/>')\n"
        "open('feed.xml', 'w').write('<x/>')\n"
        "open('app.js', 'w').write('alert(1)')\n"
        "import matplotlib.pyplot as plt; plt.plot([1, 2]); plt.savefig('图表.png')"
    )
    assert run(api, sid, make)["status"] == "ok"
    for name in ("page.html", "pic.svg", "feed.xml", "app.js"):
        answer = api.get(files_url(sid, name))
        assert answer.status_code == 200, answer.text
        assert answer.headers["Content-Type"] == "application/octet-stream"
        policy = answer.headers["Content-Security-Policy"]
        assert "sandbox" in policy
        assert "default-src 'none'" in policy
        assert answer.headers["X-Content-Type-Options"] == "nosniff"
        assert answer.headers["Content-Disposition"].startswith("attachment;")
    image = api.get(files_url(sid, "图表.png"))
    assert image.headers["Content-Type"] == "image/png"
    assert image.content.startswith(b"\x89PNG")


def read_truncating(answer: httpx.Response, path: Path, chunks: list[bytes]) -> None:
    """Read a download, truncating the file on the host once the first bytes have arrived."""
    for chunk in answer.iter_raw(65536):
        if not chunks:
            os.truncate(path, 1024)
        chunks.append(chunk)


def test_a_file_that_shrinks_mid_download_cuts_the_transfer(
    api: httpx.Client, server: Server, session: dict[str, Any]
) -> None:
    sid = session["id"]
    size = 64 * 1024 * 1024
    assert api.put(files_url(sid, "big.txt"), content=b"abcdefgh" * (size // 8)).status_code == 201
    chunks: list[bytes] = []
    with api.stream("GET", files_url(sid, "big.txt")) as answer:
        assert answer.headers["Content-Length"] == str(size)
        with pytest.raises(httpx.RemoteProtocolError):  # an incomplete body, never padding
            read_truncating(answer, workspace_of(server, sid) / "big.txt", chunks)
    received = b"".join(chunks)
    assert len(received) < size
    assert set(received) <= set(b"abcdefgh")
    assert api.get("/api/v1/health").status_code == 200


# ------------------------------------------------------------------------------------------- rename, delete


def test_rename_moves_into_new_folders_and_refuses_to_overwrite(
    api: httpx.Client, server: Server, session: dict[str, Any]
) -> None:
    sid = session["id"]
    api.put(files_url(sid, NAME), content=CSV)
    api.put(files_url(sid, "other.csv"), content=b"x\n")

    moved = api.patch(files_url(sid, NAME), json={"new_path": "归档/2023/预算.csv"})
    assert moved.status_code == 200, moved.text
    assert moved.json()["path"] == "归档/2023/预算.csv"
    assert (workspace_of(server, sid) / "归档" / "2023" / "预算.csv").read_bytes() == CSV
    assert_error(api.get(files_url(sid, NAME)), 404)
    assert run(api, sid, "import os; print(os.listdir('归档/2023'))")["stdout"] == "['预算.csv']\n"

    taken = api.patch(files_url(sid, "other.csv"), json={"new_path": "归档/2023/预算.csv"})
    assert_error(taken, 409)
    assert (workspace_of(server, sid) / "other.csv").read_bytes() == b"x\n"
    assert (workspace_of(server, sid) / "归档" / "2023" / "预算.csv").read_bytes() == CSV

    folder = api.patch(files_url(sid, "归档"), json={"new_path": "archive"})
    assert (folder.status_code, folder.json()["type"]) == (200, "directory")
    assert_error(api.patch(files_url(sid, "missing.csv"), json={"new_path": "x.csv"}), 404)
    assert_error(api.patch(files_url(sid, "other.csv"), json={}), 422)
    assert_error(api.patch(files_url(sid, "other.csv"), content=b"{not json"), 400)
    assert_error(api.patch(files_url(sid, "other.csv"), content=b'{"new_path": "\\ud800.csv"}'), 400)
    assert_error(api.patch(files_url(sid, "archive"), json={"new_path": "archive/inside"}), 400)


def test_delete_file_and_folder_which_needs_recursive(
    api: httpx.Client, server: Server, session: dict[str, Any]
) -> None:
    sid = session["id"]
    api.put(files_url(sid, "reports/q1/a.csv"), content=b"x\n")
    api.put(files_url(sid, "b.csv"), content=b"x\n")
    assert api.delete(files_url(sid, "b.csv")).status_code == 204
    assert not (workspace_of(server, sid) / "b.csv").exists()
    assert_error(api.delete(files_url(sid, "b.csv")), 404)

    assert_error(api.delete(files_url(sid, "reports")), 409)
    assert (workspace_of(server, sid) / "reports" / "q1" / "a.csv").exists()
    assert api.delete(files_url(sid, "reports"), params={"recursive": "true"}).status_code == 204
    assert tree(workspace_of(server, sid)) == {}


# ---------------------------------------------------------------------------------------------- sessions


def test_every_file_operation_is_activity(api: httpx.Client, session: dict[str, Any]) -> None:
    sid = session["id"]

    def last_activity() -> str:
        stamp: str = api.get(f"/api/v1/sessions/{sid}").json()["last_activity_at"]
        return stamp

    operations: list[Callable[[], httpx.Response]] = [
        lambda: api.put(files_url(sid, "a.csv"), content=b"x\n"),
        lambda: api.post(files_url(sid), files={"file": ("b.csv", b"y\n")}),
        lambda: api.get(files_url(sid)),
        lambda: api.get(files_url(sid, "a.csv")),
        lambda: api.patch(files_url(sid, "a.csv"), json={"new_path": "c.csv"}),
        lambda: api.delete(files_url(sid, "c.csv")),
    ]
    for operation in operations:
        before = last_activity()
        time.sleep(0.01)
        assert operation().status_code < 300
        assert last_activity() > before


def test_unknown_session_and_missing_token(api: httpx.Client, server: Server) -> None:
    for method, url in (
        ("GET", files_url("session-nope")),
        ("GET", files_url("session-nope", "a.csv")),
        ("PUT", files_url("session-nope", "a.csv")),
        ("DELETE", files_url("session-nope", "a.csv")),
    ):
        assert_error(api.request(method, url, content=b"a\n" if method == "PUT" else None), 404)
    with httpx.Client(base_url=server.url) as anonymous:
        assert_error(anonymous.get(files_url("session-nope")), 401)
        assert_error(anonymous.put(files_url("session-nope", "a.csv"), content=b"a\n"), 401)
