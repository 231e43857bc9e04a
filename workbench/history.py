"""The execution history of each session: numbered runs, written in batches off the hot path.

Each run gets the next number ``n`` of its session when it starts (in queue order, so numbers follow the
order runs happened).  Finished runs are queued and written by one background task, as many as are
waiting in one transaction; reads wait for what is queued so that a client sees its own last run.

A run's outputs (every event it kept, in order) are stored while the session's stored outputs stay within a
budget; past it, the oldest runs' outputs are dropped (``outputs_cut``), and a run larger than the whole
budget is stored without them.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from collections.abc import Sequence
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from workbench.db.models import ExecutionRow
from workbench.db.store import Database, record_executions
from workbench.kernels.execution import Event, Execution

log = logging.getLogger(__name__)

MAX_PAGE = 200


def kept_outputs(execution: Execution) -> list[Event]:
    """The run's kept events in order, ``id`` dropped, consecutive text of one stream merged."""
    merged: list[Event] = []
    for event in execution.kept:
        item = {key: value for key, value in event.items() if key != "id"}
        last = merged[-1] if merged else None
        if item["type"] == "stream" and last is not None and last.get("name") == item["name"]:
            merged[-1] = {**last, "text": last["text"] + item["text"]}
            continue
        merged.append(item)
    result = execution.result
    if result is not None and result.truncated:
        notice = result.stdout[len("".join(e["text"] for e in merged if e.get("name") == "stdout")) :]
        merged.append({"type": "stream", "name": "stdout", "text": notice})
    return merged


class HistoryLog:
    def __init__(self, db: Database, *, budget_bytes: int) -> None:
        self.db = db
        self.budget_bytes = budget_bytes
        self._next: dict[str, int] = {}
        self._pending: list[ExecutionRow] = []
        self._writer: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    async def next_n(self, session_id: str) -> int:
        """The number of the session's next run."""
        if session_id not in self._next:
            query = select(func.max(ExecutionRow.n)).where(ExecutionRow.session_id == session_id)
            last = await self.db.run(lambda s: s.execute(query).scalar())
            self._next.setdefault(session_id, (last or 0) + 1)
        n = self._next[session_id]
        self._next[session_id] = n + 1
        return n

    def forget(self, session_id: str) -> None:
        """The session is gone: drop its counter (its rows stay for audit)."""
        self._next.pop(session_id, None)

    def record(self, row: ExecutionRow) -> None:
        """Queue a finished run for writing (returns at once)."""
        self._pending.append(row)
        if self._writer is None or self._writer.done():
            self._writer = asyncio.ensure_future(self._write())

    async def _write(self) -> None:
        async with self._lock:
            while self._pending:
                batch, self._pending = self._pending, []
                try:
                    await self.db.run(functools.partial(self._insert, rows=batch))
                except Exception:
                    log.exception("could not record %d executions", len(batch))

    def _insert(self, session: Session, *, rows: Sequence[ExecutionRow]) -> None:
        for row in rows:
            if row.outputs is not None:
                self._make_room(session, row)
            record_executions(session, [row])

    def _make_room(self, session: Session, row: ExecutionRow) -> None:
        size = len(json.dumps(row.outputs, ensure_ascii=False).encode())
        if size > self.budget_bytes:
            row.outputs, row.outputs_cut, row.stored_bytes = None, True, 0
            return
        row.stored_bytes = size
        kept = (
            ExecutionRow.session_id == row.session_id,
            ExecutionRow.outputs.is_not(None),
            ExecutionRow.stored_bytes > 0,
        )
        used = session.execute(select(func.coalesce(func.sum(ExecutionRow.stored_bytes), 0)).where(*kept))
        total = int(used.scalar() or 0) + size
        if total <= self.budget_bytes:
            return
        for old in session.scalars(select(ExecutionRow).where(*kept).order_by(ExecutionRow.n)):
            total -= old.stored_bytes
            old.outputs, old.outputs_cut, old.stored_bytes = None, True, 0
            if total <= self.budget_bytes:
                return

    async def flush(self) -> None:
        """Wait until every queued run is written."""
        while self._writer is not None and not self._writer.done():
            await asyncio.shield(self._writer)

    # reads

    async def page(self, session_id: str, *, limit: int, before: int | None) -> list[ExecutionRow]:
        """Up to ``limit`` runs, newest first, numbered below ``before`` if given."""
        await self.flush()
        query = select(ExecutionRow).where(ExecutionRow.session_id == session_id, ExecutionRow.n.is_not(None))
        if before is not None:
            query = query.where(ExecutionRow.n < before)
        query = query.order_by(ExecutionRow.n.desc()).limit(limit)
        return await self.db.run(lambda s: list(s.scalars(query)))

    async def get(self, session_id: str, n: int) -> ExecutionRow | None:
        await self.flush()
        query = select(ExecutionRow).where(ExecutionRow.session_id == session_id, ExecutionRow.n == n)
        return await self.db.run(lambda s: s.scalars(query).first())

    async def lineage(self, session_id: str) -> list[ExecutionRow]:
        """The session's runs in order, without those of replays (the code as the user ran it)."""
        await self.flush()
        query = (
            select(ExecutionRow)
            .where(
                ExecutionRow.session_id == session_id,
                ExecutionRow.n.is_not(None),
                ExecutionRow.source != "replay",
            )
            .order_by(ExecutionRow.n)
        )
        return await self.db.run(lambda s: list(s.scalars(query)))


def summary(row: ExecutionRow) -> dict[str, Any]:
    """One run as ``GET .../executions`` lists it."""
    return {
        "n": row.n,
        "id": row.id,
        "source": row.source,
        "code": row.code,
        "status": row.status,
        "reason": row.reason,
        "execution_count": row.execution_count,
        "started_at": _iso(row.started_at),
        "finished_at": _iso(row.finished_at),
        "duration_ms": row.duration_ms,
        "output_bytes": row.output_bytes,
        "truncated": row.truncated,
        "error": None if row.error_name is None else {"ename": row.error_name, "evalue": row.error_value},
        "files": row.files,
        "resources": row.resources,
        "outputs_kept": row.outputs is not None,
    }


def detail(row: ExecutionRow) -> dict[str, Any]:
    """One run with its outputs, as ``GET .../executions/{n}`` answers it."""
    events = row.outputs or []
    streams = [e for e in events if e.get("type") == "stream"]
    errors = [e for e in events if e.get("type") == "error"]
    answer = summary(row)
    answer.update(
        stdout="".join(e.get("text", "") for e in streams if e.get("name") != "stderr"),
        stderr="".join(e.get("text", "") for e in streams if e.get("name") == "stderr"),
        outputs=[e for e in events if e.get("type") != "stream"],
        events=events,
        outputs_cut=row.outputs_cut or row.outputs is None,
    )
    if errors:
        answer["error"] = {key: errors[-1].get(key) for key in ("ename", "evalue", "traceback")}
    return answer


def _iso(moment: Any) -> str | None:
    from workbench.sessions import isoformat  # here: the session manager imports this module

    return isoformat(moment)
