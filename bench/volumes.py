"""Cost of a session's file systems: provision (image, mkfs, two mounts) and release, and their disk use.

Needs root and loop devices; no Docker.  Prints figures:

    .venv/bin/python bench/volumes.py [-n 10] [--quota-mb 2048]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

from workbench.testing import remove_state, short_tmp
from workbench.volumes import Volumes, image_bytes, loop_supported


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=10, help="sessions provisioned and released in turn")
    parser.add_argument("--quota-mb", type=int, default=2048)
    args = parser.parse_args()
    problem = loop_supported()
    if problem is not None:
        raise SystemExit(f"no loop mounts: {problem}")
    root = short_tmp()
    quota = args.quota_mb * 2**20
    volumes = Volumes(root / "volumes", mode="loop", quota_bytes=quota, owner=(1000, 1000))
    provision: list[float] = []
    release: list[float] = []
    try:
        for i in range(args.n):
            workspace, runtime = root / f"w{i}", root / f"r{i}"
            workspace.mkdir()
            runtime.mkdir()
            started = time.perf_counter()
            volumes.provision(f"s{i}", workspace, runtime)
            provision.append(time.perf_counter() - started)
            fs = os.statvfs(workspace)
            allocated = volumes.image_path(f"s{i}").stat().st_blocks * 512
            started = time.perf_counter()
            volumes.release(f"s{i}", workspace, runtime)
            release.append(time.perf_counter() - started)
    finally:
        remove_state(root)
    print(f"quota {args.quota_mb} MiB: image {image_bytes(quota) / 2**20:.0f} MiB (sparse), "
          f"available to the kernel {fs.f_bavail * fs.f_frsize / 2**20:.0f} MiB, {fs.f_files} inodes, "
          f"host blocks allocated when empty {allocated / 2**10:.0f} KiB")  # fmt: skip
    for name, values in (("provision", provision), ("release", release)):
        p50, worst = statistics.median(values) * 1000, max(values) * 1000
        print(f"{name}: p50 {p50:.0f} ms, max {worst:.0f} ms (n={args.n})")


if __name__ == "__main__":
    main()
