"""Kernels as Kubernetes pods: one locked-down pod per session, reached over TCP + CurveZMQ.

The specs are pure functions of their inputs (unit-tested for every restriction and validated against
the Kubernetes OpenAPI schemas offline); :class:`KubernetesLauncher` only sends them through
`lightkube <https://lightkube.readthedocs.io>`_'s asynchronous client (an optional dependency:
``pip install 'workbench[kubernetes]'``).  Per session: the kernel pod and a Secret with its connection
file share one name (new for every kernel start, so a terminating pod never blocks its successor); the
workspace is a PersistentVolumeClaim that outlives the kernel.  One NetworkPolicy per server instance
shuts every kernel pod off from the network, except the Workbench server pods on the kernel ports.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import signal
from typing import TYPE_CHECKING, Any

from workbench.errors import EngineUnavailable, KernelFailed
from workbench.kernels.connection import CONTAINER_RUNTIME_DIR, KERNEL_CONNECTION_FILE, TCP_PORTS, read_json
from workbench.kernels.launcher import (
    TCP_KERNEL_COMMAND,
    ContainerLimits,
    GoneCallback,
    KernelLauncher,
    KernelState,
    LaunchRequest,
    container_name,
)

if TYPE_CHECKING:
    from lightkube import AsyncClient

log = logging.getLogger(__name__)

# Label keys: Kubernetes label values, unlike Docker's, are limited to 63 characters of [A-Za-z0-9-_.].
SESSION_LABEL = "workbench.org/session"
INSTANCE_LABEL = "workbench.org/instance"
COMPONENT_LABEL = "app.kubernetes.io/component"
NAME_LABEL = "app.kubernetes.io/name"
APP = "workbench"
KERNEL_COMPONENT = "kernel"
SERVER_COMPONENT = "server"  # the label the Deployment's pods carry (deploy/kubernetes/)
KERNEL_CONTAINER = "kernel"
WATCH_RETRY = 1.0
ADDRESS_POLL = 0.5


# ---------------------------------------------------------------------------------------------- specs


def kernel_labels(session_id: str, instance: str) -> dict[str, str]:
    return {
        NAME_LABEL: APP,
        COMPONENT_LABEL: KERNEL_COMPONENT,
        INSTANCE_LABEL: instance,
        SESSION_LABEL: session_id,
    }


def workspace_claim_name(session_id: str) -> str:
    return f"workbench-ws-{session_id.removeprefix('session-')}"


def kernel_pod(
    request: LaunchRequest,
    name: str,
    *,
    namespace: str,
    image: str,
    uid: int,
    instance: str,
) -> dict[str, Any]:
    """The kernel's pod: the Docker container spec's restrictions, in Kubernetes terms."""
    limits = request.limits
    resources = {"memory": f"{limits.memory_mb}Mi", "cpu": f"{int(limits.cpus * 1000)}m"}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": kernel_labels(request.session_id, instance),
        },
        "spec": {
            "restartPolicy": "Never",  # a dead kernel is replaced by the server, never restarted in place
            "automountServiceAccountToken": False,
            "enableServiceLinks": False,
            "hostNetwork": False,
            "hostPID": False,
            "hostIPC": False,
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": uid,
                "runAsGroup": uid,
                "fsGroup": uid,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [
                {
                    "name": KERNEL_CONTAINER,
                    "image": image,
                    "command": TCP_KERNEL_COMMAND,
                    "workingDir": "/data",
                    "env": [
                        {"name": "HOME", "value": "/tmp"},  # noqa: S108
                        {"name": "MPLCONFIGDIR", "value": "/tmp/matplotlib"},  # noqa: S108
                        {"name": "PYTHONUNBUFFERED", "value": "1"},
                    ],
                    "ports": [
                        {"name": port.removesuffix("_port"), "containerPort": number, "protocol": "TCP"}
                        for port, number in TCP_PORTS.items()
                    ],
                    "resources": {"limits": resources, "requests": resources},
                    "securityContext": {
                        "readOnlyRootFilesystem": True,
                        "runAsNonRoot": True,
                        "runAsUser": uid,
                        "runAsGroup": uid,
                        "allowPrivilegeEscalation": False,
                        "privileged": False,
                        "capabilities": {"drop": ["ALL"]},
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "volumeMounts": [
                        {"name": "workspace", "mountPath": "/data"},
                        {"name": "tmp", "mountPath": "/tmp"},  # noqa: S108
                        {"name": "shm", "mountPath": "/dev/shm"},  # noqa: S108
                        {"name": "connection", "mountPath": CONTAINER_RUNTIME_DIR, "readOnly": True},
                    ],
                }
            ],
            "volumes": [
                {
                    "name": "workspace",
                    "persistentVolumeClaim": {"claimName": workspace_claim_name(request.session_id)},
                },
                {"name": "tmp", "emptyDir": {"medium": "Memory", "sizeLimit": f"{limits.tmp_mb}Mi"}},
                {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": f"{limits.shm_mb}Mi"}},
                {"name": "connection", "secret": {"secretName": name, "defaultMode": 0o440}},
            ],
        },
    }


def connection_secret(
    session_id: str, name: str, connection: dict[str, Any], *, namespace: str, instance: str
) -> dict[str, Any]:
    """The kernel's connection file (HMAC and Curve keys), mounted read-only into its pod only."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace, "labels": kernel_labels(session_id, instance)},
        "type": "Opaque",
        "stringData": {KERNEL_CONNECTION_FILE: json.dumps(connection)},
    }


def workspace_claim(
    session_id: str, *, namespace: str, instance: str, size_mb: int, storage_class: str | None = None
) -> dict[str, Any]:
    """The session's workspace volume: it outlives kernel restarts and is removed with the session."""
    spec: dict[str, Any] = {
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": f"{size_mb}Mi"}},
    }
    if storage_class:
        spec["storageClassName"] = storage_class
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {
            "name": workspace_claim_name(session_id),
            "namespace": namespace,
            "labels": kernel_labels(session_id, instance),
        },
        "spec": spec,
    }


def network_policy_name(instance: str) -> str:
    return f"workbench-kernels-{instance}"[:63].rstrip("-")


def kernel_network_policy(*, namespace: str, instance: str) -> dict[str, Any]:
    """Kernel pods: no egress at all (not even DNS); ingress only from Workbench server pods, only on
    the kernel ports."""
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {
            "name": network_policy_name(instance),
            "namespace": namespace,
            "labels": {NAME_LABEL: APP, INSTANCE_LABEL: instance},
        },
        "spec": {
            "podSelector": {
                "matchLabels": {NAME_LABEL: APP, COMPONENT_LABEL: KERNEL_COMPONENT, INSTANCE_LABEL: instance}
            },
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [
                {
                    "from": [
                        {"podSelector": {"matchLabels": {NAME_LABEL: APP, COMPONENT_LABEL: SERVER_COMPONENT}}}
                    ],
                    "ports": [{"protocol": "TCP", "port": number} for number in TCP_PORTS.values()],
                }
            ],
            "egress": [],
        },
    }


def pod_state(pod: dict[str, Any]) -> KernelState:
    """What a pod's status says about its kernel (a pending pod counts as starting, i.e. running)."""
    status = pod.get("status") or {}
    phase = str(status.get("phase") or "Pending")
    terminated: dict[str, Any] = {}
    for container in status.get("containerStatuses") or []:
        if container.get("name") == KERNEL_CONTAINER:
            terminated = (container.get("state") or {}).get("terminated") or {}
    running = (
        phase in ("Pending", "Running") and not terminated and not pod["metadata"].get("deletionTimestamp")
    )
    return KernelState(
        running=running,
        status=phase.lower(),
        exit_code=terminated.get("exitCode"),
        oom_killed=terminated.get("reason") == "OOMKilled",
    )


# ----------------------------------------------------------------------------------------- launcher


class KubernetesLauncher(KernelLauncher):
    """One pod per session in one namespace, through the Kubernetes API (no engine on this host)."""

    transport = "tcp"
    interrupt_by_message = True  # no signals through the API: ipykernel's interrupt_request instead

    def __init__(
        self,
        *,
        image: str,
        uid: int,
        instance: str,
        namespace: str,
        workspace_mb: int,
        storage_class: str | None = None,
        schedule_timeout: float = 300.0,
        client: AsyncClient | None = None,
    ) -> None:
        self.schedule_timeout = schedule_timeout
        self.image = image
        self.uid = uid
        self.instance = instance
        self.namespace = namespace
        self.workspace_mb = workspace_mb
        self.storage_class = storage_class
        self._client = client
        self._watcher: asyncio.Task[None] | None = None

    def _api(self) -> AsyncClient:
        if self._client is None:
            from lightkube import AsyncClient  # optional dependency, imported only when used

            self._client = AsyncClient(namespace=self.namespace)
        return self._client

    async def _create(self, spec: dict[str, Any], *, exist_ok: bool = False) -> None:
        from lightkube import ApiError, codecs

        try:
            await self._api().create(codecs.from_dict(spec))
        except ApiError as exc:
            if not (exist_ok and exc.status.code == 409):
                log.error("the Kubernetes API refused a %s: %s", spec["kind"], exc)
                msg = f"could not create the kernel's {spec['kind']} (the server log has the API's answer)"
                raise KernelFailed(msg) from exc
        except Exception as exc:
            msg = f"the Kubernetes API is unreachable: {exc}"
            raise EngineUnavailable(msg) from exc

    async def launch(self, request: LaunchRequest) -> str:
        connection = await asyncio.get_running_loop().run_in_executor(
            None, read_json, request.runtime_dir / KERNEL_CONNECTION_FILE
        )
        if connection is None:
            msg = "the kernel's connection file is missing"
            raise KernelFailed(msg)
        name = f"{container_name(request.session_id)}-{secrets.token_hex(3)}"
        ns, instance = self.namespace, self.instance
        await self._create(kernel_network_policy(namespace=ns, instance=instance), exist_ok=True)
        claim = workspace_claim(
            request.session_id,
            namespace=ns,
            instance=instance,
            size_mb=self.workspace_mb,
            storage_class=self.storage_class,
        )
        await self._create(claim, exist_ok=True)
        await self._create(
            connection_secret(request.session_id, name, connection, namespace=ns, instance=instance)
        )
        try:
            await self._create(
                kernel_pod(request, name, namespace=ns, image=self.image, uid=self.uid, instance=instance)
            )
        except BaseException:
            await self.remove(name)  # the Secret must not outlive a pod that was never made
            raise
        return name

    async def _pod(self, kernel_id: str) -> dict[str, Any] | None:
        from lightkube import ApiError
        from lightkube.resources.core_v1 import Pod

        try:
            pod = await self._api().get(Pod, kernel_id, namespace=self.namespace)
        except ApiError as exc:
            if exc.status.code == 404:
                return None
            raise
        found: dict[str, Any] = pod.to_dict()
        return found

    async def state(self, kernel_id: str) -> KernelState | None:
        pod = await self._pod(kernel_id)
        return None if pod is None else pod_state(pod)

    async def address(self, kernel_id: str) -> str | None:
        """The pod's IP, once it has one (scheduling and pulling an image take a while, at most
        ``schedule_timeout`` seconds)."""
        deadline = asyncio.get_running_loop().time() + self.schedule_timeout
        while True:
            if asyncio.get_running_loop().time() > deadline:
                msg = f"the kernel's pod had no address within {self.schedule_timeout:.0f} s (not scheduled?)"
                raise KernelFailed(msg)
            pod = await self._pod(kernel_id)
            if pod is None or not pod_state(pod).running:
                msg = "the kernel's pod ended before it had an address"
                raise KernelFailed(msg)
            address = (pod.get("status") or {}).get("podIP")
            if address:
                return str(address)
            await asyncio.sleep(ADDRESS_POLL)

    async def signal(self, kernel_id: str, signum: int) -> None:
        if signum != signal.SIGKILL:
            msg = "pods take no signals through the Kubernetes API (interrupts go by message)"
            raise KernelFailed(msg)
        await self.remove(kernel_id)

    async def update_limits(self, kernel_id: str, limits: ContainerLimits) -> None:
        """Not done in place (that needs the ``pods/resize`` subresource of Kubernetes 1.33+ and its RBAC):
        the manager then starts the session's kernel cold. Run without a warm pool on Kubernetes."""
        msg = "the Kubernetes launcher does not resize running pods"
        raise KernelFailed(msg)

    async def remove(self, kernel_id: str) -> None:
        from lightkube import ApiError
        from lightkube.resources.core_v1 import Pod, Secret

        for kind in (Pod, Secret):
            try:
                await self._api().delete(kind, kernel_id, namespace=self.namespace, grace_period=0)
            except ApiError as exc:
                if exc.status.code != 404:
                    raise

    async def discard(self, session_id: str) -> None:
        """The session is gone: its workspace volume goes too."""
        from lightkube import ApiError
        from lightkube.resources.core_v1 import PersistentVolumeClaim

        try:
            name = workspace_claim_name(session_id)
            await self._api().delete(PersistentVolumeClaim, name, namespace=self.namespace)
        except ApiError as exc:
            if exc.status.code != 404:
                raise

    async def kernels(self) -> dict[str, str]:
        from lightkube.resources.core_v1 import Pod

        found: dict[str, str] = {}
        async for pod in self._api().list(
            Pod, namespace=self.namespace, labels={INSTANCE_LABEL: self.instance}
        ):
            labels = (pod.metadata.labels if pod.metadata else None) or {}
            if SESSION_LABEL in labels and pod.metadata and pod.metadata.name:
                found[labels[SESSION_LABEL]] = pod.metadata.name
        return found

    async def ping(self) -> bool:
        try:
            await asyncio.wait_for(self.kernels(), timeout=5)
        except Exception:
            return False
        return True

    def watch(self, on_gone: GoneCallback) -> None:
        self._watcher = asyncio.get_running_loop().create_task(self._follow(on_gone))

    async def _follow(self, on_gone: GoneCallback) -> None:
        """Follow this instance's kernel pods: a deletion is ``removed``, a terminated kernel ``died``
        (the runtime then reads the pod's state, which tells an OOM kill)."""
        from lightkube.resources.core_v1 import Pod

        while True:
            try:
                watch = self._api().watch(
                    Pod, namespace=self.namespace, labels={INSTANCE_LABEL: self.instance}
                )
                async for event, pod in watch:
                    spec = pod.to_dict()
                    session_id = spec["metadata"].get("labels", {}).get(SESSION_LABEL)
                    if not session_id:
                        continue
                    if event == "DELETED":
                        on_gone(session_id, spec["metadata"]["name"], "removed")
                    elif not pod_state(spec).running:
                        on_gone(session_id, spec["metadata"]["name"], "died")
            except asyncio.CancelledError:
                raise
            except Exception:  # API server restarting, watch expired: follow again
                log.debug("kubernetes pod watch interrupted", exc_info=True)
            await asyncio.sleep(WATCH_RETRY)

    def close(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
        if self._client is not None:
            with contextlib.suppress(RuntimeError):
                asyncio.get_running_loop().create_task(self._client.close())
