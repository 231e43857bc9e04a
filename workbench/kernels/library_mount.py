"""How a kernel sees its tenant's library at ``/library``, read-only, always current.

Cold start (what the session manager does today): the tenant's library directory is bind-mounted
read-only at ``/library`` when the container is created (:func:`library_mount`).  A bind mount shows the
directory itself, so every upload, rename or delete the server makes there is visible in every running
kernel at once, without a restart.

Warm pool (a container started before its tenant is known can't gain a mount once it runs): every pooled
container gets its own *slot* directory, ``SLOTS/<slot>``, bind-mounted at ``/library`` read-only with
``rslave`` propagation (:func:`slot_mount`); ``SLOTS`` is made a shared mount point once at start
(:func:`prepare_slots`).  When a slot is claimed for a tenant, the server mounts the tenant's library on the
slot directory (:func:`attach_library`); the mount propagates into the container, on top of its
``/library``.  The new mount is built detached and made read-only (and ``nosuid``, ``nodev``, ``noexec``)
*before* it is attached, with the kernel's mount API (``open_tree``, ``mount_setattr``, ``move_mount``), so
the copy the container receives is read-only from birth (a plain ``mount --bind`` then ``remount,ro``
would propagate a writable copy first, and a remount does not propagate).  :func:`detach_library` undoes
it when the slot is recycled.  This needs the server to run as root in the engine's mount namespace.

In both cases the kernel (no capabilities, ``no-new-privileges``) can't remount or unmount ``/library``,
and the files are owned by the server's user, not the kernel's, so even the file modes forbid writes.
The functions here are blocking: run them on a thread.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from pathlib import Path

from docker.types import Mount

__all__ = [
    "LIBRARY_MOUNT_POINT",
    "attach_library",
    "detach_library",
    "library_mount",
    "prepare_slots",
    "release_slots",
    "slot_mount",
]

LIBRARY_MOUNT_POINT = "/library"

_SYS_OPEN_TREE = 428  # the same number on every architecture (since Linux 5.2)
_SYS_MOVE_MOUNT = 429
_SYS_MOUNT_SETATTR = 442
_AT_FDCWD = -100
_AT_EMPTY_PATH = 0x1000
_AT_RECURSIVE = 0x8000
_OPEN_TREE_CLONE = 1
_MOVE_MOUNT_F_EMPTY_PATH = 0x4
_MOUNT_ATTR_LOCKED_DOWN = 0x1 | 0x2 | 0x4 | 0x8  # read-only, nosuid, nodev, noexec
_MS_BIND = 0x1000
_MS_SHARED = 1 << 20
_MNT_DETACH = 2
_MNT_PLAIN = 0

_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)


class _MountAttr(ctypes.Structure):
    _fields_ = [
        ("attr_set", ctypes.c_uint64),
        ("attr_clr", ctypes.c_uint64),
        ("propagation", ctypes.c_uint64),
        ("userns_fd", ctypes.c_uint64),
    ]


def library_mount(library: Path) -> Mount:
    """A cold-started kernel's ``/library``: the tenant's library directory, read-only."""
    return Mount(LIBRARY_MOUNT_POINT, str(library), type="bind", read_only=True)


def slot_mount(slot: Path) -> Mount:
    """A pooled kernel's ``/library``: its slot directory, read-only, receiving mounts made on it later."""
    return Mount(LIBRARY_MOUNT_POINT, str(slot), type="bind", read_only=True, propagation="rslave")


def prepare_slots(root: Path) -> None:
    """Make ``root`` (created if missing) a shared mount point, so mounts below it reach the containers."""
    root.mkdir(mode=0o711, parents=True, exist_ok=True)
    if not _mounted_on(root):
        _check(_libc.mount(os.fsencode(root), os.fsencode(root), None, _MS_BIND, None), root)
    _check(_libc.mount(b"none", os.fsencode(root), None, _MS_SHARED, None), root)


def release_slots(root: Path) -> None:
    """Undo :func:`prepare_slots` (the mounts below ``root`` go with it)."""
    _check(_libc.umount2(os.fsencode(root), _MNT_DETACH), root)


def attach_library(slot: Path, library: Path) -> None:
    """Mount ``library`` read-only on the slot directory ``slot`` (and so at the slot's ``/library``)."""
    tree = _syscall(_SYS_OPEN_TREE, _AT_FDCWD, os.fsencode(library), _OPEN_TREE_CLONE | os.O_CLOEXEC)
    _check(tree, library)
    try:
        attr = _MountAttr(attr_set=_MOUNT_ATTR_LOCKED_DOWN)
        result = _syscall(_SYS_MOUNT_SETATTR, tree, b"", _AT_EMPTY_PATH | _AT_RECURSIVE,
                          ctypes.byref(attr), ctypes.sizeof(attr))  # fmt: skip
        _check(result, library)
        result = _syscall(_SYS_MOVE_MOUNT, tree, b"", _AT_FDCWD, os.fsencode(slot), _MOVE_MOUNT_F_EMPTY_PATH)
        _check(result, slot)
    finally:
        os.close(tree)


def detach_library(slot: Path) -> None:
    """Unmount whatever library is mounted on ``slot`` (nothing if none is), in the containers too.

    A plain unmount, which propagates to the slot's containers; a lazy one would not, and would leave the
    old tenant's library in them.  ``EBUSY`` (a process still uses it) is raised: such a slot must be
    discarded with its container, never handed to another tenant.
    """
    while _mounted_on(slot):
        _check(_libc.umount2(os.fsencode(slot), _MNT_PLAIN), slot)


def _mounted_on(path: Path) -> bool:
    """Whether something is mounted on ``path`` (``os.path.ismount`` misses binds within one file system)."""
    with open("/proc/self/mountinfo", "rb") as table:
        points = {line.split()[4] for line in table}
    escaped = os.fsencode(path.absolute())
    for char in b"\\ \t\n":
        escaped = escaped.replace(bytes([char]), b"\\%03o" % char)
    return escaped in points


def _syscall(number: int, *args: object) -> int:
    result: int = _libc.syscall(ctypes.c_long(number), *args)
    return result


def _check(result: int, path: Path) -> None:
    if result < 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), str(path))
