"""The change-set of a run: created, modified, deleted regular files, links never followed, bounded."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from workbench.changes import ChangeLimits, diff, snapshot

LIMITS = ChangeLimits(max_files=1000, max_entries=300, hash_max_bytes=1024)


def test_created_modified_deleted_with_sizes_mimes_and_hashes(tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("same")
    (tmp_path / "edit.csv").write_text("a,b\n")
    (tmp_path / "gone.json").write_text("{}")
    (tmp_path / "sub").mkdir()
    before = snapshot(tmp_path, 1000)
    (tmp_path / "edit.csv").write_text("a,b\n1,2\n")
    (tmp_path / "gone.json").unlink()
    (tmp_path / "sub" / "图表.png").write_bytes(b"\x89PNG" + b"x" * 10)
    (tmp_path / "big.dat").write_bytes(b"y" * 2048)
    changes = diff(tmp_path, before, snapshot(tmp_path, 1000), LIMITS)
    png = {"path": "sub/图表.png", "size": 14, "mime": "image/png",
           "sha256": hashlib.sha256(b"\x89PNG" + b"x" * 10).hexdigest()}  # fmt: skip
    assert changes["created"] == [{"path": "big.dat", "size": 2048, "mime": None}, png]  # big: no hash
    assert [(e["path"], e["size"]) for e in changes["modified"]] == [("edit.csv", 8)]
    assert changes["deleted"] == [{"path": "gone.json", "size": 2, "mime": "application/json"}]
    assert changes["truncated"] is False
    assert changes["counts"] == {"created": 2, "modified": 1, "deleted": 1}


def test_a_file_replaced_by_rename_is_modified(tmp_path: Path) -> None:
    (tmp_path / "report.json").write_text("{}")
    before = snapshot(tmp_path, 1000)
    (tmp_path / "tmp").write_text("{}")
    os.replace(tmp_path / "tmp", tmp_path / "report.json")  # same size, maybe the same mtime: a new inode
    changes = diff(tmp_path, before, snapshot(tmp_path, 1000), LIMITS)
    assert [e["path"] for e in changes["modified"]] == ["report.json"]


def test_links_are_not_followed_nor_listed(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("secret")
    root = tmp_path / "root"
    root.mkdir()
    before = snapshot(root, 1000)
    (root / "to-dir").symlink_to(outside)
    (root / "to-file").symlink_to(outside / "secret.txt")
    os.mkfifo(root / "pipe")
    (root / ".upload-0123456789abcdef.part").write_text("in flight")
    changes = diff(root, before, snapshot(root, 1000), LIMITS)
    assert changes["created"] == []


def test_a_file_swapped_for_a_link_before_hashing_is_not_read(tmp_path: Path) -> None:
    outside = tmp_path / "secret.txt"
    outside.write_text("secret")
    root = tmp_path / "root"
    root.mkdir()
    before = snapshot(root, 1000)
    (root / "a.txt").write_text("x")
    after = snapshot(root, 1000)
    (root / "a.txt").unlink()
    (root / "a.txt").symlink_to(outside)
    changes = diff(root, before, after, LIMITS)
    assert changes["created"] == [{"path": "a.txt", "size": 1, "mime": "text/plain"}]  # no sha256


def test_past_max_entries_the_set_is_truncated_and_counted(tmp_path: Path) -> None:
    before = snapshot(tmp_path, 1000)
    for i in range(12):
        (tmp_path / f"f{i:02}.txt").write_text("x")
    limits = ChangeLimits(max_files=1000, max_entries=5, hash_max_bytes=1024)
    changes = diff(tmp_path, before, snapshot(tmp_path, 1000), limits)
    assert [e["path"] for e in changes["created"]] == [f"f{i:02}.txt" for i in range(5)]
    assert changes["truncated"] is True
    assert changes["counts"] == {"created": 12, "modified": 0, "deleted": 0}


def test_a_workspace_with_too_many_files_is_not_scanned(tmp_path: Path) -> None:
    for i in range(20):
        (tmp_path / f"f{i}").write_text("x")
    before = snapshot(tmp_path, 10)
    assert before.complete is False
    changes = diff(tmp_path, before, snapshot(tmp_path, 10), LIMITS)
    assert changes["created"] == changes["deleted"] == []
    assert changes["truncated"] is True
    assert "not scanned" in str(changes["reason"])


def test_deep_trees_and_unreadable_names(tmp_path: Path) -> None:
    before = snapshot(tmp_path, 1000)
    deep = tmp_path.joinpath(*["d"] * 80)
    deep.mkdir(parents=True)
    (deep / "leaf.txt").write_text("x")
    os.close(os.open(os.fsencode(tmp_path) + b"/bad-\xff.txt", os.O_CREAT | os.O_WRONLY, 0o644))
    changes = diff(tmp_path, before, snapshot(tmp_path, 1000), LIMITS)
    paths = sorted(e["path"] for e in changes["created"])
    assert paths == ["bad-\ufffd.txt", "/".join(["d"] * 80) + "/leaf.txt"]
