"""``GET /api/v1/sessions/{id}/ws``: streaming execution over a WebSocket (shared view of the session)."""

from __future__ import annotations

import asyncio
import json
import logging
import re
from typing import Any

from tornado import websocket

from workbench import metrics
from workbench.auth import Principal
from workbench.errors import BadRequest, Forbidden, WorkbenchError
from workbench.handlers.base import APIMixin, error_body
from workbench.outbox import Event, Outbox
from workbench.sessions import Unsubscribe
from workbench.views import failed_done_event

log = logging.getLogger(__name__)


class SessionSocket(APIMixin, websocket.WebSocketHandler):
    """Frames in: ``execute``, ``interrupt``, ``input_reply``.  Events out: every event of the session."""

    principal: Principal
    session_id: str
    unsubscribe: Unsubscribe | None = None

    def request_token(self) -> str | None:
        """The ``Authorization`` header, or ``?token=`` (browsers cannot set headers on a WebSocket)."""
        return super().request_token() or self.get_query_argument("token", None)

    async def get(self, *args: Any, **kwargs: Any) -> None:
        try:
            self.principal = await self.authorize(kwargs["session_id"])
            await self.manager.get_live_row(kwargs["session_id"])
        except WorkbenchError as error:
            self.refuse(error)
            return
        # Tornado would refuse these two with HTML pages: answer JSON instead.
        if self.request.headers.get("Upgrade", "").lower() != "websocket":
            message = "this route speaks WebSocket only (Upgrade: websocket)"
            self.refuse(BadRequest(message, code="websocket-required"))
            return
        origin = self.request.headers.get("Origin") or self.request.headers.get("Sec-Websocket-Origin")
        if origin and not self.check_origin(origin):
            message = "WebSocket connections from this Origin are not allowed"
            self.refuse(Forbidden(message, code="origin-not-allowed"))
            return
        await super().get(*args, **kwargs)

    def refuse(self, error: WorkbenchError) -> None:
        """Answer the upgrade request with the JSON error instead of a WebSocket."""
        self.set_status(error.status)
        for name, value in error.headers.items():
            self.set_header(name, value)
        self.set_header("Content-Type", "application/json; charset=UTF-8")
        self.finish(error_body(error))

    async def open(self, *args: str, **kwargs: str) -> None:
        self.session_id = kwargs["session_id"]
        self.set_nodelay(True)
        metrics.WEBSOCKETS.inc()
        self.outbox = Outbox()
        self.executions: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self.sender = asyncio.create_task(self.send_loop())
        self.executor = asyncio.create_task(self.execute_loop())
        try:
            self.unsubscribe = await self.manager.subscribe(self.session_id, self.on_event, replay=True)
            await self.manager.kernel(self.session_id)  # after subscribing: the client hears a restart
            await self.manager.touch(self.session_id, "connect")
        except WorkbenchError as error:
            self.outbox.put({"type": "error", "code": error.code, "message": error.message})

    def on_event(self, event: Event) -> None:
        self.outbox.put(event)
        if self.outbox.overflowed:
            log.warning("session %s: closing a WebSocket client that cannot keep up", self.session_id)
            self.close(1008, "client too slow")

    async def send_loop(self) -> None:
        """Write what is queued, a batch at a time; waiting for each flush gives backpressure."""
        while True:
            batch = await self.outbox.get_batch()
            try:
                for event in batch[:-1]:
                    self.write_message(json.dumps(event, ensure_ascii=False))
                await self.write_message(json.dumps(batch[-1], ensure_ascii=False))
            except websocket.WebSocketClosedError:
                return

    async def execute_loop(self) -> None:
        """This client's execute frames, in order (the kernel's queue orders them among all clients).

        Frames a client sent before it went away still run (it may reconnect for the results).
        """
        while (frame := await self.executions.get()) is not None:
            try:
                await self.manager.execute(
                    self.session_id,
                    frame["code"],
                    timeout=frame.get("timeout"),
                    request_id=frame["id"],
                    source="ws",
                    allow_stdin=True,
                )
            except WorkbenchError as error:
                self.outbox.put(
                    {"type": "error", "id": frame["id"], "code": error.code, "message": error.message}
                )
                self.outbox.put(failed_done_event(frame["id"], error.message))
            except Exception:
                log.exception("session %s: execute over WebSocket failed", self.session_id)
                self.outbox.put(failed_done_event(frame["id"], "internal error"))

    async def on_message(self, message: str | bytes) -> None:
        frame = _parse_frame(message)
        if isinstance(frame, str):
            self.outbox.put({"type": "error", "code": "bad-frame", "message": frame})
            return
        kind = frame["type"]
        if kind == "execute":
            self.executions.put_nowait(frame)
        elif kind == "interrupt":
            await self.interrupt()
        elif kind == "input_reply":
            self.manager.send_input(self.session_id, frame["value"])

    async def interrupt(self) -> None:
        try:
            await self.manager.interrupt(self.session_id)
        except WorkbenchError as error:
            self.outbox.put({"type": "error", "code": error.code, "message": error.message})

    def on_close(self) -> None:
        if self.unsubscribe is not None:
            self.unsubscribe()
        if hasattr(self, "sender"):
            metrics.WEBSOCKETS.dec()
            self.sender.cancel()
            self.executions.put_nowait(None)

    def check_origin(self, origin: str) -> bool:
        """Browsers send ``Origin``: allow the server's own host, or the configured allow-list."""
        allowed = self.manager.settings.allowed_origins
        if allowed:
            return origin_allowed(origin, allowed)
        return super().check_origin(origin)


def origin_allowed(origin: str, patterns: tuple[str, ...]) -> bool:
    """Exact origins, or ``scheme://*.domain`` patterns matched as a whole (anchored, never a prefix)."""
    for pattern in patterns:
        if "*" not in pattern:
            if origin == pattern:
                return True
            continue
        regex = re.escape(pattern).replace(r"\*", r"[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*")
        if re.fullmatch(regex, origin):
            return True
    return False


def _parse_frame(message: str | bytes) -> dict[str, Any] | str:
    """The frame as a checked dict, or a message saying what is wrong with it."""
    try:
        frame = json.loads(message)
    except (ValueError, UnicodeDecodeError):
        return "the frame is not valid JSON"
    if not isinstance(frame, dict):
        return "the frame must be a JSON object"
    kind = frame.get("type")
    if kind == "execute":
        if not isinstance(frame.get("code"), str):
            return "execute needs `code` (a string)"
        if not isinstance(frame.get("id"), str) or not 0 < len(frame["id"]) <= 200:
            return "execute needs `id` (a string of 1 to 200 characters)"
        timeout = frame.get("timeout")
        if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, int | float)):
            return "`timeout` must be a number of seconds"
        return frame
    if kind == "interrupt":
        return frame
    if kind == "input_reply":
        if not isinstance(frame.get("value"), str):
            return "input_reply needs `value` (a string)"
        return frame
    return f"unknown frame type {kind!r} (expected execute, interrupt or input_reply)"


default_handlers = [(r"/api/v1/sessions/(?P<session_id>[^/]+)/ws", SessionSocket)]
