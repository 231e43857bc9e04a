"""What the per-run file change-set costs: host-side scan figures, and end to end on a real session.

    .venv/bin/python bench/changes.py [--runs 30] [--no-server]

Part 1 (no Docker) times the work added to each run, for 100 and 10,000 files (in 100 folders): one
snapshot of the workspace after the run and its difference with the previous one (the steady state: a run
starts from the snapshot the previous run ended with), with nothing changed and with 100 files changed
(each then hashed); and one snapshot alone (what a run pays again after a file operation of the API).
Part 2 starts a server and a session, fills its workspace with the same trees, and compares the round
trip of ``1 + 1`` with the change-set and without it (``"files": false``).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from workbench.changes import ChangeLimits, diff, snapshot
from workbench.testing import ServerProcess, short_tmp

LIMITS = ChangeLimits()
FILL = (
    "import os\n"
    "for i in range({n}):\n"
    "    os.makedirs(f'tree/d{{i % 100}}', exist_ok=True)\n"
    "    open(f'tree/d{{i % 100}}/f{{i}}.csv', 'w').write('a,b\\n1,2\\n')"
)


def make_tree(root: Path, files: int) -> None:
    for i in range(files):
        folder = root / f"d{i % 100}"
        folder.mkdir(exist_ok=True)
        (folder / f"f{i}.csv").write_text("a,b\n1,2\n")


def time_scan(root: Path, runs: int, touch: int) -> tuple[float, float]:
    """Median milliseconds of (snapshot + diff, with ``touch`` files rewritten before) and of a snapshot."""
    samples, scans = [], []
    before = snapshot(root, LIMITS.max_files)
    for run in range(runs):
        for i in range(touch):
            (root / f"d{i % 100}" / f"f{i}.csv").write_text(f"a,b\n{run},{i}\n")
        started = time.perf_counter()
        after = snapshot(root, LIMITS.max_files)
        scans.append((time.perf_counter() - started) * 1000)
        changes = diff(root, before, after, LIMITS)
        samples.append((time.perf_counter() - started) * 1000)
        assert len(changes["modified"]) == touch
        before = after
    return statistics.median(samples), statistics.median(scans)


def host_side(runs: int) -> None:
    print("host-side cost per run (snapshot + diff with the previous one), median of", runs)
    for files in (100, 10_000):
        root = Path(tempfile.mkdtemp(prefix="wb-changes-"))
        try:
            make_tree(root, files)
            still, scan = time_scan(root, runs, 0)
            touched, _ = time_scan(root, runs, 100)
            print(f"  {files:>6} files: {still:7.2f} ms unchanged | {touched:7.2f} ms with 100 files changed "
                  f"| {scan:7.2f} ms one snapshot")  # fmt: skip
        finally:
            shutil.rmtree(root)


def end_to_end(runs: int) -> None:
    root = short_tmp()
    server = ServerProcess(root / "state", token="bench")
    server.start()
    try:
        with server.client() as client:
            sid = client.post("/api/v1/sessions", json={"memory_mb": 512}).json()["id"]
            print("end to end: POST .../execute of `1 + 1`, median of", runs)
            for files in (100, 10_000):
                client.post(
                    f"/api/v1/sessions/{sid}/execute",
                    json={"code": "import shutil; shutil.rmtree('tree', True)"},
                )
                client.post(
                    f"/api/v1/sessions/{sid}/execute", json={"code": FILL.format(n=files)}
                ).raise_for_status()
                timings = {}
                for flag in (True, False):
                    samples = []
                    for _ in range(runs):
                        started = time.perf_counter()
                        answer = client.post(
                            f"/api/v1/sessions/{sid}/execute", json={"code": "1 + 1", "files": flag}
                        )
                        answer.raise_for_status()
                        samples.append((time.perf_counter() - started) * 1000)
                    timings[flag] = statistics.median(samples)
                extra = timings[True] - timings[False]
                print(f"  {files:>6} files: {timings[True]:7.2f} ms with the change-set | "
                      f"{timings[False]:7.2f} ms without (+{extra:.2f} ms)")  # fmt: skip
            client.delete(f"/api/v1/sessions/{sid}")
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=30, help="samples per figure (default 30)")
    parser.add_argument("--no-server", action="store_true", help="host-side figures only (no Docker)")
    args = parser.parse_args()
    host_side(args.runs)
    if not args.no_server:
        end_to_end(args.runs)


if __name__ == "__main__":
    main()
