"""Small leaks: the database's file modes, and what a tenant can learn from answers to session ids."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from workbench.auth import Principal
from workbench.config import Settings
from workbench.db.store import Database
from workbench.errors import NotFound
from workbench.sessions import SessionManager


def test_the_database_and_its_wal_and_shm_files_are_private(tmp_path: Path) -> None:
    path = tmp_path / "workbench.db"
    os.umask(0o022)
    database = Database(f"sqlite:///{path}")
    try:
        database.upgrade()
        with database.transaction() as session:
            session.execute(text("CREATE TABLE probe (x)"))  # any write, so that the WAL exists
        files = sorted(tmp_path.glob("workbench.db*"))
        assert {file.name for file in files} >= {"workbench.db", "workbench.db-wal", "workbench.db-shm"}
        for file in files:
            assert file.stat().st_mode & 0o777 == 0o600, file
    finally:
        database.close()


def test_an_existing_database_is_made_private(tmp_path: Path) -> None:
    path = tmp_path / "workbench.db"
    for name in ("workbench.db", "workbench.db-wal"):
        (tmp_path / name).touch(mode=0o644)
        (tmp_path / name).chmod(0o644)
    Database(f"sqlite:///{path}").close()
    assert path.stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "workbench.db-wal").stat().st_mode & 0o777 == 0o600


class Rows:
    """Stands in for the database: counts lookups; ``-0`` ids are unknown, others belong to ``other``."""

    def __init__(self) -> None:
        self.lookups: list[str] = []

    async def get_session(self, session_id: str) -> Any:
        self.lookups.append(session_id)
        return None if session_id.endswith("0") else type("Row", (), {"tenant": "other"})()


async def refused(manager: SessionManager, session_id: str) -> None:
    with pytest.raises(NotFound) as caught:
        await manager.check_access(session_id, Principal(name="me", admin=False))
    assert caught.value.code == "session-not-found"


def test_unknown_and_foreign_session_ids_take_the_same_path(tmp_path: Path) -> None:
    """Both cost exactly one lookup, even when the server has the foreign session in memory."""

    async def scenario() -> list[str]:
        rows = Rows()
        manager = SessionManager(Settings(state_dir=tmp_path), rows, launcher=None)  # type: ignore[arg-type]
        manager._owners["session-foreign-1"] = "other"
        await refused(manager, "session-foreign-1")
        await refused(manager, "session-unknown-0")
        return rows.lookups

    assert asyncio.run(scenario()) == ["session-foreign-1", "session-unknown-0"]
