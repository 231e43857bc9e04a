"""Sessions: create, list, get, delete, interrupt, restart, execute."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from workbench.errors import Invalid, TooLarge
from workbench.handlers.base import APIHandler
from workbench.handlers.ndjson import failure_message, stream_events, wants_ndjson
from workbench.kernels.admission import check_code
from workbench.kernels.execution import failed_done_event
from workbench.outbox import Event

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
    async def post(self, session_id: str) -> None:
        code, timeout, files = self.execute_request()
        if wants_ndjson(self):
            await self.stream(session_id, code, timeout, files)
            return
        result = await self.manager.execute(session_id, code, timeout=timeout, source="rest", files=files)
        self.write_json(result.to_json())

    async def stream(self, session_id: str, code: str, timeout: Any, files: bool) -> None:
        """The execution's events as they happen, one JSON object per line, ``done`` last."""
        self.manager.execute_timeout(timeout)  # refuse a bad timeout before the answer starts
        kernel = await self.manager.kernel(session_id)
        request_id = uuid.uuid4().hex

        def final(task: asyncio.Future[Any]) -> Event | None:
            """An execution that failed before its ``done`` still ends the stream with one."""
            message = failure_message(task)
            return None if message is None else failed_done_event(request_id, message)

        await stream_events(
            self,
            kernel,
            wanted=lambda event: event.get("id") == request_id,
            job=self.manager.execute(
                session_id, code, timeout=timeout, request_id=request_id, source="rest", files=files
            ),
            final=final,
            last=lambda event: event["type"] == "done",
        )

    def execute_request(self) -> tuple[str, Any, bool]:
        limit = self.manager.settings.max_code_kb * 1024
        if len(self.request.body) > limit + 4096:
            msg = f"the request is larger than {self.manager.settings.max_code_kb} KiB"
            raise TooLarge(msg)
        body = self.json_body()
        code = body.get("code")
        if not isinstance(code, str):
            msg = "`code` (a string) is required"
            raise Invalid(msg, code="missing-code")
        check_code(code, self.manager.settings.max_code_kb)
        files = body.get("files", True)
        if not isinstance(files, bool):
            msg = "`files` must be true or false"
            raise Invalid(msg)
        return code, body.get("timeout"), files


default_handlers = [
    (r"/api/v1/sessions", SessionsHandler),
    (rf"/api/v1/sessions/{SESSION_ID}", SessionHandler),
    (rf"/api/v1/sessions/{SESSION_ID}/interrupt", InterruptHandler),
    (rf"/api/v1/sessions/{SESSION_ID}/restart", RestartHandler),
    (rf"/api/v1/sessions/{SESSION_ID}/execute", ExecuteHandler),
]
