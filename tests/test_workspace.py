"""The host-side workspace library: names, symlink attacks, FIFOs, checked uploads, wipe().

No Docker: the hostile kernel is played by the test, which plants links, FIFOs and deep trees in a
temporary workspace next to an "outside" folder holding a canary file that must stay untouched.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import random
import re
import resource
import shutil
import socket
import stat
import sys
import tempfile
import threading
import time
import traceback
import unicodedata
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from workbench import workspace as workspace_module
from workbench.errors import BadRequest, Conflict, NotFound, TooLarge, UnsupportedType
from workbench.workspace import PARTIAL_DIR, FileEntry, Workspace, normalize_path, wipe

EXTENSIONS = (".xlsx", ".xls", ".parquet", ".csv", ".json", ".txt")
CANARY = b"CANARY: the kernel must never see or change this"
UNICODE_NAME = "部门预算报告2023.xlsx"
AS_ROOT = os.geteuid() == 0


# ------------------------------------------------------------------------------ helpers


@dataclass
class Area:
    root: Path  # the workspace
    outside: Path  # a folder next to it, with a canary
    other: Path  # another session's workspace
    ws: Workspace

    @property
    def canary(self) -> Path:
        return self.outside / "secret.txt"


def snapshot(top: Path) -> dict[str, tuple[int, int, bytes | str | None]]:
    """Everything below ``top``: mode, mtime and content (files) or target (links), links not followed."""
    seen: dict[str, tuple[int, int, bytes | str | None]] = {}
    for dirpath, dirnames, filenames in os.walk(top):
        for name in dirnames + filenames:
            path = Path(dirpath, name)
            st = path.lstat()
            content: bytes | str | None = None
            if stat.S_ISREG(st.st_mode):
                content = path.read_bytes()
            elif stat.S_ISLNK(st.st_mode):
                content = os.readlink(path)
            seen[str(path.relative_to(top))] = (st.st_mode, st.st_mtime_ns, content)
    return seen


@pytest.fixture
def area(tmp_path: Path) -> Iterator[Area]:
    outside = tmp_path / "outside"
    (outside / "sub").mkdir(parents=True)
    (outside / "secret.txt").write_bytes(CANARY)
    (outside / "secret.csv").write_bytes(b"a,b\n1,2\n")
    (outside / "sub" / "deep.csv").write_bytes(b"x\n")
    other = tmp_path / "other-session"
    other.mkdir()
    (other / "data.csv").write_bytes(b"theirs\n")
    root = tmp_path / "ws"
    root.mkdir()
    ws = make_ws(root)
    before = (snapshot(outside), snapshot(other), outside.stat().st_mtime_ns)
    yield Area(root, outside, other, ws)
    # Whatever a test did, nothing outside the workspace was written, created, renamed or deleted.
    assert (snapshot(outside), snapshot(other), outside.stat().st_mtime_ns) == before


def make_ws(
    root: Path,
    *,
    quota_bytes: int = 8 << 20,
    allowed_extensions: tuple[str, ...] = EXTENSIONS,
    owner: tuple[int, int] | None = None,
) -> Workspace:
    return Workspace(
        root,
        quota_bytes=quota_bytes,
        max_upload_bytes=1 << 20,
        allowed_extensions=allowed_extensions,
        owner=owner,
    )


def xlsx_bytes() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("[Content_Types].xml", '<?xml version="1.0"?><Types/>')
        archive.writestr("xl/workbook.xml", "<workbook/>")
    return buffer.getvalue()


def zip_without_content_types() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("xl/workbook.xml", "<workbook/>")
    return buffer.getvalue()


def noise(size: int, seed: int = 7) -> bytes:
    return b"\x89PNG\r\n\x1a\n\x00\x00" + random.Random(seed).randbytes(size)


def upload(ws: Workspace, path: str, data: bytes, chunk: int = 64 * 1024) -> FileEntry:
    with ws.begin_upload(path) as up:
        for start in range(0, len(data), chunk):
            up.write(data[start : start + chunk])
        return up.commit()


def leftovers(root: Path) -> list[str]:
    """Temporary upload files, as paths relative to ``root``."""
    return [
        os.path.relpath(os.path.join(top, name), root)
        for top, _, files in os.walk(root)
        for name in files
        if name.startswith(".upload-")
    ]


def listing(root: Path | bytes) -> list[Any]:
    """``os.listdir(root)`` without the folder of uploads in progress, which must be empty."""
    partial = os.fsencode(PARTIAL_DIR) if isinstance(root, bytes) else PARTIAL_DIR
    names = os.listdir(root)
    if partial in names:
        assert os.listdir(os.path.join(root, partial)) == []  # type: ignore[arg-type]
        names.remove(partial)  # type: ignore[arg-type]
    return names


def read_download(ws: Workspace, path: str) -> bytes:
    fd, _ = ws.open_for_download(path)
    with os.fdopen(fd, "rb") as file:
        return file.read()


def make_deep(top: Path, depth: int, name: str = "d" * 10, leaf: bytes = b"") -> None:
    """A chain of ``depth`` folders below ``top``, made with fds (so beyond PATH_MAX), a file at the end."""
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(depth):
            os.mkdir(name, dir_fd=fd)
            child = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = child
        leaf_fd = os.open("leaf.txt", os.O_CREAT | os.O_WRONLY, 0o644, dir_fd=fd)
        os.write(leaf_fd, leaf)
        os.close(leaf_fd)
    finally:
        os.close(fd)


def call_with_deadline(function: Callable[[], object], seconds: float) -> tuple[bool, BaseException | None]:
    """Run ``function()`` in a daemon thread; (finished in time, exception raised)."""
    outcome: list[BaseException | None] = []

    def target() -> None:
        try:
            function()
        except BaseException as exc:
            outcome.append(exc)
        else:
            outcome.append(None)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    return (not thread.is_alive(), outcome[0] if outcome else None)


# ------------------------------------------------------------------------------ names

BAD_PATHS = [
    "",
    ".",
    "..",
    "../x",
    "a/../../x",
    "a/..",
    "./a",
    "/etc/passwd",
    "/",
    "a//b",
    "a/",
    "a\x00b",
    "a\nb",
    "tab\there",
    "del\x7f",
    "x" * 256,
    "é" * 128,  # 256 UTF-8 bytes
    "a\\b",
    "..\\..\\x",
    "bad\ud800surrogate",
    "/".join(["a"] * 65),
]
GOOD_PATHS = [
    ("a", ("a",)),
    ("a/b.csv", ("a", "b.csv")),
    ("%2e%2e", ("%2e%2e",)),  # URL decoding is not this layer's business: a literal name
    ("...", ("...",)),
    (".hidden.csv", (".hidden.csv",)),
    (UNICODE_NAME, (UNICODE_NAME,)),
    ("x" * 255, ("x" * 255,)),
    ("é" * 127, ("é" * 127,)),
    ("/".join(["a"] * 64), ("a",) * 64),
    ("with space.csv", ("with space.csv",)),
    (unicodedata.normalize("NFD", "café.csv"), ("café.csv",)),
]


@pytest.mark.parametrize("path", BAD_PATHS)
def test_normalize_path_refuses(path: str) -> None:
    with pytest.raises(BadRequest):
        normalize_path(path)


@pytest.mark.parametrize(("path", "parts"), GOOD_PATHS)
def test_normalize_path_accepts(path: str, parts: tuple[str, ...]) -> None:
    assert normalize_path(path) == parts


def test_normalize_path_root_only_when_allowed() -> None:
    assert normalize_path("", allow_root=True) == ()
    with pytest.raises(BadRequest):
        normalize_path("")


def test_normalized_name_is_nfc_on_disk(area: Area) -> None:
    upload(area.ws, unicodedata.normalize("NFD", "café.csv"), b"a\n")
    assert listing(area.root) == [unicodedata.normalize("NFC", "café.csv")]


OPERATIONS = {
    "list": lambda ws, p: ws.list(p),
    "stat": lambda ws, p: ws.stat(p),
    "download": lambda ws, p: ws.open_for_download(p),
    "upload": lambda ws, p: ws.begin_upload(p),
    "rename-from": lambda ws, p: ws.rename(p, "new.csv"),
    "rename-to": lambda ws, p: ws.rename("present.csv", p),
    "delete": lambda ws, p: ws.delete(p, recursive=True),
}


@pytest.mark.parametrize(
    ("operation", "path"),
    # '' is the workspace root for a listing (tested above), a bad path for everything else
    [(op, path) for op in sorted(OPERATIONS) for path in BAD_PATHS if (op, path) != ("list", "")],
)
def test_every_operation_refuses_bad_paths(area: Area, operation: str, path: str) -> None:
    (area.root / "present.csv").write_bytes(b"kept\n")
    with pytest.raises(BadRequest):
        OPERATIONS[operation](area.ws, path)
    assert listing(area.root) == ["present.csv"]
    assert (area.root / "present.csv").read_bytes() == b"kept\n"


def test_percent_dots_is_an_ordinary_name(area: Area) -> None:
    upload(area.ws, "%2e%2e/x.csv", b"a\n")
    assert (area.root / "%2e%2e" / "x.csv").read_bytes() == b"a\n"


# ------------------------------------------------------------------------------ listing


def test_list_sorted_paginated_with_total(area: Area) -> None:
    for name in ["c.csv", "a.csv", "b.txt"]:
        (area.root / name).write_bytes(b"12345")
    (area.root / "dir").mkdir()
    (area.root / "dir" / "inner.json").write_bytes(b"{}")
    entries, total = area.ws.list()
    assert total == 4
    assert [e.path for e in entries] == ["a.csv", "b.txt", "c.csv", "dir"]
    assert entries[0].to_json()["size"] == 5
    assert entries[0].mime == "text/csv"
    assert entries[3].type == "directory"
    assert entries[3].mime is None
    page, total = area.ws.list(recursive=True, limit=2, offset=3)
    assert total == 5
    assert [e.path for e in page] == ["dir", "dir/inner.json"]
    assert page[1].name == "inner.json"
    assert page[1].mime == "application/json"


def test_list_entry_fields(area: Area) -> None:
    path = area.root / "t.csv"
    path.write_bytes(b"abc")
    os.utime(path, (1_700_000_000, 1_700_000_000))
    (entry,), _ = area.ws.list()
    assert entry.to_json() == {
        "name": "t.csv",
        "path": "t.csv",
        "type": "file",
        "size": 3,
        "modified": "2023-11-14T22:13:20Z",
        "mime": "text/csv",
    }


def test_list_of_a_file_is_that_entry(area: Area) -> None:
    (area.root / "d").mkdir()
    (area.root / "d" / "f.txt").write_bytes(b"hello")
    entries, total = area.ws.list("d/f.txt")
    assert total == 1
    assert entries[0].path == "d/f.txt"
    assert entries[0].size == 5


def test_list_missing_is_not_found(area: Area) -> None:
    with pytest.raises(NotFound):
        area.ws.list("nope")
    with pytest.raises(NotFound):
        area.ws.list("nope/deeper")


@pytest.mark.parametrize(("limit", "offset"), [(0, 0), (-1, 0), (10_001, 0), (10, -1)])
def test_list_bad_page(area: Area, limit: int, offset: int) -> None:
    with pytest.raises(BadRequest):
        area.ws.list(limit=limit, offset=offset)


def test_list_depth_is_bounded(area: Area) -> None:
    make_deep(area.root, 70, name="d")
    entries, total = area.ws.list(recursive=True)
    deepest = max(len(e.path.split("/")) for e in entries)
    assert deepest == workspace_module.MAX_COMPONENTS
    assert total == workspace_module.MAX_COMPONENTS


def test_list_undecodable_and_odd_names(area: Area) -> None:
    fd = os.open(area.root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.close(os.open(b"caf\xe9.csv", os.O_CREAT | os.O_WRONLY, 0o644, dir_fd=fd))
        os.close(os.open(b"line\nbreak", os.O_CREAT | os.O_WRONLY, 0o644, dir_fd=fd))
    finally:
        os.close(fd)
    entries, _ = area.ws.list()
    encoded = json.dumps([e.to_json() for e in entries], ensure_ascii=False)
    encoded.encode("utf-8")  # a surrogate would make this fail
    names = {e["name"] for e in json.loads(encoded)}
    assert names == {"caf\ufffd.csv", "line\nbreak"}


def test_far_future_and_past_mtimes_do_not_crash() -> None:
    assert workspace_module._iso(1e13) == "9999-12-31T23:59:59Z"
    assert workspace_module._iso(-1e13) == "0001-01-01T00:00:00Z"
    assert workspace_module._iso(0) == "1970-01-01T00:00:00Z"


def test_mime_type() -> None:
    assert workspace_module.mime_type("a.XLSX") == (
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    )
    assert workspace_module.mime_type("chart.png") == "image/png"
    assert workspace_module.mime_type("report.html") == "text/html"
    assert workspace_module.mime_type("noextension") is None
    assert workspace_module.mime_type("data:text/html,x") is None  # a name, never a URL


def test_stat(area: Area) -> None:
    (area.root / "f.json").write_bytes(b"[]")
    entry = area.ws.stat("f.json")
    assert (entry.type, entry.size, entry.path) == ("file", 2, "f.json")
    with pytest.raises(NotFound):
        area.ws.stat("missing.json")


# ------------------------------------------------------------------------------ symlink attacks


def plant_links(area: Area) -> None:
    os.symlink(area.canary, area.root / "canary.txt")
    os.symlink(area.outside / "secret.csv", area.root / "target.csv")
    os.symlink("..", area.root / "up")
    os.symlink(area.outside, area.root / "abs")
    os.symlink(area.other, area.root / "neighbour")
    os.symlink("/etc/passwd", area.root / "passwd.txt")


def test_links_are_listed_not_followed(area: Area) -> None:
    plant_links(area)
    entries, total = area.ws.list(recursive=True)
    assert total == 6
    assert {e.type for e in entries} == {"symlink"}
    assert all(e.size == 0 and e.mime is None for e in entries)
    for link in ["abs", "up", "neighbour"]:
        (entry,), _ = area.ws.list(link, recursive=True)
        assert entry.type == "symlink"


@pytest.mark.parametrize(
    "path",
    [
        "canary.txt",
        "target.csv",
        "passwd.txt",
        "up/outside/secret.txt",
        "abs/secret.txt",
        "neighbour/data.csv",
    ],
)
def test_download_through_links_refused(area: Area, path: str) -> None:
    plant_links(area)
    with pytest.raises((BadRequest, NotFound)):
        area.ws.open_for_download(path)


@pytest.mark.parametrize("path", ["up/outside", "abs/sub", "neighbour", "abs"])
def test_list_through_links_shows_nothing_outside(area: Area, path: str) -> None:
    plant_links(area)
    try:
        entries, _ = area.ws.list(path, recursive=True)
    except BadRequest:
        return
    assert [(e.path, e.type) for e in entries] == [(path, "symlink")]


@pytest.mark.parametrize("path", ["abs/new.csv", "up/outside/new.csv", "neighbour/data.csv", "abs/sub/x.csv"])
def test_upload_through_links_refused(area: Area, path: str) -> None:
    plant_links(area)
    with pytest.raises(BadRequest):
        area.ws.begin_upload(path)
    assert leftovers(area.root) == []


@pytest.mark.parametrize("path", ["target.csv", "canary.txt", "passwd.txt"])
def test_upload_onto_a_link_refused(area: Area, path: str) -> None:
    plant_links(area)
    with pytest.raises(Conflict):
        area.ws.begin_upload(path)
    assert os.readlink(area.root / path)  # the link is still there, untouched
    assert leftovers(area.root) == []


def test_upload_target_replaced_by_link_before_commit(area: Area) -> None:
    with area.ws.begin_upload("report.csv") as up:
        up.write(b"a,b\n")
        os.symlink(area.outside / "secret.csv", area.root / "report.csv")
        with pytest.raises(Conflict):
            up.commit()
    assert os.readlink(area.root / "report.csv") == str(area.outside / "secret.csv")
    assert leftovers(area.root) == []


def test_upload_parent_swapped_for_link_mid_upload(area: Area) -> None:
    (area.root / "d").mkdir()
    with area.ws.begin_upload("d/new.csv") as up:
        up.write(b"a,b\n")
        os.rename(area.root / "d", area.root / "moved")
        os.symlink(area.outside, area.root / "d")
        up.write(b"1,2\n")
        entry = up.commit()
    assert entry.path == "d/new.csv"
    assert (area.root / "moved" / "new.csv").read_bytes() == b"a,b\n1,2\n"


@pytest.mark.parametrize(
    ("source", "target"),
    [
        ("mine.csv", "abs/stolen.csv"),
        ("mine.csv", "up/outside/stolen.csv"),
        ("mine.csv", "neighbour/mine.csv"),
        ("abs/secret.txt", "loot.txt"),
        ("up/outside/secret.txt", "loot.txt"),
        ("neighbour/data.csv", "loot.csv"),
    ],
)
def test_rename_through_links_refused(area: Area, source: str, target: str) -> None:
    plant_links(area)
    (area.root / "mine.csv").write_bytes(b"mine\n")
    with pytest.raises(BadRequest):
        area.ws.rename(source, target)
    assert (area.root / "mine.csv").read_bytes() == b"mine\n"


def test_rename_a_link_moves_the_link(area: Area) -> None:
    plant_links(area)
    entry = area.ws.rename("abs", "folder/abs-moved")
    assert entry.type == "symlink"
    assert os.readlink(area.root / "folder" / "abs-moved") == str(area.outside)
    assert not os.path.lexists(area.root / "abs")


@pytest.mark.parametrize("path", ["abs/secret.txt", "up/outside/secret.txt", "neighbour/data.csv", "abs/sub"])
def test_delete_through_links_refused(area: Area, path: str) -> None:
    plant_links(area)
    with pytest.raises(BadRequest):
        area.ws.delete(path, recursive=True)


@pytest.mark.parametrize("link", ["abs", "up", "neighbour", "canary.txt", "passwd.txt"])
@pytest.mark.parametrize("recursive", [False, True])
def test_delete_a_link_removes_only_the_link(area: Area, link: str, recursive: bool) -> None:
    plant_links(area)
    area.ws.delete(link, recursive=recursive)
    assert not os.path.lexists(area.root / link)
    assert Path("/etc/passwd").exists()


def test_recursive_delete_with_links_inside(area: Area) -> None:
    (area.root / "d" / "e").mkdir(parents=True)
    os.symlink(area.outside, area.root / "d" / "e" / "out")
    os.symlink(area.canary, area.root / "d" / "canary")
    os.symlink("../..", area.root / "d" / "e" / "upup")
    area.ws.delete("d", recursive=True)
    assert listing(area.root) == []


def test_usage_does_not_follow_links(tmp_path: Path) -> None:
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "big.bin").write_bytes(b"x" * (2 << 20))
    (tmp_path / "ws").mkdir()
    os.symlink(tmp_path / "outside", tmp_path / "ws" / "abs")
    os.symlink("..", tmp_path / "ws" / "up")
    os.symlink(tmp_path / "outside" / "big.bin", tmp_path / "ws" / "big.bin")
    os.sync()
    assert make_ws(tmp_path / "ws").usage_bytes() < 1 << 20
    assert make_ws(tmp_path).usage_bytes() >= 2 << 20


def test_folder_swapped_for_link_between_calls(area: Area) -> None:
    (area.root / "d").mkdir()
    (area.root / "d" / "secret.txt").write_bytes(b"INSIDE")
    assert read_download(area.ws, "d/secret.txt") == b"INSIDE"
    assert [e.path for e in area.ws.list("d")[0]] == ["d/secret.txt"]
    os.rename(area.root / "d", area.root / "real")
    os.symlink(area.outside, area.root / "d")
    with pytest.raises(BadRequest):
        read_download(area.ws, "d/secret.txt")
    assert [(e.path, e.type) for e in area.ws.list("d")[0]] == [("d", "symlink")]
    with pytest.raises(BadRequest):
        area.ws.list("d/sub")
    with pytest.raises(BadRequest):
        area.ws.begin_upload("d/secret.csv")
    with pytest.raises(BadRequest):
        area.ws.delete("d/secret.txt")
    with pytest.raises(BadRequest):
        area.ws.rename("d/secret.txt", "x.txt")


def test_folder_swapped_for_link_during_requests(area: Area) -> None:
    """A thread flips ``d`` between a real folder and a link to outside while requests run."""
    (area.root / "d").mkdir()
    (area.root / "d" / "secret.txt").write_bytes(b"INSIDE")
    stop = threading.Event()
    flips = 0

    def flip() -> None:
        nonlocal flips
        while not stop.is_set():
            os.rename(area.root / "d", area.root / "hold")
            os.symlink(area.outside, area.root / "d")
            os.unlink(area.root / "d")
            os.rename(area.root / "hold", area.root / "d")
            flips += 1

    flipper = threading.Thread(target=flip, daemon=True)
    flipper.start()
    reads = 0
    try:
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            with contextlib.suppress(BadRequest, NotFound):
                assert read_download(area.ws, "d/secret.txt") == b"INSIDE"
                reads += 1
            with contextlib.suppress(BadRequest, NotFound):
                entries, _ = area.ws.list("d", recursive=True)
                assert [e.path for e in entries] in (["d/secret.txt"], ["d"])
    finally:
        stop.set()
        flipper.join()
    assert reads > 0
    assert flips > 0


# ------------------------------------------------------------------------------ special files


def test_fifo_download_fails_fast(area: Area) -> None:
    os.mkfifo(area.root / "pipe.csv")
    started = time.monotonic()
    finished, error = call_with_deadline(lambda: area.ws.open_for_download("pipe.csv"), 5)
    assert finished, "open_for_download hung on a FIFO"
    assert isinstance(error, BadRequest)
    assert time.monotonic() - started < 1
    (entry,), _ = area.ws.list()
    assert entry.type == "other"


def test_fifo_swapped_in_after_check_is_refused(area: Area, monkeypatch: pytest.MonkeyPatch) -> None:
    """The lstat says "file", then the kernel swaps in a FIFO before the open: the fstat refuses it."""
    (area.root / "f.csv").write_bytes(b"a\n")
    real_open = os.open

    def swapping_open(path: object, flags: int, *args: object, **kwargs: object) -> int:
        if path == "f.csv":
            os.unlink(area.root / "f.csv")
            os.mkfifo(area.root / "f.csv")
        return real_open(path, flags, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "open", swapping_open)
    finished, error = call_with_deadline(lambda: area.ws.open_for_download("f.csv"), 5)
    monkeypatch.undo()
    assert finished
    assert isinstance(error, BadRequest)


def test_socket_and_folder_download_refused(area: Area) -> None:
    (area.root / "dir.csv").mkdir()
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(area.root / "sock.csv"))
        for path in ["dir.csv", "sock.csv"]:
            with pytest.raises(BadRequest):
                area.ws.open_for_download(path)


def test_download_is_blocking_fd_of_the_file(area: Area) -> None:
    (area.root / "a.txt").write_bytes(b"hello")
    fd, entry = area.ws.open_for_download("a.txt")
    try:
        assert os.get_blocking(fd)
        assert entry.size == 5
        assert os.read(fd, 100) == b"hello"
    finally:
        os.close(fd)
    with pytest.raises(NotFound):
        area.ws.open_for_download("missing.txt")


# ------------------------------------------------------------------------------ uploads

GOOD_UPLOADS = [
    ("book.xlsx", xlsx_bytes()),
    ("old.xls", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + noise(600)),
    ("table.parquet", b"PAR1" + noise(100) + b"PAR1"),
    ("tiny.parquet", b"PAR1PAR1"),
    ("data.json", b'{"a": [1, 2, {"b": null}]}'),
    ("bom.json", "\ufeff[1, 2]".encode()),
    ("plain.csv", b"a,b\n1,2\n"),
    ("bom.csv", "\ufeffname,value\nx,1\n".encode()),
    ("utf16.csv", "部门,预算\n研发,100\n".encode("utf-16")),
    ("gb.csv", "部门,预算\n研发,100\n".encode("gb18030")),
    ("empty.txt", b""),
    ("UPPER.CSV", b"a\tb\r\n"),
]
BAD_CONTENT = [
    ("fake.xlsx", noise(2000)),
    ("nomember.xlsx", zip_without_content_types()),
    ("fake.xls", noise(600)),
    ("start-only.parquet", b"PAR1" + noise(100)),
    ("short.parquet", b"PAR1"),
    ("bad.json", b'{"a": '),
    ("deep.json", b"[" * 200_000 + b"]" * 200_000),
    ("latin1.json", '{"a": "café"}'.encode("latin-1")),
    ("binary.csv", noise(5000)),
    ("nul.txt", b"abc\x00def"),
    ("controls.txt", b"abc\x01\x02\x03"),
    ("utf32.txt", "abc".encode("utf-32")),
]


@pytest.mark.parametrize(("name", "data"), GOOD_UPLOADS)
def test_good_uploads(area: Area, name: str, data: bytes) -> None:
    entry = upload(area.ws, f"in/{name}", data, chunk=1000)
    assert (entry.path, entry.size, entry.type) == (f"in/{name}", len(data), "file")
    assert (area.root / "in" / name).read_bytes() == data
    assert read_download(area.ws, f"in/{name}") == data
    assert leftovers(area.root) == []


@pytest.mark.parametrize(("name", "data"), BAD_CONTENT)
@pytest.mark.parametrize("folder", ["", "new/deeper/"])
def test_bad_content_refused(area: Area, name: str, data: bytes, folder: str) -> None:
    with pytest.raises(UnsupportedType):
        upload(area.ws, folder + name, data)
    assert listing(area.root) == []  # not the file, not its temporary file, not the folders made for it


def test_refused_upload_keeps_folders_it_did_not_make(area: Area) -> None:
    (area.root / "kept").mkdir()
    with pytest.raises(UnsupportedType):
        upload(area.ws, "kept/made/fake.xlsx", b"not a zip")
    assert listing(area.root) == ["kept"]
    assert os.listdir(area.root / "kept") == []


@pytest.mark.parametrize(
    "name",
    ["report.xlsx.exe", "data.csv.sh", "x.exe", "script.py", "noextension", ".csv", "a.csv.", "p.part"],
)
def test_extension_refused(area: Area, name: str) -> None:
    with pytest.raises(UnsupportedType):
        area.ws.begin_upload(f"sub/{name}")
    assert listing(area.root) == []


def test_configured_extensions(tmp_path: Path) -> None:
    ws = make_ws(tmp_path, allowed_extensions=("PNG", " .tsv"))
    assert ws.allowed_extensions == ("png", "tsv")
    upload(ws, "chart.png", noise(100))  # no content check for an extension without one
    with pytest.raises(UnsupportedType):
        upload(ws, "bad.tsv", noise(100))
    with pytest.raises(UnsupportedType):
        ws.begin_upload("a.csv")


def test_too_big(area: Area) -> None:
    with pytest.raises(TooLarge):
        upload(area.ws, "big.csv", b"x" * ((1 << 20) + 1))
    with pytest.raises(TooLarge):
        upload(area.ws, "new/big.csv", b"x" * ((1 << 20) + 1))
    assert listing(area.root) == []
    upload(area.ws, "exact.csv", b"x" * (1 << 20))


def test_over_quota(tmp_path: Path) -> None:
    ws = make_ws(tmp_path, quota_bytes=256 * 1024)
    (tmp_path / "existing.csv").write_bytes(b"y" * (150 * 1024))
    os.sync()
    assert ws.usage_bytes() >= 150 * 1024
    with pytest.raises(TooLarge):
        upload(ws, "more.csv", b"x" * (150 * 1024))
    assert sorted(listing(tmp_path)) == ["existing.csv"]
    upload(ws, "fits.csv", b"x" * (50 * 1024))
    (tmp_path / "filler.csv").write_bytes(b"z" * (100 * 1024))
    with pytest.raises(TooLarge):
        ws.begin_upload("none-left.csv")
    assert leftovers(tmp_path) == []


def test_usage_counts_blocks_and_hard_links_once(area: Area) -> None:
    base = area.ws.usage_bytes()
    (area.root / "d").mkdir()
    (area.root / "d" / "f.csv").write_bytes(b"q" * (100 * 1024))
    os.sync()
    grown = area.ws.usage_bytes()
    assert grown - base >= 100 * 1024
    os.link(area.root / "d" / "f.csv", area.root / "hard.csv")
    assert area.ws.usage_bytes() - grown < 16 * 1024


def test_upload_context_manager_aborts(area: Area) -> None:
    with contextlib.suppress(KeyError), area.ws.begin_upload("d/x.csv") as up:
        up.write(b"a,b\n")
        assert len(leftovers(area.root)) == 1
        raise KeyError("client went away")
    assert leftovers(area.root) == []
    assert not (area.root / "d" / "x.csv").exists()
    up.abort()  # idempotent
    with pytest.raises(RuntimeError):
        up.write(b"more")
    with pytest.raises(RuntimeError):
        up.commit()


def test_upload_replaces_a_regular_file(area: Area) -> None:
    (area.root / "x.csv").write_bytes(b"old\n")
    upload(area.ws, "x.csv", b"new\n")
    assert (area.root / "x.csv").read_bytes() == b"new\n"


@pytest.mark.parametrize("kind", ["dir", "fifo"])
def test_upload_does_not_replace_special_targets(area: Area, kind: str) -> None:
    target = area.root / "x.csv"
    with area.ws.begin_upload("x.csv") as up:
        up.write(b"a\n")
        if kind == "dir":
            target.mkdir()
        else:
            os.mkfifo(target)
        with pytest.raises(Conflict):
            up.commit()
    assert target.is_dir() if kind == "dir" else stat.S_ISFIFO(target.lstat().st_mode)
    assert leftovers(area.root) == []
    with pytest.raises(Conflict):
        area.ws.begin_upload("x.csv")


def test_upload_parent_is_a_file(area: Area) -> None:
    (area.root / "a.csv").write_bytes(b"a\n")
    with pytest.raises(Conflict):
        area.ws.begin_upload("a.csv/b.csv")
    assert listing(area.root) == ["a.csv"]


def test_upload_modes_and_owner(tmp_path: Path) -> None:
    owner = (1000, 1000) if AS_ROOT else None
    ws = make_ws(tmp_path, owner=owner)
    old = os.umask(0o077)
    try:
        upload(ws, "a/b/c.csv", b"x\n")
    finally:
        os.umask(old)
    for path, mode in [("a", 0o775), ("a/b", 0o775), ("a/b/c.csv", 0o664)]:
        st = (tmp_path / path).stat()
        assert stat.S_IMODE(st.st_mode) == mode
        if AS_ROOT:
            assert (st.st_uid, st.st_gid) == (1000, 1000)


def test_kernel_tampering_with_the_temp_file(area: Area) -> None:
    with area.ws.begin_upload("x.csv") as up:
        up.write(b"a\n")
        (temp,) = leftovers(area.root)
        os.rename(area.root / temp, area.root / "stolen.part")
        (area.root / temp).write_bytes(b"planted\n")
        with pytest.raises(Conflict):
            up.commit()
    assert not (area.root / "x.csv").exists()
    assert (area.root / temp).read_bytes() == b"planted\n"  # not ours: left alone


def test_unicode_round_trip(area: Area) -> None:
    data = xlsx_bytes()
    entry = upload(area.ws, UNICODE_NAME, data)
    assert entry.name == UNICODE_NAME
    assert listing(os.fsencode(area.root)) == [UNICODE_NAME.encode("utf-8")]
    (listed,), total = area.ws.list()
    assert total == 1
    assert listed.to_json()["name"] == UNICODE_NAME
    assert json.loads(json.dumps(listed.to_json()))["path"] == UNICODE_NAME
    assert read_download(area.ws, UNICODE_NAME) == data
    moved = area.ws.rename(UNICODE_NAME, "报告/" + UNICODE_NAME.replace(".xlsx", "-v2.xlsx"))
    assert moved.path == "报告/部门预算报告2023-v2.xlsx"
    assert read_download(area.ws, moved.path) == data
    area.ws.delete("报告", recursive=True)
    assert listing(area.root) == []


# ------------------------------------------------------------------------------ rename / delete


def test_rename_file_and_folder(area: Area) -> None:
    (area.root / "a.csv").write_bytes(b"a\n")
    entry = area.ws.rename("a.csv", "x/y/b.csv")
    assert (entry.path, entry.type, entry.size) == ("x/y/b.csv", "file", 2)
    assert (area.root / "x" / "y" / "b.csv").read_bytes() == b"a\n"
    folder = area.ws.rename("x", "z")
    assert folder.type == "directory"
    assert (area.root / "z" / "y" / "b.csv").exists()


@pytest.mark.parametrize("fallback", [False, True])
def test_rename_refuses_existing_target(area: Area, monkeypatch: pytest.MonkeyPatch, fallback: bool) -> None:
    if fallback:
        monkeypatch.setattr(workspace_module, "_renameat2", None)
    (area.root / "a.csv").write_bytes(b"a\n")
    (area.root / "b.csv").write_bytes(b"b\n")
    (area.root / "d").mkdir()
    for target in ["b.csv", "d", "a.csv"]:
        with pytest.raises(Conflict):
            area.ws.rename("a.csv", target)
    os.symlink("nowhere", area.root / "link")
    with pytest.raises(Conflict):
        area.ws.rename("a.csv", "link")
    assert (area.root / "a.csv").read_bytes() == b"a\n"
    assert (area.root / "b.csv").read_bytes() == b"b\n"
    assert os.readlink(area.root / "link") == "nowhere"


def test_rename_into_itself_and_missing(area: Area) -> None:
    (area.root / "d" / "e").mkdir(parents=True)
    with pytest.raises(BadRequest):
        area.ws.rename("d", "d/e/d")
    with pytest.raises(NotFound):
        area.ws.rename("missing.csv", "b.csv")
    assert not (area.root / "b.csv").exists()
    assert sorted(listing(area.root)) == ["d"]


def test_failed_rename_removes_the_folders_it_made(area: Area, monkeypatch: pytest.MonkeyPatch) -> None:
    def cross_device(*args: object) -> None:
        raise OSError(errno.EXDEV, "cross-device link")

    (area.root / "a.csv").write_bytes(b"a")
    (area.root / "old").mkdir()
    monkeypatch.setattr(workspace_module, "_rename_noreplace", cross_device)
    with pytest.raises(BadRequest):
        area.ws.rename("a.csv", "old/new/deeper/a.csv")
    assert sorted(listing(area.root)) == ["a.csv", "old"]
    assert os.listdir(area.root / "old") == []


def test_delete(area: Area) -> None:
    (area.root / "d" / "e").mkdir(parents=True)
    (area.root / "d" / "e" / "f.csv").write_bytes(b"x")
    (area.root / "g.csv").write_bytes(b"x")
    area.ws.delete("g.csv")
    assert not (area.root / "g.csv").exists()
    with pytest.raises(Conflict):
        area.ws.delete("d")
    assert (area.root / "d" / "e" / "f.csv").exists()
    with pytest.raises(NotFound):
        area.ws.delete("nope")
    with pytest.raises(BadRequest):
        area.ws.delete("")
    os.mkfifo(area.root / "d" / "fifo")
    (area.root / "d" / "e").chmod(0)
    area.ws.delete("d", recursive=True)
    assert listing(area.root) == []
    assert area.root.is_dir()


def test_delete_deep_folder(area: Area) -> None:
    (area.root / "x").mkdir()
    make_deep(area.root / "x", 1500)
    area.ws.delete("x", recursive=True)
    assert listing(area.root) == []


# ------------------------------------------------------------------------------ wipe


def test_wipe_deep_tree_beyond_path_max_and_fd_limit(tmp_path: Path) -> None:
    root = tmp_path / "ws"
    root.mkdir()
    make_deep(root, 2000)
    assert os.pathconf("/", "PC_PATH_MAX") < 2000 * 11
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
    try:
        wipe(root)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert not os.path.lexists(root)


def test_wipe_many_files_odd_names_and_locked_folders(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_bytes(CANARY)
    root = tmp_path / "ws"
    (root / "many").mkdir(parents=True)
    fd = os.open(root / "many", os.O_RDONLY | os.O_DIRECTORY)
    try:
        for i in range(20_000):
            os.close(os.open(f"f{i}", os.O_CREAT | os.O_WRONLY, 0o644, dir_fd=fd))
    finally:
        os.close(fd)
    raw = os.fsencode(root)
    os.mkdir(raw + b"/\xff\xfe-dir")
    Path(os.fsdecode(raw + b"/\xff\xfe-dir/caf\xe9.csv")).write_bytes(b"x")
    (root / "locked" / "inner").mkdir(parents=True)
    (root / "locked" / "inner" / "f.txt").write_bytes(b"x")
    (root / "locked" / "inner").chmod(0)
    (root / "locked").chmod(0)
    os.symlink(outside, root / "out")
    os.symlink(outside / "keep.txt", root / "locked-link")
    os.mkfifo(root / "fifo")
    started = time.monotonic()
    wipe(root)
    assert time.monotonic() - started < 30
    assert not os.path.lexists(root)
    assert os.listdir(outside) == ["keep.txt"]
    assert (outside / "keep.txt").read_bytes() == CANARY


def test_wipe_missing_and_link_root(tmp_path: Path) -> None:
    wipe(tmp_path / "never-existed")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_bytes(CANARY)
    os.symlink(outside, tmp_path / "ws")
    wipe(tmp_path / "ws")
    assert not os.path.lexists(tmp_path / "ws")
    assert (outside / "keep.txt").read_bytes() == CANARY
    with pytest.raises(ValueError, match="workspace directory"):
        wipe(Path("/"))


@pytest.mark.skipif(not AS_ROOT, reason="needs root to switch to an unprivileged uid")
def test_wipe_chmod_000_as_unprivileged_user() -> None:
    """Without root's override, the 000 folders must be chmod'ed (through their own handle) to be emptied."""
    nobody = 65534
    base = Path(tempfile.mkdtemp(dir="/tmp"))
    try:
        os.chmod(base, 0o755)  # noqa: S103 - the unprivileged child must reach it
        root = base / "ws"
        (root / "locked" / "inner").mkdir(parents=True)
        (root / "locked" / "inner" / "f.txt").write_bytes(b"x")
        (root / "locked" / "g.txt").write_bytes(b"x")
        for dirpath, dirnames, filenames in os.walk(base):
            for name in [".", *dirnames, *filenames]:
                os.chown(Path(dirpath, name), nobody, nobody)
        (root / "locked" / "inner").chmod(0)
        (root / "locked").chmod(0)
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child reports through its exit status
            code = 1
            try:
                os.setgroups([])
                os.setgid(nobody)
                os.setuid(nobody)
                wipe(root)
                code = 0
            except BaseException:
                traceback.print_exc()
            finally:
                sys.stderr.flush()
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert not os.path.lexists(root)
    finally:
        for dirpath, dirnames, _ in os.walk(base):
            for name in dirnames:
                os.chmod(Path(dirpath, name), 0o700)
        shutil.rmtree(base)


def test_usage_of_a_deep_tree(area: Area) -> None:
    base = area.ws.usage_bytes()
    make_deep(area.root, 1200, leaf=b"u" * (256 * 1024))
    try:
        os.sync()
        assert area.ws.usage_bytes() - base >= 256 * 1024  # the walk reached the file at the bottom
    finally:
        wipe(area.root)  # pytest's own clean-up (shutil.rmtree) can't remove a tree this deep


def test_no_host_paths_in_messages(area: Area) -> None:
    plant_links(area)
    errors: list[str] = []
    calls: list[Callable[[], object]] = [
        lambda: area.ws.open_for_download("abs/secret.txt"),
        lambda: area.ws.list("missing/x"),
        lambda: area.ws.delete("canary.txt/x"),
        lambda: area.ws.begin_upload("target.csv"),
        lambda: area.ws.rename("nope.csv", "b.csv"),
    ]
    for call in calls:
        with pytest.raises((BadRequest, NotFound, Conflict)) as caught:
            call()
        errors.append(str(caught.value))
    assert not any(re.search(re.escape(str(area.root.parent)), message) for message in errors)
    assert all(message for message in errors)
