"""The hostile tenant of the noisy-neighbour suite, in a process of its own (so that its work never delays
the measuring process): ``python -m tests.noisy_attacker KIND URL TOKEN SESSION_ID``.

It prepares its attack, prints ``ready``, then repeats the attack until it gets SIGTERM.
"""

from __future__ import annotations

import contextlib
import json
import signal
import sys
import threading
from collections.abc import Callable

import httpx
from websockets.sync.client import connect

PAUSE = 0.05
HUGE_OUTPUTS = [
    "'y' * 120_000_000",
    "print('z' * 100_000_000)",
    "from IPython.display import display\ndisplay({'text/plain': 'w' * 100_000_000}, raw=True)",
]
PLANT_FILES = (
    "import os\nos.makedirs('many', exist_ok=True)\n"
    "for i in range(200_000):\n    open(f'many/f{i}', 'w').close()"
)
PLANT_RUNTIME = "for i in range(50_000):\n    open(f'/run/workbench/k-planted-{i}', 'w').close()"
GARBAGE = (
    "k = get_ipython().kernel\n"
    "for i in range(5_000):\n"
    "    k.iopub_socket.send_multipart([b'<IDS|MSG>', b'bad', b'{}', b'{}', b'{}', b'{}'])\n"
    "import time; time.sleep(1)"
)


class Attacker:
    def __init__(self, url: str, token: str, session_id: str) -> None:
        self.url = url
        self.token = token
        self.sid = session_id
        self.stop = threading.Event()
        self.client = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=600)

    def execute(self, code: str) -> None:
        with contextlib.suppress(httpx.HTTPError):
            self.client.post(f"/api/v1/sessions/{self.sid}/execute", json={"code": code, "timeout": 300})

    def repeat(self, action: Callable[[], object], threads: int = 1) -> None:
        """``action`` again and again on ``threads`` threads, with a breath between two (the attack is on
        the server, not on the CPU of the machine that runs both)."""

        def loop() -> None:
            while not self.stop.is_set():
                with contextlib.suppress(httpx.HTTPError, OSError):
                    action()
                self.stop.wait(PAUSE)

        workers = [threading.Thread(target=loop, daemon=True) for _ in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()

    # the attacks (classes 2, 3, 4, 5 and 10 of issue 11)

    def huge_output(self) -> None:
        self.execute(HUGE_OUTPUTS[0])  # one landed before the measurements start, then more while they run
        ready()
        turn = iter(range(10**9))
        self.repeat(lambda: self.execute(HUGE_OUTPUTS[next(turn) % len(HUGE_OUTPUTS)]))

    def many_fields(self) -> None:
        body = b"".join(
            b'--B\r\nContent-Disposition: form-data; name="f%d"\r\n\r\nv\r\n' % i for i in range(300_000)
        )
        body += b"--B--\r\n"
        headers = {"Content-Type": "multipart/form-data; boundary=B"}
        ready()
        self.repeat(
            lambda: self.client.post(f"/api/v1/sessions/{self.sid}/files", content=body, headers=headers), 2
        )

    def scans(self) -> None:
        self.execute(PLANT_FILES)
        ready()
        turn = iter(range(10**9))

        def step() -> None:
            if next(turn) % 8 == 0:
                self.execute(PLANT_RUNTIME)
                self.client.post(f"/api/v1/sessions/{self.sid}/restart")
            self.client.put(f"/api/v1/sessions/{self.sid}/files/up.csv", content=b"a,b\n" * 256)
            self.client.get(f"/api/v1/sessions/{self.sid}/files", params={"recursive": "true"})

        self.repeat(step)

    def ws_flood(self) -> None:
        url = self.url.replace("http://", "ws://") + f"/api/v1/sessions/{self.sid}/ws"
        big = "x = 1  # " + "y" * 1_900_000
        queued = "import time; time.sleep(0.05)  # " + "y" * 900_000
        ready()

        def round_trip() -> None:
            with connect(
                url, additional_headers={"Authorization": f"Bearer {self.token}"}, max_size=2**26
            ) as ws:
                for i in range(300):
                    ws.send(json.dumps({"type": "execute", "id": f"big{i}", "code": big}))
                for i in range(200):
                    ws.send(json.dumps({"type": "execute", "id": f"q{i}", "code": queued}))
                with contextlib.suppress(TimeoutError):
                    for _ in range(2000):
                        ws.recv(timeout=1)
            # closed with work still queued: the server drops it

        self.repeat(round_trip)

    def iopub_garbage(self) -> None:
        ready()
        self.repeat(lambda: self.execute(GARBAGE))


def ready() -> None:
    print("ready", flush=True)


def main() -> None:
    kind, url, token, session_id = sys.argv[1:5]
    attacker = Attacker(url, token, session_id)
    signal.signal(signal.SIGTERM, lambda *_: attacker.stop.set())
    getattr(attacker, kind)()


if __name__ == "__main__":
    main()
