"""Whole-workspace zip archives: written as a stream, extracted all-or-nothing.  Blocking; run on a thread.

Writing (:func:`write_archive`) walks the folder with the workspace's dir-fd walker: only real folders
and regular files go in (links, FIFOs, sockets and devices are left out, never followed or opened), and
the zip is handed to ``emit`` in chunks of about 1 MiB as it is made (zip64, data descriptors: nothing
needs to seek back), so memory does not grow with the workspace.

Extracting (:func:`extract_archive`) trusts nothing in the archive:

* before anything is parsed, the end-of-central-directory record bounds the entry count
  (:data:`MAX_ENTRIES`) and the size of the central directory;
* then every entry of the central directory is checked before a byte is extracted: names follow the
  workspace's path rules (no absolute paths, ``..``, backslashes: no zip-slip), no link, FIFO or device
  entries, no encryption, known compression methods only, a compression ratio of at most
  :data:`MAX_RATIO` for entries over :data:`RATIO_FLOOR` bytes (no zip bombs), no name used twice, the total
  size within the workspace's quota, and no top-level name that already exists in the target folder;
* the entries are extracted into a private temporary folder in the target folder (mode 0700, owned by the
  server: the kernel can't look in or interfere), while the bytes actually written are counted against
  the declared sizes and the quota;
* only then are the top-level entries moved into place (``RENAME_NOREPLACE``); if one move fails, the ones
  already moved are moved back.  On any failure the temporary folder is removed: the workspace is as it
  was.

The archive's files are not type-checked (like the files the kernel writes, they are the workspace's own;
restoring a saved workspace must give back its charts and models too).
"""

from __future__ import annotations

import contextlib
import os
import stat
import struct
import time
import zipfile
import zlib
from collections.abc import Callable
from typing import IO, Any

from workbench.errors import BadRequest, Conflict, TooLarge, WorkbenchError
from workbench.workspace import (
    _CHUNK,
    _CREATE_FLAGS,
    _DIR_FLAGS,
    _READ_FLAGS,
    MAX_COMPONENTS,
    FileEntry,
    PathWalk,
    Workspace,
    _entry,
    _ident,
    _join,
    _lstat_at,
    _os_error,
    _remove_dir,
    _rename_noreplace,
    _write_all,
    normalize_path,
)

__all__ = ["MAX_ENTRIES", "MAX_RATIO", "RATIO_FLOOR", "Extracted", "extract_archive", "write_archive"]

MAX_ENTRIES = 20_000
"""Most entries (files and folders) an uploaded archive may hold."""
MAX_RATIO = 100
"""Largest compression ratio (size / compressed size) of an entry over :data:`RATIO_FLOOR` bytes."""
RATIO_FLOOR = 1024 * 1024
MAX_DIRECTORY_BYTES = 32 * 1024 * 1024
"""Largest central directory an uploaded archive may declare."""
TEMP_PREFIX = ".archive-"
_METHODS = {zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA}
_CORRUPT = (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, ValueError, struct.error)
_EOCD = b"PK\x05\x06"
_ZIP64_LOCATOR = b"PK\x06\x07"
_ZIP64_EOCD = b"PK\x06\x06"

Extracted = tuple[list[FileEntry], int, int]
"""The top-level entries placed, and the number and total size of the files extracted."""


# ---------------------------------------------------------------------------------------------- writing


class _Chunks:
    """A write-only, unseekable stream handing its bytes on in chunks of about ``_CHUNK``."""

    def __init__(self, emit: Callable[[bytes], None]) -> None:
        self.emit = emit
        self.buffer = bytearray()

    def write(self, data: bytes, /) -> int:
        self.buffer += data
        if len(self.buffer) >= _CHUNK:
            self.flush()
        return len(data)

    def flush(self) -> None:
        if self.buffer:
            self.emit(bytes(self.buffer))
            self.buffer.clear()

    def close(self) -> None:
        """Nothing to close: :func:`write_archive` hands on the last bytes."""


class _ArchiveWalk(PathWalk):
    """Adds every real folder and regular file below the top folder to ``archive``, sorted by name."""

    max_restarts = 1

    def __init__(self, top_fd: int, archive: zipfile.ZipFile) -> None:
        super().__init__(top_fd)
        self.archive = archive

    def scan(self, fd: int) -> list[str]:
        with os.scandir(fd) as scanner:
            items = sorted(scanner, key=lambda item: item.name)
        folders: list[str] = []
        for item in items:
            if _writable_name(item.name):
                self._add(fd, item, folders)
        return folders[::-1]  # the walk takes them from the end

    def _add(self, fd: int, item: os.DirEntry[str], folders: list[str]) -> None:
        try:
            st = item.stat(follow_symlinks=False)
        except OSError:
            return
        name = _join([*self.path, item.name])
        if stat.S_ISDIR(st.st_mode):
            self.archive.writestr(_info(name + "/", st, 0o40755), b"")
            if len(self.path) + 1 < MAX_COMPONENTS:
                folders.append(item.name)
        elif stat.S_ISREG(st.st_mode):
            self._add_file(fd, item.name, name, st)

    def _add_file(self, fd: int, entry_name: str, name: str, st: os.stat_result) -> None:
        try:
            source = os.open(entry_name, _READ_FLAGS, dir_fd=fd)
        except OSError:
            return  # gone, or swapped for a link or a FIFO since the folder was read
        try:
            if _ident(os.fstat(source)) != _ident(st):
                return
            os.set_blocking(source, True)
            with self.archive.open(_info(name, st, 0o100644), "w", force_zip64=True) as out:
                while chunk := os.read(source, _CHUNK):
                    out.write(chunk)
        finally:
            os.close(source)

    def restart(self) -> None:
        raise Conflict("the folder changed while it was being archived")


def _writable_name(name: str) -> bool:
    """Names a zip can hold as UTF-8 (the kernel may make undecodable ones: they are left out)."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _info(name: str, st: os.stat_result, mode: int) -> zipfile.ZipInfo:
    moment = time.localtime(min(max(st.st_mtime, 315532800), 4354819199))  # zip: years 1980 to 2107
    info = zipfile.ZipInfo(name, date_time=moment[:6])
    info.external_attr = mode << 16
    info.compress_type = zipfile.ZIP_DEFLATED
    return info


def write_archive(workspace: Workspace, path: str, emit: Callable[[bytes], None]) -> None:
    """Zip the folder ``path`` of ``workspace`` (names relative to it), handing the bytes to ``emit``."""
    parts = normalize_path(path, allow_root=True)
    stream = _Chunks(emit)
    with workspace._folder(parts) as top:
        with zipfile.ZipFile(stream, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
            _ArchiveWalk(top, archive).run()
        stream.flush()


# ---------------------------------------------------------------------------------------------- checking


def _declared_size(file: IO[bytes]) -> tuple[int, int]:
    """The entry count and central-directory size the end record declares, read before any parsing."""
    end = file.seek(0, os.SEEK_END)
    start = max(0, end - (22 + 65535))
    file.seek(start)
    tail = file.read(end - start)
    at = tail.rfind(_EOCD)
    if at < 0 or len(tail) - at < 22:
        raise BadRequest("the body is not a zip archive", code="bad-archive")
    entries, directory = struct.unpack_from("<HI", tail, at + 10)
    locator = at - 20
    zip64 = entries == 0xFFFF or directory == 0xFFFFFFFF
    if zip64 and locator >= 0 and tail[locator : locator + 4] == _ZIP64_LOCATOR:
        (offset,) = struct.unpack_from("<Q", tail, locator + 8)
        file.seek(offset)
        record = file.read(56)
        if len(record) == 56 and record[:4] == _ZIP64_EOCD:
            entries, directory = struct.unpack_from("<QQ", record, 32)
    return entries, directory


def _check_bounds(file: IO[bytes]) -> None:
    entries, directory = _declared_size(file)
    if entries > MAX_ENTRIES:
        raise TooLarge(f"the archive has more than {MAX_ENTRIES} entries", code="too-many-entries")
    if directory > MAX_DIRECTORY_BYTES:
        raise TooLarge("the archive's directory is too large", code="too-many-entries")


def _check_entry(info: zipfile.ZipInfo) -> tuple[tuple[str, ...], bool]:
    """The path of an entry and whether it is a folder; refuses anything unsafe."""
    folder = info.filename.endswith("/")
    try:
        parts = normalize_path(info.filename[:-1] if folder else info.filename)
    except BadRequest as exc:
        raise BadRequest(f"unsafe name in the archive: {exc.message}", code="unsafe-archive") from None
    mode = info.external_attr >> 16
    kind = stat.S_IFMT(mode)
    if stat.S_ISLNK(mode) or kind not in {0, stat.S_IFREG, stat.S_IFDIR}:
        raise BadRequest(f"the archive holds a link or special file: {_join(parts)}", code="unsafe-archive")
    if info.flag_bits & 0x1:
        raise BadRequest(f"encrypted entries are not supported: {_join(parts)}", code="bad-archive")
    if info.compress_type not in _METHODS:
        raise BadRequest(f"unsupported compression in the archive: {_join(parts)}", code="bad-archive")
    if info.file_size > RATIO_FLOOR and info.file_size > MAX_RATIO * max(info.compress_size, 1):
        raise TooLarge(f"{_join(parts)} is compressed more than 1:{MAX_RATIO}", code="compression-ratio")
    return parts, folder or kind == stat.S_IFDIR


class _Plan:
    """The checked entries of an archive, in a safe order (folders before what they hold)."""

    def __init__(self, archive: zipfile.ZipFile) -> None:
        infos = archive.infolist()
        if len(infos) > MAX_ENTRIES:
            raise TooLarge(f"the archive has more than {MAX_ENTRIES} entries", code="too-many-entries")
        self.folders: set[tuple[str, ...]] = set()
        self.files: dict[tuple[str, ...], zipfile.ZipInfo] = {}
        for info in infos:
            parts, folder = _check_entry(info)
            self._add(parts, info, folder)
        self.size = sum(info.file_size for info in self.files.values())
        self.top = sorted({parts[0] for parts in (*self.folders, *self.files)})

    def _add(self, parts: tuple[str, ...], info: zipfile.ZipInfo, folder: bool) -> None:
        """Refuse a name given twice, as a file and a folder, or a file that other entries are inside."""
        clash = parts in self.files or (not folder and parts in self.folders)
        if clash or any(parts[:i] in self.files for i in range(1, len(parts))):
            raise BadRequest(f"the archive uses a name twice: {_join(parts)}", code="unsafe-archive")
        self.folders.update(parts[:i] for i in range(1, len(parts)))
        if folder:
            self.folders.add(parts)
        else:
            self.files[parts] = info


# ---------------------------------------------------------------------------------------------- extracting


def extract_archive(workspace: Workspace, file: IO[bytes], path: str) -> Extracted:
    """Extract the zip in ``file`` into the folder ``path`` of ``workspace`` (made if missing): all or
    nothing."""
    parts = normalize_path(path, allow_root=True)
    _check_bounds(file)
    file.seek(0)
    try:
        with zipfile.ZipFile(file) as archive:
            plan = _Plan(archive)
            _check_quota(workspace, plan.size)
            return _Extraction(workspace, archive, plan, parts).run()
    except _CORRUPT as exc:
        raise BadRequest(f"the archive is damaged: {exc}", code="bad-archive") from None


def _check_quota(workspace: Workspace, size: int) -> None:
    if workspace.usage_bytes() + size > workspace.quota_bytes:
        raise TooLarge(f"the archive ({size} bytes unpacked) would exceed the {workspace.label} quota")


class _Extraction:
    def __init__(
        self, workspace: Workspace, archive: zipfile.ZipFile, plan: _Plan, target: tuple[str, ...]
    ) -> None:
        self.workspace = workspace
        self.archive = archive
        self.plan = plan
        self.target = target
        self.budget = workspace.quota_bytes - workspace.usage_bytes()
        self.written = 0

    def run(self) -> Extracted:
        created: list[int] = []
        target_fd = self.workspace._open_folder(self.target, create=True, created=created)
        try:
            self._check_free(target_fd)
            temp = self._make_temp(target_fd)
            try:
                entries = self._fill_and_place(target_fd, temp)
            finally:
                _remove_dir(target_fd, temp)
        except BaseException:
            os.close(target_fd)
            self.workspace._prune(self.target, created)
            raise
        os.close(target_fd)
        return entries, len(self.plan.files), self.written

    def _check_free(self, target_fd: int) -> None:
        for name in self.plan.top:
            if _lstat_at(target_fd, name) is not None:
                raise Conflict(f"{_join((*self.target, name))} already exists")

    def _make_temp(self, target_fd: int) -> str:
        name = f"{TEMP_PREFIX}{os.urandom(8).hex()}.part"
        try:
            os.mkdir(name, 0o700, dir_fd=target_fd)
        except OSError as exc:
            raise _os_error(exc, _join(self.target) or "the workspace") from exc
        return name

    def _fill_and_place(self, target_fd: int, temp: str) -> list[FileEntry]:
        temp_fd = os.open(temp, _DIR_FLAGS, dir_fd=target_fd)
        try:
            for folder in sorted(self.plan.folders, key=len):
                self._folder(temp_fd, folder)
            for parts, info in self.plan.files.items():
                self._file(temp_fd, parts, info)
            return self._place(temp_fd, target_fd)
        finally:
            os.close(temp_fd)

    def _folder(self, temp_fd: int, parts: tuple[str, ...]) -> None:
        with self._parent(temp_fd, parts) as parent:
            self._create(lambda: os.mkdir(parts[-1], 0o700, dir_fd=parent), parts)
            fd = os.open(parts[-1], _DIR_FLAGS, dir_fd=parent)
            try:
                self.workspace._adopt(fd, 0o775)
            finally:
                os.close(fd)

    def _file(self, temp_fd: int, parts: tuple[str, ...], info: zipfile.ZipInfo) -> None:
        with self._parent(temp_fd, parts) as parent:
            fd = self._create(lambda: os.open(parts[-1], _CREATE_FLAGS, 0o600, dir_fd=parent), parts)
            try:
                self.workspace._adopt(fd, 0o664)
                self._copy(info, fd, parts)
                with contextlib.suppress(OverflowError, ValueError, OSError):  # a nonsense date: "now"
                    stamp = time.mktime((*info.date_time, 0, 0, -1))
                    os.utime(fd, (stamp, stamp))
            finally:
                os.close(fd)

    def _copy(self, info: zipfile.ZipInfo, fd: int, parts: tuple[str, ...]) -> None:
        size = 0
        with self.archive.open(info) as source:
            while chunk := source.read(_CHUNK):
                size += len(chunk)
                self.written += len(chunk)
                if size > info.file_size:
                    raise BadRequest(f"{_join(parts)} is larger than the archive says", code="bad-archive")
                if self.written > self.budget:
                    raise TooLarge(f"the archive would exceed the {self.workspace.label} quota")
                try:
                    _write_all(fd, chunk)
                except OSError as exc:
                    raise _os_error(exc, _join(parts)) from exc

    def _place(self, temp_fd: int, target_fd: int) -> list[FileEntry]:
        moved: list[str] = []
        try:
            for name in self.plan.top:
                _rename_noreplace(temp_fd, name, target_fd, name)
                moved.append(name)
        except OSError as exc:
            for name in moved:  # put back what was moved: nothing of the archive stays
                with contextlib.suppress(OSError):
                    _rename_noreplace(target_fd, name, temp_fd, name)
            if isinstance(exc, FileExistsError):
                raise Conflict(f"{_join((*self.target, name))} already exists") from exc
            raise _os_error(exc, _join(self.target) or "the workspace") from exc
        return [self._placed(target_fd, name) for name in moved]

    def _placed(self, target_fd: int, name: str) -> FileEntry:
        st = _lstat_at(target_fd, name)
        assert st is not None
        return _entry(name, _join((*self.target, name)), st)

    @contextlib.contextmanager
    def _parent(self, temp_fd: int, parts: tuple[str, ...]) -> Any:
        fd = os.dup(temp_fd)
        try:
            for name in parts[:-1]:
                child = os.open(name, _DIR_FLAGS, dir_fd=fd)
                os.close(fd)
                fd = child
            yield fd
        finally:
            os.close(fd)

    def _create(self, make: Callable[[], Any], parts: tuple[str, ...]) -> Any:
        try:
            return make()
        except OSError as exc:
            error: WorkbenchError = _os_error(exc, _join(parts))
            raise error from exc
