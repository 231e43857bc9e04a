"""The base of every API handler: authentication, bounded streamed bodies, and JSON errors (never an HTML
page), on Tornado's public API only."""

from __future__ import annotations

import asyncio
import functools
import inspect
import json
import logging
import re
import sys
from collections.abc import Awaitable, Callable, Coroutine
from http import HTTPStatus
from typing import Any

from tornado import httputil, web
from tornado.http1connection import HTTP1Connection
from tornado.iostream import StreamClosedError
from tornado.log import access_log, app_log

from workbench import jsonvalues
from workbench.auth import Authenticator, Principal, token_from_header
from workbench.errors import BadRequest, NotFound, TooLarge, Unauthorized, WorkbenchError
from workbench.sessions import SessionManager
from workbench.uploads import BodyConsumer, Discard, SmallBody

log = logging.getLogger(__name__)

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'; sandbox",
}


TOKEN_IN_QUERY = re.compile(r"([?&]token=)[^&]*")
TOKEN_IN_PATH = re.compile(r"(/gateway/)[^/?#]*")


def redact(uri: str) -> str:
    """The URI with any ``token=`` query value and any ``/gateway/{token}`` segment hidden, for logs."""
    return TOKEN_IN_PATH.sub(r"\1[redacted]", TOKEN_IN_QUERY.sub(r"\1[redacted]", uri))


def request_summary(request: httputil.HTTPServerRequest) -> str:
    return f"{request.method} {redact(request.uri or '')} ({request.remote_ip})"


def log_request(handler: web.RequestHandler) -> None:
    """Tornado's access log, with tokens redacted from URIs."""
    status = handler.get_status()
    level = logging.INFO if status < 400 else logging.WARNING if status < 500 else logging.ERROR
    access_log.log(level, "%d %s %.1fms", status, request_summary(handler.request),
                   1000 * handler.request.request_time())  # fmt: skip


MAX_JSON_BYTES = 64 * 1024
"""Largest body of the requests that take JSON (or nothing); the execute route allows more."""
LINGER_BYTES = 128 * 1024 * 1024
"""Most bytes of a refused body read and dropped before the answer, so that a client still sending gets
the JSON answer rather than a reset (see :meth:`APIHandler.refuse`)."""
UNBOUNDED = sys.maxsize
"""Tornado's own body limit on API routes: each route's consumer enforces its limit (with a JSON 413)."""
FLUSH_TIMEOUT = 300.0
"""Seconds a client may take nothing of an answer being streamed to it before it is disconnected."""
HTTP_METHODS = ("get", "head", "post", "put", "patch", "delete", "options")


class APIMixin:
    """What the REST handlers and the WebSocket handler share: the session manager, authentication,
    access to a session, the JSON error body, and logs without tokens."""

    request: httputil.HTTPServerRequest
    settings: dict[str, Any]

    @property
    def manager(self) -> SessionManager:
        manager: SessionManager = self.settings["manager"]
        return manager

    @property
    def authenticator(self) -> Authenticator:
        authenticator: Authenticator = self.settings["authenticator"]
        return authenticator

    def request_token(self) -> str | None:
        return token_from_header(self.request.headers.get("Authorization"))

    async def authenticate(self) -> Principal:
        principal = await self.authenticator.authenticate(self.request_token())
        if principal is None:
            msg = "a valid token is required (Authorization: Bearer <token>)"
            raise Unauthorized(msg, headers={"WWW-Authenticate": 'Bearer realm="workbench"'})
        return principal

    async def authorize(self, session_id: str | None) -> Principal:
        """The caller, who must be allowed to see ``session_id`` (another tenant's session answers exactly
        as an unknown one)."""
        principal = await self.authenticate()
        if session_id is not None:
            await self.manager.check_access(session_id, principal)
        return principal

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        """Errors answered on purpose are not logged; others are, with the request's token redacted."""
        if isinstance(value, WorkbenchError | web.HTTPError):
            return
        app_log.error("uncaught exception in %s", request_summary(self.request), exc_info=(typ, value, tb))


def error_body(error: WorkbenchError) -> str:
    return json.dumps(error.to_json(), ensure_ascii=False)


@web.stream_request_body
class APIHandler(APIMixin, web.RequestHandler):
    """JSON in, JSON out; ``prepare`` authenticates unless ``public`` is set.

    Every body is streamed to ``self.consumer``: a bounded in-memory buffer for JSON (``max_json_bytes``)
    unless a subclass sets up an upload in :meth:`prepare_body`.  A body too large is answered with a JSON
    413 however it comes: a declared ``Content-Length`` is checked before a byte is read, a chunked body
    is stopped at the limit.  A request refused before its body is complete is answered once the rest of
    the body, if short, has been read and dropped (by :class:`Discard`): answering earlier makes the
    server close the connection, and a client still sending may see a reset instead of the answer.
    Each HTTP method first answers such a refusal (see ``__init_subclass__``).
    """

    public = False
    principal: Principal
    max_json_bytes = MAX_JSON_BYTES
    consumer: BodyConsumer
    small_body: SmallBody
    refusal: WorkbenchError | None = None
    received = 0
    counted = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name in HTTP_METHODS:
            method = cls.__dict__.get(name)
            if method is not None:
                setattr(cls, name, _refusal_first(method))

    def set_default_headers(self) -> None:
        for name, value in SECURITY_HEADERS.items():
            self.set_header(name, value)

    async def prepare(self) -> None:
        self.counted = True
        self.settings["inflight"].started()
        self.small_body = self.consumer = SmallBody(self.max_json_bytes)
        connection = self.request.connection
        if isinstance(connection, HTTP1Connection):
            connection.set_max_body_size(UNBOUNDED)
        try:
            if not self.public:
                self.principal = await self.authorize(self.path_kwargs.get("session_id"))
            await self.prepare_body()
            if self.consumer is self.small_body:
                self.allow_body(self.small_body.limit)
        except WorkbenchError as error:
            self.refuse(error)

    async def prepare_body(self) -> None:
        """Replace ``self.consumer`` for a request whose body is not JSON (the caller is checked first)."""

    def allow_body(self, limit: int) -> None:
        """413 at once for a declared length over ``limit`` (consumers stop longer bodies as they come)."""
        declared = self.request.headers.get("Content-Length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            msg = f"the body is larger than the limit ({limit} bytes)"
            raise TooLarge(msg)

    async def data_received(self, chunk: bytes) -> None:
        self.received += len(chunk)
        try:
            await self.consumer.feed(chunk)
        except Exception as error:
            await self.consumer.abort()
            try:
                self.refuse(error)
            except Exception as final:
                self.fail(final)

    def refuse(self, error: Exception) -> None:
        """Raise ``error`` now, or keep it for the method to answer while a short rest of the body is
        dropped."""
        pending = self.pending_body()
        expecting = self.request.headers.get("Expect", "").lower() == "100-continue" and not self.received
        if (
            self.refusal is not None
            or not isinstance(error, WorkbenchError)
            or pending > LINGER_BYTES
            or expecting  # the client waits for a go-ahead that will not come: answer now
        ):
            raise error
        self.refusal = error
        self.consumer = Discard(error, pending)

    def check_refusal(self) -> None:
        """Answer a refusal kept while the body was dropped (done first by every HTTP method)."""
        if self.refusal is not None:
            raise self.refusal

    def fail(self, error: BaseException) -> None:
        """Answer ``error`` from outside the HTTP method (while the body arrives)."""
        self.log_exception(type(error), error, error.__traceback__)
        status = error.status if isinstance(error, WorkbenchError) else 500
        self.send_error(status, exc_info=(type(error), error, error.__traceback__))

    def pending_body(self) -> int:
        """Bytes of the body still to come (for a chunked body, as many as we are willing to drop)."""
        declared = self.request.headers.get("Content-Length")
        if declared is not None and declared.isdigit():
            return int(declared) - self.received
        return LINGER_BYTES if "Transfer-Encoding" in self.request.headers else 0

    def on_connection_close(self) -> None:
        super().on_connection_close()
        _spawn(self.consumer.abort())

    def on_finish(self) -> None:
        if self.counted:
            self.settings["inflight"].finished()

    async def flush_within(self) -> None:
        """Flush what is written; a client that takes none of it for ``FLUSH_TIMEOUT`` seconds is cut off
        (``StreamClosedError``, as if it had gone away)."""
        try:
            await asyncio.wait_for(self.flush(), FLUSH_TIMEOUT)
        except TimeoutError:
            self.cut_connection(f"the client took nothing for {FLUSH_TIMEOUT:.0f} s")
            raise StreamClosedError from None

    def cut_connection(self, reason: str) -> None:
        """End a response whose length was promised but can't be kept: the client sees a cut transfer."""
        log.warning("%s %s: %s; closing the connection", self.request.method, self.request.path, reason)
        connection = self.request.connection
        if isinstance(connection, HTTP1Connection):
            connection.close()

    def body_bytes(self) -> bytes:
        """The request body (of at most ``max_json_bytes``), as received."""
        return bytes(self.small_body.data)

    def json_body(self) -> dict[str, Any]:
        """The request body as a JSON object; malformed JSON is a 400."""
        data = self.body_bytes()
        if not data:
            return {}
        try:
            body = jsonvalues.loads(data)
        except (ValueError, UnicodeDecodeError) as exc:
            msg = f"the body is not valid JSON: {exc}"
            raise BadRequest(msg, code="bad-json") from None
        if not isinstance(body, dict):
            msg = "the body must be a JSON object"
            raise BadRequest(msg, code="bad-json")
        return body

    def write_json(self, data: Any, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json; charset=UTF-8")
        self.finish(json.dumps(data, ensure_ascii=False))

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        error = _as_workbench_error(status_code, kwargs.get("exc_info"))
        self.set_status(error.status)
        self.clear_header("Content-Disposition")
        if error.status == 405:
            self.set_header("Allow", ", ".join(self.allowed_methods()))
        for name, value in error.headers.items():
            self.set_header(name, value)
        self.set_header("Content-Type", "application/json; charset=UTF-8")
        self.finish(error_body(error))

    def allowed_methods(self) -> list[str]:
        """The HTTP methods this handler implements."""
        own = type(self)
        return [
            m
            for m in self.SUPPORTED_METHODS
            if getattr(own, m.lower()) is not getattr(web.RequestHandler, m.lower())
        ]


def _refusal_first(method: Callable[..., Any]) -> Callable[..., Awaitable[None]]:
    """``method``, answering first a refusal kept while the request's body was dropped."""

    @functools.wraps(method)
    async def guarded(self: APIHandler, *args: Any, **kwargs: Any) -> None:
        self.check_refusal()
        result = method(self, *args, **kwargs)
        if inspect.isawaitable(result):
            await result

    return guarded


_background: set[asyncio.Task[None]] = set()


def _spawn(work: Coroutine[Any, Any, None]) -> None:
    task = asyncio.ensure_future(work)
    _background.add(task)
    task.add_done_callback(_background.discard)


def _as_workbench_error(status_code: int, exc_info: Any) -> WorkbenchError:
    exception = exc_info[1] if exc_info else None
    if isinstance(exception, WorkbenchError):
        return exception
    if isinstance(exception, web.HTTPError):
        message = (
            exception.log_message % exception.args
            if exception.log_message and exception.args
            else (exception.log_message or exception.reason or "")
        )
        error = WorkbenchError(message or _reason(status_code), code=_slug(status_code))
        error.status = status_code
        return error
    error = WorkbenchError(
        "internal server error" if status_code >= 500 else _reason(status_code), code=_slug(status_code)
    )
    error.status = status_code
    return error


def _reason(status_code: int) -> str:
    try:
        return HTTPStatus(status_code).phrase.lower()
    except ValueError:
        return "error"


def _slug(status_code: int) -> str:
    return _reason(status_code).replace(" ", "-")


class NotFoundHandler(APIHandler):
    """Every unknown path: a JSON 404 (answered after the body, like every refusal, so the connection
    stays open for the next request)."""

    public = True

    async def prepare_body(self) -> None:
        msg = f"no route for {redact(self.request.path)}"
        raise NotFound(msg, code="no-route")

    def get(self, *args: str, **kwargs: str) -> None:
        """Never reached: the refusal is answered first."""

    head = post = put = patch = delete = options = get
