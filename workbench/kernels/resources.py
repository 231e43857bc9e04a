"""Memory and CPU used by one run, read on the host from the kernel container's cgroup (v1 or v2).

cgroup v1 (this project's reference machine): ``memory.max_usage_in_bytes`` is reset (written ``0``) when a
run starts and read when it ends; CPU time is the difference of ``cpuacct.usage`` (nanoseconds).
cgroup v2: ``memory.peak`` is opened and reset through that open file when the run starts (Linux 6.12+
resets it per open file; on older kernels the reset fails and the peak is the container's since its
start: ``peak_scope`` says which); CPU time is the difference of ``usage_usec`` in ``cpu.stat``.

The container's cgroup is looked for where Docker puts it with the ``cgroupfs`` driver
(``docker/<id>``) or the ``systemd`` one (``system.slice/docker-<id>.scope``); a kernel elsewhere (another
engine host, another launcher) has no meter, and its runs report ``resources: null``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from pathlib import Path
from typing import Any

CGROUP_ROOT = Path("/sys/fs/cgroup")
UNLIMITED = 1 << 60
MB = 1024 * 1024


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    if text == "max":
        return None
    try:
        return int(text)
    except ValueError:
        return None


def _cpu_stat_usec(path: Path) -> int | None:
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        key, _, value = line.partition(" ")
        if key == "usage_usec" and value.strip().isdigit():
            return int(value)
    return None


@dataclasses.dataclass
class Reading:
    """What was read when a run started."""

    cpu_ns: int | None
    peak_fd: int | None = None
    scope: str = "run"


@dataclasses.dataclass(frozen=True)
class CgroupMeter:
    version: int
    memory_dir: Path
    cpu_dir: Path

    @classmethod
    def find(cls, container_id: str, root: Path = CGROUP_ROOT) -> CgroupMeter | None:
        """The meter of a Docker container's cgroup on this host, or ``None`` (blocking, cheap)."""
        if not container_id or "/" in container_id or container_id.startswith("."):
            return None
        places = (f"docker/{container_id}", f"system.slice/docker-{container_id}.scope")
        if (root / "cgroup.controllers").exists():
            for place in places:
                if (root / place / "memory.current").exists():
                    return cls(2, root / place, root / place)
            return None
        for place in places:
            memory, cpu = root / "memory" / place, root / "cpuacct" / place
            if (memory / "memory.max_usage_in_bytes").exists() and (cpu / "cpuacct.usage").exists():
                return cls(1, memory, cpu)
        return None

    def begin(self) -> Reading:
        """Reset the peak and note the CPU time so far (blocking)."""
        if self.version == 1:
            scope = "run"
            try:
                (self.memory_dir / "memory.max_usage_in_bytes").write_text("0")
            except OSError:
                scope = "kernel"
            return Reading(_read_int(self.cpu_dir / "cpuacct.usage"), scope=scope)
        reading = Reading(self._cpu_ns_v2(), scope="kernel")
        with contextlib.suppress(OSError):
            reading.peak_fd = os.open(self.memory_dir / "memory.peak", os.O_RDWR | os.O_CLOEXEC)
            with contextlib.suppress(OSError):
                os.write(reading.peak_fd, b"reset\n")
                reading.scope = "run"
        return reading

    def end(self, reading: Reading, fallback_limit_mb: int | None = None) -> dict[str, Any]:
        """``peak_memory_mb``, ``cpu_seconds`` and ``memory_limit_mb`` of the run (blocking); a value that
        can't be read (the container is gone, e.g. after an OOM kill) is ``null``."""
        if self.version == 1:
            peak = _read_int(self.memory_dir / "memory.max_usage_in_bytes")
            cpu_ns = _read_int(self.cpu_dir / "cpuacct.usage")
            limit = _read_int(self.memory_dir / "memory.limit_in_bytes")
        else:
            peak = self._peak_v2(reading)
            cpu_ns = self._cpu_ns_v2()
            limit = _read_int(self.memory_dir / "memory.max")
        cpu = None if cpu_ns is None or reading.cpu_ns is None else max(0, cpu_ns - reading.cpu_ns) / 1e9
        return {
            "peak_memory_mb": None if peak is None else round(peak / MB, 1),
            "cpu_seconds": None if cpu is None else round(cpu, 3),
            "memory_limit_mb": limit // MB if limit is not None and limit < UNLIMITED else fallback_limit_mb,
            "peak_scope": reading.scope,
        }

    def _cpu_ns_v2(self) -> int | None:
        usec = _cpu_stat_usec(self.cpu_dir / "cpu.stat")
        return None if usec is None else usec * 1000

    def _peak_v2(self, reading: Reading) -> int | None:
        if reading.peak_fd is None:
            return _read_int(self.memory_dir / "memory.peak")
        try:
            text = os.pread(reading.peak_fd, 64, 0).decode().strip()
            return int(text)
        except (OSError, ValueError):
            return None
        finally:
            os.close(reading.peak_fd)
            reading.peak_fd = None


def unmeasured(reason: str | None, limit_mb: int | None) -> dict[str, Any]:
    """The resources of a run whose cgroup could not be read: an OOM kill used the whole limit."""
    return {
        "peak_memory_mb": float(limit_mb) if reason == "oom" and limit_mb is not None else None,
        "cpu_seconds": None,
        "memory_limit_mb": limit_mb,
        "peak_scope": "run" if reason == "oom" else None,
    }
