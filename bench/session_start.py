"""Session start latency: create -> first result, p50/p95, sequentially and all at once.

Starts its own server (real Docker engine, real kernel image) and prints figures:

    .venv/bin/python bench/session_start.py [-n 10]
"""

from __future__ import annotations

import argparse
import statistics
import time
from concurrent.futures import ThreadPoolExecutor

from workbench.testing import ServerProcess, remove_state, short_tmp


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def create_and_run(server: ServerProcess) -> tuple[float, float, str]:
    """Seconds to a ready session, and to the first result; the session id."""
    with server.client() as client:
        started = time.perf_counter()
        answer = client.post("/api/v1/sessions", json={"memory_mb": 256})
        answer.raise_for_status()
        ready = time.perf_counter() - started
        session_id = answer.json()["id"]
        result = client.post(f"/api/v1/sessions/{session_id}/execute", json={"code": "1 + 1"})
        result.raise_for_status()
        assert result.json()["outputs"][0]["data"]["text/plain"] == "2"
        return ready, time.perf_counter() - started, session_id


def report(label: str, samples: list[tuple[float, float, str]]) -> None:
    ready = [sample[0] * 1000 for sample in samples]
    first = [sample[1] * 1000 for sample in samples]
    print(f"{label:<24} n={len(samples):<3} ready p50 {statistics.median(ready):7.0f} ms  "
          f"p95 {percentile(ready, 0.95):7.0f} ms | first result p50 {statistics.median(first):7.0f} ms  "
          f"p95 {percentile(first, 0.95):7.0f} ms")  # fmt: skip


def delete_all(server: ServerProcess, samples: list[tuple[float, float, str]]) -> None:
    with server.client() as client:
        for _, _, session_id in samples:
            client.delete(f"/api/v1/sessions/{session_id}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-n", type=int, default=10, help="sessions per measurement (default 10)")
    args = parser.parse_args()
    root = short_tmp()
    server = ServerProcess(root / "state", token="bench", env={"WORKBENCH_MAX_SESSIONS": str(args.n * 2)})
    server.start()
    try:
        warmup = [create_and_run(server)]
        delete_all(server, warmup)
        sequential = []
        for _ in range(args.n):
            sequential.append(create_and_run(server))
            delete_all(server, sequential[-1:])
        report("sequential (cold)", sequential)
        with ThreadPoolExecutor(args.n) as pool:
            concurrent = list(pool.map(lambda _: create_and_run(server), range(args.n)))
        report(f"{args.n} at once", concurrent)
        delete_all(server, concurrent)
    finally:
        server.stop()
        remove_state(root)


if __name__ == "__main__":
    main()
