"""File transfer: a 1 GiB upload (PUT, streamed) and download, throughput and server memory.

Starts its own server (real Docker engine, real kernel image) with limits raised for the file, uploads a
CSV streamed from a generator (never held in memory), downloads it back, and prints the throughput each
way and the server's resident memory (VmRSS) before, at its peak during each transfer, and after:

    .venv/bin/python bench/files.py [--size-mb 1024]
"""

from __future__ import annotations

import argparse
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx

from workbench.testing import throwaway_server

BLOCK = 1024 * 1024
RSS_TARGET_MB = 64


def csv_block() -> bytes:
    """One MiB of CSV rows (uploads are checked: a .csv must be text)."""
    row = b"2023-01-01,department-42,budget,1234567.89,approved\n"
    block = row * (BLOCK // len(row) + 1)
    return block[:BLOCK - 1] + b"\n"  # fmt: skip


def body(size_mb: int) -> Iterator[bytes]:
    block = csv_block()
    for _ in range(size_mb):
        yield block


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    msg = f"no VmRSS for process {pid}"
    raise RuntimeError(msg)


class PeakRSS:
    """Samples a process's VmRSS in a thread while a transfer runs; ``peak`` is the highest seen."""

    def __init__(self, pid: int, interval: float = 0.02) -> None:
        self.pid = pid
        self.interval = interval
        self.peak = rss_mb(pid)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_mb(self.pid))

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, rss_mb(self.pid))


def timed(pid: int, transfer: Callable[[], int]) -> tuple[float, int, float]:
    """Seconds, bytes moved and peak RSS (MiB) of one transfer."""
    with PeakRSS(pid) as sampler:
        started = time.perf_counter()
        moved = transfer()
        seconds = time.perf_counter() - started
    return seconds, moved, sampler.peak


def upload(client: httpx.Client, url: str, size_mb: int) -> int:
    answer = client.put(url, content=body(size_mb))
    answer.raise_for_status()
    size: int = answer.json()["size"]
    return size


def download(client: httpx.Client, url: str) -> int:
    moved = 0
    with client.stream("GET", url) as answer:
        answer.raise_for_status()
        for chunk in answer.iter_raw(BLOCK):
            moved += len(chunk)
    return moved


def disk_baseline(directory: Path, size_mb: int) -> tuple[float, float]:
    """MiB/s of writing the same bytes to a file on the same disk (fsynced, as ``dd conv=fsync``) and of
    copying that file (as ``cp``)."""
    source, copy = directory / "baseline.csv", directory / "baseline-copy.csv"
    try:
        started = time.perf_counter()
        with source.open("wb") as stream:
            for block in body(size_mb):
                stream.write(block)
            stream.flush()
            os.fsync(stream.fileno())
        written = size_mb / (time.perf_counter() - started)
        started = time.perf_counter()
        shutil.copyfile(source, copy)
        with copy.open("rb") as stream:
            os.fsync(stream.fileno())
        copied = size_mb / (time.perf_counter() - started)
    finally:
        source.unlink(missing_ok=True)
        copy.unlink(missing_ok=True)
    return written, copied


def report(before: float, after: float, up: tuple[float, int, float], down: tuple[float, int, float]) -> None:
    for label, (seconds, moved, peak) in (("upload (PUT)", up), ("download (GET)", down)):
        rate = moved / 2**20 / seconds
        print(f"{label:<15} {moved / 2**20:7.0f} MiB in {seconds:6.2f} s = {rate:7.1f} MiB/s"
              f" | server RSS peak {peak:6.1f} MiB (+{peak - before:5.1f})")  # fmt: skip
    growth = max(up[2], down[2]) - before
    verdict = "ok" if growth < RSS_TARGET_MB else "OVER TARGET"
    print(f"server RSS before {before:.1f} MiB, after {after:.1f} MiB, "
          f"peak growth {growth:.1f} MiB (target < {RSS_TARGET_MB} MiB: {verdict})")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size-mb", type=int, default=1024, help="file size in MiB (default 1024)")
    size_mb = parser.parse_args().size_mb
    env = {"WORKBENCH_MAX_UPLOAD_MB": str(size_mb + 76), "WORKBENCH_WORKSPACE_QUOTA_MB": "2048"}
    with throwaway_server(token="bench", env=env) as server, server.client(timeout=600) as client:
        assert server.process is not None
        pid = server.process.pid
        created = client.post("/api/v1/sessions", json={"memory_mb": 256})
        created.raise_for_status()
        session_url = f"/api/v1/sessions/{created.json()['id']}"
        before = rss_mb(pid)
        up = timed(pid, lambda: upload(client, f"{session_url}/files/bench.csv", size_mb))
        down = timed(pid, lambda: download(client, f"{session_url}/files/bench.csv"))
        after = rss_mb(pid)
        client.delete(session_url)
        written, copied = disk_baseline(server.state_dir.parent, size_mb)
    for moved in (up[1], down[1]):
        assert moved == size_mb * BLOCK, f"moved {moved} bytes, not {size_mb * BLOCK}"
    report(before, after, up, down)
    upload_rate = up[1] / 2**20 / up[0]
    print(
        f"same disk: write {written:.1f} MiB/s (fsynced), copy {copied:.1f} MiB/s; "
        f"upload = {upload_rate / written:.2f}x of the write (goal >= 0.5x)"
    )


if __name__ == "__main__":
    main()
