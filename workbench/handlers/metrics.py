"""``GET /metrics``: Prometheus text format (no auth; it shows counts, never ids or contents)."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from workbench import metrics
from workbench.handlers.base import APIHandler

STATUSES = ("starting", "ready", "stopped", "expired", "deleted", "failed")


class MetricsHandler(APIHandler):
    public = True

    async def get(self) -> None:
        counts = await self.manager.count_by_status()
        for status in STATUSES:
            metrics.SESSIONS.labels(status).set(counts.get(status, 0))
        metrics.KERNELS_RUNNING.set(self.manager.running_kernels())
        self.set_header("Content-Type", CONTENT_TYPE_LATEST)
        self.finish(generate_latest(metrics.REGISTRY))


default_handlers = [(r"/metrics", MetricsHandler)]
