"""What a session ran: execution history, notebook export, replay, notebook runs, and its variables."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from workbench import notebooks
from workbench.errors import BadRequest, NotFound
from workbench.handlers.base import APIHandler
from workbench.handlers.ndjson import failure_message, stream_events, wants_ndjson
from workbench.history import MAX_PAGE, detail, summary
from workbench.outbox import Event

SESSION = r"/api/v1/sessions/(?P<session_id>[^/]+)"
IPYNB = "application/x-ipynb+json"
MAX_VARIABLES = 10_000


class RunsHandler(APIHandler):
    def query_int(self, name: str, default: int | None, low: int, high: int) -> int | None:
        """An integer query argument within ``low..high`` (400 otherwise)."""
        text = self.get_query_argument(name, None)
        if text is None:
            return default
        try:
            value = int(text)
        except ValueError:
            value = low - 1
        if not low <= value <= high:
            msg = f"`{name}` must be an integer from {low} to {high}"
            raise BadRequest(msg)
        return value

    def query_flag(self, name: str) -> bool:
        text = (self.get_query_argument(name, "") or "").lower()
        if text not in ("", "true", "false", "1", "0"):
            msg = f"`{name}` must be true or false"
            raise BadRequest(msg)
        return text in ("true", "1")


class ExecutionsHandler(RunsHandler):
    async def get(self, session_id: str) -> None:
        limit = self.query_int("limit", 50, 1, MAX_PAGE) or 50
        before = self.query_int("before", None, 1, 2**31)
        await self.manager.get_row(session_id)
        rows = await self.manager.history.page(session_id, limit=limit, before=before)
        more = len(rows) == limit and rows[-1].n is not None and rows[-1].n > 1
        self.write_json({"executions": [summary(row) for row in rows], "next": rows[-1].n if more else None})


class ExecutionHandler(RunsHandler):
    async def get(self, session_id: str, n: str) -> None:
        await self.manager.get_row(session_id)
        row = await self.manager.history.get(session_id, int(n)) if len(n) < 10 else None
        if row is None:
            msg = f"no execution {n[:20]} in this session"
            raise NotFound(msg, code="execution-not-found")
        self.write_json(detail(row))


class NotebookHandler(RunsHandler):
    async def get(self, session_id: str) -> None:
        await self.manager.get_row(session_id)
        rows = await self.manager.history.lineage(session_id)
        text = await asyncio.get_running_loop().run_in_executor(None, notebooks.export, session_id, rows)
        self.set_header("Content-Type", f"{IPYNB}; charset=UTF-8")
        self.set_header("Content-Disposition", f'attachment; filename="{session_id}.ipynb"')
        self.finish(text)


class NotebookRunHandler(RunsHandler):
    async def post(self, session_id: str) -> None:
        timeout = self.manager.execute_timeout(self.query_int("timeout", None, 1, 2**31))
        allow_errors = self.query_flag("allow_errors")
        await self.manager.get_live_row(session_id)
        limit = self.manager.settings.max_code_kb * 1024
        notebook = notebooks.read(self.request.body, limit)
        text = await notebooks.run(
            self.manager, session_id, notebook, timeout=timeout, allow_errors=allow_errors
        )
        self.set_header("Content-Type", f"{IPYNB}; charset=UTF-8")
        self.finish(text)


class ReplayHandler(RunsHandler):
    async def post(self, session_id: str) -> None:
        options = self.replay_options()
        await self.manager.get_live_row(session_id)
        prefix = f"replay-{uuid.uuid4().hex[:12]}-"
        if not wants_ndjson(self):
            outcome = await notebooks.replay(self.manager, session_id, prefix=prefix, **options)
            self.write_json(outcome)
            return
        kernel = await self.manager.session_kernel(session_id)
        job = notebooks.replay(self.manager, session_id, prefix=prefix, **options)

        def final(task: asyncio.Future[Any]) -> Event:
            message = failure_message(task)
            if message is not None:
                return {"type": "replay_done", "status": "error", "message": message}
            return {key: value for key, value in task.result().items() if key != "results"}

        await stream_events(
            self,
            kernel,
            wanted=lambda event: str(event.get("id", "")).startswith(prefix),
            job=job,
            final=final,
            last=lambda event: event["type"] == "replay_done",
        )

    def replay_options(self) -> dict[str, Any]:
        body = self.json_body()
        unknown = set(body) - {"from", "timeout", "restart"}
        if unknown:
            msg = f"unknown field(s): {', '.join(sorted(unknown))}"
            raise BadRequest(msg)
        start, restart = body.get("from", 1), body.get("restart", False)
        if isinstance(start, bool) or not isinstance(start, int) or start < 1:
            msg = "`from` must be an execution number (1 or more)"
            raise BadRequest(msg)
        if not isinstance(restart, bool):
            msg = "`restart` must be true or false"
            raise BadRequest(msg)
        timeout = self.manager.execute_timeout(body.get("timeout"))
        return {"start": start, "restart": restart, "timeout": timeout}


class VariablesHandler(RunsHandler):
    async def get(self, session_id: str) -> None:
        limit = self.query_int("limit", MAX_VARIABLES, 1, MAX_VARIABLES) or MAX_VARIABLES
        wait = self.query_int("wait", 30, 0, 600) or 0
        self.write_json(await self.manager.variables(session_id, limit=limit, wait=wait))


default_handlers = [
    (rf"{SESSION}/executions", ExecutionsHandler),
    (rf"{SESSION}/executions/(?P<n>[0-9]+)", ExecutionHandler),
    (rf"{SESSION}/notebook", NotebookHandler),
    (rf"{SESSION}/notebook/run", NotebookRunHandler),
    (rf"{SESSION}/replay", ReplayHandler),
    (rf"{SESSION}/variables", VariablesHandler),
]
