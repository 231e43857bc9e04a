"""The warm-pool hook: a container started before its tenant is known gets the tenant's library later.

A real container with a slot directory at ``/library`` (``rslave``); the library is mounted on the slot
afterwards and must appear inside, read-only, then go away again when the slot is recycled.
"""

from __future__ import annotations

import contextlib
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
from docker.models.containers import Container

from workbench.image import default_image_name
from workbench.kernels.library_mount import (
    attach_library,
    detach_library,
    prepare_slots,
    release_slots,
    slot_mount,
)
from workbench.testing import short_tmp

pytestmark = pytest.mark.docker


@pytest.fixture
def root() -> Iterator[Path]:
    top = short_tmp()
    yield top
    shutil.rmtree(top, ignore_errors=True)


def shell(container: Container, script: str) -> tuple[int, str]:
    code, output = container.exec_run(["sh", "-c", script], user="1000:1000")
    assert isinstance(code, int)
    assert isinstance(output, bytes)
    return code, output.decode()


def test_a_pooled_container_sees_the_library_mounted_after_it_started(
    engine: docker.DockerClient, root: Path
) -> None:
    library = root / "library" / "alpha"
    library.mkdir(parents=True)
    library.chmod(0o755)
    (library / "预算.csv").write_text("部门\n")
    slots = root / "slots"
    prepare_slots(slots)
    slot = slots / "slot-0"
    slot.mkdir()
    container = None
    try:
        container = engine.containers.run(
            default_image_name(), ["sleep", "600"], name=f"workbench-test-slot-{uuid.uuid4().hex[:8]}",
            detach=True, user="1000:1000", read_only=True, network_mode="none", cap_drop=["ALL"],
            security_opt=["no-new-privileges"], mounts=[slot_mount(slot)],
        )  # fmt: skip
        assert shell(container, "ls -A /library") == (0, "")
        attach_library(slot, library)
        assert shell(container, "cat /library/预算.csv") == (0, "部门\n")
        (library / "new.csv").write_text("late\n")
        assert shell(container, "cat /library/new.csv") == (0, "late\n")
        code, output = shell(container, "echo x > /library/预算.csv")
        assert code != 0
        assert "Read-only" in output
        assert shell(container, "mkdir /library/d")[0] != 0
        detach_library(slot)
        assert shell(container, "ls -A /library") == (0, "")
    finally:
        if container is not None:
            container.remove(force=True)
        with contextlib.suppress(OSError):
            detach_library(slot)
        release_slots(slots)
