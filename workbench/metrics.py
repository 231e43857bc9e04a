"""Prometheus metrics, served at ``/metrics``."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

SESSIONS = Gauge("workbench_sessions", "Sessions by status.", ["status"], registry=REGISTRY)
KERNELS_RUNNING = Gauge("workbench_kernels_running", "Kernel containers this server is connected to.",
                        registry=REGISTRY)  # fmt: skip
EXECUTIONS = Counter("workbench_executions", "Finished executions, by status.", ["status"], registry=REGISTRY)
EXECUTION_SECONDS = Histogram(
    "workbench_execution_duration_seconds", "How long executions ran.",
    buckets=(0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 1800), registry=REGISTRY,
)  # fmt: skip
KERNELS_CULLED = Counter("workbench_kernels_culled", "Idle kernels stopped by the reaper.", registry=REGISTRY)
SESSIONS_EXPIRED = Counter("workbench_sessions_expired", "Sessions expired by the reaper.", registry=REGISTRY)
KERNEL_DEATHS = Counter(
    "workbench_kernel_deaths", "Kernels that died, by reason.", ["reason"], registry=REGISTRY
)
WEBSOCKETS = Gauge("workbench_websocket_connections", "Open WebSocket connections.", registry=REGISTRY)
BYTES_UPLOADED = Counter("workbench_uploaded_bytes", "Bytes uploaded into workspaces.", registry=REGISTRY)
BYTES_DOWNLOADED = Counter(
    "workbench_downloaded_bytes", "Bytes downloaded from workspaces.", registry=REGISTRY
)
POOL_READY = Gauge("workbench_pool_ready", "Warm kernels ready to be claimed.", registry=REGISTRY)
POOL_CLAIMS = Counter(
    "workbench_pool_claims", "Creates served from the warm pool (hit) or cold (miss).", ["outcome"],
    registry=REGISTRY,
)  # fmt: skip
