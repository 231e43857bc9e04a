"""Request bodies consumed as they arrive: raw file uploads, streamed multipart forms, small JSON bodies.

The HTTP handlers feed each chunk of a request body to one of these consumers from the event loop; the
consumers hand the disk work to a thread pool, so one slow disk never stalls other requests, and they hold
at most :data:`WRITE_SIZE` bytes of a body in memory.  A multipart form is parsed with
``streaming-form-data`` (a streaming parser), never buffered whole.

A consumer that fails, or whose request is abandoned, must be aborted: then nothing it wrote stays behind
(see :class:`~workbench.workspace.Upload`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Protocol, TypeVar

from streaming_form_data import StreamingFormDataParser
from streaming_form_data.parser import ParseFailedException
from streaming_form_data.targets import BaseTarget

from workbench.errors import BadRequest, TooLarge, UnsupportedType, WorkbenchError
from workbench.metrics import BYTES_UPLOADED
from workbench.workspace import FileEntry, Upload, Workspace

__all__ = [
    "MULTIPART_OVERHEAD",
    "WRITE_SIZE",
    "BodyConsumer",
    "Discard",
    "FileSink",
    "MultipartUpload",
    "SmallBody",
    "blocking",
]

WRITE_SIZE = 1024 * 1024
"""Bytes of an upload gathered in memory before they are written to disk in one call."""
MAX_FIELD_BYTES = 4096
"""Largest plain (non-file) field of a multipart form."""
MULTIPART_OVERHEAD = 1024 * 1024
"""Bytes a multipart body may hold on top of its files' limits (part headers, boundaries, fields)."""

_T = TypeVar("_T")


async def blocking(function: Callable[..., _T], *args: object) -> _T:
    """Run a blocking call (file I/O) on the default thread pool."""
    return await asyncio.get_running_loop().run_in_executor(None, function, *args)


class BodyConsumer(Protocol):
    async def feed(self, chunk: bytes) -> None:
        """Take the next chunk of the body; raise a :class:`~workbench.errors.WorkbenchError` to refuse it."""

    async def abort(self) -> None:
        """Give up: discard whatever was received; idempotent."""


class SmallBody:
    """A body kept in memory (JSON requests), refused past ``limit`` bytes."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.data = bytearray()

    async def feed(self, chunk: bytes) -> None:
        if len(self.data) + len(chunk) > self.limit:
            msg = f"the request body is larger than {self.limit} bytes"
            raise TooLarge(msg)
        self.data += chunk

    async def abort(self) -> None:
        self.data.clear()


class Discard:
    """The rest of a refused body, dropped; ``error`` is raised if more than ``budget`` bytes come."""

    def __init__(self, error: Exception, budget: int) -> None:
        self.error = error
        self.budget = budget

    async def feed(self, chunk: bytes) -> None:
        self.budget -= len(chunk)
        if self.budget < 0:
            raise self.error

    async def abort(self) -> None:
        """Nothing to discard."""


class FileSink:
    """One upload fed from the event loop: chunks are gathered, then written on the thread pool.

    Calls on the :class:`Upload` are serialized, so an abort (a client that went away) never closes the
    file under a write in flight.
    """

    def __init__(self, upload: Upload) -> None:
        self.upload = upload
        self._buffer = bytearray()
        self._lock = asyncio.Lock()

    async def feed(self, chunk: bytes) -> None:
        self._buffer += chunk
        if len(self._buffer) >= WRITE_SIZE:
            await self._drain()

    async def commit(self) -> FileEntry:
        """Write what is left, check the content and move the file into place; abort on any failure."""
        try:
            await self._drain()
            async with self._lock:
                entry = await blocking(self.upload.commit)
        except BaseException:
            await self.abort()
            raise
        BYTES_UPLOADED.inc(entry.size)
        return entry

    async def abort(self) -> None:
        self._buffer.clear()
        async with self._lock:
            await blocking(self.upload.abort)

    async def _drain(self) -> None:
        data = bytes(self._buffer)
        self._buffer.clear()
        async with self._lock:
            await blocking(self.upload.write, data)


class MultipartUpload:
    """A ``multipart/form-data`` body with ``file`` parts (and an optional ``path`` field before them).

    Every file is written to a temporary file as its part arrives.  Once the whole body is in,
    :meth:`finish` commits them in order; a file refused then (its content does not match its extension)
    is discarded with the files after it, while the ones before it stay.  A body that is malformed, too
    large or cut short leaves nothing.
    """

    def __init__(self, workspace: Workspace, headers: Mapping[str, str], *, max_files: int) -> None:
        try:
            self._parser = StreamingFormDataParser(headers)
        except ParseFailedException:
            msg = "the body must be multipart/form-data with a boundary"
            raise UnsupportedType(msg, code="not-multipart") from None
        self.workspace = workspace
        self.max_files = max_files
        self.max_bytes = workspace.quota_bytes + MULTIPART_OVERHEAD
        self.folder = ""
        self.received = 0
        self.sinks: list[FileSink] = []
        self._open_part = False
        self._parser.register("path", _FieldTarget(self._set_folder))
        self._parser.register("file", _FileTarget(self))

    async def feed(self, chunk: bytes) -> None:
        self.received += len(chunk)
        if self.received > self.max_bytes:
            msg = "the request body is larger than the workspace quota"
            raise TooLarge(msg)
        try:
            await self._parser.adata_received(chunk)
        except (ParseFailedException, UnicodeDecodeError):
            msg = "the multipart body is malformed"
            raise BadRequest(msg, code="bad-multipart") from None

    async def finish(self) -> list[FileEntry]:
        """Commit the files, in the order they came; on the first failure, abort the ones not committed."""
        entries: list[FileEntry] = []
        try:
            self._check_complete()
            for sink in self.sinks:
                entries.append(await sink.commit())
        except BaseException as error:
            await self.abort()
            if entries and isinstance(error, WorkbenchError):
                error.message += f" (saved before it: {', '.join(entry.path for entry in entries)})"
            raise
        return entries

    async def abort(self) -> None:
        for sink in self.sinks:
            await sink.abort()

    def _check_complete(self) -> None:
        if self._open_part:
            msg = "the multipart body ended in the middle of a file"
            raise BadRequest(msg, code="bad-multipart")
        if not self.sinks:
            msg = "the form has no `file` part"
            raise BadRequest(msg, code="no-file")

    async def start_file(self, filename: str | None) -> None:
        if len(self.sinks) >= self.max_files:
            msg = f"at most {self.max_files} file(s) per request"
            raise BadRequest(msg, code="too-many-files")
        if not filename:
            msg = "every `file` part needs a filename"
            raise BadRequest(msg, code="no-filename")
        if "/" in filename:
            msg = f"a file name must not contain '/': {filename}"
            raise BadRequest(msg)
        path = f"{self.folder}/{filename}" if self.folder else filename
        upload = await blocking(self.workspace.begin_upload, path)
        self.sinks.append(FileSink(upload))
        self._open_part = True

    async def feed_file(self, chunk: bytes) -> None:
        await self.sinks[-1].feed(chunk)

    def end_file(self) -> None:
        self._open_part = False

    def _set_folder(self, value: bytes) -> None:
        if self.sinks:
            msg = "the `path` field must come before the `file` parts"
            raise BadRequest(msg)
        try:
            self.folder = value.decode("utf-8")
        except UnicodeDecodeError:
            msg = "the `path` field is not UTF-8"
            raise BadRequest(msg) from None


class _FileTarget(BaseTarget):  # type: ignore[misc]  # streaming-form-data ships no type information
    """Every ``file`` part of the form, one after the other, each into its own upload."""

    def __init__(self, owner: MultipartUpload) -> None:
        super().__init__()
        self.owner = owner

    async def on_start_async(self) -> None:
        await self.owner.start_file(self.multipart_filename)

    async def on_data_received_async(self, chunk: bytes) -> None:
        await self.owner.feed_file(chunk)

    async def on_finish_async(self) -> None:
        self.owner.end_file()


class _FieldTarget(BaseTarget):  # type: ignore[misc]
    """A small text field, handed over once it is complete."""

    def __init__(self, on_value: Callable[[bytes], None]) -> None:
        super().__init__()
        self.on_value = on_value
        self.value = bytearray()

    async def on_start_async(self) -> None:
        self.value.clear()

    async def on_data_received_async(self, chunk: bytes) -> None:
        if len(self.value) + len(chunk) > MAX_FIELD_BYTES:
            msg = f"a form field is longer than {MAX_FIELD_BYTES} bytes"
            raise BadRequest(msg)
        self.value += chunk

    async def on_finish_async(self) -> None:
        self.on_value(bytes(self.value))
