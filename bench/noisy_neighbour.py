"""Noisy neighbour against its goal: tenant B's p99 under 250 ms during each of tenant A's attacks.

Runs ``tests/test_noisy_neighbour.py`` (real server, real kernels, the attacker in its own process) with
the suite's stall bound replaced by the 250 ms goal, and prints each attack's figures:

    .venv/bin/python bench/noisy_neighbour.py
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    env = {**os.environ, "NOISY_NEIGHBOUR_P99_LIMIT": "0.250"}
    command = [sys.executable, "-m", "pytest", "-s", "-q", "-p", "no:cacheprovider",
               str(ROOT / "tests" / "test_noisy_neighbour.py")]  # fmt: skip
    return subprocess.run(command, cwd=ROOT, env=env, check=False).returncode


if __name__ == "__main__":
    sys.exit(main())
