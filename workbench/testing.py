"""A throw-away ``workbench serve`` subprocess, for the test suite and the benchmarks."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import httpx

from workbench.volumes import unmount_below


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def short_tmp() -> Path:
    """A short directory (Unix socket paths under it must stay below 108 bytes)."""
    return Path(tempfile.mkdtemp(prefix="wb-", dir="/tmp"))


def remove_state(root: Path) -> None:
    """Remove a throw-away directory, first unmounting the session file systems a server left below it."""
    unmount_below(root)
    shutil.rmtree(root, ignore_errors=True)


class ServerProcess:
    """``workbench serve`` on a free port with its own state directory."""

    def __init__(self, state_dir: Path, *extra: str, token: str, env: dict[str, str] | None = None) -> None:
        self.state_dir = state_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.token = token
        self.args = [
            sys.executable, "-m", "workbench", "serve", "--port", str(self.port),
            "--state-dir", str(state_dir), "--token", token, *extra,
        ]  # fmt: skip
        self.env = {**os.environ, **(env or {})}
        self.log_path = state_dir.parent / f"server-{self.port}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(self.args, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                msg = f"server exited with {self.process.returncode}:\n{self.log()}"
                raise RuntimeError(msg)
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/api/v1/health", timeout=2).status_code in (200, 503):
                    return
            time.sleep(0.1)
        msg = f"server did not answer within {timeout} s:\n{self.log()}"
        raise RuntimeError(msg)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def client(self, token: str | None = None, timeout: float = 120) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token or self.token}"}
        return httpx.Client(base_url=self.url, timeout=timeout, headers=headers)

    def remove_kernels(self) -> None:
        """Remove every kernel container of this state directory (the server leaves them running)."""
        client = docker.from_env(timeout=60)
        try:
            for path in (self.state_dir / "workspaces").glob("session*"):
                with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
                    client.api.remove_container(f"workbench-{path.name}", force=True)
        finally:
            client.close()


@contextlib.contextmanager
def throwaway_server(
    *extra: str, token: str, env: dict[str, str] | None = None, remove_kernels: bool = True
) -> Iterator[ServerProcess]:
    """A server with a fresh state directory; afterwards (even after a failure) its kernels and files go."""
    root = short_tmp()
    server = ServerProcess(root / "state", *extra, token=token, env=env)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        if remove_kernels:
            server.remove_kernels()
        remove_state(root)
