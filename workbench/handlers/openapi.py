"""``GET /api/v1/openapi.json``: the OpenAPI document of the v1 API (public, like the health check)."""

from __future__ import annotations

from workbench.handlers.base import APIHandler
from workbench.openapi import document


class OpenAPIHandler(APIHandler):
    public = True

    def get(self) -> None:
        self.write_json(document())


default_handlers = [(r"/api/v1/openapi\.json", OpenAPIHandler)]
