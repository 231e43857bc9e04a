"""Where kernels run: a small launcher interface, and its Docker implementation.

The session manager only speaks this interface, so a Kubernetes launcher can replace the Docker one
without touching handlers or the manager.  Every Docker SDK call runs on a thread pool.
"""

from __future__ import annotations

import abc
import asyncio
import concurrent.futures
import dataclasses
import logging
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import docker
import docker.errors
import requests
from docker.types import Mount

from workbench.errors import EngineUnavailable, KernelFailed
from workbench.kernels.connection import CONTAINER_RUNTIME_DIR, KERNEL_CONNECTION_FILE, TRANSPORTS
from workbench.kernels.library_mount import library_mount, slot_mount

log = logging.getLogger(__name__)
T = TypeVar("T")

SESSION_LABEL = "org.workbench.session"
MANAGED_LABEL = "org.workbench.managed"
# Several servers (state directories) may share one engine: each manages only its own kernels.
INSTANCE_LABEL = "org.workbench.instance"
# Started ahead of demand by the warm pool (the label stays after the kernel is handed to a session).
POOL_LABEL = "org.workbench.pool"
GoneCallback = Callable[[str, str, str], None]
# `-P`: the working directory (/data, the kernel's own files) is not on the path while the kernel starts.
KERNEL_COMMAND = [
    "python",
    "-P",
    "-m",
    "ipykernel_launcher",
    "-f",
    f"{CONTAINER_RUNTIME_DIR}/{KERNEL_CONNECTION_FILE}",
]
# Over TCP: the image's launcher, which admits only clients holding the kernel's Curve key pair (ZAP).
TCP_KERNEL_COMMAND = ["python", "/opt/workbench/workbench_kernel.py", "-f",
                      f"{CONTAINER_RUNTIME_DIR}/{KERNEL_CONNECTION_FILE}"]  # fmt: skip


@dataclasses.dataclass(frozen=True)
class ContainerLimits:
    """Per-kernel limits; the server-wide ones come from the settings."""

    memory_mb: int
    cpus: float
    pids_limit: int
    tmp_mb: int
    shm_mb: int


@dataclasses.dataclass(frozen=True)
class LaunchRequest:
    session_id: str
    workspace: Path
    runtime_dir: Path
    limits: ContainerLimits
    pooled: bool = False
    library: Path | None = None
    """The tenant's library directory, mounted read-only at ``/library`` (none: no ``/library``); for a
    pooled kernel, its slot directory, on which the library is mounted when the kernel is claimed."""


@dataclasses.dataclass(frozen=True)
class KernelState:
    """What the engine says about a kernel's container."""

    running: bool
    status: str
    exit_code: int | None = None
    oom_killed: bool = False

    @property
    def death_reason(self) -> str:
        return "oom" if self.oom_killed else "died"


class KernelLauncher(abc.ABC):
    """Starts, signals, inspects and removes kernel containers (or pods)."""

    @abc.abstractmethod
    async def launch(self, request: LaunchRequest) -> str:
        """Start the kernel for a session; returns the launcher's kernel id (e.g. a container id)."""

    @abc.abstractmethod
    async def state(self, kernel_id: str) -> KernelState | None:
        """The kernel's state, or ``None`` when it no longer exists."""

    @abc.abstractmethod
    async def signal(self, kernel_id: str, signum: int) -> None: ...

    @abc.abstractmethod
    async def remove(self, kernel_id: str) -> None:
        """Kill and remove the kernel; a kernel that is already gone is not an error."""

    @abc.abstractmethod
    async def update_limits(self, kernel_id: str, limits: ContainerLimits) -> None:
        """Apply memory and CPU limits to a running kernel (a warm kernel handed to a session)."""

    @abc.abstractmethod
    async def kernels(self) -> dict[str, str]:
        """Every kernel this server manages, running or not: session id -> kernel id."""

    @abc.abstractmethod
    async def ping(self) -> bool: ...

    transport = "ipc"  # how the server reaches the kernels: "ipc" (same host) or "tcp" (+ CurveZMQ)
    interrupt_by_message = False  # True: interrupt with a control-channel message, not a signal

    async def address(self, kernel_id: str) -> str | None:
        """Where a TCP kernel's ports are reachable from the server (``None`` over IPC)."""
        return None

    async def discard(self, session_id: str) -> None:  # noqa: B027 (optional hook)
        """Release what the launcher keeps for a session beyond its kernels (a workspace volume)."""

    async def interrupt(self, kernel_id: str) -> None:
        await self.signal(kernel_id, signal.SIGINT)

    @abc.abstractmethod
    def watch(self, on_gone: GoneCallback) -> None:
        """Follow the engine's events: call ``on_gone(session_id, kernel_id, reason)`` on the event loop
        when a kernel dies or is removed, whoever did it."""

    def close(self) -> None:  # noqa: B027 (optional hook)
        """Release resources held by the launcher."""


class DockerLauncher(KernelLauncher):
    """Kernels as locked-down Docker containers (the container spec of ARCHITECTURE.md)."""

    def __init__(
        self,
        *,
        image: str,
        uid: int,
        instance: str,
        runtime: str | None = None,
        docker_host: str | None = None,
        max_workers: int = 8,
        transport: str = "ipc",
        network: str = "workbench-kernels",
    ) -> None:
        if transport not in TRANSPORTS:
            msg = f"unknown kernel transport {transport!r} (one of {', '.join(TRANSPORTS)})"
            raise ValueError(msg)
        self.transport = transport
        self.network = network
        self.image = image
        self.uid = uid
        self.instance = instance
        self.runtime = runtime
        self.docker_host = docker_host
        self._client: docker.DockerClient | None = None
        self._client_lock = threading.Lock()
        self._network_lock = threading.Lock()
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers, thread_name_prefix="workbench-docker")
        self._closed = threading.Event()
        self._event_stream: Any = None

    # plumbing

    def _docker(self) -> docker.DockerClient:
        with self._client_lock:
            if self._client is None:
                self._client = self._new_client()
            return self._client

    def _new_client(self) -> docker.DockerClient:
        if self.docker_host:
            return docker.DockerClient(base_url=self.docker_host, timeout=60)
        return docker.from_env(timeout=60)

    async def _call(self, work: Callable[[docker.DockerClient], T]) -> T:
        def guarded() -> T:
            try:
                return work(self._docker())
            except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as exc:
                self._forget_client()
                msg = "the Docker engine is unreachable"
                raise EngineUnavailable(msg) from exc
            except docker.errors.DockerException as exc:
                if isinstance(exc, docker.errors.APIError):
                    raise
                self._forget_client()
                msg = f"the Docker engine is unavailable: {exc}"
                raise EngineUnavailable(msg) from exc

        return await asyncio.get_running_loop().run_in_executor(self._pool, guarded)

    def _forget_client(self) -> None:
        with self._client_lock:
            if self._client is not None:
                self._client.close()
            self._client = None

    def close(self) -> None:
        self._closed.set()
        if self._event_stream is not None:
            self._event_stream.close()
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._forget_client()

    def watch(self, on_gone: GoneCallback) -> None:
        loop = asyncio.get_running_loop()
        thread = threading.Thread(target=self._follow_events, args=(loop, on_gone), daemon=True,
                                  name="workbench-docker-events")  # fmt: skip
        thread.start()

    def _follow_events(self, loop: asyncio.AbstractEventLoop, on_gone: GoneCallback) -> None:
        """Blocking: read the engine's event stream (reconnecting after errors) until ``close``."""
        filters = {
            "type": "container",
            "label": f"{INSTANCE_LABEL}={self.instance}",
            "event": ["die", "destroy"],
        }
        while not self._closed.is_set():
            client: docker.DockerClient | None = None
            try:
                client = self._new_client()
                self._event_stream = client.api.events(decode=True, filters=filters)
                for event in self._event_stream:
                    actor = event.get("Actor", {})
                    session_id = actor.get("Attributes", {}).get(SESSION_LABEL)
                    if session_id:
                        reason = "removed" if event.get("Action") == "destroy" else "died"
                        loop.call_soon_threadsafe(on_gone, session_id, actor.get("ID", ""), reason)
            except Exception:  # engine restarting or unreachable, or the loop closed: retry quietly
                log.debug("docker event stream interrupted", exc_info=True)
            finally:
                if client is not None:
                    client.close()
            self._closed.wait(1.0)

    # the spec

    def container_options(self, request: LaunchRequest) -> dict[str, Any]:
        """Everything ``containers.run`` gets for one kernel."""
        limits = request.limits
        memory = f"{limits.memory_mb}m"
        options: dict[str, Any] = {
            "image": self.image,
            "command": KERNEL_COMMAND if self.transport == "ipc" else TCP_KERNEL_COMMAND,
            "name": container_name(request.session_id),
            "detach": True,
            "user": f"{self.uid}:{self.uid}",
            "working_dir": "/data",
            "read_only": True,
            **self._network_options(),
            "cap_drop": ["ALL"],
            "security_opt": ["no-new-privileges"],
            "pids_limit": limits.pids_limit,
            "mem_limit": memory,
            "memswap_limit": memory,
            "nano_cpus": int(limits.cpus * 1e9),
            "init": True,
            "ipc_mode": "private",
            "shm_size": f"{limits.shm_mb}m",
            "tmpfs": {"/tmp": f"rw,nosuid,nodev,size={limits.tmp_mb}m,mode=1777"},  # noqa: S108
            "mounts": [
                Mount("/data", str(request.workspace), type="bind", read_only=False),
                Mount(CONTAINER_RUNTIME_DIR, str(request.runtime_dir), type="bind", read_only=False),
            ],
            "labels": {
                SESSION_LABEL: request.session_id,
                MANAGED_LABEL: "true",
                INSTANCE_LABEL: self.instance,
                **({POOL_LABEL: "true"} if request.pooled else {}),
            },
            "environment": {"HOME": "/tmp", "MPLCONFIGDIR": "/tmp/matplotlib", "PYTHONUNBUFFERED": "1"},  # noqa: S108
        }
        if request.library is not None:
            mount = slot_mount if request.pooled else library_mount
            options["mounts"].append(mount(request.library))
        if self.runtime:
            options["runtime"] = self.runtime
        return options

    def _network_options(self) -> dict[str, Any]:
        """No network at all over IPC; over TCP, only the engine's private network of kernels."""
        return {"network_mode": "none"} if self.transport == "ipc" else {"network": self.network}

    def _ensure_network(self, client: docker.DockerClient) -> None:
        """The TCP kernels' network: internal (no route out), no traffic between kernels, and no
        published ports, so only the engine's host (the server) reaches a kernel's ports.

        Made once: concurrent launches (a create beside a pool refill) would otherwise each make one, and
        the engine takes several networks of one name (a kernel then cannot join "it")."""
        with self._network_lock:
            self._ensure_network_once(client)

    def _ensure_network_once(self, client: docker.DockerClient) -> None:
        try:
            existing = client.networks.get(self.network)
        except docker.errors.NotFound:
            existing = None
        if existing is not None:
            if not existing.attrs.get("Internal"):
                msg = f"the kernel network {self.network!r} exists but is not internal: refusing to use it"
                raise KernelFailed(msg)
            return
        try:
            client.networks.create(
                self.network,
                check_duplicate=True,
                driver="bridge",
                internal=True,
                options={"com.docker.network.bridge.enable_icc": "false"},
                labels={MANAGED_LABEL: "true"},
            )
        except docker.errors.APIError as exc:
            if exc.status_code != 409:  # 409: another server created it first
                raise

    # the interface

    async def launch(self, request: LaunchRequest) -> str:
        options = self.container_options(request)

        def run(client: docker.DockerClient) -> str:
            _remove_quietly(client, options["name"])
            if self.transport == "tcp":
                self._ensure_network(client)
            try:
                container = client.containers.run(**options)
            except docker.errors.ImageNotFound as exc:
                msg = f"kernel image {self.image!r} not found: run `workbench image build`"
                raise KernelFailed(msg) from exc
            except docker.errors.APIError as exc:
                log.error("session %s: the engine refused the container: %s", request.session_id, exc)
                msg = "could not start the kernel container (the server log has the engine's answer)"
                raise KernelFailed(msg) from exc
            return str(container.id)

        return await self._call(run)

    async def state(self, kernel_id: str) -> KernelState | None:
        def inspect(client: docker.DockerClient) -> KernelState | None:
            try:
                attrs = client.api.inspect_container(kernel_id)
            except docker.errors.NotFound:
                return None
            state = attrs.get("State", {})
            return KernelState(
                running=bool(state.get("Running")),
                status=str(state.get("Status", "unknown")),
                exit_code=state.get("ExitCode"),
                oom_killed=bool(state.get("OOMKilled")),
            )

        return await self._call(inspect)

    async def address(self, kernel_id: str) -> str | None:
        if self.transport == "ipc":
            return None

        def inspect(client: docker.DockerClient) -> str:
            attrs = client.api.inspect_container(kernel_id)
            address = (
                attrs.get("NetworkSettings", {}).get("Networks", {}).get(self.network, {}).get("IPAddress")
            )
            if not address:
                msg = f"the kernel's container has no address on the network {self.network!r}"
                raise KernelFailed(msg)
            return str(address)

        return await self._call(inspect)

    async def signal(self, kernel_id: str, signum: int) -> None:
        def kill(client: docker.DockerClient) -> None:
            try:
                client.api.kill(kernel_id, signal=signum)
            except docker.errors.NotFound:
                pass
            except docker.errors.APIError as exc:
                if exc.status_code != 409:  # 409: not running
                    raise

        await self._call(kill)

    async def remove(self, kernel_id: str) -> None:
        await self._call(lambda client: _remove_quietly(client, kernel_id))

    async def update_limits(self, kernel_id: str, limits: ContainerLimits) -> None:
        memory = limits.memory_mb * 2**20
        # The SDK's update_container has no NanoCpus, and CpuQuota conflicts with the NanoCpus set at start.
        body = {"Memory": memory, "MemorySwap": memory, "NanoCpus": int(limits.cpus * 1e9)}

        def update(client: docker.DockerClient) -> None:
            api = client.api
            url = f"{api.base_url}/v{api.api_version}/containers/{kernel_id}/update"
            response = api.post(url, json=body, timeout=30)
            if response.status_code != 200:
                msg = f"the engine refused new limits: {response.status_code} {response.text[:200]}"
                raise KernelFailed(msg)

        await self._call(update)

    async def kernels(self) -> dict[str, str]:
        def listing(client: docker.DockerClient) -> dict[str, str]:
            found = client.api.containers(all=True, filters={"label": f"{INSTANCE_LABEL}={self.instance}"})
            return {
                item["Labels"][SESSION_LABEL]: item["Id"] for item in found if SESSION_LABEL in item["Labels"]
            }

        return await self._call(listing)

    async def ping(self) -> bool:
        try:
            return bool(await asyncio.wait_for(self._call(lambda client: client.ping()), timeout=5))
        except (EngineUnavailable, docker.errors.APIError, TimeoutError):
            return False


def container_name(session_id: str) -> str:
    return f"workbench-{session_id}"


def _remove_quietly(client: docker.DockerClient, kernel_id: str) -> None:
    try:
        client.api.remove_container(kernel_id, force=True)
    except docker.errors.NotFound:
        pass
    except docker.errors.APIError as exc:
        if exc.status_code != 409:  # 409: removal already in progress
            raise
