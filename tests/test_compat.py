"""The original sandbox service's file routes (v2.4), as its clients used them.

``GET /api/v1/files/list/{session_id}`` -> ``[{"name", "session_id", "size", "modified"}]`` for the
files at the top of the workspace; ``GET /api/v1/files/download/{session_id}/{filename}``;
``POST /api/v1/files/upload/{session_id}`` with one multipart ``file``.  Same checks, headers and auth
as the main routes.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.conftest import Server, run
from tests.test_files import assert_error, files_url, multipart, tree, workspace_of

pytestmark = pytest.mark.docker

MAKE = """
import os
import matplotlib.pyplot as plt
import pandas as pd
df = pd.DataFrame({'部门': ['研发', '市场'], '预算': [120, 80]})
df.to_excel('部门预算报告2023.xlsx', index=False)
plt.bar(df['部门'], df['预算']); plt.savefig('department_budgets_plot.png')
os.makedirs('charts'); plt.savefig('charts/again.png')
os.symlink('/etc/passwd', 'passwd.csv')
os.mkfifo('pipe.csv')
"""


def list_url(session_id: str) -> str:
    return f"/api/v1/files/list/{session_id}"


def download_url(session_id: str, filename: str) -> str:
    return f"/api/v1/files/download/{session_id}/{filename}"


def upload_url(session_id: str) -> str:
    return f"/api/v1/files/upload/{session_id}"


def test_list_gives_the_files_at_the_top_of_the_workspace(
    api: httpx.Client, server: Server, session: dict[str, Any]
) -> None:
    sid = session["id"]
    assert run(api, sid, MAKE)["status"] == "ok"
    answer = api.get(list_url(sid))
    assert answer.status_code == 200, answer.text
    listed = answer.json()
    assert isinstance(listed, list)
    assert [item["name"] for item in listed] == ["department_budgets_plot.png", "部门预算报告2023.xlsx"]
    main = {entry["name"]: entry for entry in api.get(files_url(sid)).json()["files"]}
    for item in listed:
        assert set(item) == {"name", "session_id", "size", "modified"}
        assert item["session_id"] == sid
        assert item["size"] == (workspace_of(server, sid) / item["name"]).stat().st_size
        assert item["modified"] == main[item["name"]]["modified"]


def test_download_sends_the_file_with_the_main_routes_headers(
    api: httpx.Client, server: Server, session: dict[str, Any]
) -> None:
    sid = session["id"]
    assert run(api, sid, MAKE)["status"] == "ok"
    name = "部门预算报告2023.xlsx"
    answer = api.get(download_url(sid, name))
    assert answer.status_code == 200, answer.text
    assert answer.content == (workspace_of(server, sid) / name).read_bytes()
    main = api.get(files_url(sid, name))
    for header in ("Content-Type", "Content-Disposition", "ETag", "X-Content-Type-Options"):
        assert answer.headers[header] == main.headers[header]
    part = api.get(download_url(sid, name), headers={"Range": "bytes=0-3"})
    assert (part.status_code, part.content) == (206, b"PK\x03\x04")

    assert_error(api.get(download_url(sid, "charts/again.png")), 400)  # as the original: no '/' in names
    assert_error(api.get(download_url(sid, "passwd.csv")), 400)
    assert_error(api.get(download_url(sid, "pipe.csv")), 400)
    assert_error(api.get(download_url(sid, "missing.csv")), 404)
    assert_error(api.get(download_url("session-unknown", name)), 404)


def test_upload_saves_one_file_the_kernel_can_read(
    api: httpx.Client, server: Server, session: dict[str, Any]
) -> None:
    sid = session["id"]
    assert run(api, sid, MAKE)["status"] == "ok"
    xlsx = api.get(download_url(sid, "部门预算报告2023.xlsx")).content
    answer = api.post(upload_url(sid), files={"file": ("销售数据.xlsx", xlsx)})
    assert answer.status_code == 200, answer.text
    item = answer.json()
    assert set(item) == {"name", "session_id", "size", "modified"}
    assert (item["name"], item["session_id"], item["size"]) == ("销售数据.xlsx", sid, len(xlsx))
    assert "销售数据.xlsx" in [entry["name"] for entry in api.get(list_url(sid)).json()]
    result = run(api, sid, "import pandas as pd; print(pd.read_excel('/data/销售数据.xlsx').shape)")
    assert result["stdout"].strip() == "(2, 2)", result


def test_upload_refusals_leave_nothing(api: httpx.Client, server: Server, session: dict[str, Any]) -> None:
    sid = session["id"]
    assert_error(api.post(upload_url(sid), files={"file": ("tool.exe", b"MZ")}), 415)
    assert_error(api.post(upload_url(sid), files={"file": ("fake.xlsx", b"PK not a zip")}), 415)
    two, headers = multipart([("file", "a.csv", b"a\n"), ("file", "b.csv", b"b\n")])
    assert_error(api.post(upload_url(sid), content=two, headers=headers), 400)
    assert_error(api.post(upload_url(sid), files={"other": ("a.csv", b"a\n")}), 400)
    assert_error(api.post(upload_url("session-unknown"), files={"file": ("a.csv", b"a\n")}), 404)
    assert tree(workspace_of(server, sid)) == {}


def test_same_authentication_as_the_main_routes(server: Server, session: dict[str, Any]) -> None:
    sid = session["id"]
    with httpx.Client(base_url=server.url, headers={"Authorization": "Bearer wrong"}) as stranger:
        assert_error(stranger.get(list_url(sid)), 401)
        assert_error(stranger.get(download_url(sid, "a.csv")), 401)
        assert_error(stranger.post(upload_url(sid), files={"file": ("a.csv", b"a\n")}), 401)
    assert tree(workspace_of(server, sid)) == {}
