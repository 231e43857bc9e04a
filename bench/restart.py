"""Restart with kernels to re-attach: `kill -9` of the server with N live sessions, then a fresh start.

Starts its own server (real Docker engine, real kernel image) and prints figures:

    .venv/bin/python bench/restart.py [-n 20]

- health: seconds from starting the process to the first answer of ``/api/v1/health``
- re-attached: seconds from starting the process until the log shows every kernel re-attached
- first execute: seconds until every session answered an execute with its variable
- and, for comparison, the first start's health (nothing to re-attach: Python start-up and migrations)
"""

from __future__ import annotations

import argparse
import signal
import time
from concurrent.futures import ThreadPoolExecutor

from workbench.testing import ServerProcess, remove_state, short_tmp

TOKEN = "bench-restart-token"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("-n", type=int, default=20, help="sessions to re-attach")
    args = parser.parse_args()
    root = short_tmp()
    server = ServerProcess(root / "state", token=TOKEN)
    sessions: list[str] = []
    try:
        started = time.perf_counter()
        server.start()
        baseline = time.perf_counter() - started
        with server.client() as client, ThreadPoolExecutor(4) as pool:

            def create(number: int) -> str:
                answer = client.post("/api/v1/sessions", json={"memory_mb": 96})
                answer.raise_for_status()
                session_id: str = answer.json()["id"]
                client.post(f"/api/v1/sessions/{session_id}/execute", json={"code": f"mark = {number}"})
                return session_id

            sessions = list(pool.map(create, range(args.n)))
        server.stop(signal.SIGKILL)
        started = time.perf_counter()
        server.start()
        health = time.perf_counter() - started
        while server.log().count("re-attached to its running kernel") < args.n:
            if time.perf_counter() - started > 120:
                break
            time.sleep(0.05)
        attached = time.perf_counter() - started
        with server.client() as client:
            for number, session_id in enumerate(sessions):
                answer = client.post(f"/api/v1/sessions/{session_id}/execute", json={"code": "print(mark)"})
                assert answer.json()["stdout"] == f"{number}\n", answer.text
        executed = time.perf_counter() - started
        print(f"{args.n} sessions: health {health:.2f} s, re-attached {attached:.2f} s, "
              f"first execute on all {executed:.2f} s (from the start of the process; a start with nothing "
              f"to re-attach answered health in {baseline:.2f} s)")  # fmt: skip
    finally:  # kernels, warm kernels and the workspace file systems all go, even after a failure
        server.stop()
        server.remove_kernels()
        remove_state(root)


if __name__ == "__main__":
    main()
