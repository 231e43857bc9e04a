"""The library and archives from the Python client (both flavours) and the ``workbench`` command."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

from tests.conftest import Server
from tests.test_cli import cli
from tests.test_library import Tenant
from workbench.client import AsyncWorkbench, NotFound, Workbench

pytestmark = pytest.mark.docker


def test_client_library_and_archives(server: Server, tmp_path: Path) -> None:
    tenant = Tenant(server)
    token = tenant.client.headers["Authorization"].split()[1]
    tenant.client.close()
    local = tmp_path / "预算模板.csv"
    local.write_text("部门,预算\n研发,100\n")
    with Workbench(server.url, token) as wb, wb.create_session(memory_mb=512) as session:
        entry = wb.library.upload(local)
        assert entry.path == "预算模板.csv"
        assert [e.path for e in wb.library.files()] == ["预算模板.csv"]
        result = session.run("print(open('/library/预算模板.csv').read().splitlines()[1])")
        assert result.stdout == "研发,100\n"
        assert wb.library.rename("预算模板.csv", "模板/预算.csv").path == "模板/预算.csv"
        assert wb.library.download("模板/预算.csv", tmp_path / "back.csv").read_text() == local.read_text()

        session.run("open('chart.csv', 'w').write('x\\n1\\n')")
        assert session.publish("chart.csv").path == "chart.csv"
        assert wb.library.publish(session.id, "chart.csv", "charts/c.csv").path == "charts/c.csv"
        assert session.publish("chart.csv").size == 4  # published again: replaced, like an upload
        wb.library.remove("charts", recursive=True)
        with pytest.raises(NotFound):
            wb.library.download("charts/c.csv", tmp_path)

        saved = session.archive(tmp_path)
        assert saved.name == f"{session.id}.zip"
        with zipfile.ZipFile(saved) as archive:
            assert "chart.csv" in archive.namelist()
        placed = session.upload_archive(saved, path="copy")
        assert placed["count"] >= 1
        assert [e.path for e in session.files("copy")] == ["copy/chart.csv"]


async def test_async_client_library(server: Server, tmp_path: Path) -> None:
    local = tmp_path / "a.txt"
    local.write_text("hello\n")
    async with AsyncWorkbench(server.url, server.token) as wb:
        entry = await wb.library.upload(local, "async/a.txt")
        assert entry.path == "async/a.txt"
        assert [e.path for e in await wb.library.files("async")] == ["async/a.txt"]
        assert (await wb.library.download("async/a.txt", tmp_path / "b.txt")).read_text() == "hello\n"
        await wb.library.remove("async", recursive=True)


def test_cli_library_and_archive(server: Server, tmp_path: Path) -> None:
    tenant = Tenant(server)
    token = tenant.client.headers["Authorization"].split()[1]
    tenant.client.close()
    local = tmp_path / "部门.csv"
    local.write_text("a\n1\n")

    def run(*args: str) -> str:
        done = cli(server, *args, WORKBENCH_TOKEN=token)
        assert done.returncode == 0, done.stderr
        return done.stdout

    assert run("library", "put", str(local)) == "部门.csv\n"
    assert json.loads(run("library", "ls", "--json"))[0]["path"] == "部门.csv"
    assert run("library", "mv", "部门.csv", "dir/部门.csv") == "dir/部门.csv\n"
    assert (
        Path(run("library", "get", "dir/部门.csv", str(tmp_path / "got.csv")).strip()).read_text() == "a\n1\n"
    )
    run("library", "rm", "-r", "dir")
    assert run("library", "ls") == ""

    session_id = run("sessions", "create").strip()
    try:
        run("exec", session_id, "open('out.csv', 'w').write('x\\n')")
        assert run("library", "publish", session_id, "out.csv") == "out.csv\n"
        zipped = Path(run("files", "archive", session_id, str(tmp_path)).strip())
        assert zipped.suffix == ".zip"
        assert "1 files" in run("files", "extract", session_id, str(zipped), "--path", "again")
    finally:
        run("sessions", "rm", session_id)
