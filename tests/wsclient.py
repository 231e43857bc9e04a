"""A small WebSocket test client: send frames, collect events until an execute's ``done``."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import websockets
from websockets.asyncio.client import ClientConnection

from tests.conftest import Server


def connect(server: Server, session_id: str, **extra: Any) -> Any:
    url = server.url.replace("http://", "ws://") + f"/api/v1/sessions/{session_id}/ws"
    headers = {"Authorization": f"Bearer {server.token}"}
    return websockets.connect(url, additional_headers=headers, max_size=64 * 2**20, **extra)


async def send(socket: ClientConnection, **frame: Any) -> None:
    await socket.send(json.dumps(frame))


async def receive(socket: ClientConnection, timeout: float = 30) -> dict[str, Any]:
    event: dict[str, Any] = json.loads(await asyncio.wait_for(socket.recv(), timeout))
    return event


async def until_done(socket: ClientConnection, request_id: str, timeout: float = 60) -> list[dict[str, Any]]:
    """Every event up to and including ``done`` of ``request_id``."""
    events = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        event = await receive(socket, max(0.1, deadline - loop.time()))
        events.append(event)
        if event["type"] == "done" and event.get("id") == request_id:
            return events


async def execute(socket: ClientConnection, request_id: str, code: str, **extra: Any) -> list[dict[str, Any]]:
    await send(socket, type="execute", id=request_id, code=code, **extra)
    return await until_done(socket, request_id)


def of(events: list[dict[str, Any]], request_id: str, kind: str | None = None) -> list[dict[str, Any]]:
    return [e for e in events if e.get("id") == request_id and (kind is None or e["type"] == kind)]
