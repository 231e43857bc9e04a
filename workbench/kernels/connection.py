"""Jupyter connection info: IPC sockets in a per-session runtime directory, or TCP + CurveZMQ.

The runtime directory is bind-mounted into the container at ``/run/workbench``; the kernel binds its
sockets there and the server connects to the same socket files from the host side.  The kernel and the
host therefore need two views of one connection: the same key and ports, different socket paths.

Over TCP (kernels on another host or network) the kernel binds every interface of its own network
namespace on fixed ports, and each kernel gets a fresh CurveZMQ key pair: every socket of the kernel is
a Curve server (ipykernel >= 7.4 reads ``curve_publickey``/``curve_secretkey`` from its connection
file, jupyter_client >= 8.10 uses the same fields on the client side), so traffic is encrypted and a
client without the kernel's keys cannot complete a handshake.  The host view differs only in ``ip``.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from pathlib import Path
from typing import Any

import zmq

CONTAINER_RUNTIME_DIR = "/run/workbench"
KERNEL_CONNECTION_FILE = "kernel.json"
SOCKET_PREFIX = "k"
# Unix socket paths are limited to 107 bytes; "<dir>/k-5" must fit.
MAX_SOCKET_DIR_LENGTH = 100
_IPC_PORTS = {"shell_port": 1, "iopub_port": 2, "stdin_port": 3, "control_port": 4, "hb_port": 5}
# Each TCP kernel has a network namespace of its own, so the ports can be the same for every kernel.
TCP_PORTS = {"shell_port": 50001, "iopub_port": 50002, "stdin_port": 50003, "control_port": 50004,
             "hb_port": 50005}  # fmt: skip
TRANSPORTS = ("ipc", "tcp")


def runtime_dir_for(runtime_root: Path, session_id: str) -> Path:
    """A short, per-session directory name, so socket paths stay under the Unix limit."""
    digest = hashlib.sha256(session_id.encode()).hexdigest()[:16]
    path = runtime_root / digest
    if len(str(path)) > MAX_SOCKET_DIR_LENGTH:
        msg = f"state directory too deep for Unix sockets ({len(str(path))} > {MAX_SOCKET_DIR_LENGTH} bytes)"
        raise ValueError(msg)
    return path


def new_connection_info(transport: str = "ipc") -> dict[str, Any]:
    """Connection info as the kernel sees it, with a fresh 256-bit HMAC key (and Curve keys over TCP)."""
    common = {"key": secrets.token_hex(32), "signature_scheme": "hmac-sha256", "kernel_name": "python3"}
    if transport == "ipc":
        return {"transport": "ipc", "ip": f"{CONTAINER_RUNTIME_DIR}/{SOCKET_PREFIX}", **common, **_IPC_PORTS}
    if transport == "tcp":
        return {"transport": "tcp", "ip": "0.0.0.0", **common, **TCP_PORTS, **curve_keys()}
    msg = f"unknown kernel transport {transport!r} (one of {', '.join(TRANSPORTS)})"
    raise ValueError(msg)


def curve_keys() -> dict[str, str]:
    """A fresh CurveZMQ key pair (Z85 text), for one kernel only."""
    public, secret = zmq.curve_keypair()
    return {"curve_publickey": public.decode("ascii"), "curve_secretkey": secret.decode("ascii")}


def socket_ports(info: dict[str, Any]) -> list[int]:
    """The ports (socket file suffixes) of an ipc connection."""
    return sorted(int(info[name]) for name in _IPC_PORTS)


def host_view(info: dict[str, Any], runtime_dir: Path, address: str | None = None) -> dict[str, Any]:
    """The same connection as seen from the server host: the socket files' path over IPC, the kernel's
    ``address`` (from its launcher) over TCP."""
    if info["transport"] == "tcp":
        if address is None:
            msg = "a TCP kernel needs the address its launcher reports"
            raise ValueError(msg)
        return {**info, "ip": address}
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
