"""Files of a session's workspace: list, upload (raw or multipart, streamed), download, rename, delete.

The handlers are thin: paths are checked and resolved by :mod:`workbench.workspace` (symlink-safe, on a
thread pool), request bodies are consumed as they arrive by :mod:`workbench.uploads`, and every operation
records activity on the session.  See ``docs/files.md``.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import re
import unicodedata
from collections.abc import Awaitable, Callable, Coroutine
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from tornado.iostream import StreamClosedError

from workbench.errors import BadRequest, Invalid, WorkbenchError
from workbench.fairness import Runner
from workbench.handlers.base import APIHandler
from workbench.handlers.sessions import SESSION_ID
from workbench.metrics import BYTES_DOWNLOADED
from workbench.uploads import (
    FileSink,
    MultipartUpload,
)
from workbench.workspace import MAX_LIST_LIMIT, FileEntry, Workspace

log = logging.getLogger(__name__)

FILE_PATH = r"(?P<path>.+)"
READ_SIZE = 1024 * 1024
"""Bytes of a download read from disk and sent at a time."""
MAX_FILES_PER_REQUEST = 32
SANDBOX = "sandbox; default-src 'none'; frame-ancestors 'none'"
INERT_TYPES = frozenset(
    {
        "text/csv",
        "text/plain",
        "text/tab-separated-values",
        "text/markdown",
        "application/json",
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        "application/vnd.ms-excel",
        "application/vnd.apache.parquet",
        "application/zip",
        "image/png",
        "image/jpeg",
        "image/gif",
        "image/webp",
    }
)
"""Types served as what they are; anything else (HTML, SVG, XML, scripts...) goes out as octet-stream."""

_background: set[asyncio.Task[None]] = set()


def _spawn(work: Coroutine[Any, Any, None]) -> None:
    task = asyncio.ensure_future(work)
    _background.add(task)
    task.add_done_callback(_background.discard)


class RangeNotSatisfiable(WorkbenchError):
    status = 416
    code = "range-not-satisfiable"


# ---------------------------------------------------------------------------------------------- handlers


class FilesAPIHandler(APIHandler):
    """The base of the file routes: an upload's body is streamed to its consumer (set up in
    :meth:`prepare_body`), and files are sent in chunks."""

    async def prepare_body(self) -> None:
        if "%2f" in self.request.path.lower():
            msg = "an encoded '/' (%2F) is not allowed in a file name"
            raise BadRequest(msg)

    def decode_argument(self, value: bytes, name: str | None = None) -> str:
        """Undecodable bytes in the URL are kept (as surrogates) for the path checks to refuse with 400."""
        return value.decode("utf-8", "surrogateescape")

    # -- shared steps

    @property
    def blocking(self) -> Runner:
        """Runs file work on the server's file pool, within this tenant's share of it."""
        return self.manager.files.runner(self.principal.name)

    async def open_workspace(self, session_id: str, kind: str, detail: str | None) -> Workspace:
        """The session's workspace (404 for an unknown session), with the operation recorded as activity."""
        workspace = await self.manager.workspace(session_id)
        shown = None if detail is None else detail.encode("utf-8", "backslashreplace").decode("utf-8")
        await self.manager.touch(session_id, kind, shown)
        return workspace

    async def start_put(self, session_id: str, path: str) -> FileSink:
        workspace = await self.open_workspace(session_id, "file-upload", path)
        return await self.begin_put(workspace, path)

    async def begin_put(self, root: Workspace, path: str) -> FileSink:
        """Take the body as the file ``path`` of ``root`` (a workspace or a library)."""
        self.allow_body(root.max_upload_bytes)
        return FileSink(await self.blocking(root.begin_upload, path), self.blocking)

    async def start_multipart(self, session_id: str, *, max_files: int) -> MultipartUpload:
        workspace = await self.open_workspace(session_id, "file-upload", None)
        return self.begin_multipart(workspace, max_files=max_files)

    def begin_multipart(self, root: Workspace, *, max_files: int) -> MultipartUpload:
        """Take the body as a multipart form of files for ``root`` (a workspace or a library)."""
        upload = MultipartUpload(root, self.request.headers, max_files=max_files, run=self.blocking)
        self.allow_body(upload.max_bytes)
        return upload

    async def write_listing(self, open_root: Callable[[str], Awaitable[Workspace]]) -> None:
        """Answer a page of the listing the query asks for (``path``, ``recursive``, ``limit``, ``offset``)
        of the tree ``open_root(path)`` gives."""
        path = self.query_path()
        recursive = self.flag("recursive")
        limit, offset = self.count("limit", MAX_LIST_LIMIT), self.count("offset", 0)
        root = await open_root(path)
        list_page = functools.partial(root.list, path, recursive=recursive, limit=limit, offset=offset)
        entries, total = await self.blocking(list_page)
        files = [entry.to_json() for entry in entries]
        self.write_json({"files": files, "total": total, "offset": offset, "limit": limit})

    async def send_file(self, workspace: Workspace, path: str) -> None:
        """The file at ``path``: whole, one byte range (206), or 304 for a matching ``If-None-Match``."""
        fd, entry, st = await self.blocking(_open_file, workspace, path)
        try:
            tag = etag(st)
            self.set_file_headers(entry, st, tag)
            if self.check_etag_header():
                self.set_status(304)
                return
            start, end = self.requested_range(st.st_size, tag)
            self.set_header("Content-Length", str(end - start))
            if self.request.method != "HEAD":
                await self.stream_file(fd, start, end)
        finally:
            os.close(fd)

    def set_file_headers(self, entry: FileEntry, st: os.stat_result, tag: str) -> None:
        mime = entry.mime if entry.mime in INERT_TYPES else "application/octet-stream"
        self.set_header("Content-Type", mime)
        self.set_header("Content-Disposition", content_disposition(entry.name))
        self.set_header("Content-Security-Policy", SANDBOX)
        self.set_header("ETag", tag)
        self.set_header("Last-Modified", datetime.fromtimestamp(st.st_mtime, UTC))
        self.set_header("Accept-Ranges", "bytes")

    def requested_range(self, size: int, tag: str) -> tuple[int, int]:
        """The ``(start, end)`` bytes to send, from ``Range`` (ignored when ``If-Range`` names another
        version)."""
        if_range = self.request.headers.get("If-Range")
        header = self.request.headers.get("Range")
        byte_range = None if if_range not in (None, tag) else parse_range(header, size)
        if byte_range is None:
            return 0, size
        start, end = byte_range
        self.set_status(206)
        self.set_header("Content-Range", f"bytes {start}-{end - 1}/{size}")
        return start, end

    async def stream_file(self, fd: int, start: int, end: int) -> None:
        offset = start
        while offset < end:
            chunk = await self.blocking(os.pread, fd, min(READ_SIZE, end - offset), offset)
            if not chunk:
                self.cut_connection("the file shrank while it was being sent")
                return
            self.write(chunk)
            try:
                await self.flush_within()
            except StreamClosedError:
                return  # the client went away
            BYTES_DOWNLOADED.inc(len(chunk))
            offset += len(chunk)

    def query_path(self) -> str:
        """The ``path`` query argument as sent (Tornado's own accessors blank out control characters)."""
        values = self.request.query_arguments.get("path")
        if not values:
            return ""
        try:
            return values[-1].decode("utf-8")
        except UnicodeDecodeError:
            msg = "the path is not valid UTF-8"
            raise BadRequest(msg) from None

    def flag(self, name: str) -> bool:
        value = self.get_query_argument(name, "false").strip().lower()
        if value in {"1", "true", "yes"}:
            return True
        if value in {"0", "false", "no", ""}:
            return False
        msg = f"{name} must be true or false"
        raise BadRequest(msg)

    def count(self, name: str, default: int) -> int:
        value = self.get_query_argument(name, None)
        if value is None:
            return default
        if not re.fullmatch(r"[0-9]{1,9}", value):
            msg = f"{name} must be a whole number"
            raise BadRequest(msg)
        return int(value)


class MultipartHandler(FilesAPIHandler):
    """A route whose ``POST`` uploads files as a streamed ``multipart/form-data`` body."""

    max_files = MAX_FILES_PER_REQUEST
    upload: MultipartUpload

    async def prepare_body(self) -> None:
        await super().prepare_body()
        if self.request.method == "POST":
            self.upload = await self.start_multipart(self.path_kwargs["session_id"], max_files=self.max_files)
            self.consumer = self.upload


class FilesHandler(MultipartHandler):
    """``/files``: list a folder; upload files as ``multipart/form-data``."""

    async def get(self, session_id: str) -> None:
        self.check_refusal()
        await self.write_listing(lambda path: self.open_workspace(session_id, "file-list", path))

    async def post(self, session_id: str) -> None:
        entries = await self.upload.finish()
        self.write_json({"files": [entry.to_json() for entry in entries]}, status=201)


class FileHandler(FilesAPIHandler):
    """``/files/{path}``: download, upload the raw body, rename or move, delete."""

    sink: FileSink

    async def prepare_body(self) -> None:
        await super().prepare_body()
        if self.request.method == "PUT":
            self.sink = await self.start_put(self.path_kwargs["session_id"], self.path_kwargs["path"])
            self.consumer = self.sink

    async def get(self, session_id: str, path: str) -> None:
        workspace = await self.open_workspace(session_id, "file-download", path)
        await self.send_file(workspace, path)

    head = get

    async def put(self, session_id: str, path: str) -> None:
        entry = await self.sink.commit()
        self.set_header("Location", f"/api/v1/sessions/{session_id}/files/{quote(entry.path)}")
        self.write_json(entry.to_json(), status=201)

    async def patch(self, session_id: str, path: str) -> None:
        new_path = self.json_body().get("new_path")
        if not isinstance(new_path, str):
            msg = "`new_path` (a string) is required"
            raise Invalid(msg, code="missing-new-path")
        workspace = await self.open_workspace(session_id, "file-rename", f"{path} -> {new_path}")
        entry = await self.blocking(workspace.rename, path, new_path)
        self.write_json(entry.to_json())

    async def delete(self, session_id: str, path: str) -> None:
        recursive = self.flag("recursive")
        workspace = await self.open_workspace(session_id, "file-delete", path)
        await self.blocking(functools.partial(workspace.delete, path, recursive=recursive))
        self.set_status(204)
        self.finish()


# ---------------------------------------------------------------------------------------------- helpers


def _open_file(workspace: Workspace, path: str) -> tuple[int, FileEntry, os.stat_result]:
    fd, entry = workspace.open_for_download(path)
    return fd, entry, os.fstat(fd)


def etag(st: os.stat_result) -> str:
    """A strong validator: any change of the file (or a new file under the name) changes it."""
    return f'"{st.st_ino:x}-{st.st_size:x}-{st.st_mtime_ns:x}"'


def content_disposition(name: str) -> str:
    """``attachment`` with an ASCII ``filename`` for old clients and the exact name in ``filename*``."""
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode("ascii")
    fallback = "".join(ch if ch.isprintable() and ch not in '"\\%;' else "_" for ch in ascii_name).strip()
    if not fallback or fallback.startswith("."):
        fallback = "download" + fallback
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(name, safe='')}"


_RANGE = re.compile(r"bytes=([0-9]*)-([0-9]*)", re.ASCII)


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The ``(start, end)`` of a single ``bytes`` range, ``None`` to send everything.

    Headers that are malformed, of another unit or ask for several ranges are ignored (the whole file is
    sent, as RFC 9110 allows); a range that starts past the end gets 416.
    """
    match = _RANGE.fullmatch((header or "").replace(" ", ""))
    if match is None or match.group(1) + match.group(2) == "":
        return None
    first, last = (_position(group) for group in match.groups())
    if first is None:  # the last N bytes
        assert last is not None
        start, end = max(0, size - last), size
    else:
        start = first
        end = size if last is None else min(size, last + 1)
        if last is not None and last < start:
            return None
    if start >= end:
        raise RangeNotSatisfiable(
            f"the range is outside the file ({size} bytes)", headers={"Content-Range": f"bytes */{size}"}
        )
    return start, end


def _position(digits: str) -> int | None:
    """A byte position of a ``Range`` header; thousands of digits are just very far (not a 500)."""
    if digits == "":
        return None
    return int(digits) if len(digits) <= 18 else 10**18


default_handlers = [
    (rf"/api/v1/sessions/{SESSION_ID}/files", FilesHandler),
    (rf"/api/v1/sessions/{SESSION_ID}/files/{FILE_PATH}", FileHandler),
]
