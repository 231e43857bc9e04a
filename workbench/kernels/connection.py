"""Jupyter connection info over IPC sockets in a per-session runtime directory (no TCP ports).

The runtime directory is bind-mounted into the container at ``/run/workbench``; the kernel binds its
sockets there and the server connects to the same socket files from the host side.  The kernel and the
host therefore need two views of one connection: the same key and ports, different socket paths.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from pathlib import Path
from typing import Any

CONTAINER_RUNTIME_DIR = "/run/workbench"
KERNEL_CONNECTION_FILE = "kernel.json"
SOCKET_PREFIX = "k"
# Unix socket paths are limited to 107 bytes; "<dir>/k-5" must fit.
MAX_SOCKET_DIR_LENGTH = 100
_IPC_PORTS = {"shell_port": 1, "iopub_port": 2, "stdin_port": 3, "control_port": 4, "hb_port": 5}


def runtime_dir_for(runtime_root: Path, session_id: str) -> Path:
    """A short, per-session directory name, so socket paths stay under the Unix limit."""
    digest = hashlib.sha256(session_id.encode()).hexdigest()[:16]
    path = runtime_root / digest
    if len(str(path)) > MAX_SOCKET_DIR_LENGTH:
        msg = f"state directory too deep for Unix sockets ({len(str(path))} > {MAX_SOCKET_DIR_LENGTH} bytes)"
        raise ValueError(msg)
    return path


def new_connection_info() -> dict[str, Any]:
    """Connection info as the kernel sees it, with a fresh 256-bit HMAC key."""
    return {
        "transport": "ipc",
        "ip": f"{CONTAINER_RUNTIME_DIR}/{SOCKET_PREFIX}",
        "key": secrets.token_hex(32),
        "signature_scheme": "hmac-sha256",
        "kernel_name": "python3",
        **_IPC_PORTS,
    }


def socket_ports(info: dict[str, Any]) -> list[int]:
    """The ports (socket file suffixes) of an ipc connection."""
    return sorted(int(info[name]) for name in _IPC_PORTS)


def host_view(info: dict[str, Any], runtime_dir: Path) -> dict[str, Any]:
    """The same connection as seen from the server host."""
    return {**info, "ip": str(runtime_dir / SOCKET_PREFIX)}


def write_private_json(path: Path, data: dict[str, Any], owner: tuple[int, int] | None = None) -> None:
    """Write ``data`` atomically to ``path`` with mode 0600 (owned by ``owner`` when given)."""
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(descriptor, "w") as stream:
            json.dump(data, stream)
            stream.flush()
            os.fsync(stream.fileno())
            if owner is not None:
                os.fchown(stream.fileno(), *owner)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        with path.open() as stream:
            data = json.load(stream)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
