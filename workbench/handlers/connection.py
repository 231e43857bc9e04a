"""``GET /api/v1/sessions/{id}/connection``: the kernel's Jupyter connection info (admin only).

The answer is the connection as seen from the server host (IPC socket paths under the state directory),
so a Jupyter client on that host, such as ``workbench attach`` or ``jupyter console --existing``, can share
the session's kernel with API users.
"""

from __future__ import annotations

from workbench.errors import Forbidden
from workbench.handlers.base import APIHandler
from workbench.handlers.sessions import SESSION_ID

PRIVATE_FIELDS = ("kernel_id",)


class ConnectionHandler(APIHandler):
    async def get(self, session_id: str) -> None:
        if not self.principal.admin:
            msg = "only the admin may attach to a kernel"
            raise Forbidden(msg, code="admin-only")
        info = await self.manager.connection_info(session_id)
        self.write_json({key: value for key, value in info.items() if key not in PRIVATE_FIELDS})


default_handlers = [(rf"/api/v1/sessions/{SESSION_ID}/connection", ConnectionHandler)]
