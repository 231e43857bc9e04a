"""Unit tests of the kernel image builder (no Docker engine: the client is a fake)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import docker.errors
import pytest

from workbench import image
from workbench.image import INPUTS_LABEL, ImageBuildError, build_image, default_image_name, inputs_hash


@pytest.fixture
def image_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private copy of the kernel_image folder, made the one the module reads."""
    copy = tmp_path / "kernel_image"
    shutil.copytree(image.KERNEL_IMAGE_DIR, copy, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(image, "KERNEL_IMAGE_DIR", copy)
    return copy


class FakeImage:
    def __init__(self, labels: dict[str, str] | None) -> None:
        self.labels = labels


class FakeImages:
    def __init__(self, existing: dict[str, dict[str, str] | None]) -> None:
        self.existing = existing
        self.pulls: list[str] = []

    def get(self, name: str) -> FakeImage:
        if name not in self.existing:
            raise docker.errors.ImageNotFound(f"No such image: {name}")
        return FakeImage(self.existing[name])

    def pull(self, repository: str, tag: str | None = None) -> None:
        self.pulls.append(f"{repository}:{tag}")
        raise docker.errors.APIError("registry unreachable")


class FakeAPI:
    """Records build calls; the build 'creates' the image with the labels it was given."""

    def __init__(self, images: FakeImages, chunks: list[dict[str, Any]]) -> None:
        self.images = images
        self.chunks = chunks
        self.timeout = 60
        self.builds: list[dict[str, Any]] = []
        self.context_files: list[str] = []

    def build(self, **kwargs: Any) -> list[dict[str, Any]]:
        self.builds.append(kwargs)
        context = Path(kwargs["path"])
        self.context_files = sorted(str(p.relative_to(context)) for p in context.rglob("*") if p.is_file())
        if not any("error" in chunk for chunk in self.chunks):
            self.images.existing[kwargs["tag"]] = dict(kwargs["labels"])
        return self.chunks


class FakeClient:
    def __init__(
        self, existing: dict[str, dict[str, str] | None], chunks: list[dict[str, Any]] | None = None
    ) -> None:
        self.images = FakeImages(existing)
        self.api = FakeAPI(self.images, chunks or [])

    def info(self) -> dict[str, str]:
        return {"Architecture": "x86_64"}


def as_client(fake: object) -> Any:
    return fake


@pytest.fixture
def wheelhouse(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A ready wheelhouse: building must not run pip."""
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    (wheels / "demo-1.0-py3-none-any.whl").write_bytes(b"not really a wheel")
    monkeypatch.setattr(image, "_ensure_wheelhouse", lambda cache_dir, machine, progress: wheels)
    return wheels


# -- inputs hash --------------------------------------------------------------------------------


def test_inputs_hash_is_stable_and_short(image_dir: Path) -> None:
    first = inputs_hash()
    assert re.fullmatch(r"[0-9a-f]{12}", first)
    assert inputs_hash() == first


def test_inputs_hash_changes_with_any_input(image_dir: Path) -> None:
    seen = {inputs_hash()}
    for name in ("Dockerfile", "requirements.txt", "matplotlibrc", "ipython_kernel_config.py"):
        path = image_dir / name
        original = path.read_bytes()
        path.write_bytes(original + b"\n# changed\n")
        seen.add(inputs_hash())
        path.write_bytes(original)
    assert len(seen) == 5
    requirements = image_dir / "requirements.txt"
    requirements.write_text(requirements.read_text().replace("numpy>=", "numpy<="))  # same length
    assert inputs_hash() not in seen
    seen.add(inputs_hash())
    (image_dir / "matplotlibrc").rename(image_dir / "other_name")
    assert inputs_hash() not in seen


def test_inputs_hash_ignores_package_marker_and_caches(image_dir: Path) -> None:
    before = inputs_hash()
    (image_dir / "__init__.py").write_text("# packaging only\n")
    (image_dir / "__pycache__").mkdir(exist_ok=True)
    (image_dir / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"\0")
    assert inputs_hash() == before


def test_default_image_name() -> None:
    assert default_image_name() == f"workbench-kernel:{inputs_hash()}"
    assert re.fullmatch(r"workbench-kernel:[0-9a-f]{12}", default_image_name())


def test_kernel_image_dir_holds_the_image_inputs() -> None:
    for name in image.REQUIRED_INPUTS:
        assert (image.KERNEL_IMAGE_DIR / name).is_file(), name


# -- build_image --------------------------------------------------------------------------------


def test_up_to_date_image_returns_at_once_without_building(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def must_not_run(*args: object, **kwargs: object) -> Path:
        raise AssertionError("an up-to-date image needs no base image and no wheelhouse")

    monkeypatch.setattr(image, "_resolve_base", must_not_run)
    monkeypatch.setattr(image, "_ensure_wheelhouse", must_not_run)
    name = default_image_name()
    fake = FakeClient({name: {INPUTS_LABEL: inputs_hash()}})
    messages: list[str] = []
    assert build_image(as_client(fake), cache_dir=tmp_path / "cache", progress=messages.append) == name
    assert messages == [f"image {name} is up to date"]
    assert fake.api.builds == []
    assert fake.images.pulls == []
    assert not (tmp_path / "cache").exists()


def test_stale_image_is_rebuilt_with_base_label_and_wheels(tmp_path: Path, wheelhouse: Path) -> None:
    fake = FakeClient(
        {"kernel:test": {INPUTS_LABEL: "000000000000"}},
        chunks=[{"stream": "Step 1/2 : FROM base\n ---> abc"}, {"stream": "123\n"}, {"aux": {"ID": "x"}}],
    )
    messages: list[str] = []
    name = build_image(
        as_client(fake),
        "kernel:test",
        base="my-base:1",
        cache_dir=tmp_path / "cache",
        progress=messages.append,
    )
    assert name == "kernel:test"
    (call,) = fake.api.builds
    assert call["tag"] == "kernel:test"
    assert call["buildargs"] == {"BASE": "my-base:1"}
    assert call["labels"] == {INPUTS_LABEL: inputs_hash()}
    assert call["nocache"] is False
    assert "Dockerfile" in fake.api.context_files
    assert "wheels/demo-1.0-py3-none-any.whl" in fake.api.context_files
    assert "__init__.py" not in fake.api.context_files
    assert "Step 1/2 : FROM base" in messages
    assert " ---> abc123" in messages
    assert fake.images.pulls == []  # an explicit base never looks at the registry
    assert list((tmp_path / "cache").iterdir()) == []  # the temporary build context is gone


def test_force_rebuilds_an_up_to_date_image_without_cache(tmp_path: Path, wheelhouse: Path) -> None:
    name = default_image_name()
    fake = FakeClient({name: {INPUTS_LABEL: inputs_hash()}})
    build_image(as_client(fake), base="b", cache_dir=tmp_path, progress=lambda _: None, force=True)
    (call,) = fake.api.builds
    assert call["nocache"] is True


def test_build_error_raises_with_the_error_text(tmp_path: Path, wheelhouse: Path) -> None:
    fake = FakeClient(
        {},
        chunks=[
            {"stream": "ERROR: No matching distribution found for numpy\n"},
            {"error": "The command returned a non-zero code: 1", "errorDetail": {"message": "exit 1"}},
        ],
    )
    with pytest.raises(ImageBuildError, match="exit 1") as caught:
        build_image(as_client(fake), "k:1", base="b", cache_dir=tmp_path, progress=lambda _: None)
    assert "No matching distribution found for numpy" in str(caught.value)
    assert "k:1" not in fake.images.existing


def test_missing_input_is_reported_before_anything_runs(image_dir: Path, tmp_path: Path) -> None:
    (image_dir / "matplotlibrc").unlink()
    fake = FakeClient({})
    with pytest.raises(ImageBuildError, match="matplotlibrc"):
        build_image(as_client(fake), base="b", cache_dir=tmp_path / "cache", progress=lambda _: None)
    assert fake.api.builds == []


def test_offline_without_debootstrap_says_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(shutil, "which", lambda *args, **kwargs: None)
    fake = FakeClient({})
    with pytest.raises(ImageBuildError, match="apt-get install debootstrap"):
        build_image(as_client(fake), cache_dir=tmp_path, progress=lambda _: None)
    assert fake.images.pulls == ["python:3.11-slim"]  # auto mode tried the registry first
    assert fake.api.builds == []


def test_reuses_existing_offline_base(tmp_path: Path, wheelhouse: Path) -> None:
    fake = FakeClient({image.OFFLINE_BASE: None})
    build_image(as_client(fake), "k:1", offline=True, cache_dir=tmp_path, progress=lambda _: None)
    assert fake.api.builds[0]["buildargs"] == {"BASE": image.OFFLINE_BASE}
    assert fake.images.pulls == []


# -- wheelhouse ---------------------------------------------------------------------------------


def test_complete_wheelhouse_is_reused_without_pip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    requirements = image.KERNEL_IMAGE_DIR / "requirements.txt"
    ready = image._wheelhouse_dir(tmp_path, requirements, "x86_64")
    ready.mkdir()
    (ready / image.COMPLETE_MARKER).write_text("")

    def no_pip(command: list[str], progress: object) -> None:
        raise AssertionError(f"ran {command}")

    monkeypatch.setattr(image, "_run", no_pip)
    assert image._ensure_wheelhouse(tmp_path, "x86_64", lambda _: None) == ready
    # a different architecture has a wheelhouse of its own
    assert image._wheelhouse_dir(tmp_path, requirements, "aarch64") != ready


def test_incomplete_wheelhouse_is_downloaded_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    requirements = image.KERNEL_IMAGE_DIR / "requirements.txt"
    target = image._wheelhouse_dir(tmp_path, requirements, "x86_64")
    target.mkdir()
    (target / "half.whl").write_bytes(b"")

    def fake_pip(command: list[str], progress: object) -> None:
        destination = Path(command[command.index("-d") + 1])
        (destination / "numpy-2.0-cp311-cp311-manylinux2014_x86_64.whl").write_bytes(b"")

    monkeypatch.setattr(image, "_run", fake_pip)
    assert image._ensure_wheelhouse(tmp_path, "x86_64", lambda _: None) == target
    assert sorted(p.name for p in target.iterdir()) == [
        image.COMPLETE_MARKER,
        "numpy-2.0-cp311-cp311-manylinux2014_x86_64.whl",
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == [target.name]


@pytest.mark.parametrize("machine", ["x86_64", "aarch64"])
def test_pip_download_targets_cpython_311_linux_of_the_machine(machine: str) -> None:
    command = image._pip_download_command(Path("req.txt"), Path("out"), machine)
    assert command[1:4] == ["-m", "pip", "download"]
    assert "--only-binary=:all:" in command
    for flag, value in [("--python-version", "3.11"), ("--abi", "cp311"), ("--implementation", "cp")]:
        assert command[command.index(flag) + 1] == value
    platforms = [command[i + 1] for i, arg in enumerate(command) if arg == "--platform"]
    assert f"manylinux2014_{machine}" in platforms
    assert all(tag.endswith(f"_{machine}") for tag in platforms)


def test_engine_architecture_in_uname_spelling() -> None:
    class Engine:
        def __init__(self, arch: str) -> None:
            self.arch = arch

        def info(self) -> dict[str, str]:
            return {"Architecture": self.arch}

    assert image._machine(as_client(Engine("arm64"))) == "aarch64"
    assert image._machine(as_client(Engine("x86_64"))) == "x86_64"


def test_mount_points_are_unescaped() -> None:
    assert image._unescape_mount(r"/var/cache/a\040b/rootfs/proc") == "/var/cache/a b/rootfs/proc"
