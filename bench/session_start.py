"""Session start latency: create -> ready and -> first result, p50/p95, cold and from the warm pool.

Starts its own servers (real Docker engine, real kernel image) and prints, side by side: sequential cold
creates (pool disabled), sequential pooled creates (each waits until the pool has refilled), and
N creates at once, cold and with a pool of N:

    .venv/bin/python bench/session_start.py [-n 10]
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx

from workbench.testing import ServerProcess, throwaway_server


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


def pool_ready(server: ServerProcess) -> float:
    for line in httpx.get(f"{server.url}/metrics", timeout=10).text.splitlines():
        if line.startswith("workbench_pool_ready "):
            return float(line.split()[-1])
    return 0.0


def wait_for_pool(server: ServerProcess, size: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while pool_ready(server) < size:
        if time.monotonic() > deadline:
            msg = f"the pool did not reach {size} kernels within {timeout} s"
            raise RuntimeError(msg)
        time.sleep(0.1)


@contextlib.contextmanager
def bench_server(pool_size: int, max_sessions: int) -> Iterator[ServerProcess]:
    env = {"WORKBENCH_MAX_SESSIONS": str(max_sessions), "WORKBENCH_POOL_SIZE": str(pool_size)}
    with throwaway_server(token="bench", env=env) as server:
        wait_for_pool(server, pool_size)
        yield server


def sequential(server: ServerProcess, count: int, pool_size: int) -> list[tuple[float, float, str]]:
    samples = []
    for _ in range(count):
        wait_for_pool(server, pool_size)
        samples.append(create_and_run(server))
        delete_all(server, samples[-1:])
    return samples


def at_once(server: ServerProcess, count: int) -> list[tuple[float, float, str]]:
    started = time.perf_counter()
    with ThreadPoolExecutor(count) as workers:
        samples = list(workers.map(lambda _: create_and_run(server), range(count)))
    print(f"{'':<24} all {count} ready within {max(s[0] for s in samples) * 1000:.0f} ms "
          f"(wall {1000 * (time.perf_counter() - started):.0f} ms to every first result)")  # fmt: skip
    delete_all(server, samples)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-n", type=int, default=10, help="sessions per measurement (default 10)")
    args = parser.parse_args()
    with bench_server(pool_size=0, max_sessions=args.n * 2) as cold:
        delete_all(cold, [create_and_run(cold)])  # warm the engine's caches
        report("sequential, cold", sequential(cold, args.n, 0))
        report(f"{args.n} at once, cold", at_once(cold, args.n))
    with bench_server(pool_size=2, max_sessions=args.n * 2) as pooled:
        report("sequential, pool of 2", sequential(pooled, args.n, 2))
    with bench_server(pool_size=args.n, max_sessions=args.n * 2) as pooled:
        report(f"{args.n} at once, pool of {args.n}", at_once(pooled, args.n))


if __name__ == "__main__":
    main()
