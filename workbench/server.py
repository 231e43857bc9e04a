"""``workbench serve``: start-up (schema, state dir, re-attach), serving, and graceful shutdown."""

from __future__ import annotations

import asyncio
import functools
import logging
import signal
import sys
import time

from tornado.httpserver import HTTPServer

from workbench.app import make_app
from workbench.auth import Authenticator, load_or_create_admin_token, load_or_create_instance_id
from workbench.config import Settings
from workbench.db.store import Database
from workbench.framing import StrictFraming
from workbench.image import default_image_name
from workbench.inflight import InFlight
from workbench.kernels.launcher import DockerLauncher, KernelLauncher
from workbench.library import UPLOADS_DIR
from workbench.reaper import Reaper
from workbench.sessions import SessionManager
from workbench.workspace import clear_partial_uploads

log = logging.getLogger("workbench")
SHUTDOWN_GRACE = 30
SWITCH_INTERVAL = 0.001


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(), stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("tornado.access").setLevel(
        logging.WARNING if level.lower() != "debug" else logging.INFO
    )


BUFFERED_BODY_LIMIT = 64 * 1024
"""Tornado's limit for a body it buffers: only the WebSocket route takes its request whole (an upgrade has
no body); every API route streams its body and answers one too large with a JSON 413 itself."""


async def start_up(manager: SessionManager, reaper: Reaper) -> None:
    """While already serving: re-attach the kernels that outlived the server, then start the warm pool and
    the reaper."""
    if manager.reattach.pending:
        log.info("re-attaching %d sessions' kernels", manager.reattach.pending)
    try:
        await manager.reconcile()
    except Exception as exc:  # the engine may be down at start: serve anyway, health says degraded
        log.warning("could not reconcile kernels with the engine: %s", exc)
    manager.pool.start()  # after the reconcile, which removes containers and files that no session names
    reaper.start()


def _report_cleanup(future: asyncio.Future[int]) -> None:
    if future.exception() is not None:
        log.warning("could not remove partial uploads: %s", future.exception())
    elif future.result():
        log.info("removed %d partial upload(s) left by a previous run", future.result())


def make_launcher(settings: Settings, instance: str) -> KernelLauncher:
    image = settings.image or default_image_name()
    if settings.kernel_launcher == "kubernetes":
        from workbench.kernels.kubernetes import KubernetesLauncher

        return KubernetesLauncher(
            image=image,
            uid=settings.kernel_uid,
            instance=instance,
            namespace=settings.kubernetes_namespace,
            workspace_mb=settings.workspace_quota_mb,
            storage_class=settings.kubernetes_storage_class,
        )
    return DockerLauncher(
        instance=instance,
        image=image,
        uid=settings.kernel_uid,
        runtime=settings.runtime,
        docker_host=settings.docker_host,
        transport=settings.kernel_transport,
        network=settings.kernel_network,
    )


async def serve(settings: Settings) -> None:
    # File work runs Python on threads (walks of big trees): a short switch interval hands the GIL back to
    # the event loop within a millisecond instead of five, so other requests don't wait in line behind it.
    sys.setswitchinterval(SWITCH_INTERVAL)
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    database = Database(settings.database_url)
    await asyncio.get_running_loop().run_in_executor(None, database.upgrade)
    launcher = make_launcher(settings, load_or_create_instance_id(settings.state_dir))
    manager = SessionManager(settings, database, launcher)
    manager.prepare_state_dir()
    for uploads in (settings.workspaces_dir, settings.library_dir / UPLOADS_DIR):
        partial = asyncio.get_running_loop().run_in_executor(
            None, functools.partial(clear_partial_uploads, uploads, before=time.time())
        )  # in the background: uploads of this server are newer, so it never races them
        partial.add_done_callback(_report_cleanup)
    token = settings.token
    if not token:
        token, created = load_or_create_admin_token(settings.state_dir)
        if created:
            print(f"workbench: admin token (saved in {settings.state_dir}/admin-token): {token}", flush=True)
    await manager.begin_reconcile()
    launcher.watch(manager.on_kernel_gone)
    reaper = Reaper(manager)
    app = make_app(manager, Authenticator(token, database))
    server = HTTPServer(
        StrictFraming(app),
        max_body_size=BUFFERED_BODY_LIMIT,
        idle_connection_timeout=300,
        body_timeout=3600,
        xheaders=False,
    )
    server.listen(settings.port, settings.host)
    log.info(
        "workbench serving on http://%s:%d (state in %s)", settings.host, settings.port, settings.state_dir
    )
    starting = asyncio.create_task(start_up(manager, reaper))

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    log.info("shutting down: no new connections, finishing requests in flight")
    server.stop()
    starting.cancel()
    await asyncio.gather(starting, return_exceptions=True)
    await reaper.stop()
    inflight: InFlight = app.settings["inflight"]
    try:
        async with asyncio.timeout(SHUTDOWN_GRACE):
            await inflight.drained()
    except TimeoutError:
        log.warning("%d requests still running after %d s; closing them", inflight.count, SHUTDOWN_GRACE)
    await server.close_all_connections()
    await manager.close(stop_kernels=settings.stop_kernels_on_exit)
    launcher.close()
    database.close()
