"""The schema is Alembic's, on SQLite and on a real PostgreSQL server; the store keeps what it is given."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect, text

from tests.conftest import IN_CI
from workbench.db import store
from workbench.db.migrate import SchemaError, current_revision, head_revision
from workbench.db.models import ExecutionRow, SessionRow, utcnow
from workbench.db.store import CapReached, Database
from workbench.errors import DatabaseUnavailable

PG_URL = os.environ.get("WORKBENCH_TEST_PG_URL")


def _postgres_url() -> str:
    if not PG_URL:
        if IN_CI:
            pytest.fail("CI=true but WORKBENCH_TEST_PG_URL is not set (the test command starts PostgreSQL)")
        pytest.skip("WORKBENCH_TEST_PG_URL not set")
    # a fresh database per test run keeps runs independent
    name = f"wbtest_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return PG_URL.rsplit("/", 1)[0] + f"/{name}"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    url = f"sqlite:///{tmp_path}/test.db" if request.param == "sqlite" else _postgres_url()
    db = Database(url)
    db.upgrade()
    yield db
    db.close()


def test_schema_is_made_by_alembic(database: Database) -> None:
    tables = set(inspect(database.engine).get_table_names())
    assert {"alembic_version", "sessions", "activity", "executions"} <= tables
    assert current_revision(database.engine) == head_revision(database.engine)


def test_upgrade_is_idempotent(database: Database) -> None:
    assert database.upgrade() == head_revision(database.engine)


def test_a_newer_schema_is_refused(database: Database) -> None:
    with database.engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = '9999_future'"))
    with pytest.raises(SchemaError, match="9999_future"):
        database.upgrade()


async def test_sessions_executions_and_activity_round_trip(database: Database) -> None:
    now = utcnow()
    row = SessionRow(
        id="session-a",
        status="starting",
        created_at=now,
        last_activity_at=now,
        memory_mb=256,
        cpus=0.5,
        idle_timeout=60,
        metadata_={"部门": "财务"},
    )
    await database.add_session(row)
    await database.update_session("session-a", status="ready", container_id="c1")
    await database.add_execution(
        ExecutionRow(
            id="e1",
            session_id="session-a",
            source="rest",
            code="print(1)",
            status="ok",
            started_at=now,
            finished_at=now + dt.timedelta(milliseconds=5),
            duration_ms=5,
            output_bytes=2,
            truncated=False,
        )
    )
    executed = await database.get_session("session-a")
    assert executed is not None
    assert executed.last_activity_at == now + dt.timedelta(milliseconds=5)
    later = await database.touch("session-a", "upload", "data.csv")
    stored = await database.get_session("session-a")
    assert stored is not None
    assert stored.status == "ready"
    assert stored.metadata_ == {"部门": "财务"}
    assert stored.created_at.tzinfo == dt.UTC
    assert stored.last_activity_at == later
    executions = await database.executions("session-a")
    assert [(e.status, e.code, e.output_bytes) for e in executions] == [("ok", "print(1)", 2)]
    assert [r.id for r in await database.list_sessions()] == ["session-a"]
    assert await database.list_sessions(("stopped",)) == []
    assert await database.ping()


def _row(tenant: str) -> SessionRow:
    now = utcnow()
    return SessionRow(id=f"session-{uuid.uuid4()}", status="starting", created_at=now, last_activity_at=now,
                      tenant=tenant, memory_mb=256, cpus=0.5, idle_timeout=60, metadata_={})  # fmt: skip


async def _create_concurrently(
    database: Database, rows: list[SessionRow], *, max_live: int, max_for_tenant: int | None
) -> list[str]:
    """Create ``rows`` all at once through four connections (as four servers would); each outcome."""
    servers = [database] + [
        Database(database.engine.url.render_as_string(hide_password=False)) for _ in range(3)
    ]

    async def create(index: int, row: SessionRow) -> str:
        try:
            await servers[index % 4].add_session_capped(row, max_live=max_live, max_for_tenant=max_for_tenant)
        except CapReached as full:
            return full.scope
        return "created"

    try:
        return list(await asyncio.gather(*(create(index, row) for index, row in enumerate(rows))))
    finally:
        for other in servers[1:]:
            other.close()


async def test_concurrent_creates_never_pass_the_server_cap(database: Database) -> None:
    outcomes = await _create_concurrently(database, [_row("admin") for _ in range(20)], max_live=5,
                                          max_for_tenant=None)  # fmt: skip
    assert outcomes.count("created") == 5
    assert outcomes.count("server") == 15
    assert len(await database.list_sessions(("starting", "ready"))) == 5


async def test_concurrent_creates_never_pass_a_tenants_cap(database: Database) -> None:
    await database.add_session_capped(_row("beta"), max_live=100, max_for_tenant=1)
    outcomes = await _create_concurrently(database, [_row("alpha") for _ in range(20)], max_live=100,
                                          max_for_tenant=5)  # fmt: skip
    assert outcomes.count("created") == 5
    assert outcomes.count("tenant") == 15
    assert len(await database.list_sessions(("starting", "ready"), tenant="alpha")) == 5
    assert len(await database.list_sessions(("starting", "ready"), tenant="beta")) == 1


async def test_a_database_that_does_not_answer_is_a_503_not_a_wait_forever(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store, "QUERY_DEADLINE", 0.5)
    db = Database(f"sqlite:///{tmp_path}/slow.db")
    try:
        with pytest.raises(DatabaseUnavailable, match="did not answer within"):
            await db.run(lambda session: time.sleep(2))
    finally:
        db.close()
