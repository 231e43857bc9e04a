"""``GET /api/v1/sessions/{id}/connection``: the kernel's Jupyter connection info (admin only).

The answer is the connection as seen from the server host (IPC socket paths under the state directory),
so a Jupyter client on that host, such as ``workbench attach`` or ``jupyter console --existing``, can share
the session's kernel with API users.
"""

from __future__ import annotations

import asyncio
from typing import Any

from workbench.errors import Forbidden, KernelFailed
from workbench.handlers.base import APIHandler
from workbench.handlers.sessions import SESSION_ID
from workbench.kernels.runtime import SessionKernel

PRIVATE_FIELDS = ("kernel_id",)


class ConnectionHandler(APIHandler):
    async def get(self, session_id: str) -> None:
        if not self.principal.admin:
            msg = "only the admin may attach to a kernel"
            raise Forbidden(msg, code="admin-only")
        kernel = await self.manager.kernel(session_id)  # a stopped session gets a running kernel
        info = await asyncio.get_running_loop().run_in_executor(None, _connection_info, kernel)
        self.write_json({key: value for key, value in info.items() if key not in PRIVATE_FIELDS})


def _connection_info(kernel: SessionKernel) -> dict[str, Any]:
    info = kernel.connection_info
    if info is None:
        msg = "the kernel's connection file is missing"
        raise KernelFailed(msg)
    return info


default_handlers = [(rf"/api/v1/sessions/{SESSION_ID}/connection", ConnectionHandler)]
