"""The variable inspector's answer time for namespaces of 100 and 5,000 variables (plus a few DataFrames
and arrays), on a real session.

    .venv/bin/python bench/variables.py [--runs 10]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import time

from workbench.testing import ServerProcess, short_tmp

SETUP = (
    "import numpy as np, pandas as pd\n"
    "frames = {f'df{i}': pd.DataFrame({'a': range(1000), 'b': ['x'] * 1000}) for i in range(20)}\n"
    "globals().update(frames)\n"
    "globals().update({f'arr{i}': np.zeros((100, 100)) for i in range(20)})\n"
    "globals().update({f'v{i}': i for i in range({n})})\n"
    "globals().update({f's{i}': '数据' * 50 for i in range({n} // 10)})"
)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=10, help="samples per figure (default 10)")
    args = parser.parse_args()
    root = short_tmp()
    server = ServerProcess(root / "state", token="bench")
    server.start()
    try:
        with server.client() as client:
            for n in (100, 5000):
                sid = client.post("/api/v1/sessions", json={"memory_mb": 1024}).json()["id"]
                code = SETUP.replace("{n}", str(n))
                client.post(f"/api/v1/sessions/{sid}/execute", json={"code": code}).raise_for_status()
                samples, size, count = [], 0, 0
                for _ in range(args.runs):
                    started = time.perf_counter()
                    answer = client.get(f"/api/v1/sessions/{sid}/variables")
                    answer.raise_for_status()
                    samples.append((time.perf_counter() - started) * 1000)
                    size, count = len(answer.content), answer.json()["count"]
                print(f"{count:>6} variables: GET .../variables p50 {statistics.median(samples):7.1f} ms, "
                      f"max {max(samples):7.1f} ms, answer {size / 1024:7.1f} KiB")  # fmt: skip
                client.delete(f"/api/v1/sessions/{sid}")
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
