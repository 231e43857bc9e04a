"""The Tornado application: routes from each handlers module's ``default_handlers``."""

from __future__ import annotations

from typing import Any

from tornado import web

from workbench.auth import Authenticator
from workbench.handlers import (
    archive,
    base,
    compat,
    connection,
    files,
    gateway,
    health,
    library,
    metrics,
    openapi,
    page,
    runs,
    sessions,
    ws,
)
from workbench.inflight import InFlight
from workbench.sessions import SessionManager

HANDLER_MODULES = (
    health,
    metrics,
    sessions,
    ws,
    connection,
    files,
    compat,
    openapi,
    library,
    archive,
    runs,
    gateway,
    page,
)


def make_app(manager: SessionManager, authenticator: Authenticator, **extra: Any) -> web.Application:
    routes: list[Any] = []
    for module in HANDLER_MODULES:
        routes.extend(module.default_handlers)
    return web.Application(
        routes,
        manager=manager,
        authenticator=authenticator,
        inflight=InFlight(),
        log_function=base.log_request,
        default_handler_class=base.NotFoundHandler,
        compress_response=False,
        serve_traceback=False,
        websocket_ping_interval=20,
        websocket_ping_timeout=60,
        websocket_max_message_size=manager.settings.max_ws_frame_kb * 1024,
        **extra,
    )
