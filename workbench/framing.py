"""Refuse requests whose framing headers are malformed with a JSON error, before Tornado reads a body.

Tornado answers a ``Content-Length`` it cannot use (thousands of digits, non-ASCII digits) with a bare
400 and no body; the API promises JSON errors.  This wrapper around the application checks those headers
as soon as they arrive, answers with the JSON shape and closes the connection (the body that may follow
is never read, so it cannot be taken for another request).
"""

from __future__ import annotations

import json
import re
from asyncio import Future
from collections.abc import Awaitable
from http import HTTPStatus

from tornado import httputil, web
from tornado.http1connection import HTTP1Connection
from tornado.iostream import StreamClosedError

from workbench.errors import BadRequest, TooLarge, WorkbenchError

LENGTH = re.compile(r"[0-9]{1,18}", re.ASCII)
DIGITS = re.compile(r"[0-9]+", re.ASCII)


def framing_error(headers: httputil.HTTPHeaders) -> WorkbenchError | None:
    """What is wrong with the request's ``Content-Length`` headers, if anything."""
    pieces = [
        piece for value in headers.get_list("Content-Length") for piece in re.split(r",[ \t]*", value.strip())
    ]
    for piece in pieces:
        if DIGITS.fullmatch(piece) and not LENGTH.fullmatch(piece):
            return TooLarge("the declared Content-Length is larger than any body this server takes")
        if not LENGTH.fullmatch(piece):
            return BadRequest("Content-Length must be a decimal number of bytes", code="bad-header")
    if len(set(pieces)) > 1:
        return BadRequest("several different Content-Length values", code="bad-header")
    return None


class StrictFraming(httputil.HTTPServerConnectionDelegate):
    """The application, behind a check of every request's framing headers."""

    def __init__(self, app: web.Application) -> None:
        self.app = app

    def start_request(
        self, server_conn: object, request_conn: httputil.HTTPConnection
    ) -> httputil.HTTPMessageDelegate:
        return _Checked(self.app.start_request(server_conn, request_conn), request_conn)

    def on_close(self, server_conn: object) -> None:
        self.app.on_close(server_conn)


class _Checked(httputil.HTTPMessageDelegate):
    def __init__(self, inner: httputil.HTTPMessageDelegate, connection: httputil.HTTPConnection) -> None:
        self.inner = inner
        self.connection = connection

    def headers_received(
        self,
        start_line: httputil.RequestStartLine | httputil.ResponseStartLine,
        headers: httputil.HTTPHeaders,
    ) -> Awaitable[None] | None:
        error = framing_error(headers)
        if error is None or not isinstance(self.connection, HTTP1Connection):
            return self.inner.headers_received(start_line, headers)
        _refuse(self.connection, error)
        return None

    def data_received(self, chunk: bytes) -> Awaitable[None] | None:
        return self.inner.data_received(chunk)

    def finish(self) -> None:
        self.inner.finish()

    def on_connection_close(self) -> None:
        self.inner.on_connection_close()


def _refuse(connection: HTTP1Connection, error: WorkbenchError) -> None:
    """Answer ``error`` as JSON on a connection taken over from Tornado, then close it."""
    body = json.dumps(error.to_json()).encode()
    reason = HTTPStatus(error.status).phrase
    head = (
        f"HTTP/1.1 {error.status} {reason}\r\n"
        "Content-Type: application/json; charset=UTF-8\r\n"
        "X-Content-Type-Options: nosniff\r\n"
        "Cache-Control: no-store\r\n"
        "Connection: close\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    stream = connection.detach()

    def sent(written: Future[None]) -> None:
        written.exception()  # a client that left is no error
        stream.close()

    try:
        stream.write(head.encode() + body).add_done_callback(sent)
    except StreamClosedError:
        stream.close()
