"""The kernel's socket files, reached without following anything the kernel controls.

The runtime directory is the kernel's: it may swap a socket file for a link (to another session's socket,
to a host path), a directory or a FIFO at any time.  So each socket file is opened once, without following
links, and checked to be a socket; the server then connects through ``/proc/self/fd/N`` links kept in a
directory the kernel cannot reach.  Whatever the kernel renames or plants afterwards, the server's end stays
on the inode it checked.
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

from workbench.errors import KernelFailed
from workbench.workspace import wipe


class PinnedSockets:
    """Open ``O_PATH`` handles on ``<runtime_dir>/<prefix>-<port>`` and their links in ``link_dir``."""

    def __init__(self, runtime_dir: Path, link_dir: Path, prefix: str, ports: list[int]) -> None:
        self.runtime_dir = runtime_dir
        self.link_dir = link_dir
        self.prefix = prefix
        self.ports = ports
        self._fds: dict[int, int] = {}

    @property
    def ip(self) -> str:
        """The ``ip`` of a Jupyter ipc connection that goes through the links."""
        return str(self.link_dir / self.prefix)

    def pin(self) -> bool:
        """Blocking: pin every socket present; ``True`` once all are.  A kernel that put anything else
        than a socket where one belongs gets a clean :class:`KernelFailed`."""
        directory = os.open(self.runtime_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            for port in self.ports:
                if port not in self._fds:
                    self._pin_one(directory, port)
        finally:
            os.close(directory)
        return len(self._fds) == len(self.ports)

    def _pin_one(self, directory: int, port: int) -> None:
        name = f"{self.prefix}-{port}"
        try:
            fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=directory)
        except FileNotFoundError:
            return  # the kernel has not bound it yet
        mode = os.fstat(fd).st_mode
        if not stat.S_ISSOCK(mode):
            os.close(fd)
            msg = f"the kernel's runtime directory holds something other than a socket at {name!r}"
            raise KernelFailed(msg)
        self._fds[port] = fd
        link = self.link_dir / name
        temporary = self.link_dir / f".{name}.new"
        temporary.unlink(missing_ok=True)
        os.symlink(f"/proc/self/fd/{fd}", temporary)
        os.replace(temporary, link)

    def close(self) -> None:
        """Blocking: drop the links, then the handles (after the client's sockets are closed)."""
        fds, self._fds = self._fds, {}
        wipe(self.link_dir)
        for fd in fds.values():
            with contextlib.suppress(OSError):
                os.close(fd)


def make_link_dir(path: Path) -> None:
    """A fresh, server-only directory for a kernel's links (mode 0700, never mounted into a container)."""
    wipe(path)
    path.mkdir(mode=0o700)


def clear_runtime_dir(path: Path) -> None:
    """Blocking: remove whatever the previous kernel left in its runtime directory (sockets, and anything
    it planted: folders, links, FIFOs, ``chmod 000`` trees), without following links."""
    for name in os.listdir(path):
        wipe(path / name)
