"""The original sandbox service's file routes (v2.4), kept for its clients.

``GET /api/v1/files/list/{session_id}`` lists the regular files at the top of the workspace as
``[{"name", "session_id", "size", "modified"}]``; ``GET /api/v1/files/download/{session_id}/{filename}``
sends one of them; ``POST /api/v1/files/upload/{session_id}`` takes one multipart ``file`` into the top of
the workspace.  As in the original, a file name holding ``/`` is refused with 400.  Same checks, headers,
limits and authentication as the main file routes, whose code they use.
"""

from __future__ import annotations

from typing import Any

from workbench.errors import BadRequest
from workbench.handlers.files import FilesAPIHandler, MultipartHandler
from workbench.handlers.sessions import SESSION_ID
from workbench.workspace import MAX_LIST_LIMIT, FileEntry, Workspace


class CompatListHandler(FilesAPIHandler):
    async def get(self, session_id: str) -> None:
        self.check_refusal()
        workspace = await self.open_workspace(session_id, "file-list", None)
        entries = await self.blocking(top_level_files, workspace)
        self.write_json([compat_entry(entry, session_id) for entry in entries])


class CompatDownloadHandler(FilesAPIHandler):
    async def get(self, session_id: str, filename: str) -> None:
        self.check_refusal()
        if "/" in filename:
            msg = "Invalid filename format."
            raise BadRequest(msg)
        workspace = await self.open_workspace(session_id, "file-download", filename)
        await self.send_file(workspace, filename)


class CompatUploadHandler(MultipartHandler):
    max_files = 1

    async def post(self, session_id: str) -> None:
        self.check_refusal()
        (entry,) = await self.upload.finish()
        self.write_json(compat_entry(entry, session_id))


def top_level_files(workspace: Workspace) -> list[FileEntry]:
    """The regular files at the top of the workspace (no folders, links or FIFOs), sorted by name."""
    files: list[FileEntry] = []
    offset, total = 0, 1
    while offset < total:
        page, total = workspace.list("", limit=MAX_LIST_LIMIT, offset=offset)
        files += [entry for entry in page if entry.type == "file"]
        offset += MAX_LIST_LIMIT
    return files


def compat_entry(entry: FileEntry, session_id: str) -> dict[str, Any]:
    shown = entry.to_json()
    return {"name": shown["name"], "session_id": session_id, "size": entry.size, "modified": entry.modified}


default_handlers = [
    (rf"/api/v1/files/list/{SESSION_ID}", CompatListHandler),
    (rf"/api/v1/files/download/{SESSION_ID}/(?P<filename>.+)", CompatDownloadHandler),
    (rf"/api/v1/files/upload/{SESSION_ID}", CompatUploadHandler),
]
