"""The Jupyter gateway protocol (what jupyter_server 2.x's gateway client calls); a kernel is a session.

Every route is served twice: as is (``Authorization: token <t>`` or ``Bearer <t>``) and under
``/gateway/{token}`` for clients that cannot send a header.
"""

from __future__ import annotations

import json
import logging
from typing import Any
from urllib.parse import urlparse

from tornado import web, websocket

from workbench import __version__, metrics
from workbench.auth import Principal
from workbench.errors import NotFound, Unauthorized, WorkbenchError
from workbench.gateway.auth import GatewayAuth
from workbench.gateway.channels import KernelChannels
from workbench.gateway.models import check_kernel_name, kernel_model, kernelspec, session_request
from workbench.gateway.protocol import V1_SUBPROTOCOL, FrameError, Message, decode, encode
from workbench.handlers.base import APIHandler, request_summary
from workbench.handlers.ws import origin_allowed
from workbench.sessions import SessionManager

log = logging.getLogger(__name__)

KERNEL_ID = r"(?P<kernel_id>[^/]+)"
PREFIX = r"/gateway/(?P<token>[^/]+)"
MAX_UNFLUSHED = 64 * 2**20  # a client this far behind is disconnected (Jupyter messages can't be skipped)
UNAUTHORIZED = "a valid token is required (Authorization: token <t>, or the /gateway/<token>/ prefix)"


def gateway_auth(handler: web.RequestHandler) -> GatewayAuth:
    auth: GatewayAuth = handler.settings.setdefault(
        "gateway_auth", GatewayAuth(handler.settings["authenticator"])
    )
    return auth


class GatewayHandler(APIHandler):
    """Authenticates by header or path token; another tenant's kernel is as unknown as a made-up one."""

    async def authenticate(self) -> Principal:
        principal = await gateway_auth(self).principal(
            self.request.headers.get("Authorization"), self.path_kwargs.get("token")
        )
        if principal is None:
            raise Unauthorized(UNAUTHORIZED, headers={"WWW-Authenticate": 'Bearer realm="workbench"'})
        return principal

    async def prepare(self) -> None:
        await super().prepare()
        kernel_id = self.path_kwargs.get("kernel_id")
        if kernel_id is not None:
            await self.manager.check_access(kernel_id, self.principal)

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        if isinstance(value, WorkbenchError | web.HTTPError):
            return
        log.error("uncaught exception in %s", request_summary(self.request), exc_info=(typ, value, tb))

    async def model(self, kernel_id: str) -> dict[str, Any]:
        return kernel_model(self.manager, await self.manager.get_live_row(kernel_id))


class ApiHandler(GatewayHandler):
    async def get(self, token: str | None = None) -> None:
        self.write_json({"version": __version__, "implementation": "workbench"})


class KernelSpecsHandler(GatewayHandler):
    async def get(self, token: str | None = None) -> None:
        spec = kernelspec()
        self.write_json({"default": spec["name"], "kernelspecs": {spec["name"]: spec}})


class KernelSpecHandler(GatewayHandler):
    async def get(self, name: str, token: str | None = None) -> None:
        check_kernel_name(name or "?")
        self.write_json(kernelspec())


class KernelSpecResourceHandler(GatewayHandler):
    async def get(self, name: str, resource: str, token: str | None = None) -> None:
        check_kernel_name(name or "?")
        msg = "the Workbench kernelspec has no resources (no logos)"
        raise NotFound(msg, code="resource-not-found")


class KernelsHandler(GatewayHandler):
    async def get(self, token: str | None = None) -> None:
        rows = await self.manager.list(self.principal)
        self.write_json([kernel_model(self.manager, row) for row in rows])

    async def post(self, token: str | None = None) -> None:
        row = await self.manager.create(session_request(self.json_body()), self.principal)
        self.set_header("Location", f"/api/kernels/{row.id}")
        self.write_json(kernel_model(self.manager, row), status=201)


class KernelHandler(GatewayHandler):
    async def get(self, kernel_id: str, token: str | None = None) -> None:
        self.write_json(await self.model(kernel_id))

    async def delete(self, kernel_id: str, token: str | None = None) -> None:
        await self.manager.delete(kernel_id)
        self.set_status(204)
        self.finish()


class InterruptHandler(GatewayHandler):
    async def post(self, kernel_id: str, token: str | None = None) -> None:
        await self.manager.interrupt(kernel_id)
        self.set_status(204)
        self.finish()


class RestartHandler(GatewayHandler):
    async def post(self, kernel_id: str, token: str | None = None) -> None:
        await self.manager.restart(kernel_id)
        self.write_json(await self.model(kernel_id))


class ChannelsSocket(websocket.WebSocketHandler):
    """``/api/kernels/{id}/channels``: Jupyter messages both ways (legacy framing or the v1 subprotocol)."""

    channels: KernelChannels | None = None

    @property
    def manager(self) -> SessionManager:
        manager: SessionManager = self.settings["manager"]
        return manager

    async def get(self, *args: Any, **kwargs: Any) -> None:
        kernel_id = kwargs["kernel_id"]
        principal = await gateway_auth(self).principal(
            self.request.headers.get("Authorization"),
            kwargs.get("token") or self.get_query_argument("token", None),
        )
        if principal is None:
            self._refuse(401, "unauthorized", UNAUTHORIZED)
            return
        try:
            await self.manager.check_access(kernel_id, principal)
            await self.manager.get_live_row(kernel_id)
        except WorkbenchError as error:
            self._refuse(error.status, error.code, error.message)
            return
        if self.request.headers.get("Upgrade", "").lower() != "websocket":
            self._refuse(400, "websocket-required", "this route speaks WebSocket only (Upgrade: websocket)")
            return
        origin = self.request.headers.get("Origin")
        same_origin = (
            origin and urlparse(origin).netloc.lower() == self.request.headers.get("Host", "").lower()
        )
        if origin and not same_origin and not self.check_origin(origin):
            self._refuse(403, "origin-not-allowed", "WebSocket connections from this Origin are not allowed")
            return
        await super().get(*args, **kwargs)

    def check_origin(self, origin: str) -> bool:
        allowed = self.manager.settings.allowed_origins
        return origin_allowed(origin, allowed) if allowed else super().check_origin(origin)

    def _refuse(self, status: int, code: str, message: str) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json; charset=UTF-8")
        self.finish(json.dumps({"error": {"code": code, "message": message}}))

    def _request_summary(self) -> str:
        return request_summary(self.request)

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        log.error("uncaught exception in %s", request_summary(self.request), exc_info=(typ, value, tb))

    def select_subprotocol(self, subprotocols: list[str]) -> str | None:
        return V1_SUBPROTOCOL if V1_SUBPROTOCOL in subprotocols else None

    async def open(self, *args: str, **kwargs: str) -> None:
        kernel_id = kwargs["kernel_id"]
        self.set_nodelay(True)
        metrics.WEBSOCKETS.inc()
        self.v1 = self.selected_subprotocol == V1_SUBPROTOCOL
        self.unflushed = 0
        self.warned = False
        try:
            kernel = await self.manager.session_kernel(kernel_id)
            self.channels = KernelChannels(self.manager, kernel, self._deliver, self._gone)
            self.channels.open()
            await self.manager.kernel(kernel_id)  # a culled session's kernel comes back
            await self.manager.touch(kernel_id, "connect")
        except WorkbenchError as error:
            self.close(1011, error.message[:120])

    def _deliver(self, message: Message, channel: str) -> None:
        if self.ws_connection is None or self.ws_connection.is_closing():
            return
        frame = encode(message, channel, v1=self.v1)
        size = len(frame)
        self.unflushed += size
        if self.unflushed > MAX_UNFLUSHED:
            log.warning(
                "gateway socket of %s: closing a client that cannot keep up", self.path_kwargs["kernel_id"]
            )
            self.close(1008, "client too slow")
            return
        try:
            written = self.write_message(frame, binary=isinstance(frame, bytes))
        except websocket.WebSocketClosedError:
            return
        written.add_done_callback(lambda _: self._flushed(size))

    def _flushed(self, size: int) -> None:
        self.unflushed -= size

    def _gone(self) -> None:
        self.close(1000, "the session ended")

    async def on_message(self, message: str | bytes) -> None:
        if self.channels is None:
            return
        try:
            channel, parsed = decode(message, v1=self.v1)
        except FrameError as error:
            if not self.warned:  # once per socket: a broken client must not flood the log
                log.warning(
                    "gateway socket of %s: dropping a bad frame (%s)", self.path_kwargs["kernel_id"], error
                )
                self.warned = True
            return
        await self.channels.receive(channel, parsed)

    def on_close(self) -> None:
        if hasattr(self, "unflushed"):
            metrics.WEBSOCKETS.dec()
        if self.channels is not None:
            self.channels.close()


ROUTES: list[tuple[str, type[web.RequestHandler]]] = [
    (r"/api", ApiHandler),
    (r"/api/kernelspecs", KernelSpecsHandler),
    (r"/api/kernelspecs/(?P<name>[^/]+)", KernelSpecHandler),
    (r"/kernelspecs/(?P<name>[^/]+)/(?P<resource>.+)", KernelSpecResourceHandler),
    (r"/api/kernels", KernelsHandler),
    (rf"/api/kernels/{KERNEL_ID}", KernelHandler),
    (rf"/api/kernels/{KERNEL_ID}/interrupt", InterruptHandler),
    (rf"/api/kernels/{KERNEL_ID}/restart", RestartHandler),
    (rf"/api/kernels/{KERNEL_ID}/channels", ChannelsSocket),
]

default_handlers = [*ROUTES, *((PREFIX + path, handler) for path, handler in ROUTES)]
