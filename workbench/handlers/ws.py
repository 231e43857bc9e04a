"""``GET /api/v1/sessions/{id}/ws``: streaming execution over a WebSocket (shared view of the session)."""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import re
from typing import Any, ClassVar

from tornado import httputil, web, websocket

from workbench import jsonvalues, metrics
from workbench.admission import Ticket, check_code
from workbench.auth import Principal
from workbench.browser_auth import SUBPROTOCOL, same_origin, token_from_subprotocols
from workbench.errors import BadRequest, Forbidden, TooLarge, WorkbenchError
from workbench.handlers.base import APIMixin, error_body
from workbench.inbound import InboundBudget
from workbench.outbox import Event, Outbox
from workbench.sessions import Unsubscribe
from workbench.views import failed_done_event

log = logging.getLogger(__name__)
INBOUND = InboundBudget()
FRAME_OVERHEAD = 64 * 1024
"""Bytes an execute frame may hold besides its code; larger frames are refused without being decoded."""


class SessionSocket(APIMixin, websocket.WebSocketHandler):
    """Frames in: ``execute``, ``interrupt``, ``input_reply``.  Events out: every event of the session."""

    principal: Principal
    session_id: str
    unsubscribe: Unsubscribe | None = None
    closed = False
    connected: ClassVar[collections.Counter[str]] = collections.Counter()
    """Open sockets per session id."""

    def request_token(self) -> str | None:
        """The ``Authorization`` header; from a browser (which cannot set headers on a WebSocket), a
        ``workbench.bearer.<token>`` subprotocol or ``?token=``."""
        return (
            super().request_token()
            or token_from_subprotocols(self.request.headers.get("Sec-WebSocket-Protocol"))
            or self.get_query_argument("token", None)
        )

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
        refuse_upgrade(self, error)

    async def open(self, *args: str, **kwargs: str) -> None:
        self.session_id = kwargs["session_id"]
        self.set_nodelay(True)
        metrics.WEBSOCKETS.inc()
        self.outbox = Outbox()
        self.executions: asyncio.Queue[tuple[dict[str, Any], Ticket] | None] = asyncio.Queue()
        self.connected[self.session_id] += 1
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

        When the client goes away, the execute running goes on to its end (a client that reconnects gets
        its output and ``done``); the ones still queued run only if another client of the session is
        connected to see them, else they are dropped.
        """
        while (item := await self.next_execute()) is not None:
            frame, ticket = item
            if self.closed and not self.connected[self.session_id]:
                ticket.release()
                log.info("session %s: dropped execute %r of a closed WebSocket", self.session_id, frame["id"])
                continue
            try:
                await self.manager.execute(
                    self.session_id,
                    frame["code"],
                    timeout=frame.get("timeout"),
                    request_id=frame["id"],
                    source="ws",
                    allow_stdin=True,
                    files=frame.get("files", True),
                    ticket=ticket,
                )
            except WorkbenchError as error:
                self.refuse_execute(frame["id"], error)
            except Exception:
                log.exception("session %s: execute over WebSocket failed", self.session_id)
                self.outbox.put(failed_done_event(frame["id"], "internal error"))
            finally:
                ticket.release()

    async def next_execute(self) -> tuple[dict[str, Any], Ticket] | None:
        return self.executions.get_nowait() if self.closed else await self.executions.get()

    def refuse_execute(self, request_id: str | None, error: WorkbenchError) -> None:
        """An ``error`` event and a failed ``done`` for an execute that can't be queued (without an id,
        just the ``error``)."""
        if request_id is None:
            self.outbox.put({"type": "error", "code": error.code, "message": error.message})
            return
        self.outbox.put({"type": "error", "id": request_id, "code": error.code, "message": error.message})
        self.outbox.put(failed_done_event(request_id, error.message))

    def admit(self, frame: dict[str, Any]) -> None:
        """Queue an execute frame, or answer at once (too large, or the session's queue is full)."""
        try:
            check_code(frame["code"], self.manager.settings.max_code_kb)
            ticket = self.manager.admit(self.session_id)
        except WorkbenchError as error:
            self.refuse_execute(frame["id"], error)
            return
        self.executions.put_nowait((frame, ticket))

    async def on_message(self, message: str | bytes) -> None:
        delay = INBOUND.delay(self.principal.name, len(message))
        if delay:
            await asyncio.sleep(delay)  # the next frame is read after this one is handled
        limit_kb = self.manager.settings.max_code_kb
        if len(message) > limit_kb * 1024 + FRAME_OVERHEAD:
            too_large = TooLarge(f"the frame is larger than the {limit_kb} KiB code limit allows")
            self.refuse_execute(_frame_id(message), too_large)
            return
        frame = _parse_frame(message)
        if isinstance(frame, str):
            self.outbox.put({"type": "error", "code": "bad-frame", "message": frame})
            return
        kind = frame["type"]
        if kind == "execute":
            self.admit(frame)
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
        if hasattr(self, "sender") and not self.closed:
            self.closed = True
            self.connected[self.session_id] -= 1
            if not self.connected[self.session_id]:
                del self.connected[self.session_id]
            metrics.WEBSOCKETS.dec()
            self.sender.cancel()
            self.executions.put_nowait(None)

    def check_origin(self, origin: str) -> bool:
        return browser_origin_allowed(self.request, origin, self.manager.settings.allowed_origins)

    def select_subprotocol(self, subprotocols: list[str]) -> str | None:
        """A browser that sent its token as a subprotocol gets ``workbench.v1`` back (never the token)."""
        return SUBPROTOCOL if SUBPROTOCOL in subprotocols else None


def refuse_upgrade(handler: web.RequestHandler, error: WorkbenchError) -> None:
    """Answer a WebSocket upgrade request with the JSON error instead of a WebSocket."""
    handler.set_status(error.status)
    for name, value in error.headers.items():
        handler.set_header(name, value)
    handler.set_header("Content-Type", "application/json; charset=UTF-8")
    handler.finish(error_body(error))


def browser_origin_allowed(
    request: httputil.HTTPServerRequest, origin: str, patterns: tuple[str, ...]
) -> bool:
    """Browsers send ``Origin``: allow pages of this server, and the configured allow-list."""
    headers = request.headers
    if same_origin(origin, headers.get("Host", ""), headers.get("Sec-Fetch-Site")):
        return True
    return origin_allowed(origin, patterns)


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


def _frame_id(message: str | bytes) -> str | None:
    """The ``id`` of a frame too large to decode, if it is near its start."""
    head = message[:1024] if isinstance(message, str) else message[:1024].decode("utf-8", "replace")
    match = re.search(r'"id"\s*:\s*"([^"\\]{1,200})"', head)
    return match.group(1) if match else None


def _parse_frame(message: str | bytes) -> dict[str, Any] | str:
    """The frame as a checked dict, or a message saying what is wrong with it."""
    try:
        frame = jsonvalues.loads(message)
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
        if not isinstance(frame.get("files", True), bool):
            return "`files` must be true or false"
        return frame
    if kind == "interrupt":
        return frame
    if kind == "input_reply":
        if not isinstance(frame.get("value"), str):
            return "input_reply needs `value` (a string)"
        return frame
    return f"unknown frame type {kind!r} (expected execute, interrupt or input_reply)"


default_handlers = [(r"/api/v1/sessions/(?P<session_id>[^/]+)/ws", SessionSocket)]
