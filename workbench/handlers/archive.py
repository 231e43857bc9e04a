"""Whole-workspace archives: ``GET`` streams a zip of the workspace (or of ``?path=``), ``POST`` extracts one.

The zip is made on a worker thread by :mod:`workbench.archive` and sent as it is made, at most
:data:`CHUNKS_IN_FLIGHT` chunks of about 1 MiB ahead of the client, so a slow client or a large workspace
never makes the server buffer the archive.  An uploaded zip is spooled to an unnamed temporary file
beside the workspaces (never inside one, never in memory), then checked and extracted all-or-nothing.
See ``docs/files.md``.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import threading
from typing import IO

from tornado.iostream import StreamClosedError

from workbench.archive import extract_archive, write_archive
from workbench.errors import BadRequest
from workbench.handlers.files import FilesAPIHandler, content_disposition
from workbench.handlers.sessions import SESSION_ID
from workbench.uploads import WRITE_SIZE, blocking
from workbench.workspace import Workspace, normalize_path

CHUNKS_IN_FLIGHT = 4


class _Stopped(Exception):
    """The client went away: the archive is no longer wanted."""


class ChunkPipe:
    """Chunks made on a worker thread, handed to the event loop with a bounded number in flight."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.slots = threading.Semaphore(CHUNKS_IN_FLIGHT)
        self.stopped = threading.Event()

    def put(self, chunk: bytes) -> None:
        """Called on the worker thread: wait for room, unless the reader is gone."""
        while not self.slots.acquire(timeout=1):
            if self.stopped.is_set():
                raise _Stopped
        if self.stopped.is_set():
            raise _Stopped
        self.loop.call_soon_threadsafe(self.queue.put_nowait, chunk)

    def close(self) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is gone (server shutting down)
            self.loop.call_soon_threadsafe(self.queue.put_nowait, None)

    async def get(self) -> bytes | None:
        chunk = await self.queue.get()
        self.slots.release()
        return chunk


class Spool:
    """An uploaded body written to an unnamed temporary file as it arrives (1 MiB at a time)."""

    def __init__(self, file: IO[bytes]) -> None:
        self.file = file
        self.buffer = bytearray()
        self.lock = asyncio.Lock()

    @classmethod
    async def create(cls, directory: str) -> Spool:
        return cls(await blocking(_temporary_file, directory))

    async def feed(self, chunk: bytes) -> None:
        self.buffer += chunk
        if len(self.buffer) >= WRITE_SIZE:
            await self.drain()

    async def drain(self) -> None:
        data = bytes(self.buffer)
        self.buffer.clear()
        async with self.lock:
            await blocking(self.file.write, data)

    async def abort(self) -> None:
        self.buffer.clear()
        async with self.lock:
            await blocking(self.file.close)


def _temporary_file(directory: str) -> IO[bytes]:
    return tempfile.TemporaryFile(dir=directory)  # unnamed (O_TMPFILE): nothing is ever left behind


class ArchiveHandler(FilesAPIHandler):
    """``/archive``: download the workspace as a zip; upload a zip into it."""

    spool: Spool
    workspace: Workspace

    async def prepare_body(self) -> None:
        if self.request.method == "POST":
            path = self.query_path()
            self.workspace = await self.open_workspace(self.path_kwargs["session_id"], "archive-upload", path)
            self.allow_body(self.workspace.quota_bytes)
            self.spool = await Spool.create(str(self.workspace.root.parent))
            self.consumer = self.spool

    async def get(self, session_id: str) -> None:
        self.check_refusal()
        path = self.query_path()
        parts = normalize_path(path, allow_root=True)
        workspace = await self.open_workspace(session_id, "archive-download", path)
        if parts and (await blocking(workspace.stat, path)).type != "directory":
            msg = f"{path} is not a folder (download a file directly)"
            raise BadRequest(msg)
        name = "-".join((session_id, *parts[-1:]))
        self.set_header("Content-Type", "application/zip")
        self.set_header("Content-Disposition", content_disposition(f"{name}.zip"))
        await self.stream_archive(workspace, path)

    async def post(self, session_id: str) -> None:
        self.check_refusal()
        try:
            await self.spool.drain()
            placed, count, size = await blocking(
                extract_archive, self.workspace, self.spool.file, self.query_path()
            )
        finally:
            await self.spool.abort()
        files = [entry.to_json() for entry in placed]
        self.write_json({"files": files, "count": count, "bytes": size}, status=201)

    async def stream_archive(self, workspace: Workspace, path: str) -> None:
        pipe = ChunkPipe()

        def produce() -> None:
            try:
                write_archive(workspace, path, pipe.put)
            finally:
                pipe.close()

        work = asyncio.get_running_loop().run_in_executor(None, produce)
        sent = False
        try:
            while (chunk := await pipe.get()) is not None:
                if pipe.stopped.is_set():
                    continue
                self.write(chunk)
                sent = True
                try:
                    await self.flush()
                except StreamClosedError:
                    pipe.stopped.set()
        finally:
            pipe.stopped.set()
        try:
            await work
        except _Stopped:
            return
        except Exception as error:
            if not sent:
                raise
            self.cut_connection(f"the archive could not be completed ({error})")


default_handlers = [
    (rf"/api/v1/sessions/{SESSION_ID}/archive", ArchiveHandler),
]
