"""The session workspace on the host: a symlink-safe, synchronous file library.

The workspace directory is bind-mounted read-write at ``/data`` in the kernel's container, so the kernel
(hostile code, for all we know) controls its contents and can change them while a request is in flight:
symlinks to anywhere, FIFOs, sockets, very deep trees, names that are not UTF-8, a folder swapped for a link.

So nothing here ever resolves a host path below the workspace root.  Every operation opens the root once
and walks the request's path one component at a time with ``openat(O_DIRECTORY | O_NOFOLLOW)``; files are
opened with ``O_NOFOLLOW | O_NONBLOCK`` and must ``fstat`` as regular files; files and folders are created,
renamed, listed and removed relative to directory fds, never following a link.  A link is an ordinary entry:
it is listed as ``symlink``, and renaming or deleting it acts on the link itself.

The functions are blocking: the HTTP handlers call them from a thread pool, and turn the
:class:`~workbench.errors.WorkbenchError` they raise into JSON errors.  Messages name the request's path,
never a host path.

Decisions worth knowing:

* Paths are NFC-normalized.  A backslash is refused (it is a separator to Windows clients, so a name with
  one is ambiguous); so are C0 control characters and DEL, lone surrogates, ``.``, ``..`` and empty
  components.  Names the kernel made that break these rules (non-NFC, undecodable, with a newline) are
  still listed, but cannot be addressed one by one; deleting their folder recursively removes them.
* A listing never follows links and descends at most :data:`MAX_COMPONENTS` levels; a recursive listing
  that would hold more than :data:`MAX_LIST_SCAN` entries is refused (list a sub-folder instead).
* Upload content checks (see :func:`check_content`) exist for xlsx, xls, parquet, json and the text types;
  an extension an operator allows that has no check is accepted as it is.  JSON files over
  :data:`JSON_PARSE_LIMIT` are not parsed in full (that would take gigabytes of server memory): they must
  decode as UTF-8 and open and close with a matching bracket.
* A refused or aborted upload leaves nothing behind: not its temporary file, nor the parent folders it
  made (those still empty are removed again).  Uploads in progress are written in :data:`PARTIAL_DIR`, a
  folder at the top of the workspace that is never listed and that no path may name; what a killed server
  left there is removed at the next start (:func:`clear_partial_uploads`).
* The upload quota counts allocated blocks (``st_blocks * 512``, hard links once) of the whole tree when
  the upload starts, plus the bytes written so far (on a workspace file system of its own: the file
  system's count of used blocks).  Concurrent uploads to one workspace each see the usage at their own
  start.  A :class:`UsageMeter` given to the workspace answers that figure instead of a walk (the server
  caches it, see :mod:`workbench.usage`).
* :meth:`Workspace.rename` refuses to replace an existing target atomically with
  ``renameat2(RENAME_NOREPLACE)``; where the C library or the file system lacks it, it falls back to a
  check-then-rename (the kernel could create the target in between; it would then be replaced, which stays
  inside the workspace).
"""

from __future__ import annotations

import codecs
import contextlib
import ctypes
import errno
import functools
import json
import mimetypes
import os
import re
import secrets
import stat
import types
import unicodedata
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, Protocol

from workbench.errors import BadRequest, Conflict, NotFound, TooLarge, UnsupportedType, WorkbenchError

__all__ = [
    "MAX_COMPONENTS",
    "MAX_NAME_BYTES",
    "EntryType",
    "FileEntry",
    "PathWalk",
    "Upload",
    "UsageMeter",
    "Workspace",
    "check_content",
    "clear_partial_uploads",
    "mime_type",
    "normalize_path",
    "wipe",
]

MAX_COMPONENTS = 64
"""Most components in a path (and deepest level a listing descends to)."""
MAX_NAME_BYTES = 255
"""Longest component, in UTF-8 bytes (the limit of Linux file systems)."""
MAX_LIST_LIMIT = 10_000
"""Largest page of a listing."""
MAX_LIST_SCAN = 200_000
"""Most entries one listing gathers before it is refused."""
JSON_PARSE_LIMIT = 16 * 1024 * 1024
"""JSON uploads up to this size are parsed in full; larger ones get a lighter check."""
UPLOAD_PREFIX = ".upload-"
UPLOAD_SUFFIX = ".part"
PARTIAL_DIR = ".workbench-partial"
"""Folder at the top of a workspace that holds the uploads in progress; no route lists or reaches it."""
PARTIAL_DIR_MODE = 0o700
FILE_MODE = 0o664
DIR_MODE = 0o775

EntryType = Literal["file", "directory", "symlink", "other"]
_Ident = tuple[int, int]

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
_CREATE_FLAGS = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_NOCTTY | os.O_CLOEXEC
_CHUNK = 1024 * 1024
_MAX_RETRIES = 1000


# ---------------------------------------------------------------------------------------------- names


def normalize_path(path: str, *, allow_root: bool = False) -> tuple[str, ...]:
    """Check a client's workspace-relative path and split it into NFC-normalized components.

    ``""`` is the workspace root, accepted only with ``allow_root`` (it gives ``()``).  Raises
    :class:`BadRequest` for anything that could name something outside the workspace or that is not a
    plain name.  ``%2e%2e`` is an ordinary name here: URL decoding is the handler's business.
    """
    if not isinstance(path, str):
        raise BadRequest("the path must be a string")
    if path == "":
        if allow_root:
            return ()
        raise BadRequest("the path is empty")
    if len(path) > MAX_COMPONENTS * (MAX_NAME_BYTES + 1):
        raise BadRequest("the path is too long")
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in path):
        raise BadRequest("the path contains a NUL or control character")
    text = unicodedata.normalize("NFC", path)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise BadRequest("the path is not valid Unicode") from None
    if "\\" in text:
        raise BadRequest(f"backslashes are not allowed in paths: {text}")
    if text.startswith("/"):
        raise BadRequest(f"absolute paths are not allowed: {text}")
    parts = tuple(text.split("/"))
    if len(parts) > MAX_COMPONENTS:
        raise BadRequest(f"the path has more than {MAX_COMPONENTS} components")
    if parts[0] == PARTIAL_DIR:
        raise BadRequest(f"{PARTIAL_DIR} is reserved for uploads in progress")
    for part in parts:
        _check_name(part, text)
    return parts


def _check_name(part: str, text: str) -> None:
    if part == "":
        raise BadRequest(f"empty component in path: {text}")
    if part in {".", ".."}:
        raise BadRequest(f"'.' and '..' are not allowed in paths: {text}")
    if len(part.encode("utf-8")) > MAX_NAME_BYTES:
        raise BadRequest(f"a name in the path is longer than {MAX_NAME_BYTES} bytes")


def _join(parts: tuple[str, ...] | list[str]) -> str:
    return "/".join(parts)


def _extension(name: str) -> str:
    return os.path.splitext(name)[1].lower().lstrip(".")


def _printable(text: str) -> str:
    """Text that any JSON encoder takes: undecodable bytes (surrogate escapes) become U+FFFD."""
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace").decode("utf-8")


# ---------------------------------------------------------------------------------------------- entries

_MIME = mimetypes.MimeTypes()  # built-in table only: the answer does not depend on the host's mime.types
_MIME_OVERRIDES = {
    ".xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    ".xls": "application/vnd.ms-excel",
    ".parquet": "application/vnd.apache.parquet",
    ".csv": "text/csv",
    ".tsv": "text/tab-separated-values",
    ".json": "application/json",
    ".txt": "text/plain",
    ".md": "text/markdown",
}


def mime_type(name: str) -> str | None:
    """The media type of a file name, judged by its (final) extension only, or ``None``."""
    ext = os.path.splitext(name)[1].lower()
    if not ext:
        return None
    if ext in _MIME_OVERRIDES:
        return _MIME_OVERRIDES[ext]
    return _MIME.types_map[True].get(ext) or _MIME.types_map[False].get(ext)


def _iso(timestamp: float) -> str:
    try:
        moment = datetime.fromtimestamp(timestamp, UTC)
    except (OverflowError, OSError, ValueError):
        moment = datetime.max.replace(tzinfo=UTC) if timestamp > 0 else datetime.min.replace(tzinfo=UTC)
    return moment.replace(microsecond=0, tzinfo=None).isoformat() + "Z"


@dataclass
class FileEntry:
    """One entry of the workspace, as stat'ed without following links."""

    name: str
    path: str
    type: EntryType
    size: int
    modified: str
    mime: str | None

    def to_json(self) -> dict[str, str | int | None]:
        return {
            "name": _printable(self.name),
            "path": _printable(self.path),
            "type": self.type,
            "size": self.size,
            "modified": self.modified,
            "mime": self.mime,
        }


def _entry(name: str, path: str, st: os.stat_result) -> FileEntry:
    mode = st.st_mode
    kind: EntryType
    if stat.S_ISREG(mode):
        return FileEntry(name, path, "file", st.st_size, _iso(st.st_mtime), mime_type(name))
    if stat.S_ISDIR(mode):
        kind = "directory"
    elif stat.S_ISLNK(mode):
        kind = "symlink"
    else:
        kind = "other"
    return FileEntry(name, path, kind, 0, _iso(st.st_mtime), None)


def _ident(st: os.stat_result) -> _Ident:
    return (st.st_dev, st.st_ino)


# ---------------------------------------------------------------------------------------------- errors


def _os_error(exc: OSError, shown: str) -> WorkbenchError:
    """The API error for a failed system call on the entry the client calls ``shown``."""
    code = exc.errno
    if code == errno.ENOENT:
        return NotFound(f"no such file or folder: {shown}")
    if code == errno.ELOOP:
        return BadRequest(f"{shown} is a symbolic link; links are not followed")
    if code == errno.ENOTDIR:
        return NotFound(f"no such file or folder: {shown}")
    if code == errno.EISDIR:
        return Conflict(f"{shown} is a folder")
    if code in {errno.EEXIST, errno.ENOTEMPTY}:
        return Conflict(f"{shown} already exists")
    if code in {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}:
        return TooLarge("no space left for the workspace")
    if code in {errno.EACCES, errno.EPERM}:
        return BadRequest(f"permission denied: {shown}")
    if code == errno.ENAMETOOLONG:
        return BadRequest("a name in the path is too long")
    if code in {errno.EINVAL, errno.EXDEV, errno.EBUSY}:
        return BadRequest(f"invalid operation on {shown}")
    return WorkbenchError(f"file operation failed on {shown}")


def _component_error(exc: OSError, parent_fd: int, name: str, shown: str, *, create: bool) -> WorkbenchError:
    """The API error for a path component that could not be opened as a folder."""
    if exc.errno not in {errno.ENOTDIR, errno.ELOOP}:
        return _os_error(exc, shown)
    try:
        st = os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
    except OSError:
        return NotFound(f"no such folder: {shown}")
    if stat.S_ISLNK(st.st_mode):
        return BadRequest(f"{shown} is a symbolic link; links are not followed")
    if create:
        return Conflict(f"{shown} exists and is not a folder")
    return NotFound(f"no such folder: {shown}")


# ---------------------------------------------------------------------------------------------- fd helpers


def _close(fd: int) -> None:
    with contextlib.suppress(OSError):
        os.close(fd)


def _open_subdir(parent_fd: int, name: str) -> int:
    return os.open(name, _DIR_FLAGS, dir_fd=parent_fd)


def _lstat_at(parent_fd: int, name: str) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def _read_at(fd: int, size: int, offset: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        piece = os.pread(fd, size - len(data), offset + len(data))
        if not piece:
            break
        data += piece
    return bytes(data)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


# ---------------------------------------------------------------------------------------------- tree walks


@dataclass
class _Frame:
    name: str
    ident: _Ident
    pending: list[str] | None = None


class _TreeWalk:
    """An iterative depth-first walk below an open directory that holds one directory fd at a time.

    It descends only through real directories (``O_DIRECTORY | O_NOFOLLOW``) and climbs back through
    ``..``, checking that it lands on the very directory it came from; so it handles trees deeper than the
    recursion limit, ``PATH_MAX`` or the fd limit, and it cannot leave the tree, even if the tree is
    rearranged meanwhile (it then starts again from the top, a bounded number of times).
    """

    max_restarts = 16

    def __init__(self, top_fd: int) -> None:
        self.top_fd = top_fd

    def scan(self, fd: int) -> list[str]:
        """Handle the entries of the directory ``fd``; return the names of its subdirectories."""
        raise NotImplementedError

    def open_child(self, fd: int, name: str) -> int | None:
        try:
            return _open_subdir(fd, name)
        except OSError:
            return None

    def leave(self, parent_fd: int, frame: _Frame) -> bool:
        """Called in ``parent_fd`` once ``frame``'s folder is done; True asks for a rescan of the parent."""
        return False

    def restart(self) -> None:
        """Called before the walk starts again from the top."""

    def run(self) -> None:
        for _ in range(self.max_restarts):
            if self._run_once():
                return
            self.restart()
        raise Conflict("the folder kept changing during the operation")

    def _run_once(self) -> bool:
        cur = os.dup(self.top_fd)
        stack = [_Frame("", _ident(os.fstat(cur)))]
        try:
            while True:
                frame = stack[-1]
                if frame.pending is None:
                    frame.pending = self.scan(cur)
                if frame.pending:
                    name = frame.pending.pop()
                    child = self.open_child(cur, name)
                    if child is not None:
                        os.close(cur)
                        cur = child
                        stack.append(_Frame(name, _ident(os.fstat(cur))))
                    continue
                if len(stack) == 1:
                    return True
                parent = self._climb(cur, stack)
                if parent is None:
                    return False
                os.close(cur)
                cur = parent
                done = stack.pop()
                if self.leave(cur, done):
                    stack[-1].pending = None
        finally:
            os.close(cur)

    def _climb(self, cur: int, stack: list[_Frame]) -> int | None:
        if len(stack) == 2:
            return os.dup(self.top_fd)
        try:
            parent = os.open("..", _DIR_FLAGS, dir_fd=cur)
        except OSError:
            return None
        if _ident(os.fstat(parent)) != stack[-2].ident:
            os.close(parent)
            return None
        return parent


class PathWalk(_TreeWalk):
    """A walk that knows where it is: ``path`` holds the folder names from the top to the current one."""

    def __init__(self, top_fd: int) -> None:
        super().__init__(top_fd)
        self.path: list[str] = []

    def restart(self) -> None:
        self.path = []

    def open_child(self, fd: int, name: str) -> int | None:
        child = super().open_child(fd, name)
        if child is not None:
            self.path.append(name)
        return child

    def leave(self, parent_fd: int, frame: _Frame) -> bool:
        self.path.pop()
        return False


class _UsageWalk(_TreeWalk):
    """Adds up the allocated blocks of a tree (hard-linked files once)."""

    def __init__(self, top_fd: int) -> None:
        super().__init__(top_fd)
        self.total = 0
        self.seen: set[_Ident] = set()
        self.restart()

    def restart(self) -> None:
        self.total = os.fstat(self.top_fd).st_blocks * 512
        self.seen = set()

    def scan(self, fd: int) -> list[str]:
        subdirs: list[str] = []
        try:
            with os.scandir(fd) as entries:
                for entry in entries:
                    self._count(entry, subdirs)
        except OSError:
            pass  # an unreadable folder (only possible when not root) counts as its own blocks
        return subdirs

    def _count(self, entry: os.DirEntry[str], subdirs: list[str]) -> None:
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError:
            return
        if stat.S_ISDIR(st.st_mode):
            subdirs.append(entry.name)
        elif st.st_nlink > 1:
            if _ident(st) in self.seen:
                return
            self.seen.add(_ident(st))
        self.total += st.st_blocks * 512


class _RemoveWalk(_TreeWalk):
    """Empties a tree bottom-up: unlinks every non-directory (links themselves) and removes every folder."""

    def __init__(self, top_fd: int) -> None:
        super().__init__(top_fd)
        self.retries = 0

    def scan(self, fd: int) -> list[str]:
        _make_writable(fd)
        subdirs: list[str] = []
        with os.scandir(fd) as entries:
            for entry in entries:
                if _unlink_unless_dir(fd, entry):
                    subdirs.append(entry.name)
        return subdirs

    def open_child(self, fd: int, name: str) -> int | None:
        return _open_for_removal(fd, name)

    def leave(self, parent_fd: int, frame: _Frame) -> bool:
        try:
            os.rmdir(frame.name, dir_fd=parent_fd)
        except FileNotFoundError:
            return False
        except OSError as exc:
            if exc.errno not in {errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR}:
                raise
            self.retries += 1
            if self.retries > _MAX_RETRIES:
                raise Conflict("files keep appearing in the folder being deleted") from exc
            return True  # something appeared (or was swapped in): scan the parent again
        return False


def _make_writable(fd: int) -> None:
    """Let the owner read, write and search a folder about to be emptied (it may be ``chmod 000``)."""
    mode = os.fstat(fd).st_mode
    if mode & 0o700 != 0o700:
        with contextlib.suppress(OSError):  # if this fails, the unlinks report the real problem
            os.fchmod(fd, 0o700)


def _unlink_unless_dir(fd: int, entry: os.DirEntry[str]) -> bool:
    """Unlink a non-directory entry (a link itself, never its target); True if the entry is a folder."""
    try:
        if entry.is_dir(follow_symlinks=False):
            return True
        os.unlink(entry.name, dir_fd=fd)
    except FileNotFoundError:
        return False
    except IsADirectoryError:
        return True  # swapped for a folder since it was read
    return False


def _open_for_removal(parent_fd: int, name: str) -> int | None:
    """Open a subfolder to empty it; a name that is no folder (any more) is unlinked instead."""
    try:
        return _open_subdir(parent_fd, name)
    except FileNotFoundError:
        return None
    except PermissionError:
        return _open_after_chmod(parent_fd, name)
    except OSError as exc:
        if exc.errno not in {errno.ENOTDIR, errno.ELOOP}:
            raise
    with contextlib.suppress(FileNotFoundError, IsADirectoryError):  # else the parent's rescan sees it
        os.unlink(name, dir_fd=parent_fd)
    return None


def _open_after_chmod(parent_fd: int, name: str) -> int | None:
    """Open a folder we may not read (``chmod 000``, and we are not root) after giving its owner rwx.

    The mode is changed through an ``O_PATH`` handle of the folder itself (never through a link), via its
    ``/proc/self/fd`` entry, since ``fchmod`` does not take ``O_PATH`` handles.
    """
    try:
        handle = os.open(name, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent_fd)
    except OSError:
        return None
    try:
        os.chmod(f"/proc/self/fd/{handle}", 0o700)
    finally:
        os.close(handle)
    try:
        return _open_subdir(parent_fd, name)
    except (FileNotFoundError, NotADirectoryError):
        return None


def _remove_dir(parent_fd: int, name: str) -> None:
    """Remove the folder ``name`` of ``parent_fd`` and everything below it, never following a link."""
    fd = _open_for_removal(parent_fd, name)
    if fd is None:
        return
    try:
        for _ in range(_TreeWalk.max_restarts):
            _RemoveWalk(fd).run()
            try:
                os.rmdir(name, dir_fd=parent_fd)
            except FileNotFoundError:
                return
            except OSError as exc:
                if exc.errno not in {errno.ENOTEMPTY, errno.EEXIST}:
                    raise
            else:
                return
        raise Conflict("files keep appearing in the folder being deleted")
    finally:
        os.close(fd)


def clear_partial_uploads(workspaces: Path, *, before: float) -> int:
    """Remove what :data:`PARTIAL_DIR` of every workspace holds from before ``before`` (a time stamp): the
    uploads a killed server left behind.  Newer entries belong to uploads of the running server.  Returns
    how many entries were removed."""
    removed = 0
    try:
        names = os.listdir(workspaces)
    except FileNotFoundError:
        return 0
    for name in names:
        try:
            root = os.open(Path(workspaces) / name / PARTIAL_DIR, _DIR_FLAGS)
        except OSError:
            continue  # no uploads ever, or not a folder of ours
        try:
            removed += _clear_stale(root, before)
        finally:
            os.close(root)
    return removed


def _clear_stale(fd: int, before: float) -> int:
    removed = 0
    with os.scandir(fd) as entries:
        stale = [e for e in entries if e.stat(follow_symlinks=False).st_mtime < before]
    for entry in stale:
        with contextlib.suppress(OSError, WorkbenchError):
            if entry.is_dir(follow_symlinks=False):
                _remove_dir(fd, entry.name)
            else:
                os.unlink(entry.name, dir_fd=fd)
            removed += 1
    return removed


def wipe(root: Path) -> None:
    """Remove a whole workspace directory (a session was deleted or expired); nothing if it is gone.

    Works on fds only, iteratively: trees deeper than the recursion limit and ``PATH_MAX``, ``chmod 000``
    folders, millions of files, names that are not UTF-8.  Links are unlinked, never followed, whatever
    the kernel does meanwhile.  ``root`` itself is a host path chosen by the server, and trusted.
    """
    root = Path(root)
    if root.name in {"", ".", ".."}:
        raise ValueError("wipe() needs the path of a workspace directory")
    try:
        parent = os.open(root.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        return
    try:
        st = _lstat_at(parent, root.name)
        if st is None:
            return
        if not stat.S_ISDIR(st.st_mode):
            os.unlink(root.name, dir_fd=parent)
            return
        _remove_dir(parent, root.name)
    finally:
        os.close(parent)


# ------------------------------------------------------------------------------------------ content checks

_OLE2_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
_PARQUET_MAGIC = b"PAR1"
_BINARY_CHARS = re.compile("[\x00-\x08\x0e-\x19\x1c-\x1f]")  # C0 controls but \t \n \v \f \r, SUB, ESC


def _is_xlsx(fd: int, size: int) -> bool:
    """A zip whose central directory lists ``[Content_Types].xml``; nothing is extracted."""
    with os.fdopen(os.dup(fd), "rb") as file:
        try:
            if not zipfile.is_zipfile(file):
                return False
            file.seek(0)
            with zipfile.ZipFile(file) as archive:
                return "[Content_Types].xml" in archive.namelist()
        except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError, RuntimeError):
            return False


def _is_xls(fd: int, size: int) -> bool:
    return _read_at(fd, len(_OLE2_MAGIC), 0) == _OLE2_MAGIC


def _is_parquet(fd: int, size: int) -> bool:
    return (
        size >= 2 * len(_PARQUET_MAGIC)
        and _read_at(fd, 4, 0) == _PARQUET_MAGIC
        and _read_at(fd, 4, size - 4) == _PARQUET_MAGIC
    )


def _is_json(fd: int, size: int) -> bool:
    if size > JSON_PARSE_LIMIT:
        return _looks_like_json(fd)
    try:
        json.loads(_read_at(fd, size, 0).decode("utf-8-sig"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return False
    return True


def _looks_like_json(fd: int) -> bool:
    """The check of a JSON file too large to parse: UTF-8, no NUL, ``{...}`` or ``[...]``."""
    decoder = codecs.getincrementaldecoder("utf-8-sig")("strict")
    first = last = ""
    offset = 0
    try:
        while True:
            chunk = os.pread(fd, _CHUNK, offset)
            offset += len(chunk)
            text = decoder.decode(chunk, not chunk).strip()
            if "\x00" in text:
                return False
            if text:
                first = first or text[0]
                last = text[-1]
            if not chunk:
                return (first, last) in {("{", "}"), ("[", "]")}
    except UnicodeDecodeError:
        return False


def _is_text(fd: int, size: int) -> bool:
    """UTF-8 (with or without BOM), UTF-16 with BOM, or GB18030, without NUL or binary control bytes."""
    head = _read_at(fd, 4, 0)
    encodings: tuple[str, ...]
    if head.startswith(codecs.BOM_UTF8):
        encodings = ("utf-8-sig",)
    elif head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        encodings = ("utf-16",)
    else:
        encodings = ("utf-8", "gb18030")
    return any(_decodes_as_text(fd, encoding) for encoding in encodings)


def _decodes_as_text(fd: int, encoding: str) -> bool:
    decoder = codecs.getincrementaldecoder(encoding)("strict")
    offset = 0
    try:
        while True:
            chunk = os.pread(fd, _CHUNK, offset)
            offset += len(chunk)
            if _BINARY_CHARS.search(decoder.decode(chunk, not chunk)):
                return False
            if not chunk:
                return True
    except UnicodeDecodeError:
        return False


_CHECKS: dict[str, Callable[[int, int], bool]] = {
    "xlsx": _is_xlsx,
    "xls": _is_xls,
    "parquet": _is_parquet,
    "json": _is_json,
    "csv": _is_text,
    "tsv": _is_text,
    "txt": _is_text,
    "md": _is_text,
}


def check_content(fd: int, extension: str) -> None:
    """Raise :class:`UnsupportedType` unless the file open at ``fd`` (readable) matches ``extension``.

    Extensions without a check pass.  Reads with ``pread``; the xlsx check moves the fd's offset.
    """
    ext = extension.lower().lstrip(".")
    check = _CHECKS.get(ext)
    if check is not None and not check(fd, os.fstat(fd).st_size):
        raise UnsupportedType(f"the content is not a valid .{ext} file")


# ---------------------------------------------------------------------------------------------- uploads


class Upload:
    """An upload in progress: a temporary file in :data:`PARTIAL_DIR`, renamed into the target folder by
    :meth:`commit` (so a partial file is never listed, even after a crash; see :func:`clear_partial_uploads`).

    Made by :meth:`Workspace.begin_upload`.  Use it as a context manager (or call :meth:`abort`): leaving
    the block without a commit removes the temporary file and closes the fds.
    """

    def __init__(
        self,
        *,
        dir_fd: int,
        temp_dir_fd: int,
        fd: int,
        temp_name: str,
        parts: tuple[str, ...],
        max_bytes: int,
        quota_bytes: int,
        base_usage: int,
        cleanup: Callable[[], None] | None = None,
        label: str = "workspace",
        on_commit: Callable[[int], None] | None = None,
    ) -> None:
        self._on_commit = on_commit
        self._dir_fd = dir_fd
        self._temp_dir_fd = temp_dir_fd
        self._cleanup = cleanup
        self._fd = fd
        self._temp = temp_name
        self._ident = _ident(os.fstat(fd))
        self.name = parts[-1]
        self.path = _join(parts)
        self._max_bytes = max_bytes
        self._quota_bytes = quota_bytes
        self._base_usage = base_usage
        self._label = label
        self.written = 0
        self._state: Literal["open", "committed", "aborted"] = "open"

    def __enter__(self) -> Upload:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: types.TracebackType | None,
    ) -> None:
        self.abort()

    def write(self, chunk: bytes) -> None:
        """Append a chunk; :class:`TooLarge` (and the upload aborted) past the size limit or the quota."""
        self._require_open()
        total = self.written + len(chunk)
        if total > self._max_bytes:
            self.abort()
            raise TooLarge(f"the file is larger than the upload limit ({_size(self._max_bytes)})")
        if self._base_usage + total > self._quota_bytes:
            self.abort()
            raise TooLarge(f"the {self._label} quota ({_size(self._quota_bytes)}) would be exceeded")
        try:
            _write_all(self._fd, chunk)
        except OSError as exc:
            self.abort()
            raise _os_error(exc, self.path) from exc
        self.written = total

    def commit(self) -> FileEntry:
        """Check the content, then rename the file into place (replacing a regular file only)."""
        self._require_open()
        try:
            check_content(self._fd, _extension(self.name))
            self._check_target()
            os.fsync(self._fd)
            st = os.fstat(self._fd)
            self._check_temp()
            os.rename(self._temp, self.name, src_dir_fd=self._temp_dir_fd, dst_dir_fd=self._dir_fd)
        except WorkbenchError:
            self.abort()
            raise
        except OSError as exc:
            self.abort()
            raise _os_error(exc, self.path) from exc
        self._state = "committed"
        if self._on_commit is not None:
            self._on_commit(st.st_blocks * 512)
        with contextlib.suppress(OSError):
            os.fsync(self._dir_fd)
        self._close()
        return _entry(self.name, self.path, st)

    def abort(self) -> None:
        """Remove the temporary file (and the folders made for it) and close the fds; idempotent."""
        if self._state != "open":
            return
        self._state = "aborted"
        try:
            st = _lstat_at(self._temp_dir_fd, self._temp)
            if st is not None and _ident(st) == self._ident:
                os.unlink(self._temp, dir_fd=self._temp_dir_fd)
        except OSError:
            pass
        finally:
            self._close()
        if self._cleanup is not None:
            self._cleanup()  # the parent folders this upload created, if still empty

    @property
    def finished(self) -> bool:
        return self._state != "open"

    def _require_open(self) -> None:
        if self._state != "open":
            raise RuntimeError(f"the upload is already {self._state}")

    def _check_target(self) -> None:
        st = _lstat_at(self._dir_fd, self.name)
        if st is not None and not stat.S_ISREG(st.st_mode):
            raise Conflict(f"{self.path} exists and is not a regular file")

    def _check_temp(self) -> None:
        st = _lstat_at(self._temp_dir_fd, self._temp)
        if st is None or _ident(st) != self._ident:
            raise Conflict("the upload's temporary file was moved or replaced")

    def _close(self) -> None:
        for fd in (self._fd, self._dir_fd, self._temp_dir_fd):
            _close(fd)
        self._fd = self._dir_fd = self._temp_dir_fd = -1


def _size(n: int) -> str:
    return f"{n / (1024 * 1024):g} MiB"


# ---------------------------------------------------------------------------------------------- renameat2

_RENAME_NOREPLACE = 1


def _load_renameat2() -> Any:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        function = libc.renameat2
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    function.restype = ctypes.c_int
    return function


_renameat2 = _load_renameat2()


def _rename_noreplace(src_dir: int, src: str, dst_dir: int, dst: str) -> None:
    """``renameat(2)`` that fails with ``FileExistsError`` rather than replace ``dst``."""
    if _renameat2 is not None:
        if _renameat2(src_dir, os.fsencode(src), dst_dir, os.fsencode(dst), _RENAME_NOREPLACE) == 0:
            return
        code = ctypes.get_errno()
        if code not in {errno.EINVAL, errno.ENOSYS, errno.ENOTSUP}:
            raise OSError(code, os.strerror(code))
    # No RENAME_NOREPLACE here (or EINVAL, which may also mean "into itself": os.rename tells).  Race: the
    # kernel may create dst between the check and the rename and see it replaced; that stays in the workspace.
    if _lstat_at(dst_dir, dst) is not None:
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST))
    os.rename(src, dst, src_dir_fd=src_dir, dst_dir_fd=dst_dir)


# ---------------------------------------------------------------------------------------------- workspace

_Entries = list[FileEntry]
_Created = list[int]  # indexes of the path components an operation created


class UsageMeter(Protocol):
    """Where a workspace's usage comes from, for the upload quota (blocking calls, on a thread)."""

    def usage(self, workspace: Workspace) -> int:
        """Bytes the workspace uses."""

    def charge(self, workspace: Workspace, nbytes: int) -> None:
        """An upload added ``nbytes`` to the workspace."""


class Workspace:
    """One session's workspace directory on the host.  Every call resolves paths afresh from the root.

    The same safe layer serves any other tree of user files (a tenant's library): ``label`` names the
    tree in error messages.
    """

    label = "workspace"

    def __init__(
        self,
        root: Path,
        *,
        quota_bytes: int,
        max_upload_bytes: int,
        allowed_extensions: tuple[str, ...],
        owner: tuple[int, int] | None = None,
        meter: UsageMeter | None = None,
    ) -> None:
        self.root = Path(root)
        self.meter = meter
        self.quota_bytes = quota_bytes
        self.max_upload_bytes = max_upload_bytes
        extensions = {e.strip().lower().lstrip(".") for e in allowed_extensions}
        self.allowed_extensions = tuple(sorted(extensions - {""}))
        self.owner = owner

    # -- reading

    def list(
        self, path: str = "", *, recursive: bool = False, limit: int = MAX_LIST_LIMIT, offset: int = 0
    ) -> tuple[_Entries, int]:
        """A page of the entries of a folder (all levels with ``recursive``), sorted by path, and their count.

        Links are listed as ``symlink`` and never followed or descended into.  A path naming a file (or a
        link) lists that one entry.
        """
        if not 1 <= limit <= MAX_LIST_LIMIT:
            raise BadRequest(f"limit must be between 1 and {MAX_LIST_LIMIT}")
        if offset < 0:
            raise BadRequest("offset must not be negative")
        parts = normalize_path(path, allow_root=True)
        entries = self._gather(parts, recursive=recursive)
        entries.sort(key=lambda entry: entry.path)
        return entries[offset : offset + limit], len(entries)

    def stat(self, path: str) -> FileEntry:
        """The entry at ``path``, not following a link."""
        parts = normalize_path(path)
        with self._folder(parts[:-1]) as parent:
            st = _lstat_at(parent, parts[-1])
        if st is None:
            raise NotFound(f"no such file or folder: {_join(parts)}")
        return _entry(parts[-1], _join(parts), st)

    def open_for_download(self, path: str) -> tuple[int, FileEntry]:
        """An fd (blocking, read-only; the caller closes it) of the regular file at ``path``, and its entry.

        Links, folders, FIFOs, sockets and devices are refused (a FIFO fails at once, it is never waited on).
        """
        parts = normalize_path(path)
        shown = _join(parts)
        with self._folder(parts[:-1]) as parent:
            st = _lstat_at(parent, parts[-1])
            if st is None:
                raise NotFound(f"no such file: {shown}")
            _require_regular(st, shown)
            try:
                fd = os.open(parts[-1], _READ_FLAGS, dir_fd=parent)
            except OSError as exc:
                raise _os_error(exc, shown) from exc
        try:
            st = os.fstat(fd)
            _require_regular(st, shown)
            os.set_blocking(fd, True)
        except BaseException:
            os.close(fd)
            raise
        return fd, _entry(parts[-1], shown, st)

    def usage_bytes(self) -> int:
        """Allocated bytes (``st_blocks * 512``) of the whole tree, links not followed, hard links once.

        A workspace that is a file system of its own (see :mod:`workbench.volumes`) answers with the file
        system's own figure of used blocks instead, without a tree walk.
        """
        with self._folder(()) as root:
            if os.stat("..", dir_fd=root).st_dev != os.fstat(root).st_dev:
                fs = os.fstatvfs(root)
                return (fs.f_blocks - fs.f_bfree) * fs.f_frsize
            walk = _UsageWalk(root)
            walk.run()
            return walk.total

    # -- writing

    def begin_upload(self, path: str, *, check_type: bool = True) -> Upload:
        """Start an upload to ``path``: check the name, create the parent folders and a temporary file.

        Without ``check_type`` any extension is taken (the content check of a known one still applies).
        """
        parts = normalize_path(path)
        if check_type:
            self._check_extension(parts[-1])
        base_usage = self.usage_bytes() if self.meter is None else self.meter.usage(self)
        if base_usage >= self.quota_bytes:
            raise TooLarge(f"the {self.label} is over its quota ({_size(self.quota_bytes)})")
        created: _Created = []
        dir_fd = self._open_folder(parts[:-1], create=True, created=created)
        temp_dir_fd = -1
        try:
            st = _lstat_at(dir_fd, parts[-1])
            if st is not None and not stat.S_ISREG(st.st_mode):
                raise Conflict(f"{_join(parts)} exists and is not a regular file")
            temp_dir_fd = self._open_partial_dir()
            temp, fd = self._create_temp(temp_dir_fd, _join(parts))
        except BaseException:
            os.close(dir_fd)
            _close(temp_dir_fd)
            self._prune(parts[:-1], created)
            raise
        return Upload(
            dir_fd=dir_fd,
            temp_dir_fd=temp_dir_fd,
            fd=fd,
            temp_name=temp,
            parts=parts,
            max_bytes=self.max_upload_bytes,
            quota_bytes=self.quota_bytes,
            base_usage=base_usage,
            label=self.label,
            cleanup=(lambda: self._prune(parts[:-1], created)) if created else None,
            on_commit=None if self.meter is None else functools.partial(self.meter.charge, self),
        )

    def rename(self, path: str, new_path: str) -> FileEntry:
        """Move ``path`` (a link: the link itself) to ``new_path``, creating its parents; 409 if it exists."""
        src = normalize_path(path)
        dst = normalize_path(new_path)
        if dst == src:
            raise Conflict(f"{_join(dst)} already exists")
        if dst[: len(src)] == src:
            raise BadRequest(f"{_join(src)} can't be moved into itself")
        with self._folder(src[:-1]) as src_dir:
            if _lstat_at(src_dir, src[-1]) is None:
                raise NotFound(f"no such file or folder: {_join(src)}")
            created: _Created = []
            dst_dir = self._open_folder(dst[:-1], create=True, created=created)
            try:
                self._move(src_dir, src, dst_dir, dst)
                st = _lstat_at(dst_dir, dst[-1])
            except WorkbenchError:
                self._prune(dst[:-1], created)
                raise
            finally:
                os.close(dst_dir)
        if st is None:
            raise NotFound(f"no such file or folder: {_join(dst)}")
        return _entry(dst[-1], _join(dst), st)

    def delete(self, path: str, *, recursive: bool = False) -> None:
        """Delete a file or a link (the link only), or a folder and all it holds with ``recursive``."""
        parts = normalize_path(path, allow_root=True)
        if not parts:
            raise BadRequest("the workspace root can't be deleted")
        shown = _join(parts)
        with self._folder(parts[:-1]) as parent:
            st = _lstat_at(parent, parts[-1])
            if st is None:
                raise NotFound(f"no such file or folder: {shown}")
            if stat.S_ISDIR(st.st_mode) and not recursive:
                raise Conflict(f"{shown} is a folder: delete it with recursive=true")
            try:
                if stat.S_ISDIR(st.st_mode):
                    _remove_dir(parent, parts[-1])
                else:
                    os.unlink(parts[-1], dir_fd=parent)
            except OSError as exc:
                raise _os_error(exc, shown) from exc

    # -- helpers

    def _gather(self, parts: tuple[str, ...], *, recursive: bool) -> _Entries:
        entries: _Entries = []
        if not parts:
            with self._folder(()) as root:
                self._collect(root, (), entries, recursive=recursive, strict=True)
            return entries
        shown = _join(parts)
        with self._folder(parts[:-1]) as parent:
            st = _lstat_at(parent, parts[-1])
            if st is None:
                raise NotFound(f"no such file or folder: {shown}")
            if not stat.S_ISDIR(st.st_mode):
                return [_entry(parts[-1], shown, st)]
            try:
                fd = _open_subdir(parent, parts[-1])
            except OSError as exc:
                raise _component_error(exc, parent, parts[-1], shown, create=False) from exc
        try:
            self._collect(fd, parts, entries, recursive=recursive, strict=True)
        finally:
            os.close(fd)
        return entries

    def _collect(
        self, fd: int, prefix: tuple[str, ...], out: _Entries, *, recursive: bool, strict: bool
    ) -> None:
        try:
            scanner = os.scandir(fd)
        except OSError as exc:
            if not strict:
                return  # a sub-folder we can't read (only when not root): listed, not descended into
            raise _os_error(exc, _join(prefix) or "the workspace") from exc
        with scanner:
            for item in scanner:
                if not prefix and item.name == PARTIAL_DIR:
                    continue
                try:
                    st = item.stat(follow_symlinks=False)
                except OSError:
                    continue  # gone since the folder was read
                child = (*prefix, item.name)
                out.append(_entry(item.name, _join(child), st))
                if len(out) > MAX_LIST_SCAN:
                    raise TooLarge(f"more than {MAX_LIST_SCAN} entries: list a sub-folder")
                if recursive and stat.S_ISDIR(st.st_mode) and len(child) < MAX_COMPONENTS:
                    self._descend(fd, item.name, st, child, out)

    def _descend(self, fd: int, name: str, st: os.stat_result, child: tuple[str, ...], out: _Entries) -> None:
        try:
            sub = _open_subdir(fd, name)
        except OSError:
            return  # swapped for a link or removed since it was read: not descended into
        try:
            if _ident(os.fstat(sub)) == _ident(st):
                self._collect(sub, child, out, recursive=True, strict=False)
        finally:
            os.close(sub)

    def _check_extension(self, name: str) -> None:
        ext = _extension(name)
        if ext not in self.allowed_extensions:
            allowed = ", ".join("." + e for e in self.allowed_extensions)
            raise UnsupportedType(f"files of this type can't be uploaded: {name} (allowed: {allowed})")

    @contextlib.contextmanager
    def _partial_parent(self) -> Iterator[int]:
        """An fd of the folder holding :data:`PARTIAL_DIR`: the workspace's root."""
        with self._folder(()) as root:
            yield root

    def _open_partial_dir(self) -> int:
        """An fd of :data:`PARTIAL_DIR`, made (private to the server) if missing; whatever else the kernel
        put under that name is removed first."""
        with self._partial_parent() as root:
            for _ in range(3):
                with contextlib.suppress(FileExistsError):
                    os.mkdir(PARTIAL_DIR, PARTIAL_DIR_MODE, dir_fd=root)
                try:
                    return _open_subdir(root, PARTIAL_DIR)
                except OSError as exc:
                    if exc.errno not in {errno.ENOTDIR, errno.ELOOP, errno.ENOENT}:
                        raise _os_error(exc, "the upload folder") from exc
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(PARTIAL_DIR, dir_fd=root)
        raise Conflict("could not create a temporary file for the upload")

    def _create_temp(self, dir_fd: int, shown: str) -> tuple[str, int]:
        for _ in range(16):
            temp = f"{UPLOAD_PREFIX}{secrets.token_hex(8)}{UPLOAD_SUFFIX}"
            try:
                fd = os.open(temp, _CREATE_FLAGS, FILE_MODE, dir_fd=dir_fd)
            except FileExistsError:
                continue
            except OSError as exc:
                raise _os_error(exc, shown) from exc
            try:
                self._adopt(fd, FILE_MODE)
            except BaseException:
                os.close(fd)
                os.unlink(temp, dir_fd=dir_fd)
                raise
            return temp, fd
        raise Conflict("could not create a temporary file for the upload")

    def _move(self, src_dir: int, src: tuple[str, ...], dst_dir: int, dst: tuple[str, ...]) -> None:
        try:
            _rename_noreplace(src_dir, src[-1], dst_dir, dst[-1])
        except FileExistsError as exc:
            raise Conflict(f"{_join(dst)} already exists") from exc
        except OSError as exc:
            if exc.errno == errno.ENOTEMPTY:
                raise Conflict(f"{_join(dst)} already exists") from exc
            if exc.errno == errno.EINVAL:
                raise BadRequest(f"{_join(src)} can't be moved to {_join(dst)}") from exc
            raise _os_error(exc, _join(src)) from exc

    def _adopt(self, fd: int, mode: int) -> None:
        """Give a new file or folder its mode (whatever the umask) and, if set, the kernel's uid and gid."""
        os.fchmod(fd, mode)
        if self.owner is not None:
            os.fchown(fd, *self.owner)

    @contextlib.contextmanager
    def _folder(self, parts: tuple[str, ...], *, create: bool = False) -> Iterator[int]:
        fd = self._open_folder(parts, create=create)
        try:
            yield fd
        finally:
            os.close(fd)

    def _open_folder(self, parts: tuple[str, ...], *, create: bool, created: _Created | None = None) -> int:
        """An fd of the folder at ``parts``, reached one real folder at a time from the root (no links).

        With ``create``, missing folders are made, and their indexes in ``parts`` added to ``created``.
        """
        fd = self._open_root()
        try:
            for i, name in enumerate(parts):
                child, made = self._enter(fd, name, _join(parts[: i + 1]), create=create)
                os.close(fd)
                fd = child
                if made and created is not None:
                    created.append(i)
        except BaseException:
            _close(fd)
            raise
        return fd

    def _open_root(self) -> int:
        try:
            return os.open(self.root, _DIR_FLAGS)
        except FileNotFoundError as exc:
            raise NotFound(f"the {self.label} does not exist") from exc
        except OSError as exc:
            raise WorkbenchError(f"the {self.label} can't be opened") from exc

    def _enter(self, fd: int, name: str, shown: str, *, create: bool) -> tuple[int, bool]:
        created = False
        if create:
            try:
                os.mkdir(name, DIR_MODE, dir_fd=fd)
                created = True
            except FileExistsError:
                pass
            except OSError as exc:
                raise _os_error(exc, shown) from exc
        try:
            child = _open_subdir(fd, name)
        except OSError as exc:
            raise _component_error(exc, fd, name, shown, create=create) from exc
        if created:
            try:
                self._adopt(child, DIR_MODE)
            except BaseException:
                os.close(child)
                raise
        return child, created

    def _prune(self, parts: tuple[str, ...], created: _Created) -> None:
        """Remove the folders an operation created (deepest first), as long as they are still empty."""
        for i in sorted(created, reverse=True):
            try:
                with self._folder(parts[:i]) as parent:
                    os.rmdir(parts[i], dir_fd=parent)
            except (OSError, WorkbenchError):
                return


def _require_regular(st: os.stat_result, shown: str) -> None:
    if stat.S_ISREG(st.st_mode):
        return
    if stat.S_ISDIR(st.st_mode):
        raise BadRequest(f"{shown} is a folder, not a file")
    if stat.S_ISLNK(st.st_mode):
        raise BadRequest(f"{shown} is a symbolic link; links are not followed")
    raise BadRequest(f"{shown} is not a regular file")
