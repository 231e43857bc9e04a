"""Sessions: create, list, get, delete, interrupt, restart, execute."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

from tornado.iostream import StreamClosedError

from workbench.errors import Invalid, TooLarge, WorkbenchError
from workbench.handlers.base import APIHandler
from workbench.outbox import Event, Outbox
from workbench.views import failed_done_event

NDJSON = "application/x-ndjson"

SESSION_ID = r"(?P<session_id>[^/]+)"


class SessionsHandler(APIHandler):
    async def get(self) -> None:
        rows = await self.manager.list(self.principal)
        self.write_json({"sessions": [self.manager.to_json(row) for row in rows]})

    async def post(self) -> None:
        body = self.json_body()
        row = await self.manager.create(body, self.principal)
        self.set_header("Location", f"/api/v1/sessions/{row.id}")
        self.write_json(self.manager.to_json(row), status=201)


class SessionHandler(APIHandler):
    async def get(self, session_id: str) -> None:
        row = await self.manager.get_row(session_id)
        self.write_json(self.manager.to_json(row))

    async def delete(self, session_id: str) -> None:
        await self.manager.delete(session_id)
        self.set_status(204)
        self.finish()


class InterruptHandler(APIHandler):
    async def post(self, session_id: str) -> None:
        await self.manager.interrupt(session_id)
        self.set_status(204)
        self.finish()


class RestartHandler(APIHandler):
    async def post(self, session_id: str) -> None:
        row = await self.manager.restart(session_id)
        self.write_json(self.manager.to_json(row))


class ExecuteHandler(APIHandler):
    @property
    def max_json_bytes(self) -> int:  # type: ignore[override]
        """Room for the largest code the server takes, JSON-escaped (up to 6 bytes per character)."""
        return 6 * self.manager.settings.max_code_kb * 1024 + 4096

    async def post(self, session_id: str) -> None:
        code, timeout = self.execute_request()
        if NDJSON in self.request.headers.get("Accept", ""):
            await self.stream(session_id, code, timeout)
            return
        result = await self.manager.execute(session_id, code, timeout=timeout, source="rest")
        self.write_json(result.to_json())

    async def stream(self, session_id: str, code: str, timeout: Any) -> None:  # noqa: ASYNC109 (a time limit for the code, not a wait)
        """The execution's events as they happen, one JSON object per line, ``done`` last."""
        self.manager.execute_timeout(timeout)  # refuse a bad timeout before the answer starts
        await self.manager.kernel(session_id)
        request_id = uuid.uuid4().hex
        outbox = Outbox()

        def on_event(event: Event) -> None:
            if event.get("id") == request_id or event["type"] == "kernel":
                outbox.put(event)

        unsubscribe = await self.manager.subscribe(session_id, on_event)
        execution = asyncio.ensure_future(
            self.manager.execute(session_id, code, timeout=timeout, request_id=request_id, source="rest")
        )
        execution.add_done_callback(lambda task: _report_failure(task, request_id, outbox))
        self.set_header("Content-Type", f"{NDJSON}; charset=UTF-8")
        try:
            while True:
                event = await outbox.get()
                self.write(json.dumps(event, ensure_ascii=False) + "\n")
                await self.flush_within()
                if event["type"] == "done":
                    break
        except StreamClosedError:
            return
        finally:
            unsubscribe()
            await asyncio.wait([execution])  # the execution runs to its end even if the client left
        self.finish()

    def execute_request(self) -> tuple[str, Any]:
        limit = self.manager.settings.max_code_kb * 1024
        body = self.json_body()
        code = body.get("code")
        if not isinstance(code, str):
            msg = "`code` (a string) is required"
            raise Invalid(msg, code="missing-code")
        if len(code.encode()) > limit:
            msg = f"`code` is larger than {self.manager.settings.max_code_kb} KiB"
            raise TooLarge(msg)
        return code, body.get("timeout")


def _report_failure(task: asyncio.Future[Any], request_id: str, outbox: Outbox) -> None:
    """An execution that failed before its ``done`` still ends the stream with one."""
    if not task.cancelled() and task.exception() is not None:
        error = task.exception()
        message = error.message if isinstance(error, WorkbenchError) else "internal error"
        outbox.put(failed_done_event(request_id, message))


default_handlers = [
    (r"/api/v1/sessions", SessionsHandler),
    (rf"/api/v1/sessions/{SESSION_ID}", SessionHandler),
    (rf"/api/v1/sessions/{SESSION_ID}/interrupt", InterruptHandler),
    (rf"/api/v1/sessions/{SESSION_ID}/restart", RestartHandler),
    (rf"/api/v1/sessions/{SESSION_ID}/execute", ExecuteHandler),
]
