"""No client call waits forever: ``run`` against a server that never answers raises ``RunTimeout``.

The server here is a bare WebSocket server that takes the execute frame and says nothing (no Docker).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
from websockets.sync.server import ServerConnection, serve

from workbench.client import (
    RUN_MARGIN,
    SERVER_EXECUTE_TIMEOUT,
    AsyncSession,
    AsyncWorkbench,
    RunTimeout,
    Session,
    SessionInfo,
    Workbench,
    _Run,
)

INFO = SessionInfo.from_json({"id": "session-silent", "status": "ready"})


def _swallow(connection: ServerConnection) -> None:
    """Read frames and never answer, until the client goes away."""
    for _ in connection:
        pass


@pytest.fixture(scope="module")
def silent_url() -> Iterator[str]:
    with serve(_swallow, "127.0.0.1", 0) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        host, port = server.socket.getsockname()[:2]
        yield f"http://{host}:{port}"
        server.shutdown()
        thread.join(10)


def test_run_gives_up_after_its_wait(silent_url: str) -> None:
    with Workbench(silent_url, "token") as wb:
        started = time.monotonic()
        with pytest.raises(RunTimeout, match="within 1 s"):
            Session(wb, INFO).run("input()", wait=1)
        assert time.monotonic() - started < 30


async def test_async_run_gives_up_after_its_wait(silent_url: str) -> None:
    async with AsyncWorkbench(silent_url, "token") as wb:
        started = time.monotonic()
        with pytest.raises(RunTimeout, match="within 1 s"):
            await AsyncSession(wb, INFO).run("input()", wait=1)
        assert time.monotonic() - started < 30


def test_the_default_wait_is_the_timeout_plus_a_margin() -> None:
    assert _Run("1", 5, None, None).wait == 5 + RUN_MARGIN
    assert _Run("1", None, None, None).wait == SERVER_EXECUTE_TIMEOUT + RUN_MARGIN
    assert _Run("1", 5, None, None, wait=2).wait == 2
