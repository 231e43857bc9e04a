"""Fixed-size file systems under a session's workspace and runtime directory: the kernel's disk bound.

Both directories are bind-mounted into the kernel's container, so without a bound a kernel could fill the
host's disk.  With ``WORKBENCH_WORKSPACE_FS=loop`` (the default when the server runs as root and the host
has loop devices) each session gets:

* a sparse ext4 image ``STATE_DIR/volumes/<session>.img``, loop-mounted on its workspace directory.  The
  image is a little larger than the workspace quota, so that the kernel can store the quota itself (the
  file system's journal, inode tables and reserved clusters take the rest); a write past it fails with
  ``ENOSPC`` inside the kernel.  The host only allocates what is written (``discard`` gives deleted blocks
  back), never more than the image size;
* a tmpfs of :data:`RUNTIME_BYTES` and :data:`RUNTIME_INODES` inodes on its runtime directory (the
  connection file and the IPC sockets; a socket takes an inode, no blocks).

The mounts live in the host's kernel, so they outlive a server restart; after a reboot :meth:`ensure`
mounts them again (the server calls it before re-attaching or starting kernels).  A workspace without an
image (made in ``dir`` mode, or before volumes existed) stays a plain directory.  Every function blocks
(``mkfs``, ``mount``): call them from an executor.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import subprocess
from pathlib import Path

from workbench.errors import KernelFailed

log = logging.getLogger(__name__)

LOOP = "loop"
DIR = "dir"
RUNTIME_BYTES = 16 * 1024
"""Size of the runtime tmpfs: the connection file and its atomic replacement take a page each."""
RUNTIME_INODES = 32
"""Inodes of the runtime tmpfs: the directory, the connection file (and its replacement), five sockets."""
IMAGE_SUFFIX = ".img"
MKFS_TIMEOUT = 120.0
MOUNT_TIMEOUT = 30.0
_WORKSPACE_OPTIONS = "loop,nodev,nosuid,noatime,discard,noinit_itable"
_RUNTIME_SOURCE = "workbench-runtime"


def image_bytes(quota_bytes: int) -> int:
    """The image size whose ext4 (4 KiB blocks, 4 MiB journal, no reserved blocks) offers ``quota_bytes``.

    Measured overhead: about 5 % at 300 MiB, under 3 % from 2 GiB on; 4 % + 8 MiB covers every size.
    """
    size = quota_bytes + quota_bytes // 25 + 8 * 2**20
    return -(-size // 4096) * 4096


def loop_supported() -> str | None:
    """Why loop-mounted workspaces cannot work here, or ``None`` if they can."""
    if os.geteuid() != 0:
        return "the server does not run as root"
    if not Path("/dev/loop-control").exists():
        return "the host has no /dev/loop-control"
    missing = [tool for tool in ("mkfs.ext4", "mount", "umount") if shutil.which(tool) is None]
    if missing:
        return f"missing {', '.join(missing)}"
    return None


class Volumes:
    """Provision, re-mount and release the per-session file systems (see the module's docstring)."""

    def __init__(self, root: Path, *, mode: str, quota_bytes: int, owner: tuple[int, int] | None) -> None:
        self.root = root
        self.quota_bytes = quota_bytes
        self.owner = owner
        self.enabled = False
        if mode == LOOP:
            problem = loop_supported()
            if problem is None:
                self.enabled = True
            else:
                log.warning(
                    "WORKBENCH_WORKSPACE_FS=loop, but %s: workspaces are plain directories and only uploads "
                    "are held to the quota (a kernel can fill the host's disk)",
                    problem,
                )

    def image_path(self, name: str) -> Path:
        return self.root / f"{name}{IMAGE_SUFFIX}"

    def images(self) -> list[str]:
        """Names of the sessions that have an image."""
        if not self.root.is_dir():
            return []
        return [path.name.removesuffix(IMAGE_SUFFIX) for path in self.root.glob(f"*{IMAGE_SUFFIX}")]

    def provision(self, name: str, workspace: Path, runtime: Path) -> None:
        """Give a new session its image and tmpfs (both directories exist, with final mode and owner)."""
        if not self.enabled:
            return
        image = self.image_path(name)
        try:
            self.root.mkdir(mode=0o700, exist_ok=True)
            with open(image, "xb") as stream:
                os.fchmod(stream.fileno(), 0o600)
                stream.truncate(image_bytes(self.quota_bytes))
            uid, gid = self.owner or (os.getuid(), os.getgid())
            extended = f"root_owner={uid}:{gid},lazy_itable_init=1,lazy_journal_init=1,nodiscard"
            _run(
                ["mkfs.ext4", "-q", "-F", "-m", "0", "-b", "4096", "-T", "default", "-J", "size=4",
                 "-E", extended, str(image)],
                MKFS_TIMEOUT,
            )  # fmt: skip
        except (OSError, subprocess.SubprocessError) as exc:
            raise _failed("could not make the workspace file system", exc) from exc
        self.ensure(name, workspace, runtime)

    def ensure(self, name: str, workspace: Path, runtime: Path) -> None:
        """Mount the session's image and tmpfs where they are missing (a reboot); nothing without an image."""
        image = self.image_path(name)
        if not image.exists():
            return
        try:
            if not os.path.ismount(workspace):
                _mount_over(workspace, ["-t", "ext4", "-o", _WORKSPACE_OPTIONS, str(image)])
                with contextlib.suppress(FileNotFoundError):
                    (workspace / "lost+found").rmdir()  # mkfs made it; /data starts empty
            if not os.path.ismount(runtime):
                st = runtime.stat()
                options = f"size={RUNTIME_BYTES},nr_inodes={RUNTIME_INODES},nodev,nosuid,noexec"
                options += f",mode={st.st_mode & 0o7777:o},uid={st.st_uid},gid={st.st_gid}"
                _run(["mount", "-t", "tmpfs", "-o", options, _RUNTIME_SOURCE, str(runtime)], MOUNT_TIMEOUT)
        except (OSError, subprocess.SubprocessError) as exc:
            raise _failed("could not mount the workspace file system", exc) from exc

    def release(self, name: str, workspace: Path, runtime: Path) -> None:
        """Unmount both (lazily if busy) and delete the image; the directories themselves stay."""
        if not self.image_path(name).exists():
            return
        try:
            for path in (runtime, workspace):
                unmount(path)
        except (OSError, subprocess.SubprocessError) as exc:  # the image stays: the next start tries again
            raise _failed("could not unmount the workspace file system", exc) from exc
        self.image_path(name).unlink(missing_ok=True)


def unmount(path: Path) -> None:
    """Unmount ``path`` if something is mounted there; lazily if it is busy."""
    if not os.path.ismount(path):
        return
    try:
        _run(["umount", str(path)], MOUNT_TIMEOUT)
    except (OSError, subprocess.SubprocessError):
        _run(["umount", "-l", str(path)], MOUNT_TIMEOUT)


def unmount_below(root: Path) -> None:
    """Unmount everything mounted below ``root``, deepest first (test and benchmark clean-up)."""
    prefix = str(root.resolve()) + "/"
    with open("/proc/self/mounts") as mounts:
        points = [line.split()[1] for line in mounts]
    for point in sorted((p for p in points if p.startswith(prefix)), key=len, reverse=True):
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            _run(["umount", "-l", point], MOUNT_TIMEOUT)


def _mount_over(directory: Path, arguments: list[str]) -> None:
    """Mount on ``directory``; the mounted root takes the mode and owner of the directory it covers."""
    st = directory.stat()
    _run(["mount", *arguments, str(directory)], MOUNT_TIMEOUT)
    os.chown(directory, st.st_uid, st.st_gid)
    directory.chmod(st.st_mode & 0o7777)


def _run(command: list[str], timeout: float) -> None:
    subprocess.run(command, check=True, capture_output=True, timeout=timeout)


def _failed(message: str, exc: BaseException) -> KernelFailed:
    detail = ""
    if isinstance(exc, subprocess.CalledProcessError):
        detail = exc.stderr.decode(errors="replace").strip()
    log.error("%s: %s %s", message, exc, detail)
    return KernelFailed(message)
