"""Streaming answers: a session's events as they happen, one JSON object per line (NDJSON)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Coroutine
from typing import Any

from tornado import web
from tornado.iostream import StreamClosedError

from workbench.errors import WorkbenchError
from workbench.kernels.runtime import SessionKernel
from workbench.outbox import Event, Outbox

NDJSON = "application/x-ndjson"

Final = Callable[["asyncio.Future[Any]"], Event | None]


def wants_ndjson(handler: web.RequestHandler) -> bool:
    return NDJSON in handler.request.headers.get("Accept", "")


def failure_message(task: asyncio.Future[Any]) -> str | None:
    """What went wrong with a finished job, for its closing event (``None``: it went well)."""
    if task.cancelled():
        return "cancelled"
    error = task.exception()
    if error is None:
        return None
    return error.message if isinstance(error, WorkbenchError) else "internal error"


async def stream_events(
    handler: web.RequestHandler,
    kernel: SessionKernel,
    *,
    wanted: Callable[[Event], bool],
    job: Coroutine[Any, Any, Any],
    final: Final,
    last: Callable[[Event], bool],
) -> None:
    """Run ``job`` and stream the kernel's events it ``wanted`` (and ``kernel`` news) until ``last``.

    ``final(task)`` gives the event to queue once the job ended (``None``: none).  The job runs to its
    end even if the client goes away.
    """
    outbox = Outbox()

    def on_event(event: Event) -> None:
        if event["type"] == "kernel" or wanted(event):
            outbox.put(event)

    def on_end(task: asyncio.Future[Any]) -> None:
        event = final(task)
        if event is not None:
            outbox.put(event)

    kernel.subscribe(on_event)
    task = asyncio.ensure_future(job)
    task.add_done_callback(on_end)
    handler.set_header("Content-Type", f"{NDJSON}; charset=UTF-8")
    try:
        while True:
            event = await outbox.get()
            handler.write(json.dumps(event, ensure_ascii=False) + "\n")
            await handler.flush()
            if last(event):
                break
    except StreamClosedError:
        return
    finally:
        kernel.unsubscribe(on_event)
        await asyncio.wait([task])
    handler.finish()
