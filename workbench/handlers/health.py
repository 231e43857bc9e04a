"""``GET /api/v1/health``: is the engine reachable, is the database reachable."""

from __future__ import annotations

from workbench import __version__
from workbench.handlers.base import APIHandler


class HealthHandler(APIHandler):
    public = True

    async def get(self) -> None:
        docker_ok, database_ok = await self.manager.health()
        healthy = docker_ok and database_ok
        self.write_json(
            {
                "status": "ok" if healthy else "degraded",
                "docker": docker_ok,
                "database": database_ok,
                "version": __version__,
            },
            status=200 if healthy else 503,
        )


default_handlers = [(r"/api/v1/health", HealthHandler)]
