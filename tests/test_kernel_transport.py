"""Connection info and container options per kernel transport (no engine needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from workbench.config import Settings
from workbench.kernels.connection import TCP_PORTS, host_view, new_connection_info
from workbench.kernels.launcher import (
    KERNEL_COMMAND,
    TCP_KERNEL_COMMAND,
    ContainerLimits,
    DockerLauncher,
    LaunchRequest,
)

LIMITS = ContainerLimits(memory_mb=512, cpus=1.0, pids_limit=64, tmp_mb=16, shm_mb=16)


def request() -> LaunchRequest:
    return LaunchRequest("session-x", Path("/ws"), Path("/rt"), LIMITS)


def test_ipc_info_has_no_curve_keys_and_no_ports_on_any_network() -> None:
    info = new_connection_info("ipc")
    assert info["transport"] == "ipc"
    assert not any(key.startswith("curve_") for key in info)
    assert host_view(info, Path("/state/runtime/ab"))["ip"] == "/state/runtime/ab/k"


def test_tcp_info_has_fresh_curve_keys_and_the_kernel_address_on_the_host() -> None:
    first, second = new_connection_info("tcp"), new_connection_info("tcp")
    assert first["transport"] == "tcp"
    assert {key: first[key] for key in TCP_PORTS} == TCP_PORTS
    assert len(first["curve_publickey"]) == len(first["curve_secretkey"]) == 40  # Z85 of 32 bytes
    assert first["curve_secretkey"] != second["curve_secretkey"]
    assert first["key"] != second["key"]
    seen = host_view(first, Path("/rt"), "172.18.0.5")
    assert seen == {**first, "ip": "172.18.0.5"}
    with pytest.raises(ValueError, match="address"):
        host_view(first, Path("/rt"))


def test_unknown_transport_is_refused() -> None:
    with pytest.raises(ValueError, match="transport"):
        new_connection_info("udp")
    with pytest.raises(ValueError, match="kernel transport"):
        Settings.load(env={"WORKBENCH_KERNEL_TRANSPORT": "udp"})
    with pytest.raises(ValueError, match="transport"):
        DockerLauncher(image="i", uid=1000, instance="x", transport="udp")


def test_container_network_per_transport() -> None:
    ipc = DockerLauncher(image="i", uid=1000, instance="x").container_options(request())
    assert ipc["network_mode"] == "none"
    assert ipc["command"] == KERNEL_COMMAND
    assert "network" not in ipc
    tcp = DockerLauncher(image="i", uid=1000, instance="x", transport="tcp", network="kernels-net")
    options = tcp.container_options(request())
    assert options["network"] == "kernels-net"
    assert "network_mode" not in options
    assert "ports" not in options  # nothing published on the host
    assert options["command"] == TCP_KERNEL_COMMAND  # the image's launcher with the ZAP guard
    assert Settings.load(env={"WORKBENCH_KERNEL_TRANSPORT": "TCP"}).kernel_transport == "tcp"
