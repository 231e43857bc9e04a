"""The base of every API handler: authentication, JSON bodies, and JSON errors (never an HTML page)."""

from __future__ import annotations

import json
import logging
import re
from http import HTTPStatus
from typing import Any

from tornado import httputil, web
from tornado.log import access_log

from workbench import jsonvalues
from workbench.auth import Authenticator, Principal, token_from_header
from workbench.errors import BadRequest, NotFound, Unauthorized, WorkbenchError
from workbench.sessions import SessionManager

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


class APIHandler(web.RequestHandler):
    """JSON in, JSON out; ``prepare`` authenticates unless ``public`` is set."""

    public = False
    principal: Principal

    @property
    def manager(self) -> SessionManager:
        manager: SessionManager = self.settings["manager"]
        return manager

    @property
    def authenticator(self) -> Authenticator:
        authenticator: Authenticator = self.settings["authenticator"]
        return authenticator

    def set_default_headers(self) -> None:
        for name, value in SECURITY_HEADERS.items():
            self.set_header(name, value)

    def request_token(self) -> str | None:
        return token_from_header(self.request.headers.get("Authorization"))

    async def prepare(self) -> None:
        self._counted = True
        self.settings["inflight"].started()
        if self.public:
            return
        self.principal = await self.authenticate()
        session_id = self.path_kwargs.get("session_id")
        if session_id is not None:  # another tenant's session answers exactly as an unknown one
            await self.manager.check_access(session_id, self.principal)

    async def authenticate(self) -> Principal:
        principal = await self.authenticator.authenticate(self.request_token())
        if principal is None:
            msg = "a valid token is required (Authorization: Bearer <token>)"
            raise Unauthorized(msg, headers={"WWW-Authenticate": 'Bearer realm="workbench"'})
        return principal

    def on_finish(self) -> None:
        if getattr(self, "_counted", False):
            self.settings["inflight"].finished()

    def json_body(self) -> dict[str, Any]:
        """The request body as a JSON object; malformed JSON is a 400."""
        if not self.request.body:
            return {}
        try:
            body = jsonvalues.loads(self.request.body)
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
        self.clear_header("Content-Disposition")
        if status_code == 405:
            self.set_header("Allow", ", ".join(self.allowed_methods()))
        for name, value in error.headers.items():
            self.set_header(name, value)
        self.set_header("Content-Type", "application/json; charset=UTF-8")
        self.finish(json.dumps(error.to_json(), ensure_ascii=False))

    def _request_summary(self) -> str:
        return request_summary(self.request)

    def allowed_methods(self) -> list[str]:
        """The HTTP methods this handler implements."""
        own = type(self)
        return [
            m
            for m in self.SUPPORTED_METHODS
            if getattr(own, m.lower()) is not getattr(web.RequestHandler, m.lower())
        ]

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        if isinstance(value, WorkbenchError | web.HTTPError):
            return
        super().log_exception(typ, value, tb)

    def _handle_request_exception(self, e: BaseException) -> None:
        if isinstance(e, WorkbenchError):
            if self._finished:
                return
            self.set_status(e.status)
            self.send_error(e.status, exc_info=(type(e), e, e.__traceback__))
            return
        super()._handle_request_exception(e)


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
    """Every unknown path: a JSON 404."""

    public = True

    async def prepare(self) -> None:
        msg = f"no route for {redact(self.request.path)}"
        raise NotFound(msg, code="no-route")
