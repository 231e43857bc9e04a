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
from typing import Any, Protocol, TypeVar

from streaming_form_data import StreamingFormDataParser
from streaming_form_data.parser import ParseFailedException, parse_content_boundary
from streaming_form_data.targets import BaseTarget

from workbench.errors import BadRequest, TooLarge, UnsupportedType, WorkbenchError
from workbench.fairness import Runner
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
MAX_FIELDS = 8
"""Most parts of a multipart form that are not files (the ``path`` field, and a few a client may add)."""
MAX_PART_HEADER_BYTES = 8 * 1024
"""Largest header block of one part of a multipart form."""

_T = TypeVar("_T")


async def blocking(function: Callable[..., _T], *args: Any) -> _T:
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

    def __init__(self, upload: Upload, run: Runner = blocking) -> None:
        self.upload = upload
        self.run = run
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
                entry = await self.run(self.upload.commit)
        except BaseException:
            await self.abort()
            raise
        BYTES_UPLOADED.inc(entry.size)
        return entry

    async def abort(self) -> None:
        self._buffer.clear()
        async with self._lock:
            await self.run(self.upload.abort)

    async def _drain(self) -> None:
        data = bytes(self._buffer)
        self._buffer.clear()
        async with self._lock:
            await self.run(self.upload.write, data)


class MultipartUpload:
    """A ``multipart/form-data`` body with ``file`` parts (and an optional ``path`` field before them).

    Every file is written to a temporary file as its part arrives.  Once the whole body is in,
    :meth:`finish` commits them in order; a file refused then (its content does not match its extension)
    is discarded with the files after it, while the ones before it stay.  A body that is malformed, too
    large or cut short leaves nothing.
    """

    def __init__(
        self, workspace: Workspace, headers: Mapping[str, str], *, max_files: int, run: Runner = blocking
    ) -> None:
        try:
            self._parser = StreamingFormDataParser(headers)
        except ParseFailedException:
            msg = "the body must be multipart/form-data with a boundary"
            raise UnsupportedType(msg, code="not-multipart") from None
        self.workspace = workspace
        self.run = run
        self.max_files = max_files
        self._bounds = PartBounds(parse_content_boundary(headers), max_parts=max_files + MAX_FIELDS)
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
        self._bounds.feed(chunk)  # before the parser sees a part, so it never works on more than that
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
        upload = await self.run(self.workspace.begin_upload, path)
        self.sinks.append(FileSink(upload, self.run))
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


class PartBounds:
    """Counts the parts of a multipart body and measures their header blocks as the raw bytes go by.

    The parser does real work per part (it parses each header line with :mod:`email`), so a form of many
    tiny fields would cost seconds of event loop: past ``max_parts`` parts, or a part header block larger
    than :data:`MAX_PART_HEADER_BYTES`, the body is refused (400) before the parser sees it.  The search is
    ``bytes.find`` over each chunk, with a few bytes carried over to catch what spans two chunks.
    """

    def __init__(self, boundary: bytes, *, max_parts: int) -> None:
        self.delimiter = b"\r\n--" + boundary
        self.max_parts = max_parts
        self.parts = 0
        self._tail = b"\r\n"  # the body opens with the delimiter, without its CRLF
        self._offset = -2  # where ``_tail`` starts in the body
        self._header_start: int | None = None  # where the open part's header block starts, if in one
        self._ended = False

    def feed(self, chunk: bytes) -> None:
        if self._ended:
            return
        data = self._tail + chunk
        base, pos = self._offset, 0
        while not self._ended:
            if self._header_start is not None:
                pos = self._header_end(data, base, pos)
                if pos < 0:
                    pos = len(data)
                    break
            found = data.find(self.delimiter, pos)
            if found < 0:
                break
            self.parts += 1
            if self.parts > self.max_parts + 1:  # the closing delimiter counts once too
                msg = f"the form has more than {self.max_parts} parts"
                raise BadRequest(msg, code="too-many-parts")
            pos = found + len(self.delimiter)
            self._header_start = base + pos
        keep = min(len(data), max(self._header_keep(base, len(data)), len(self.delimiter) - 1))
        cut = max(len(data) - keep, 0)
        self._tail = data[cut:]
        self._offset = base + cut

    def _header_keep(self, base: int, size: int) -> int:
        return size - (self._header_start - base) if self._header_start is not None else 0

    def _header_end(self, data: bytes, base: int, pos: int) -> int:
        """Past the open part's header block in ``data``, or -1 if it goes on beyond ``data``."""
        assert self._header_start is not None
        start = max(pos, self._header_start - base)
        if data[start : start + 2] == b"--":  # the closing delimiter: the rest is an epilogue
            self._ended = True
            return len(data)
        if len(data) - start < 2:
            return -1
        end = data.find(b"\r\n\r\n", start)
        size = (end if end >= 0 else len(data)) - start
        if size > MAX_PART_HEADER_BYTES:
            msg = f"a part's headers are longer than {MAX_PART_HEADER_BYTES} bytes"
            raise BadRequest(msg, code="part-header-too-large")
        if end < 0:
            return -1
        self._header_start = None
        return end + 4


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
