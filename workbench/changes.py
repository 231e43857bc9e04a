"""What a run did to the workspace: a snapshot of its regular files before and after, and their difference.

A snapshot maps each regular file's path to ``(size, mtime_ns, inode)``; it is taken with the workspace's
dir-fd walker (no link followed, no way out of the tree) and costs one ``lstat`` per entry, so a workspace of
10,000 files is scanned in a few milliseconds per run (``bench/changes.py`` prints the figures).  Only the
files reported as created or modified and smaller than a limit are read, to give their SHA-256, and each is
opened again from the root one real folder at a time (``O_NOFOLLOW``), so a link swapped in meanwhile is
never followed.

Links, FIFOs and the like are not files here: they are left out of the change-set, and so are the
temporary files of uploads in flight.  A file rewritten with the same size within the file system's
timestamp granularity (a few milliseconds) of the "before" snapshot, on the same inode, can go unnoticed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import stat
from typing import Any

from workbench.workspace import (
    UPLOAD_PREFIX,
    UPLOAD_SUFFIX,
    PathWalk,
    _close,
    _printable,
    mime_type,
)

Stamp = tuple[int, int, int]  # size, mtime_ns, inode
Parts = tuple[str, ...]

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
HASH_BUDGET = 64 * 1024 * 1024
"""Most bytes hashed for one change-set (past it, entries come without ``sha256``)."""


class TooManyFiles(Exception):
    """The workspace holds more files than a snapshot may take."""


@dataclasses.dataclass(frozen=True)
class ChangeLimits:
    max_files: int = 100_000
    max_entries: int = 300
    hash_max_bytes: int = 1024 * 1024


@dataclasses.dataclass
class Snapshot:
    files: dict[Parts, Stamp]
    complete: bool = True


class _SnapshotWalk(PathWalk):
    def __init__(self, top_fd: int, max_files: int) -> None:
        super().__init__(top_fd)
        self.max_files = max_files
        self.files: dict[Parts, Stamp] = {}

    def restart(self) -> None:
        super().restart()
        self.files = {}

    def scan(self, fd: int) -> list[str]:
        subdirs: list[str] = []
        prefix = tuple(self.path)
        try:
            entries = os.scandir(fd)
        except OSError:
            return subdirs
        with entries:
            for entry in entries:
                try:
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                if stat.S_ISDIR(st.st_mode):
                    subdirs.append(entry.name)
                elif stat.S_ISREG(st.st_mode) and not _upload_temp(entry.name):
                    self.files[(*prefix, entry.name)] = (st.st_size, st.st_mtime_ns, st.st_ino)
                    if len(self.files) > self.max_files:
                        raise TooManyFiles
        return subdirs


def _upload_temp(name: str) -> bool:
    return name.startswith(UPLOAD_PREFIX) and name.endswith(UPLOAD_SUFFIX)


def snapshot(root: str | os.PathLike[str], max_files: int) -> Snapshot:
    """The regular files below ``root`` (blocking).  Past ``max_files``, an incomplete, empty snapshot."""
    try:
        top = os.open(root, _DIR_FLAGS)
    except OSError:
        return Snapshot({}, complete=False)
    try:
        walk = _SnapshotWalk(top, max_files)
        walk.run()
        return Snapshot(walk.files)
    except TooManyFiles:
        return Snapshot({}, complete=False)
    except Exception:  # a tree that keeps changing (Conflict), or a vanished workspace
        return Snapshot({}, complete=False)
    finally:
        os.close(top)


def diff(
    root: str | os.PathLike[str], before: Snapshot, after: Snapshot, limits: ChangeLimits
) -> dict[str, Any]:
    """The change-set (blocking): ``created``, ``modified``, ``deleted`` (sorted by path, at most
    ``max_entries`` in all), ``truncated`` and the full ``counts``."""
    if not (before.complete and after.complete):
        return {
            "created": [],
            "modified": [],
            "deleted": [],
            "truncated": True,
            "counts": None,
            "reason": f"not scanned: more than {limits.max_files} files, or the tree kept changing",
        }
    old, new = before.files, after.files
    groups = {
        "created": sorted(parts for parts in new if parts not in old),
        "modified": sorted(parts for parts, stamp in new.items() if parts in old and old[parts] != stamp),
        "deleted": sorted(parts for parts in old if parts not in new),
    }
    counts = {name: len(items) for name, items in groups.items()}
    room = limits.max_entries
    hasher = _Hasher(root, limits.hash_max_bytes)
    answer: dict[str, Any] = {}
    for name, items in groups.items():
        kept = items[:room]
        room -= len(kept)
        source = old if name == "deleted" else new
        answer[name] = [
            _describe(parts, source[parts], None if name == "deleted" else hasher) for parts in kept
        ]
    hasher.close()
    answer["truncated"] = sum(counts.values()) > limits.max_entries
    answer["counts"] = counts
    return answer


def _describe(parts: Parts, stamp: Stamp, hasher: _Hasher | None) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "path": _printable("/".join(parts)),
        "size": stamp[0],
        "mime": mime_type(parts[-1]),
    }
    digest = hasher.sha256(parts, stamp) if hasher is not None else None
    if digest is not None:
        entry["sha256"] = digest
    return entry


class _Hasher:
    """SHA-256 of small files, each opened from the root without following links."""

    def __init__(self, root: str | os.PathLike[str], max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.budget = HASH_BUDGET
        self.top: int | None = None
        with contextlib.suppress(OSError):
            self.top = os.open(root, _DIR_FLAGS)

    def sha256(self, parts: Parts, stamp: Stamp) -> str | None:
        size = stamp[0]
        if self.top is None or size > self.max_bytes or size > self.budget:
            return None
        self.budget -= size
        fd = self._open(parts)
        if fd is None:
            return None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or st.st_ino != stamp[2] or st.st_size > self.max_bytes:
                return None
            digest = hashlib.sha256()
            while chunk := os.read(fd, 1024 * 1024):
                digest.update(chunk)
            return digest.hexdigest()
        except OSError:
            return None
        finally:
            os.close(fd)

    def _open(self, parts: Parts) -> int | None:
        assert self.top is not None
        fd = os.dup(self.top)
        try:
            for name in parts[:-1]:
                child = os.open(name, _DIR_FLAGS, dir_fd=fd)
                os.close(fd)
                fd = child
            target = os.open(parts[-1], _READ_FLAGS, dir_fd=fd)
        except OSError:
            _close(fd)
            return None
        os.close(fd)
        os.set_blocking(target, True)
        return target

    def close(self) -> None:
        if self.top is not None:
            os.close(self.top)
