"""Database access for the session manager.

SQLAlchemy's sessions are synchronous, so every query runs on one dedicated worker thread (a single
writer, as datasette does for SQLite); the event loop only awaits the result.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import datetime as dt
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Engine, create_engine, event, func, select, text, update
from sqlalchemy.orm import Session, sessionmaker

from workbench.db import migrate
from workbench.db.models import ActivityRow, ExecutionRow, SessionRow, utcnow
from workbench.errors import DatabaseUnavailable

T = TypeVar("T")

QUERY_DEADLINE = 60.0
"""Seconds a request waits for the database (its turn on the database thread included)."""
PG_CONNECT_TIMEOUT = 10
LIVE_STATUSES = ("starting", "ready", "stopped")
CAPPED_STATUSES = ("starting", "ready")
"""The sessions the caps count (a stopped session holds no kernel)."""
CAPACITY_LOCK = 0x776F726B62656E63
"""PostgreSQL advisory lock key that serializes session creates across servers ("workbenc")."""


class CapReached(Exception):
    """A session was not added: ``scope`` (``"server"`` or ``"tenant"``) runs as many as it may."""

    def __init__(self, scope: str) -> None:
        super().__init__(scope)
        self.scope = scope


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
        if engine.url.database and engine.url.database != ":memory:":
            make_private(Path(engine.url.database))
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    connect_args = {"connect_timeout": PG_CONNECT_TIMEOUT} if url.startswith("postgresql") else {}
    return create_engine(url, pool_pre_ping=True, connect_args=connect_args)


def make_private(database: Path) -> None:
    """The SQLite file and its WAL/SHM files readable by the server's user only (mode 0600); SQLite gives
    the WAL and SHM files it creates the database file's mode, so the file is created 0600 up front."""
    os.close(os.open(database, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600))
    for path in (database, Path(f"{database}-wal"), Path(f"{database}-shm")):
        with contextlib.suppress(FileNotFoundError):
            path.chmod(0o600)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


class Database:
    """Async facade over the session, activity and execution tables."""

    def __init__(self, url: str) -> None:
        self.engine = make_engine(url)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._worker = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="workbench-db")

    def upgrade(self) -> str | None:
        """Create or upgrade the schema (blocking; called once at start-up)."""
        return migrate.upgrade(self.engine)

    def transaction(self) -> contextlib.AbstractContextManager[Session]:
        """A blocking transaction, for command-line tools (the server uses ``run``)."""
        return self._sessions.begin()

    async def run(self, work: Callable[[Session], T]) -> T:
        """Run ``work`` in one transaction on the database thread; a database that does not answer within
        ``QUERY_DEADLINE`` (queue included) gives :class:`DatabaseUnavailable` instead of a wait forever."""

        def in_transaction() -> T:
            with self._sessions.begin() as session:
                return work(session)

        queued = asyncio.get_running_loop().run_in_executor(self._worker, in_transaction)
        try:
            return await asyncio.wait_for(queued, QUERY_DEADLINE)
        except TimeoutError:
            msg = f"the database did not answer within {QUERY_DEADLINE:.0f} s"
            raise DatabaseUnavailable(msg) from None

    async def ping(self) -> bool:
        try:
            await asyncio.wait_for(self.run(lambda s: s.execute(text("SELECT 1")).scalar()), timeout=5)
        except Exception:  # any failure means "not reachable" for the health check
            return False
        return True

    def close(self) -> None:
        self._worker.shutdown(wait=True)
        self.engine.dispose()

    # sessions

    async def add_session(self, row: SessionRow) -> SessionRow:
        def work(session: Session) -> SessionRow:
            session.add(row)
            session.flush()
            session.add(ActivityRow(session_id=row.id, at=row.created_at, kind="create"))
            return row

        return await self.run(work)

    async def add_session_capped(
        self, row: SessionRow, *, max_live: int, max_for_tenant: int | None = None
    ) -> SessionRow:
        """Add ``row`` unless it would make more live sessions than ``max_live`` (or, for its tenant,
        ``max_for_tenant``); raises :class:`CapReached` then.

        Check and insert are one transaction, serialized with every other create: on PostgreSQL by an
        advisory lock held to the commit; on SQLite the insert comes first and takes the database's write
        lock, so the count that follows sees every committed create and no one else's half-done one.
        """

        def live(session: Session, *conditions: Any) -> int:
            query = (
                select(func.count())
                .select_from(SessionRow)
                .where(SessionRow.status.in_(CAPPED_STATUSES), *conditions)
            )
            return int(session.scalar(query) or 0)

        def work(session: Session) -> SessionRow:
            if session.get_bind().dialect.name == "postgresql":
                session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": CAPACITY_LOCK})
            session.add(row)
            session.flush()
            if live(session) > max_live:
                raise CapReached("server")
            if max_for_tenant is not None and live(session, SessionRow.tenant == row.tenant) > max_for_tenant:
                raise CapReached("tenant")
            session.add(ActivityRow(session_id=row.id, at=row.created_at, kind="create"))
            return row

        return await self.run(work)

    async def get_session(self, session_id: str) -> SessionRow | None:
        return await self.run(lambda s: s.get(SessionRow, session_id))

    async def list_sessions(self, statuses: Sequence[str] = LIVE_STATUSES, *,
                            tenant: str | None = None) -> list[SessionRow]:  # fmt: skip
        query = select(SessionRow).where(SessionRow.status.in_(statuses)).order_by(SessionRow.created_at)
        if tenant is not None:
            query = query.where(SessionRow.tenant == tenant)
        return await self.run(lambda s: list(s.scalars(query)))

    async def known_ids(self, session_ids: Sequence[str]) -> set[str]:
        """Which of ``session_ids`` have a row (whatever its status)."""
        query = select(SessionRow.id).where(SessionRow.id.in_(session_ids))
        return await self.run(lambda s: set(s.scalars(query)))

    async def update_session(self, session_id: str, **values: Any) -> SessionRow | None:
        def work(session: Session) -> SessionRow | None:
            row = session.get(SessionRow, session_id)
            if row is not None:
                for name, value in values.items():
                    setattr(row, name, value)
            return row

        return await self.run(work)

    async def touch(self, session_id: str, kind: str, detail: str | None = None) -> dt.datetime:
        """Record one activity and move the session's ``last_activity_at``."""
        now = utcnow()

        def work(session: Session) -> None:
            session.execute(
                update(SessionRow).where(SessionRow.id == session_id).values(last_activity_at=now)
            )
            session.add(
                ActivityRow(
                    session_id=session_id, at=now, kind=kind, detail=(detail or None) and detail[:1000]
                )
            )

        await self.run(work)
        return now

    async def count_by_status(self) -> dict[str, int]:
        query = select(SessionRow.status, func.count()).group_by(SessionRow.status)
        return await self.run(lambda s: {status: count for status, count in s.execute(query).tuples()})

    # executions

    async def add_execution(self, row: ExecutionRow) -> None:
        """Record a finished execution; its end is also the session's latest activity."""
        await self.run(lambda session: record_executions(session, [row]))

    async def executions(self, session_id: str) -> list[ExecutionRow]:
        query = (
            select(ExecutionRow)
            .where(ExecutionRow.session_id == session_id)
            .order_by(ExecutionRow.started_at)
        )
        return await self.run(lambda s: list(s.scalars(query)))


def record_executions(session: Session, rows: Sequence[ExecutionRow]) -> None:
    """Add finished executions; the end of each is also its session's latest activity."""
    for row in rows:
        session.add(row)
        session.flush()
        session.execute(
            update(SessionRow).where(SessionRow.id == row.session_id).values(last_activity_at=row.finished_at)
        )
