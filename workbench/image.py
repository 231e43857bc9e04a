"""Build the kernel image (``kernel_image/``) so that it works with or without an image registry.

Three stages, each cached:

1. the base image: the public ``python:3.11-slim`` when it can be pulled, otherwise
   ``workbench-base:bookworm``, imported from a ``debootstrap`` rootfs made on the host;
2. the wheelhouse: ``pip download`` on the host (pip inside a build container cannot reach the index),
   kept under ``cache_dir / "wheels-<hash>"``;
3. ``docker build`` of ``kernel_image/Dockerfile`` with the wheelhouse in its context, tagged
   ``workbench-kernel:<hash of the image inputs>`` and labelled with that hash.

When the tagged image already exists with the right label, :func:`build_image` returns at once.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import docker
import docker.errors
import requests

PUBLIC_BASE = "python:3.11-slim"
OFFLINE_BASE = "workbench-base:bookworm"
INPUTS_LABEL = "org.workbench.inputs"
DEBIAN_SUITE = "bookworm"
DEFAULT_DEBIAN_MIRROR = "http://deb.debian.org/debian"
DEBOOTSTRAP_PACKAGES = ("python3", "python3-venv", "ca-certificates", "fonts-wqy-microhei")
REQUIRED_INPUTS = ("Dockerfile", "requirements.txt", "matplotlibrc", "ipython_kernel_config.py",
                   "workbench_kernel.py")  # fmt: skip
KERNEL_PYTHON = ("3.11", "cp", "cp311")  # python version, implementation, ABI of the kernel's wheels

PULL_TIMEOUT = 20  # seconds without an answer before the public base counts as unreachable
IMPORT_TIMEOUT = 600
BUILD_TIMEOUT = 3600
COMPLETE_MARKER = ".complete"
# Dropped from the debootstrap rootfs before it becomes an image: apt's indexes and caches,
# manual pages and message translations.
ROOTFS_TRIM = (
    "var/lib/apt/lists/*",
    "var/cache/apt/*.bin",
    "var/cache/apt/archives/*.deb",
    "usr/share/man/*",
    "usr/share/info/*",
    "usr/share/locale/*/LC_MESSAGES",
)
BASE_IMAGE_CHANGES = [
    "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "ENV LANG=C.UTF-8",
    'CMD ["/bin/bash"]',
]

Progress = Callable[[str], None]


class ImageBuildError(Exception):
    """The kernel image, its base image or its wheelhouse could not be built."""


def _locate_kernel_image_dir() -> Path:
    """The installed ``workbench.kernel_image`` package, or ``kernel_image/`` in a source checkout."""
    try:
        packaged = resources.files("workbench.kernel_image")
    except ModuleNotFoundError:
        packaged = None
    if isinstance(packaged, Path) and (packaged / "Dockerfile").is_file():
        return packaged
    return Path(__file__).resolve().parent.parent / "kernel_image"


KERNEL_IMAGE_DIR: Path = _locate_kernel_image_dir()


# -- image inputs -------------------------------------------------------------------------------


def _input_files(directory: Path) -> list[Path]:
    """The files that make up the image: everything in the folder but the package marker and caches."""
    return sorted(
        path
        for path in directory.iterdir()
        if path.is_file()
        and path.name != "__init__.py"
        and not path.name.startswith(".")
        and path.suffix not in {".pyc", ".pyo"}
    )


def inputs_hash() -> str:
    """First 12 hex digits of a sha256 over the names and contents of the image inputs."""
    digest = hashlib.sha256()
    for path in _input_files(KERNEL_IMAGE_DIR):
        data = path.read_bytes()
        digest.update(f"{path.name}\0{len(data)}\0".encode())
        digest.update(data)
    return digest.hexdigest()[:12]


def default_image_name() -> str:
    return f"workbench-kernel:{inputs_hash()}"


def _check_inputs(directory: Path) -> None:
    missing = [name for name in REQUIRED_INPUTS if not (directory / name).is_file()]
    if missing:
        raise ImageBuildError(f"kernel image inputs missing from {directory}: {', '.join(missing)}")


# -- helpers ------------------------------------------------------------------------------------


@contextlib.contextmanager
def _stage(progress: Progress, what: str) -> Iterator[None]:
    started = time.monotonic()
    progress(f"{what} ...")
    yield
    progress(f"{what}: done in {time.monotonic() - started:.1f} s")


@contextlib.contextmanager
def _api_timeout(client: docker.DockerClient, seconds: int) -> Iterator[None]:
    """Temporarily change the HTTP timeout of the client's API calls (socket silence, not duration)."""
    previous = client.api.timeout
    client.api.timeout = seconds
    try:
        yield
    finally:
        client.api.timeout = previous


def _run(command: list[str], progress: Progress) -> None:
    """Run a command, passing its output lines to ``progress``; raise with the last lines on failure."""
    tail: collections.deque[str] = collections.deque(maxlen=20)
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace"
    ) as process:
        assert process.stdout is not None
        for raw in process.stdout:
            line = raw.rstrip()
            if line:
                tail.append(line)
                progress(line)
        returncode = process.wait()
    if returncode != 0:
        output = "\n".join(tail)
        raise ImageBuildError(f"{Path(command[0]).name} failed with exit code {returncode}:\n{output}")


def _image_labels(client: docker.DockerClient, name: str) -> dict[str, str] | None:
    """The labels of a local image, or None when there is no such image."""
    try:
        image = client.images.get(name)
    except docker.errors.ImageNotFound:
        return None
    return dict(image.labels or {})


def _machine(client: docker.DockerClient) -> str:
    """The engine's CPU architecture in ``uname -m`` spelling (the host's if the engine won't say)."""
    try:
        machine = str(client.info().get("Architecture") or "")
    except docker.errors.DockerException:
        machine = ""
    machine = machine or platform.machine()
    return {"amd64": "x86_64", "arm64": "aarch64"}.get(machine, machine)


# -- base image ---------------------------------------------------------------------------------


def _public_base_available(client: docker.DockerClient, progress: Progress) -> bool:
    if _image_labels(client, PUBLIC_BASE) is not None:
        return True
    repository, tag = PUBLIC_BASE.split(":")
    progress(f"pulling {PUBLIC_BASE}")
    try:
        with _api_timeout(client, PULL_TIMEOUT):
            client.images.pull(repository, tag=tag)
    except (docker.errors.DockerException, requests.exceptions.RequestException) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        progress(f"cannot pull {PUBLIC_BASE} ({reason}): building offline")
        return False
    return True


def _resolve_base(
    client: docker.DockerClient, base: str | None, offline: bool | None, cache_dir: Path, progress: Progress
) -> str:
    if base is not None:
        return base
    if offline is None:
        offline = not _public_base_available(client, progress)
    if offline:
        return _ensure_offline_base(client, cache_dir, progress)
    return PUBLIC_BASE


def _ensure_offline_base(client: docker.DockerClient, cache_dir: Path, progress: Progress) -> str:
    if _image_labels(client, OFFLINE_BASE) is not None:
        progress(f"base image {OFFLINE_BASE} exists")
        return OFFLINE_BASE
    debootstrap = shutil.which("debootstrap") or shutil.which("debootstrap", path="/usr/sbin:/sbin")
    if debootstrap is None:
        raise ImageBuildError(
            "building the kernel image offline needs debootstrap: `apt-get install debootstrap` "
            "(or pass a base image that has python3)"
        )
    if os.geteuid() != 0:
        raise ImageBuildError("debootstrap must run as root to build the offline base image")
    workdir = Path(tempfile.mkdtemp(prefix=".rootfs-", dir=cache_dir))
    rootfs = workdir / "rootfs"
    try:
        with _stage(progress, f"debootstrap {DEBIAN_SUITE} into {rootfs}"):
            _debootstrap(debootstrap, rootfs, progress)
        _trim_rootfs(rootfs)
        with _stage(progress, f"docker import {OFFLINE_BASE}"):
            _import_rootfs(client, rootfs, OFFLINE_BASE)
    finally:
        _remove_tree(workdir)
    return OFFLINE_BASE


def _debootstrap(debootstrap: str, rootfs: Path, progress: Progress) -> None:
    mirror = os.environ.get("WORKBENCH_DEBIAN_MIRROR") or DEFAULT_DEBIAN_MIRROR
    include = ",".join(DEBOOTSTRAP_PACKAGES)
    _run(
        [debootstrap, "--variant=minbase", f"--include={include}", DEBIAN_SUITE, str(rootfs), mirror],
        progress,
    )


def _trim_rootfs(rootfs: Path) -> None:
    root = rootfs.resolve()
    for pattern in ROOTFS_TRIM:
        for path in rootfs.glob(pattern):
            if not path.parent.resolve().is_relative_to(root):
                continue  # never follow the rootfs's symlinks out into the host
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()


def _import_rootfs(client: docker.DockerClient, rootfs: Path, name: str) -> None:
    repository, tag = name.split(":")
    with subprocess.Popen(
        ["tar", "-C", str(rootfs), "--numeric-owner", "-c", "."], stdout=subprocess.PIPE
    ) as tar:
        assert tar.stdout is not None
        stdout = tar.stdout
        chunks = iter(lambda: stdout.read(1 << 20), b"")
        try:
            with _api_timeout(client, IMPORT_TIMEOUT):
                answer = client.api.import_image_from_stream(
                    chunks, repository=repository, tag=tag, changes=BASE_IMAGE_CHANGES
                )
        except (docker.errors.DockerException, requests.exceptions.RequestException) as error:
            raise ImageBuildError(f"docker import of {name} failed: {error}") from error
        returncode = tar.wait()
    if returncode != 0:
        raise ImageBuildError(f"tar of {rootfs} failed with exit code {returncode}")
    for line in str(answer).splitlines():
        with contextlib.suppress(ValueError):
            message = json.loads(line)
            if isinstance(message, dict) and message.get("error"):
                raise ImageBuildError(f"docker import of {name} failed: {message['error']}")
    if _image_labels(client, name) is None:
        raise ImageBuildError(f"docker import reported no error but {name} does not exist: {answer}")


def _unescape_mount(field: str) -> str:
    """/proc/self/mounts writes space, tab, newline and backslash as octal escapes (\\040 ...)."""
    return re.sub(r"\\([0-7]{3})", lambda match: chr(int(match.group(1), 8)), field)


def _mounts_under(directory: Path) -> list[str]:
    prefix = str(directory.resolve()) + "/"
    try:
        lines = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return []
    points = [_unescape_mount(line.split()[1]) for line in lines if len(line.split()) > 1]
    return sorted((point for point in points if point.startswith(prefix)), reverse=True)


def _remove_tree(directory: Path) -> None:
    """Delete a rootfs work folder, unmounting what a failed debootstrap left mounted inside it first."""
    for point in _mounts_under(directory):
        subprocess.run(["umount", "--lazy", point], check=False)
    if leftover := _mounts_under(directory):
        raise ImageBuildError(f"not deleting {directory}: still mounted inside it: {', '.join(leftover)}")
    shutil.rmtree(directory, ignore_errors=True)


# -- wheelhouse ---------------------------------------------------------------------------------


def _manylinux_platforms(machine: str) -> list[str]:
    return [f"manylinux2014_{machine}", f"manylinux_2_17_{machine}", f"manylinux_2_28_{machine}"]


def _pip_download_command(requirements: Path, destination: Path, machine: str) -> list[str]:
    version, implementation, abi = KERNEL_PYTHON
    platforms = [arg for tag in _manylinux_platforms(machine) for arg in ("--platform", tag)]
    return [
        sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "--progress-bar", "off",
        "--only-binary=:all:", "--python-version", version, "--implementation", implementation,
        "--abi", abi, *platforms, "-r", str(requirements), "-d", str(destination),
    ]  # fmt: skip


def _wheelhouse_dir(cache_dir: Path, requirements: Path, machine: str) -> Path:
    key = hashlib.sha256(requirements.read_bytes() + b"\0" + machine.encode()).hexdigest()[:12]
    return cache_dir / f"wheels-{key}"


def _ensure_wheelhouse(cache_dir: Path, machine: str, progress: Progress) -> Path:
    """A folder of wheels for everything in requirements.txt, for CPython 3.11 on ``machine`` Linux."""
    requirements = KERNEL_IMAGE_DIR / "requirements.txt"
    target = _wheelhouse_dir(cache_dir, requirements, machine)
    if (target / COMPLETE_MARKER).is_file():
        progress(f"wheelhouse {target} is complete")
        return target
    partial = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=cache_dir))
    try:
        with _stage(progress, f"pip download into {target}"):
            _run(_pip_download_command(requirements, partial, machine), progress)
        (partial / COMPLETE_MARKER).write_text(requirements.read_text())
        partial.chmod(0o755)  # mkdtemp made it private
        _publish(partial, target)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return target


def _publish(partial: Path, target: Path) -> None:
    """Move a finished folder into place; an incomplete leftover is replaced, a complete one kept."""
    if target.exists() and not (target / COMPLETE_MARKER).is_file():
        shutil.rmtree(target)
    try:
        partial.rename(target)
    except OSError:
        if not (target / COMPLETE_MARKER).is_file():
            raise


# -- docker build -------------------------------------------------------------------------------


def _fill_context(context: Path, wheelhouse: Path) -> None:
    for path in _input_files(KERNEL_IMAGE_DIR):
        shutil.copy2(path, context / path.name)
    wheels = context / "wheels"
    wheels.mkdir()
    for wheel in wheelhouse.glob("*.whl"):
        try:
            os.link(wheel, wheels / wheel.name)
        except OSError:
            shutil.copy2(wheel, wheels / wheel.name)


def _follow_build(chunks: Iterable[dict[str, Any]], progress: Progress) -> None:
    """Pass the build's output lines to ``progress``; raise on the build's error message."""
    pending = ""
    tail: collections.deque[str] = collections.deque(maxlen=15)
    error: str | None = None
    for chunk in chunks:
        if chunk.get("error"):
            error = str(chunk.get("errorDetail", {}).get("message") or chunk["error"])
        if isinstance(text := chunk.get("stream"), str):
            *lines, pending = (pending + text).split("\n")
            for line in (line.rstrip() for line in lines):
                if line.strip():
                    tail.append(line)
                    progress(line)
        elif isinstance(status := chunk.get("status"), str) and not chunk.get("progressDetail"):
            progress(f"{chunk['id']}: {status}" if chunk.get("id") else status)
    if pending.strip():
        tail.append(pending.rstrip())
        progress(pending.rstrip())
    if error is not None:
        output = "\n".join(tail)
        raise ImageBuildError(f"docker build failed: {error.strip()}\n{output}")


def _docker_build(
    client: docker.DockerClient,
    name: str,
    *,
    base: str,
    wheelhouse: Path,
    digest: str,
    cache_dir: Path,
    nocache: bool,
    progress: Progress,
) -> None:
    context = Path(tempfile.mkdtemp(prefix=".context-", dir=cache_dir))
    try:
        _fill_context(context, wheelhouse)
        chunks = client.api.build(
            path=str(context),
            tag=name,
            buildargs={"BASE": base},
            labels={INPUTS_LABEL: digest},
            rm=True,
            forcerm=True,
            pull=False,
            nocache=nocache,
            decode=True,
            timeout=BUILD_TIMEOUT,
        )
        _follow_build(chunks, progress)
    except (docker.errors.DockerException, requests.exceptions.RequestException) as error:
        raise ImageBuildError(f"docker build of {name} failed: {error}") from error
    finally:
        shutil.rmtree(context, ignore_errors=True)
    if (_image_labels(client, name) or {}).get(INPUTS_LABEL) != digest:
        raise ImageBuildError(
            f"docker build reported no error but {name} is missing or has no {INPUTS_LABEL}"
        )


# -- entry point --------------------------------------------------------------------------------


def build_image(
    client: docker.DockerClient,
    name: str | None = None,
    *,
    base: str | None = None,
    offline: bool | None = None,
    cache_dir: Path,
    progress: Callable[[str], None] = print,
    force: bool = False,
) -> str:
    """Build the kernel image unless it is up to date; return its name.

    ``base`` overrides the base image. ``offline=None`` decides by itself: the public base is used
    when it is present or can be pulled, otherwise a base made with debootstrap. ``force`` rebuilds
    without the layer cache even when the image is up to date.
    """
    digest = inputs_hash()
    name = name or f"workbench-kernel:{digest}"
    labels = _image_labels(client, name)
    if labels is not None and not force:
        if labels.get(INPUTS_LABEL) == digest:
            progress(f"image {name} is up to date")
            return name
        progress(f"image {name} was built from other inputs ({labels.get(INPUTS_LABEL)}): rebuilding")
    _check_inputs(KERNEL_IMAGE_DIR)
    cache_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    base_image = _resolve_base(client, base, offline, cache_dir, progress)
    wheelhouse = _ensure_wheelhouse(cache_dir, _machine(client), progress)
    with _stage(progress, f"docker build {name} FROM {base_image}"):
        _docker_build(
            client,
            name,
            base=base_image,
            wheelhouse=wheelhouse,
            digest=digest,
            cache_dir=cache_dir,
            nocache=force,
            progress=progress,
        )
    progress(f"image {name} built in {time.monotonic() - started:.1f} s")
    return name
