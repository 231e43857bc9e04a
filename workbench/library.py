"""The tenant file library: files a team uploads once and reads from every session at ``/library``.

Each tenant (the admin token is one too) has one library directory, ``STATE_DIR/library/<tenant key>``.
It is served by the same symlink-safe layer as workspaces (:class:`~workbench.workspace.Workspace`: dir-fd
resolution, no link followed, NFC names, upload type and content checks, size limit), with its own quota.
The server alone writes it; kernels see it read-only (see :mod:`workbench.kernels.library_mount`).  Files
are owned by the server's user and world-readable, folders world-searchable, so the kernel's unprivileged
user can read them but not change them, even without the read-only mount.

Publishing a session's file copies its bytes (read from a regular file opened without following links),
so whatever a kernel plants in its workspace (links, FIFOs, hard links) never becomes part of a library.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Callable, Iterator

from workbench.tokens import TENANT_NAME
from workbench.workspace import FileEntry, Workspace

__all__ = ["LIBRARY_DIR_MODE", "UPLOADS_DIR", "Library", "copy_file", "library_key"]

LIBRARY_DIR_MODE = 0o755
UPLOADS_DIR = ".uploads"
"""Beside the tenants' libraries: ``UPLOADS_DIR/<key>`` holds each library's uploads in progress."""
_COPY_CHUNK = 1024 * 1024


def library_key(tenant: str) -> str:
    """The directory name of a tenant's library: the tenant's name (already a safe name), else a digest."""
    if TENANT_NAME.fullmatch(tenant):
        return tenant
    return "x-" + hashlib.sha256(tenant.encode("utf-8", "surrogateescape")).hexdigest()[:32]


class Library(Workspace):
    """One tenant's library directory; made on first use."""

    label = "library"

    def ensure(self) -> None:
        """Create the library directory (and its parent) if missing; blocking."""
        self.root.parent.mkdir(mode=0o711, parents=True, exist_ok=True)
        try:
            self.root.mkdir(mode=LIBRARY_DIR_MODE)
        except FileExistsError:
            return
        self.root.chmod(LIBRARY_DIR_MODE)

    @contextlib.contextmanager
    def _partial_parent(self) -> Iterator[int]:
        """Uploads in progress wait outside the library, which kernels list at ``/library``."""
        parent = self.root.parent / UPLOADS_DIR / self.root.name
        parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            yield fd
        finally:
            os.close(fd)

    def publish(self, source: Workspace, path: str, target: str) -> FileEntry:
        """Copy the regular file ``path`` of ``source`` to ``target`` here (blocking).

        Checked like an upload, except for the allowed extensions: the name rules, the size limit, the
        library's quota, the content check of the target's extension (when it has one), and the target
        must not be a folder or a link.
        """
        fd, _ = source.open_for_download(path)
        try:
            with self.begin_upload(target, check_type=False) as upload:
                copy_file(fd, upload.write)
                return upload.commit()
        finally:
            os.close(fd)


def copy_file(fd: int, write: Callable[[bytes], None]) -> None:
    """Feed the bytes of the open file ``fd`` to ``write``, a chunk at a time, from its start."""
    offset = 0
    while chunk := os.pread(fd, _COPY_CHUNK, offset):
        write(chunk)
        offset += len(chunk)
