"""The Python client (``workbench.client``), blocking and asyncio, against a real server and real kernels."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Server
from workbench.client import (
    AsyncSession,
    AsyncWorkbench,
    Invalid,
    NotFound,
    Session,
    Unauthorized,
    UnsupportedType,
    Workbench,
)

pytestmark = pytest.mark.docker

UNICODE_NAME = "部门预算报告2023.csv"
BUDGET_CSV = "部门,预算\n财务,120\n研发,340\n".encode()


@pytest.fixture
def wb(server: Server) -> Iterator[Workbench]:
    with Workbench(server.url, server.token) as client:
        yield client


@pytest.fixture
def sess(wb: Workbench) -> Iterator[Session]:
    created = wb.create_session(memory_mb=512)
    yield created
    with contextlib.suppress(NotFound):
        created.delete()


@pytest.fixture
async def awb(server: Server) -> AsyncIterator[AsyncWorkbench]:
    async with AsyncWorkbench(server.url, server.token) as client:
        yield client


@pytest.fixture
async def asess(awb: AsyncWorkbench) -> AsyncIterator[AsyncSession]:
    created = await awb.create_session(memory_mb=512)
    yield created
    with contextlib.suppress(NotFound):
        await created.delete()


class Recorder:
    """An ``on_output`` callback that keeps each event with the moment it arrived."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.times: list[float] = []

    def __call__(self, event: dict[str, Any]) -> None:
        self.events.append(event)
        self.times.append(time.monotonic())

    @property
    def types(self) -> list[str]:
        return [event["type"] for event in self.events]


SLOW_PRINTS = "import time\nfor i in range(3):\n    print('行', i, flush=True)\n    time.sleep(0.4)\n'end'"


# blocking client


def test_run_streams_each_event_as_it_arrives_in_order(sess: Session) -> None:
    recorder = Recorder()
    result = sess.run(SLOW_PRINTS, on_output=recorder)
    assert recorder.types == ["stream", "stream", "stream", "execute_result", "done"]
    assert [e["text"] for e in recorder.events[:3]] == ["行 0\n", "行 1\n", "行 2\n"]
    assert recorder.times[-1] - recorder.times[0] > 0.7  # each print came when it was printed
    assert result.ok
    assert result.stdout == "行 0\n行 1\n行 2\n"
    assert result.outputs[0]["data"]["text/plain"] == "'end'"
    assert result.execution_count == 1
    assert result.duration_ms >= 800


def test_variables_persist_between_runs(sess: Session) -> None:
    assert sess.run("x = 6 * 7").ok
    result = sess.run("print(x)")
    assert result.stdout == "42\n"
    assert result.execution_count == 2


def test_an_exception_gives_an_error_execution(sess: Session) -> None:
    recorder = Recorder()
    result = sess.run("def f():\n    raise ValueError('bad value')\nf()", on_output=recorder)
    assert not result.ok
    assert result.status == "error"
    assert result.error is not None
    assert (result.error["ename"], result.error["evalue"]) == ("ValueError", "bad value")
    assert any("f()" in line for line in result.error["traceback"])
    assert recorder.types == ["error", "done"]


def test_input_is_answered_by_on_input(sess: Session) -> None:
    prompts: list[tuple[str, bool]] = []

    def answer(prompt: str, password: bool) -> str:
        prompts.append((prompt, password))
        return "李雷"

    result = sess.run("name = input('who? ')\nprint('hello', name)", on_input=answer)
    assert prompts == [("who? ", False)]
    assert result.stdout == "hello 李雷\n"


def test_timeout_interrupts_and_the_session_stays_usable(sess: Session) -> None:
    result = sess.run("import time; time.sleep(30)", timeout=1)
    assert result.status == "timeout"
    assert sess.run("print('still here')").stdout == "still here\n"


def test_interrupt_stops_running_code(sess: Session) -> None:
    outcome: list[Any] = []
    runner = threading.Thread(target=lambda: outcome.append(sess.run("while True: pass")))
    runner.start()
    time.sleep(1.5)
    sess.interrupt()
    runner.join(10)
    assert not runner.is_alive()
    assert outcome[0].error["ename"] == "KeyboardInterrupt"


def test_restart_forgets_variables_and_keeps_the_session(sess: Session) -> None:
    sess.run("x = 1")
    info = sess.restart()
    assert info.id == sess.id
    assert info.status == "ready"
    result = sess.run("x")
    assert result.error is not None
    assert result.error["ename"] == "NameError"


def test_delete_then_the_session_is_not_found(wb: Workbench, sess: Session) -> None:
    sess.delete()
    with pytest.raises(NotFound) as caught:
        wb.session(sess.id)
    assert caught.value.status == 404
    assert caught.value.code == "session-not-found"
    with pytest.raises(NotFound):  # the WebSocket refuses it with the same typed error
        sess.run("1")


def test_sessions_lists_and_session_finds(wb: Workbench, sess: Session) -> None:
    assert sess.id in [s.id for s in wb.sessions()]
    found = wb.session(sess.id)
    assert found.info.status == "ready"
    assert found.info.limits["memory_mb"] == 512


def test_a_session_as_context_manager_is_deleted_on_exit(wb: Workbench) -> None:
    with wb.create_session(memory_mb=256, metadata={"purpose": "测试"}) as scoped:
        assert scoped.info.metadata == {"purpose": "测试"}
        assert scoped.run("1 + 1").outputs[0]["data"]["text/plain"] == "2"
    with pytest.raises(NotFound):
        wb.session(scoped.id)


def test_a_bad_token_raises_unauthorized(server: Server) -> None:
    with Workbench(server.url, "wrong") as stranger, pytest.raises(Unauthorized) as caught:
        stranger.sessions()
    assert (caught.value.status, caught.value.code) == (401, "unauthorized")


def test_invalid_limits_raise_invalid(wb: Workbench) -> None:
    with pytest.raises(Invalid) as caught:
        wb.create_session(memory_mb="lots")
    assert caught.value.status == 422
    assert "memory_mb" in caught.value.message


def test_an_unknown_session_raises_not_found(wb: Workbench) -> None:
    with pytest.raises(NotFound) as caught:
        wb.session("session-does-not-exist")
    assert caught.value.code == "session-not-found"


# files


def test_upload_list_read_and_download_a_unicode_named_file(sess: Session, tmp_path: Path) -> None:
    local = tmp_path / UNICODE_NAME
    local.write_bytes(BUDGET_CSV)
    entry = sess.upload(local, f"报告/{UNICODE_NAME}")
    assert (entry.path, entry.size) == (f"报告/{UNICODE_NAME}", len(BUDGET_CSV))
    assert [e.name for e in sess.files("报告")] == [UNICODE_NAME]
    result = sess.run(f"import pandas as pd\nprint(pd.read_csv('报告/{UNICODE_NAME}')['预算'].sum())")
    assert result.stdout == "460\n"
    target = sess.download(f"报告/{UNICODE_NAME}", tmp_path / "back")
    assert target == tmp_path / "back"
    assert target.read_bytes() == BUDGET_CSV


def test_a_large_file_round_trips_intact(sess: Session, tmp_path: Path) -> None:
    local = tmp_path / "big.txt"
    with local.open("w") as stream:
        for n in range(300_000):
            stream.write(f"line {n}\n")
    sess.upload(local, progress=True)
    (tmp_path / "out").mkdir()
    target = sess.download("big.txt", tmp_path / "out")
    assert target == tmp_path / "out" / "big.txt"
    assert hashlib.sha256(target.read_bytes()).digest() == hashlib.sha256(local.read_bytes()).digest()
    assert not list((tmp_path / "out").glob(".*.part"))


def test_files_the_kernel_writes_can_be_downloaded_and_removed(sess: Session, tmp_path: Path) -> None:
    sess.run("import matplotlib.pyplot as plt\nplt.plot([1, 2])\nplt.savefig('图.png')")
    target = sess.download("图.png", tmp_path)
    assert target.read_bytes().startswith(b"\x89PNG")
    sess.remove("图.png")
    assert "图.png" not in [e.name for e in sess.files()]


def test_file_errors_are_typed(sess: Session, tmp_path: Path) -> None:
    with pytest.raises(NotFound):
        sess.download("missing.csv", tmp_path)
    assert not list(tmp_path.iterdir())  # no partial file left behind
    fake = tmp_path / "data.xlsx"
    fake.write_text("not a spreadsheet")
    with pytest.raises(UnsupportedType) as caught:
        sess.upload(fake)
    assert caught.value.status == 415


# asyncio client


async def test_async_run_streams_in_order(asess: AsyncSession) -> None:
    recorder = Recorder()
    result = await asess.run(SLOW_PRINTS, on_output=recorder)
    assert recorder.types == ["stream", "stream", "stream", "execute_result", "done"]
    assert recorder.times[-1] - recorder.times[0] > 0.7
    assert result.stdout == "行 0\n行 1\n行 2\n"


async def test_async_sessions_run_concurrently(awb: AsyncWorkbench, asess: AsyncSession) -> None:
    span = "import time; started = time.time(); time.sleep(1.5); print(started, time.time())"
    async with await awb.create_session(memory_mb=256) as other:
        results = await asyncio.gather(asess.run(span), other.run(span))
    (a_start, a_end), (b_start, b_end) = ([float(t) for t in r.stdout.split()] for r in results)
    assert max(a_start, b_start) < min(a_end, b_end)  # the two ran at the same time, not one after the other
    with pytest.raises(NotFound):
        await awb.session(other.id)


async def test_async_lifecycle_and_errors(awb: AsyncWorkbench, asess: AsyncSession) -> None:
    await asess.run("y = 5")
    assert asess.id in [s.id for s in await awb.sessions()]
    await asess.restart()
    assert (await asess.run("y")).error is not None
    await asess.interrupt()
    await asess.delete()
    with pytest.raises(NotFound) as caught:
        await asess.run("1")
    assert caught.value.code == "session-not-found"


async def test_async_upload_and_download(asess: AsyncSession, tmp_path: Path) -> None:
    local = tmp_path / UNICODE_NAME
    local.write_bytes(BUDGET_CSV)
    await asess.upload(local)
    assert UNICODE_NAME in [e.name for e in await asess.files()]
    target = await asess.download(UNICODE_NAME, tmp_path / "copy.csv")
    assert target.read_bytes() == BUDGET_CSV
    await asess.remove(UNICODE_NAME)
    with pytest.raises(NotFound):
        await asess.download(UNICODE_NAME, tmp_path / "again.csv")
