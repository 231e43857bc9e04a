"""The Kubernetes launcher's specs and the deployment manifests, offline (no cluster exists here).

Every restriction of the kernel pod is checked in the generated spec, and every spec and manifest is
validated (strict: unknown fields refused) against the Kubernetes OpenAPI schemas that
``kubernetes-validate`` ships, for the newest minor versions.  The launcher's API calls run against an
in-memory fake of lightkube's client: that shows the calls and their order, not a cluster's behaviour.
"""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]
import kubernetes_validate.utils  # type: ignore[import-untyped]
import pytest
import yaml

from workbench.errors import KernelFailed
from workbench.kernels.connection import (
    KERNEL_CONNECTION_FILE,
    TCP_PORTS,
    new_connection_info,
    write_private_json,
)
from workbench.kernels.kubernetes import (
    INSTANCE_LABEL,
    SESSION_LABEL,
    KubernetesLauncher,
    connection_secret,
    kernel_network_policy,
    kernel_pod,
    pod_state,
    workspace_claim,
)
from workbench.kernels.launcher import TCP_KERNEL_COMMAND, ContainerLimits, LaunchRequest

DEPLOY = Path(__file__).resolve().parent.parent / "deploy" / "kubernetes"
SHIPPED = {
    tuple(int(part) for part in version.split(".")) for version in kubernetes_validate.utils.all_versions()
}
MINORS = [".".join(map(str, version)) for version in sorted(SHIPPED)[-3:]]  # the newest three minors
LIMITS = ContainerLimits(memory_mb=768, cpus=1.5, pids_limit=64, tmp_mb=100, shm_mb=64)
SESSION = "session-0b6c3f0e-5d0c-4c53-9c55-2f0d1b9b1a10"


def request(runtime_dir: Path = Path("/rt")) -> LaunchRequest:
    return LaunchRequest(SESSION, Path("/ws"), runtime_dir, LIMITS)


def pod() -> dict[str, Any]:
    return kernel_pod(request(), "workbench-k", namespace="wb", image="img:1", uid=1000, instance="i1")


def specs() -> list[dict[str, Any]]:
    return [
        pod(),
        workspace_claim(SESSION, namespace="wb", instance="i1", size_mb=2048, storage_class="fast"),
        connection_secret(SESSION, "workbench-k", new_connection_info("tcp"), namespace="wb", instance="i1"),
        kernel_network_policy(namespace="wb", instance="i1"),
    ]


def manifests() -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for path in sorted(DEPLOY.glob("*.yaml")):
        found.extend(document for document in yaml.safe_load_all(path.read_text()) if document)
    return found


# ---------------------------------------------------------------------------------- schema validation


@pytest.mark.parametrize("version", MINORS)
def test_generated_specs_validate_against_the_openapi_schemas(version: str) -> None:
    for spec in specs():
        kubernetes_validate.validate(spec, version, strict=True)


@pytest.mark.parametrize("version", MINORS)
def test_deployment_manifests_validate_against_the_openapi_schemas(version: str) -> None:
    for manifest in manifests():
        kubernetes_validate.validate(manifest, version, strict=True)


def test_a_broken_spec_is_caught_by_the_validation() -> None:
    broken = pod()
    broken["spec"]["containers"][0]["securityContext"]["readOnlyRootFilesytem"] = True  # typo
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, MINORS[0], strict=True)


# ---------------------------------------------------------------------------------- the pod's restrictions


def test_pod_runs_as_uid_1000_never_root_with_runtime_default_seccomp() -> None:
    spec = pod()["spec"]
    for context in (spec["securityContext"], spec["containers"][0]["securityContext"]):
        assert context["runAsNonRoot"] is True
        assert context["runAsUser"] == 1000
        assert context["runAsGroup"] == 1000
        assert context["seccompProfile"] == {"type": "RuntimeDefault"}
    assert spec["automountServiceAccountToken"] is False
    assert spec["restartPolicy"] == "Never"
    assert not any(spec[key] for key in ("hostNetwork", "hostPID", "hostIPC"))


def test_container_is_read_only_unprivileged_without_capabilities() -> None:
    context = pod()["spec"]["containers"][0]["securityContext"]
    assert context["readOnlyRootFilesystem"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert context["privileged"] is False
    assert context["capabilities"] == {"drop": ["ALL"]}


def test_memory_and_cpu_limits_come_from_the_request() -> None:
    resources = pod()["spec"]["containers"][0]["resources"]
    assert resources["limits"] == {"memory": "768Mi", "cpu": "1500m"}
    assert resources["requests"] == resources["limits"]


def test_tmp_is_a_size_limited_memory_volume_and_the_workspace_a_claim_per_session() -> None:
    spec = pod()["spec"]
    volumes = {volume["name"]: volume for volume in spec["volumes"]}
    mounts = {mount["mountPath"]: mount["name"] for mount in spec["containers"][0]["volumeMounts"]}
    assert volumes[mounts["/tmp"]]["emptyDir"] == {"medium": "Memory", "sizeLimit": "100Mi"}
    assert volumes[mounts["/dev/shm"]]["emptyDir"] == {"medium": "Memory", "sizeLimit": "64Mi"}
    claim = volumes[mounts["/data"]]["persistentVolumeClaim"]["claimName"]
    assert claim == workspace_claim(SESSION, namespace="wb", instance="i1", size_mb=1)["metadata"]["name"]
    assert volumes[mounts["/run/workbench"]]["secret"]["secretName"] == "workbench-k"
    other = kernel_pod(
        LaunchRequest("session-other", Path("/ws"), Path("/rt"), LIMITS),
        "k2", namespace="wb", image="img:1", uid=1000, instance="i1",
    )  # fmt: skip
    assert other["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"] != claim


def test_claim_size_and_class() -> None:
    claim = workspace_claim(SESSION, namespace="wb", instance="i1", size_mb=2048, storage_class="fast")
    assert claim["spec"]["resources"]["requests"]["storage"] == "2048Mi"
    assert claim["spec"]["storageClassName"] == "fast"
    assert (
        "storageClassName" not in workspace_claim(SESSION, namespace="wb", instance="i1", size_mb=1)["spec"]
    )


def test_kernel_listens_on_the_tcp_kernel_ports_and_reads_its_connection_file() -> None:
    container = pod()["spec"]["containers"][0]
    assert sorted(port["containerPort"] for port in container["ports"]) == sorted(TCP_PORTS.values())
    assert container["command"] == TCP_KERNEL_COMMAND  # the image's launcher with the ZAP guard
    assert container["command"][-1] == f"/run/workbench/{KERNEL_CONNECTION_FILE}"
    mount = next(mount for mount in container["volumeMounts"] if mount["mountPath"] == "/run/workbench")
    assert mount["readOnly"] is True


def test_labels_identify_session_and_server_instance_for_reconciliation() -> None:
    for spec in specs()[:3]:
        labels = spec["metadata"]["labels"]
        assert labels[SESSION_LABEL] == SESSION
        assert labels[INSTANCE_LABEL] == "i1"
        assert all(len(value) <= 63 for value in labels.values())


def test_network_policy_denies_all_egress_and_admits_only_servers_on_kernel_ports() -> None:
    policy = kernel_network_policy(namespace="wb", instance="i1")["spec"]
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    assert policy["egress"] == []
    selected = policy["podSelector"]["matchLabels"]
    assert all(pod()["metadata"]["labels"][key] == value for key, value in selected.items())
    (rule,) = policy["ingress"]
    (source,) = rule["from"]
    assert set(source) == {"podSelector"}  # pods of this namespace only, no ipBlock, no namespaceSelector
    server_labels = next(m for m in manifests() if m["kind"] == "Deployment")["spec"]["template"]["metadata"]
    assert source["podSelector"]["matchLabels"].items() <= server_labels["labels"].items()
    assert sorted(port["port"] for port in rule["ports"]) == sorted(TCP_PORTS.values())


def test_connection_secret_holds_the_kernels_file() -> None:
    info = new_connection_info("tcp")
    secret = connection_secret(SESSION, "workbench-k", info, namespace="wb", instance="i1")
    assert json.loads(secret["stringData"][KERNEL_CONNECTION_FILE]) == info
    assert pod()["spec"]["volumes"][-1]["secret"]["defaultMode"] == 0o440


def test_pod_state_tells_running_death_and_oom() -> None:
    def with_status(phase: str, terminated: dict[str, Any] | None = None) -> dict[str, Any]:
        state = {"terminated": terminated} if terminated else {"running": {}}
        return {
            "metadata": {},
            "status": {"phase": phase, "containerStatuses": [{"name": "kernel", "state": state}]},
        }

    assert pod_state(with_status("Running")).running
    assert pod_state({"metadata": {}, "status": {}}).running  # pending: still starting
    died = pod_state(with_status("Failed", {"exitCode": 1, "reason": "Error"}))
    assert (died.running, died.death_reason) == (False, "died")
    oom = pod_state(with_status("Failed", {"exitCode": 137, "reason": "OOMKilled"}))
    assert (oom.running, oom.death_reason) == (False, "oom")
    deleting = with_status("Running")
    deleting["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    assert not pod_state(deleting).running


# ---------------------------------------------------------------------------------- deployment files


def test_deployment_has_replicas_probes_and_the_database_url_from_a_secret() -> None:
    deployment = next(m for m in manifests() if m["kind"] == "Deployment")
    assert deployment["spec"]["replicas"] >= 2
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"]["path"] == "/api/v1/health"
    env = {item["name"]: item for item in container["env"]}
    assert env["WORKBENCH_DB_URL"]["valueFrom"]["secretKeyRef"]["key"] == "db-url"
    assert env["WORKBENCH_KERNEL_LAUNCHER"]["value"] == "kubernetes"
    assert env["WORKBENCH_POOL_SIZE"]["value"] == "0"
    assert env["WORKBENCH_WORKSPACE_FS"]["value"] == "dir"  # the server pod is not root
    service = next(m for m in manifests() if m["kind"] == "Service")
    assert service["spec"]["selector"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()


def test_rbac_grants_only_what_the_launcher_calls_in_its_namespace() -> None:
    kinds = {m["kind"] for m in manifests()}
    assert not kinds & {"ClusterRole", "ClusterRoleBinding"}
    role = next(m for m in manifests() if m["kind"] == "Role")
    granted = {
        (resource, verb) for rule in role["rules"] for resource in rule["resources"] for verb in rule["verbs"]
    }
    assert granted == {
        ("pods", "get"), ("pods", "list"), ("pods", "watch"), ("pods", "create"), ("pods", "delete"),
        ("secrets", "create"), ("secrets", "delete"),
        ("persistentvolumeclaims", "create"), ("persistentvolumeclaims", "delete"),
        ("networkpolicies", "create"),
    }  # fmt: skip
    assert not any("/" in resource for resource, _ in granted)  # no pods/log, pods/exec
    assert "*" not in {verb for _, verb in granted}


# ---------------------------------------------------------------------------------- launcher vs a fake API


def api_error(code: int) -> Exception:
    """lightkube's ApiError for an answer with this HTTP status."""
    import httpx
    from lightkube import ApiError

    answer = httpx.Response(code, json={"code": code, "message": "fake"}, request=httpx.Request("GET", "/"))
    error: Any = ApiError
    return error(response=answer)  # type: ignore[no-any-return]


class FakeKube:
    """lightkube's AsyncClient, as far as the launcher uses it, over a dict of objects."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], Any] = {}
        self.calls: list[tuple[str, str]] = []
        self.events: list[tuple[str, Any]] = []
        self.refuse: set[str] = set()

    async def create(self, obj: Any, namespace: str | None = None) -> Any:
        key = (obj.kind, obj.metadata.name)
        self.calls.append(("create", obj.kind))
        if obj.kind in self.refuse:
            raise api_error(422)
        if key in self.objects:
            raise api_error(409)
        self.objects[key] = obj
        return obj

    async def get(self, kind: Any, name: str, namespace: str | None = None) -> Any:
        if (kind.__name__, name) not in self.objects:
            raise api_error(404)
        return self.objects[(kind.__name__, name)]

    async def delete(
        self, kind: Any, name: str, namespace: str | None = None, grace_period: int | None = None
    ) -> None:
        self.calls.append(("delete", kind.__name__))
        if self.objects.pop((kind.__name__, name), None) is None:
            raise api_error(404)

    async def list(
        self, kind: Any, namespace: str | None = None, labels: dict[str, str] | None = None
    ) -> AsyncIterator[Any]:
        for (kind_name, _), obj in list(self.objects.items()):
            if kind_name == kind.__name__ and (labels or {}).items() <= (obj.metadata.labels or {}).items():
                yield obj

    async def close(self) -> None:
        self.calls.append(("close", ""))

    async def watch(
        self, kind: Any, namespace: str | None = None, labels: dict[str, str] | None = None
    ) -> AsyncIterator[tuple[str, Any]]:
        for event in self.events:
            yield event
        await asyncio.Event().wait()  # a watch stays open


@pytest.fixture
def kube() -> FakeKube:
    pytest.importorskip("lightkube")
    return FakeKube()


def test_launcher_creates_policy_claim_secret_pod_and_removes_the_kernel_only(
    kube: FakeKube, tmp_path: Path
) -> None:
    launcher = KubernetesLauncher(image="img:1", uid=1000, instance="i1", namespace="wb", workspace_mb=64,
                                  client=kube)  # type: ignore[arg-type]  # fmt: skip
    info = new_connection_info(launcher.transport)
    write_private_json(tmp_path / KERNEL_CONNECTION_FILE, info)

    async def scenario() -> None:
        first = await launcher.launch(request(tmp_path))
        assert kube.calls == [("create", "NetworkPolicy"), ("create", "PersistentVolumeClaim"),
                              ("create", "Secret"), ("create", "Pod")]  # fmt: skip
        secret = kube.objects[("Secret", first)]
        assert json.loads(secret.stringData[KERNEL_CONNECTION_FILE]) == info
        assert await launcher.kernels() == {SESSION: first}
        assert (await launcher.state(first)) is not None
        await launcher.remove(first)
        assert not {("Pod", first), ("Secret", first)} & set(kube.objects)
        assert await launcher.state(first) is None
        await launcher.remove(first)  # already gone: not an error
        second = await launcher.launch(request(tmp_path))  # policy and claim exist already: reused
        assert second != first
        assert sum(kind == "PersistentVolumeClaim" for kind, _ in kube.objects) == 1
        with pytest.raises(KernelFailed):
            await launcher.signal(second, signal.SIGINT)
        with pytest.raises(KernelFailed):  # no in-place resize: the manager starts the kernel cold
            await launcher.update_limits(second, LIMITS)
        assert await launcher.ping()
        await launcher.discard(SESSION)  # the session is deleted: its workspace volume goes
        assert not any(kind == "PersistentVolumeClaim" for kind, _ in kube.objects)
        await launcher.discard(SESSION)

    asyncio.run(scenario())
    assert launcher.interrupt_by_message


def test_address_waits_for_the_pod_ip_and_the_watch_reports_deaths(kube: FakeKube, tmp_path: Path) -> None:
    from lightkube.models.core_v1 import ContainerState, ContainerStateTerminated, ContainerStatus, PodStatus

    launcher = KubernetesLauncher(image="img:1", uid=1000, instance="i1", namespace="wb", workspace_mb=64,
                                  client=kube)  # type: ignore[arg-type]  # fmt: skip
    write_private_json(tmp_path / KERNEL_CONNECTION_FILE, new_connection_info("tcp"))
    gone: list[tuple[str, str, str]] = []

    async def scenario() -> None:
        name = await launcher.launch(request(tmp_path))
        pod = kube.objects[("Pod", name)]
        waiting = asyncio.create_task(launcher.address(name))
        await asyncio.sleep(0.1)
        assert not waiting.done()  # scheduled, no IP yet
        pod.status = PodStatus(phase="Running", podIP="10.1.2.3")
        assert await asyncio.wait_for(waiting, 5) == "10.1.2.3"
        terminated = ContainerStateTerminated(exitCode=137, reason="OOMKilled")
        dead = ContainerStatus(
            name="kernel", image="img:1", imageID="", ready=False, restartCount=0,
            state=ContainerState(terminated=terminated),
        )  # fmt: skip
        pod.status = PodStatus(phase="Failed", podIP="10.1.2.3", containerStatuses=[dead])
        state = await launcher.state(name)
        assert state is not None
        assert state.death_reason == "oom"
        kube.events = [("MODIFIED", pod), ("DELETED", pod)]
        launcher.watch(lambda *event: gone.append(event))
        for _ in range(100):
            if len(gone) == 2:
                break
            await asyncio.sleep(0.05)
        launcher.close()
        await asyncio.sleep(0)
        assert kube.calls[-1] == ("close", "")
        with pytest.raises(KernelFailed):
            await launcher.address(name)  # a dead pod never gets an address
        launcher.schedule_timeout = 0.2
        pod.status = PodStatus(phase="Pending")
        with pytest.raises(KernelFailed, match="no address"):
            await launcher.address(name)  # never scheduled: bounded wait

    asyncio.run(scenario())
    assert gone[:2] == [(SESSION, gone[0][1], "died"), (SESSION, gone[0][1], "removed")]


def test_a_refused_pod_leaves_no_secret_behind(kube: FakeKube, tmp_path: Path) -> None:
    launcher = KubernetesLauncher(image="img:1", uid=1000, instance="i1", namespace="wb", workspace_mb=64,
                                  client=kube)  # type: ignore[arg-type]  # fmt: skip
    write_private_json(tmp_path / KERNEL_CONNECTION_FILE, new_connection_info("tcp"))
    kube.refuse = {"Pod"}
    with pytest.raises(KernelFailed, match="Pod"):
        asyncio.run(launcher.launch(request(tmp_path)))
    assert not any(kind in ("Secret", "Pod") for kind, _ in kube.objects)
