"""Start an IPython kernel whose TCP sockets admit only clients holding the kernel's Curve key pair.

Used for kernels reached over TCP (``/opt/workbench/workbench_kernel.py -f <connection file>``).
ipykernel makes its TCP sockets CurveZMQ servers from the ``curve_publickey``/``curve_secretkey`` of the
connection file, which encrypts the traffic and authenticates the kernel; but a Curve server admits any
client key pair.  Here every context that binds a TCP socket first gets a ZAP handler that admits only
the connection file's public key as the client's key, so a client must prove it holds the secret key.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import zmq
from zmq.auth.thread import ThreadAuthenticator


class _OnlyKey:
    """ZAP credentials provider: exactly one client public key (Z85) is admitted."""

    def __init__(self, key: bytes) -> None:
        self.key = key

    def callback(self, domain: str, key: bytes) -> bool:
        return key == self.key


def _client_key(argv: list[str]) -> bytes:
    path = argv[argv.index("-f") + 1]
    with open(path) as stream:
        info = json.load(stream)
    return str(info["curve_publickey"]).encode("ascii")


def _guard_tcp_binds(client_key: bytes) -> None:
    authenticators: dict[int, ThreadAuthenticator] = {}
    bind = zmq.Socket.bind

    def guarded_bind(socket: zmq.Socket[Any], address: str) -> Any:
        if address.startswith("tcp://") and id(socket.context) not in authenticators:
            authenticator = ThreadAuthenticator(socket.context)
            authenticator.start()
            authenticator.configure_curve_callback("*", _OnlyKey(client_key))
            authenticators[id(socket.context)] = authenticator
        return bind(socket, address)

    zmq.Socket.bind = guarded_bind  # type: ignore[method-assign]


def main() -> None:
    _guard_tcp_binds(_client_key(sys.argv))
    from ipykernel.kernelapp import launch_new_instance

    launch_new_instance()


if __name__ == "__main__":
    main()
