"""The tenant file library over HTTP: the v1 routes and the original service's "global" routes.

Both forms are thin adapters over the same steps (:class:`LibraryBase`), which use the file routes' code
(streamed uploads, downloads with ranges and validators, listings) on the caller's
:class:`~workbench.library.Library`.  Every token sees only its own tenant's library: another tenant's
files are simply not there (404, an empty listing).  See ``docs/files.md``.
"""

from __future__ import annotations

import functools
from typing import Any
from urllib.parse import quote

from workbench.errors import BadRequest, Invalid
from workbench.handlers.compat import top_level_files
from workbench.handlers.files import FILE_PATH, MAX_FILES_PER_REQUEST, FilesAPIHandler
from workbench.library import Library
from workbench.uploads import FileSink, MultipartUpload, blocking
from workbench.workspace import FileEntry

LIBRARY_URL = "/api/v1/library"
GLOBAL_URL = "/api/v1/files/global"
FILENAME = r"(?P<filename>.+)"


class LibraryBase(FilesAPIHandler):
    """The library operations both route forms share."""

    async def open_library(self, path: str = "") -> Library:
        return await self.manager.library(self.principal)

    def string_field(self, body: dict[str, Any], name: str) -> str:
        value = body.get(name)
        if not isinstance(value, str):
            msg = f"`{name}` (a string) is required"
            raise Invalid(msg, code=f"missing-{name.replace('_', '-')}")
        return value

    async def rename(self, path: str, new_path: str) -> FileEntry:
        library = await self.open_library()
        return await blocking(library.rename, path, new_path)

    async def remove(self, path: str, *, recursive: bool) -> None:
        library = await self.open_library()
        await blocking(functools.partial(library.delete, path, recursive=recursive))

    async def start_upload_form(self, max_files: int) -> MultipartUpload:
        return self.begin_multipart(await self.open_library(), max_files=max_files)


# ---------------------------------------------------------------------------------------------- v1


class LibraryHandler(LibraryBase):
    """``/library``: list (paginated, as a session's files); upload files as ``multipart/form-data``."""

    upload: MultipartUpload

    async def prepare_body(self) -> None:
        if self.request.method == "POST":
            self.upload = await self.start_upload_form(MAX_FILES_PER_REQUEST)
            self.consumer = self.upload

    async def get(self) -> None:
        self.check_refusal()
        await self.write_listing(self.open_library)

    async def post(self) -> None:
        self.check_refusal()
        entries = await self.upload.finish()
        self.write_json({"files": [entry.to_json() for entry in entries]}, status=201)


class LibraryFileHandler(LibraryBase):
    """``/library/{path}``: download, upload the raw body, publish a session's file, rename, delete."""

    sink: FileSink

    async def prepare_body(self) -> None:
        if self.request.method == "PUT":
            self.sink = await self.begin_put(await self.open_library(), self.path_kwargs["path"])
            self.consumer = self.sink

    async def get(self, path: str) -> None:
        self.check_refusal()
        await self.send_file(await self.open_library(), path)

    head = get

    async def put(self, path: str) -> None:
        self.check_refusal()
        self.created(await self.sink.commit())

    async def post(self, path: str) -> None:
        """Publish: copy ``{"from_session", "path"}``, a file of one of the caller's sessions, to ``path``."""
        self.check_refusal()
        body = self.json_body()
        session_id, source = self.string_field(body, "from_session"), self.string_field(body, "path")
        self.created(await self.manager.publish(self.principal, session_id, source, path))

    async def patch(self, path: str) -> None:
        self.check_refusal()
        entry = await self.rename(path, self.string_field(self.json_body(), "new_path"))
        self.write_json(entry.to_json())

    async def delete(self, path: str) -> None:
        self.check_refusal()
        await self.remove(path, recursive=self.flag("recursive"))
        self.set_status(204)
        self.finish()

    def created(self, entry: FileEntry) -> None:
        self.set_header("Location", f"{LIBRARY_URL}/{quote(entry.path)}")
        self.write_json(entry.to_json(), status=201)


# ---------------------------------------------------------------------------------------------- global


def global_entry(entry: FileEntry) -> dict[str, Any]:
    """A file as the original service's global routes show it."""
    return {"name": entry.to_json()["name"], "size": entry.size, "modified": entry.modified}


def plain_name(filename: str) -> str:
    """A file name of the global routes: at the top of the library, so no ``/`` (400, as the original)."""
    if "/" in filename:
        msg = "Invalid filename format."
        raise BadRequest(msg)
    return filename


class GlobalListHandler(LibraryBase):
    """The regular files at the top of the library, sorted by name."""

    async def get(self) -> None:
        self.check_refusal()
        entries = await blocking(top_level_files, await self.open_library())
        self.write_json([global_entry(entry) for entry in entries])


class GlobalUploadHandler(LibraryBase):
    """One multipart ``file`` into the top of the library."""

    upload: MultipartUpload

    async def prepare_body(self) -> None:
        if self.request.method == "POST":
            self.upload = await self.start_upload_form(1)
            self.consumer = self.upload

    async def post(self) -> None:
        self.check_refusal()
        (entry,) = await self.upload.finish()
        self.write_json(global_entry(entry))


class GlobalDownloadHandler(LibraryBase):
    async def get(self, filename: str) -> None:
        self.check_refusal()
        await self.send_file(await self.open_library(), plain_name(filename))


class GlobalRenameHandler(LibraryBase):
    """``{"new_filename"}``: 409 if that name is taken."""

    async def patch(self, filename: str) -> None:
        self.check_refusal()
        new_name = plain_name(self.string_field(self.json_body(), "new_filename"))
        entry = await self.rename(plain_name(filename), new_name)
        self.write_json(global_entry(entry))


class GlobalDeleteHandler(LibraryBase):
    async def delete(self, filename: str) -> None:
        self.check_refusal()
        await self.remove(plain_name(filename), recursive=False)
        self.write_json({"name": filename, "deleted": True})


default_handlers = [
    (LIBRARY_URL, LibraryHandler),
    (rf"{LIBRARY_URL}/{FILE_PATH}", LibraryFileHandler),
    (f"{GLOBAL_URL}/list", GlobalListHandler),
    (f"{GLOBAL_URL}/upload", GlobalUploadHandler),
    (rf"{GLOBAL_URL}/download/{FILENAME}", GlobalDownloadHandler),
    (rf"{GLOBAL_URL}/rename/{FILENAME}", GlobalRenameHandler),
    (rf"{GLOBAL_URL}/delete/{FILENAME}", GlobalDeleteHandler),
]
