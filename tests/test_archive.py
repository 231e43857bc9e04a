"""Whole-workspace archives: a streamed zip of the workspace; zip uploads extracted safely, all or nothing."""

from __future__ import annotations

import io
import stat
import warnings
import zipfile
from typing import Any

import docker
import httpx
import pytest

from tests.conftest import Server, run, running_server
from tests.test_files import assert_error, files_url, new_session, tree, workspace_of

pytestmark = pytest.mark.docker

PLANT = """
import os
os.makedirs('报告/图表', exist_ok=True)
open('报告/图表/销售.csv', 'w').write('月份,销售额\\n1,100\\n')
open('报告/摘要.txt', 'w').write('好')
os.makedirs('empty')
os.symlink('/etc/passwd', 'passwd.txt')
os.symlink('/etc', '报告/etc')
os.mkfifo('pipe.csv')
"""


def archive_url(session_id: str) -> str:
    return f"/api/v1/sessions/{session_id}/archive"


def zip_bytes(entries: list[tuple[zipfile.ZipInfo | str, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a name used twice, on purpose
        for info, data in entries:
            archive.writestr(info, data)
    return buffer.getvalue()


def test_download_streams_a_zip_without_links(api: httpx.Client, session: dict[str, Any]) -> None:
    sid = session["id"]
    assert run(api, sid, PLANT)["status"] == "ok"
    answer = api.get(archive_url(sid))
    assert answer.status_code == 200, answer.text
    assert answer.headers["Content-Type"] == "application/zip"
    assert "attachment" in answer.headers["Content-Disposition"]
    with zipfile.ZipFile(io.BytesIO(answer.content)) as archive:
        assert sorted(archive.namelist()) == [
            "empty/",
            "报告/",
            "报告/图表/",
            "报告/图表/销售.csv",
            "报告/摘要.txt",
        ]
        assert archive.read("报告/图表/销售.csv") == "月份,销售额\n1,100\n".encode()
        assert archive.testzip() is None

    folder = api.get(archive_url(sid), params={"path": "报告"})
    assert folder.status_code == 200
    with zipfile.ZipFile(io.BytesIO(folder.content)) as archive:
        assert sorted(archive.namelist()) == ["图表/", "图表/销售.csv", "摘要.txt"]
    assert_error(api.get(archive_url(sid), params={"path": "报告/摘要.txt"}), 400)
    assert_error(api.get(archive_url(sid), params={"path": "报告/etc"}), 400)
    assert_error(api.get(archive_url(sid), params={"path": "../.."}), 400)
    assert_error(api.get(archive_url(sid), params={"path": "nothing"}), 404)
    assert_error(api.get(archive_url("session-unknown")), 404)


def test_upload_extracts_into_place_for_the_kernel(api: httpx.Client, session: dict[str, Any]) -> None:
    sid = session["id"]
    body = zip_bytes(
        [("数据/a.csv", b"x\n1\n"), ("数据/深/b.txt", b"b"), ("empty/", b""), ("top.bin", b"\x00\x01")]
    )
    answer = api.post(archive_url(sid), content=body)
    assert answer.status_code == 201, answer.text
    assert answer.json()["count"] == 3
    assert [entry["path"] for entry in answer.json()["files"]] == ["empty", "top.bin", "数据"]
    check = "print(open('数据/深/b.txt').read()); open('数据/a.csv', 'a').write('2\\n')\n"
    check += "print(open('top.bin', 'rb').read())"
    assert run(api, sid, check)["stdout"] == "b\nb'\\x00\\x01'\n"

    into = api.post(archive_url(sid), params={"path": "restore/here"}, content=body)
    assert into.status_code == 201, into.text
    assert api.get(files_url(sid, "restore/here/数据/深/b.txt")).content == b"b"

    # A round trip: the downloaded archive restores into a fresh folder.
    saved = api.get(archive_url(sid), params={"path": "数据"}).content
    assert api.post(archive_url(sid), params={"path": "copy"}, content=saved).status_code == 201
    assert api.get(files_url(sid, "copy/a.csv")).content == b"x\n1\n2\n"


def link_entry() -> zipfile.ZipInfo:
    info = zipfile.ZipInfo("passwd.txt")
    info.create_system = 3
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info


def fifo_entry() -> zipfile.ZipInfo:
    info = zipfile.ZipInfo("pipe")
    info.create_system = 3
    info.external_attr = (stat.S_IFIFO | 0o644) << 16
    return info


def many_entries(count: int) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for i in range(count):
            archive.writestr(f"f{i}.txt", b"")
    return buffer.getvalue()


HOSTILE: dict[str, tuple[list[tuple[zipfile.ZipInfo | str, bytes]], int]] = {
    "zip-slip": ([("ok.txt", b"fine"), ("../evil.txt", b"x")], 400),
    "zip-slip-nested": ([("a/../../evil.txt", b"x")], 400),
    "absolute": ([("ok.txt", b"fine"), ("/tmp/evil.txt", b"x")], 400),
    "backslash": ([("..\\evil.txt", b"x")], 400),
    "link": ([("ok.txt", b"fine"), (link_entry(), b"/etc/passwd")], 400),
    "fifo": ([(fifo_entry(), b"")], 400),
    "bomb": ([("ok.txt", b"fine"), ("zeros.csv", b"\0" * (20 * 1024 * 1024))], 413),
    "twice": ([("a.txt", b"1"), ("a.txt", b"2")], 400),
    "file-and-folder": ([("a", b"1"), ("a/b.txt", b"2")], 400),
    "existing-name": ([("new.txt", b"1"), ("keep.csv", b"replaced")], 409),
}


@pytest.mark.parametrize("case", [*HOSTILE, "entries", "not-a-zip", "truncated"])
def test_hostile_archives_are_refused_and_change_nothing(
    api: httpx.Client, server: Server, session: dict[str, Any], case: str
) -> None:
    sid = session["id"]
    assert api.put(files_url(sid, "keep.csv"), content=b"a\n1\n").status_code == 201
    before = tree(workspace_of(server, sid))
    if case == "entries":
        body, status = many_entries(100_000), 413
    elif case == "not-a-zip":
        body, status = b"PK\x03\x04 certainly not a zip", 400
    elif case == "truncated":
        body, status = zip_bytes([("a.csv", b"a\n" * 100_000)])[:-200], 400
    else:
        entries, status = HOSTILE[case]
        body = zip_bytes(entries)
    answer = api.post(archive_url(sid), content=body)
    assert_error(answer, status)
    assert tree(workspace_of(server, sid)) == before


def test_quota_is_checked_before_and_during_extraction(engine: docker.DockerClient) -> None:
    with running_server("--workspace-quota-mb", "2", engine=engine) as small, small.client() as client:
        sid = new_session(client)
        try:
            before = tree(workspace_of(small, sid))
            big = zip_bytes([("a.bin", bytes(range(256)) * 4096), ("b.bin", bytes(range(256)) * 8192)])
            assert_error(client.post(archive_url(sid), content=big), 413)
            assert tree(workspace_of(small, sid)) == before
            fits = zip_bytes([("a.bin", bytes(range(256)) * 2048)])
            assert client.post(archive_url(sid), content=fits).status_code == 201
        finally:
            client.delete(f"/api/v1/sessions/{sid}")
