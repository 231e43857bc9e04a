"""Whole-workspace archives: a 1 GiB, 5,000-file workspace zipped and streamed, then uploaded back.

Starts its own server (real Docker engine, real kernel image), has the kernel write the files (half
random bytes, half CSV text), downloads ``GET /archive`` as a stream (never held in memory), uploads the
zip back into a folder with ``POST /archive``, and prints the throughput and the server's resident memory
(VmRSS) before and at its peak during each transfer:

    .venv/bin/python bench/archive.py [--size-mb 1024] [--files 5000]
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
from files import BLOCK, RSS_TARGET_MB, rss_mb, timed  # bench/files.py

from workbench.testing import throwaway_server

FILL = """
import os
row = b"2023-01-01,department-42,budget,1234567.89,approved\\n"
size = {size}
for i in range({files}):
    os.makedirs(f"d{{i % 50}}", exist_ok=True)
    data = os.urandom(size) if i % 2 else (row * (size // len(row) + 1))[:size]
    with open(f"d{{i % 50}}/f{{i}}.{{'bin' if i % 2 else 'csv'}}", "wb") as out:
        out.write(data)
print("ok")
"""


def save(client: httpx.Client, url: str, target: Path) -> int:
    moved = 0
    with client.stream("GET", url) as answer, target.open("wb") as out:
        answer.raise_for_status()
        for chunk in answer.iter_raw(BLOCK):
            out.write(chunk)
            moved += len(chunk)
    return moved


def chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as source:
        while block := source.read(BLOCK):
            yield block


def restore(client: httpx.Client, url: str, source: Path) -> int:
    answer = client.post(url, params={"path": "restored"}, content=chunks(source))
    answer.raise_for_status()
    return source.stat().st_size


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size-mb", type=int, default=1024, help="workspace size in MiB (default 1024)")
    parser.add_argument("--files", type=int, default=5000, help="number of files (default 5000)")
    args = parser.parse_args()
    env = {"WORKBENCH_WORKSPACE_QUOTA_MB": str(3 * args.size_mb + 256), "WORKBENCH_EXECUTE_TIMEOUT": "900"}
    with (
        throwaway_server(token="bench", env=env) as server,
        server.client(timeout=900) as client,
        tempfile.TemporaryDirectory() as tmp,
    ):
        assert server.process is not None
        pid = server.process.pid
        created = client.post("/api/v1/sessions", json={"memory_mb": 512})
        created.raise_for_status()
        session_url = f"/api/v1/sessions/{created.json()['id']}"
        code = FILL.format(size=args.size_mb * BLOCK // args.files, files=args.files)
        filled = client.post(f"{session_url}/execute", json={"code": code, "timeout": 900})
        assert filled.json()["stdout"] == "ok\n", filled.text
        saved = Path(tmp) / "workspace.zip"
        before = rss_mb(pid)
        down = timed(pid, lambda: save(client, f"{session_url}/archive", saved))
        up = timed(pid, lambda: restore(client, f"{session_url}/archive", saved))
        client.delete(session_url)
    for label, (seconds, moved, peak) in (("download (GET)", down), ("upload (POST)", up)):
        rate = moved / 2**20 / seconds
        print(f"{label:<15} zip of {moved / 2**20:7.0f} MiB in {seconds:6.2f} s = {rate:6.1f} MiB/s"
              f" | server RSS peak {peak:6.1f} MiB (+{peak - before:5.1f})")  # fmt: skip
    growth = max(down[2], up[2]) - before
    verdict = "ok" if growth < RSS_TARGET_MB else "OVER TARGET"
    print(f"{args.files} files, {args.size_mb} MiB: server RSS before {before:.1f} MiB, peak growth "
          f"{growth:.1f} MiB (target < {RSS_TARGET_MB} MiB: {verdict})")  # fmt: skip


if __name__ == "__main__":
    main()
