"""Migration 0003 numbers the runs recorded before it; the history log batches, numbers, pages and keeps
outputs within the session's budget."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from sqlalchemy import text

from tests.test_db import _postgres_url
from tests.test_db import database as database  # the SQLite and PostgreSQL fixture
from workbench.db import migrate
from workbench.db.models import ExecutionRow, SessionRow, utcnow
from workbench.db.store import Database
from workbench.history import HistoryLog, detail, summary

START = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def empty_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    url = f"sqlite:///{tmp_path}/old.db" if request.param == "sqlite" else _postgres_url()
    db = Database(url)
    yield db
    db.close()


def test_0003_numbers_older_runs_per_session_in_start_order(empty_database: Database) -> None:
    database = empty_database
    config = migrate._alembic_config(database.engine)
    with database.engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "0002")
    with database.engine.begin() as connection:
        for sid in ("s1", "s2"):
            connection.execute(
                text(
                    "INSERT INTO sessions (id, status, created_at, last_activity_at, memory_mb, cpus, "
                    "idle_timeout, metadata, tenant) "
                    "VALUES (:id, 'ready', '2026-11-01', '2026-11-01', 256, 1, 60, '{}', 'admin')"
                ),
                {"id": sid},
            )
        for eid, sid, started in (("b", "s1", 2), ("a", "s1", 1), ("c", "s2", 5), ("d", "s1", 3)):
            connection.execute(
                text(
                    "INSERT INTO executions (id, session_id, source, code, status, started_at, output_bytes, "
                    "truncated) VALUES (:id, :sid, 'rest', 'x', 'ok', :at, 0, false)"
                ),
                {"id": eid, "sid": sid, "at": f"2026-11-01 00:00:0{started}"},
            )
    database.upgrade()
    with database.engine.connect() as connection:
        numbers = {eid: n for eid, n in connection.execute(text("SELECT id, n FROM executions"))}
    assert numbers == {"a": 1, "b": 2, "d": 3, "c": 1}


def _run(session_id: str, n: int, outputs: list[dict[str, Any]] | None, source: str = "rest") -> ExecutionRow:
    started = START + dt.timedelta(seconds=n)
    return ExecutionRow(
        id=f"{session_id}-{n}", session_id=session_id, source=source, code=f"x = {n}", status="ok",
        started_at=started, finished_at=started + dt.timedelta(milliseconds=5),
        duration_ms=5, output_bytes=0, truncated=False, n=n, outputs=outputs,
    )  # fmt: skip


async def test_history_numbers_batches_pages_and_cuts_the_oldest_outputs(database: Database) -> None:
    now = utcnow()
    await database.add_session(
        SessionRow(
            id="s",
            status="ready",
            created_at=now,
            last_activity_at=now,
            memory_mb=256,
            cpus=1,
            idle_timeout=60,
            metadata_={},
        )
    )
    history = HistoryLog(database, budget_bytes=1100)
    big = [{"type": "stream", "name": "stdout", "text": "数" * 100}]  # about 350 bytes as JSON: three fit
    for _ in range(4):
        n = await history.next_n("s")
        history.record(_run("s", n, big, source="replay" if n == 3 else "rest"))
    page = await history.page("s", limit=2, before=None)
    assert [row.n for row in page] == [4, 3]
    assert [row.n for row in await history.page("s", limit=10, before=3)] == [2, 1]
    kept = {row.n: row.outputs is not None for row in await history.page("s", limit=10, before=None)}
    assert kept == {1: False, 2: True, 3: True, 4: True}  # over the budget: the oldest was cut
    first = await history.get("s", 1)
    assert first is not None
    assert detail(first)["outputs_cut"] is True
    assert detail(first)["stdout"] == ""
    fourth = await history.get("s", 4)
    assert fourth is not None
    assert detail(fourth)["stdout"] == "数" * 100
    assert summary(fourth)["started_at"].endswith("Z")
    assert [row.n for row in await history.lineage("s")] == [1, 2, 4]  # replays left out
    history.record(
        _run("s", await history.next_n("s"), [{"type": "stream", "name": "stdout", "text": "x" * 2000}])
    )
    huge = await history.get("s", 5)
    assert huge is not None
    assert huge.outputs is None
    assert huge.outputs_cut is True
    assert await HistoryLog(database, budget_bytes=10).next_n("s") == 6  # numbering survives a restart
