"""No way out of the workspace: traversal names on every file route, and attacks planted by a real kernel.

The kernel controls ``/data``: it plants symbolic links (to ``/etc/passwd``, to ``..``, to another session's
workspace whose host path it reads from ``/proc/self/mountinfo``), FIFOs, names that are not UTF-8, deep
trees, and swaps a folder for a link while requests are in flight.  Canary files outside the workspace
(another session's workspace, the state directory, ``/etc/passwd``) must stay unread and unchanged.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote, unquote_to_bytes

import httpx
import pytest

from tests.conftest import Server, run
from tests.test_files import assert_error, files_url, multipart, new_session, tree, workspace_of

pytestmark = pytest.mark.docker

CANARY = b"CANARY: another session's secret, never to be read\n"
HIDDEN = "only-in-victim.csv"


@pytest.fixture(scope="module")
def victim(server: Server) -> Iterator[str]:
    """Another session, whose workspace holds canaries (written on the host); and one in the state dir."""
    with server.client() as client:
        session_id = new_session(client)
        for name in ("x.csv", HIDDEN):
            (workspace_of(server, session_id) / name).write_bytes(CANARY)
        (server.state_dir / "canary.csv").write_bytes(CANARY)
        yield session_id
        client.delete(f"/api/v1/sessions/{session_id}")


SESSION_DIR = re.compile(r"session[_-][0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def outside(server: Server, victim: str) -> dict[str, Any]:
    """What the attacker must never change: canaries, and the names next to and above its workspace."""
    passwd = Path("/etc/passwd")
    canary = server.state_dir / "canary.csv"
    return {
        "victim": tree(workspace_of(server, victim)),
        "canary": (canary.stat().st_mtime_ns, canary.read_bytes()),
        "passwd": (passwd.stat().st_mtime_ns, passwd.read_bytes()),
        # other names next to the workspace (a session's own come and go: the warm pool refills meanwhile)
        "workspaces": sorted(
            p.name for p in (server.state_dir / "workspaces").iterdir() if not SESSION_DIR.fullmatch(p.name)
        ),
        "state": sorted(p.name for p in server.state_dir.iterdir() if not p.name.startswith("workbench.db")),
        "root": sorted(p.name for p in server.state_dir.parent.iterdir()),
    }


def assert_never_leaked(answer: httpx.Response) -> None:
    assert b"CANARY" not in answer.content
    assert b"root:" not in answer.content
    assert HIDDEN not in answer.text


def raw(client: httpx.Client, method: str, target: str, **extra: Any) -> httpx.Response:
    """A request whose target goes on the wire exactly as given (no URL normalization by the client)."""
    return client.request(method, "/", extensions={"target": target.encode()}, **extra)


# ------------------------------------------------------------------------------------------- traversal table

LONG = "%C3%A9" * 128 + ".csv"  # 260 bytes once decoded
TRAVERSALS = [
    "..",
    "../x",
    "a/../../x",
    "%2e%2e/x",
    "/etc/passwd",
    "..%2Fx",
    "%00",
    "a%2F..%2F..%2Fx",
    "..%5C..%5Cx",
    "../../../../../../etc/passwd",
    LONG,
    "a%01b.csv",
    "a%0Ab.csv",
    "%7F.csv",
    "%FF%FE.csv",
]


def post_form(
    client: httpx.Client, url: str, parts: list[tuple[str, str | bytes | None, bytes]]
) -> httpx.Response:
    body, headers = multipart(parts)
    return client.post(url, content=body, headers=headers)


def as_field(name: str) -> bytes:
    """A traversal name as a form field or file name carries it: decoded, byte for byte."""
    return unquote_to_bytes(name)


def as_json(name: str) -> str:
    """... and as a JSON string (undecodable bytes become lone surrogates, ``\\udcff``)."""
    return unquote(name, errors="surrogateescape")


ROUTES: dict[str, Callable[[httpx.Client, str, str], httpx.Response]] = {
    "list": lambda c, sid, name: raw(c, "GET", f"/api/v1/sessions/{sid}/files?path={name}&recursive=true"),
    "put": lambda c, sid, name: raw(c, "PUT", f"/api/v1/sessions/{sid}/files/{name}", content=b"a,b\n"),
    "post-path": lambda c, sid, name: post_form(
        c, files_url(sid), [("path", None, as_field(name)), ("file", "ok2.csv", b"a\n")]
    ),
    "post-filename": lambda c, sid, name: post_form(c, files_url(sid), [("file", as_field(name), b"a\n")]),
    "get": lambda c, sid, name: raw(c, "GET", f"/api/v1/sessions/{sid}/files/{name}"),
    "patch-source": lambda c, sid, name: raw(
        c, "PATCH", f"/api/v1/sessions/{sid}/files/{name}", json={"new_path": "renamed.csv"}
    ),
    "patch-target": lambda c, sid, name: c.patch(
        files_url(sid, "ok.csv"), content=json.dumps({"new_path": as_json(name)}).encode()
    ),
    "delete": lambda c, sid, name: raw(c, "DELETE", f"/api/v1/sessions/{sid}/files/{name}?recursive=true"),
    "compat-list": lambda c, sid, name: raw(c, "GET", f"/api/v1/files/list/{name}"),
    "compat-download": lambda c, sid, name: raw(c, "GET", f"/api/v1/files/download/{sid}/{name}"),
    "compat-upload": lambda c, sid, name: post_form(
        c, f"/api/v1/files/upload/{sid}", [("file", as_field(name), b"a\n")]
    ),
}


@pytest.fixture(scope="module")
def attacker(
    server: Server, victim: str
) -> Iterator[tuple[httpx.Client, str, dict[str, Any], dict[str, Any]]]:
    """A session holding ``ok.csv``, with snapshots of its workspace and of the world outside it."""
    with server.client() as client:
        session_id = new_session(client)
        assert client.put(files_url(session_id, "ok.csv"), content=b"a,b\n").status_code == 201
        yield client, session_id, tree(workspace_of(server, session_id)), outside(server, victim)
        client.delete(f"/api/v1/sessions/{session_id}")


@pytest.mark.parametrize("name", TRAVERSALS)
@pytest.mark.parametrize("route", list(ROUTES))
def test_traversal_names_are_refused_on_every_route(
    server: Server,
    victim: str,
    attacker: tuple[httpx.Client, str, dict[str, Any], dict[str, Any]],
    route: str,
    name: str,
) -> None:
    client, session_id, inside_before, outside_before = attacker
    answer = ROUTES[route](client, session_id, name)
    assert 400 <= answer.status_code < 500, (answer.status_code, answer.text)
    assert set(answer.json()["error"]) == {"code", "message"}
    assert str(server.state_dir) not in answer.text
    assert tree(workspace_of(server, session_id)) == inside_before
    assert outside(server, victim) == outside_before


# --------------------------------------------------------------------------------------- planted by a kernel

FIND_VICTIM = """
import os
victim = {victim!r}
"""


def plant(api: httpx.Client, session_id: str, victim: Path, code: str) -> None:
    """Run ``code`` in the kernel with ``victim`` bound to the other workspace's host path.

    A kernel whose ``/data`` is a file system of its own cannot read that path from its mount table; the
    attacker here is told it (as if it guessed), which is the stronger case.
    """
    result = run(api, session_id, FIND_VICTIM.format(victim=str(victim)) + code)
    assert result["status"] == "ok", result


def test_planted_symlinks_are_listed_never_followed(
    api: httpx.Client, server: Server, session: dict[str, Any], victim: str
) -> None:
    sid = session["id"]
    before = outside(server, victim)
    code = (
        "os.symlink('/etc/passwd', 'p')\nos.symlink('/etc/passwd', 'p.csv')\nos.symlink('..', 'up')\n"
        "os.symlink(victim, 'other')\nos.symlink(os.path.join(victim, 'x.csv'), 'x.csv')\n"
        "os.mkdir('real')\nopen('real/mine.csv', 'w').write('mine\\n')"
    )
    plant(api, sid, workspace_of(server, victim), code)  # the links would reach the canaries if followed

    listed = api.get(files_url(sid), params={"recursive": "true"}).json()["files"]
    kinds = {entry["path"]: (entry["type"], entry["size"]) for entry in listed}
    assert kinds == {
        "p": ("symlink", 0), "p.csv": ("symlink", 0), "up": ("symlink", 0), "other": ("symlink", 0),
        "x.csv": ("symlink", 0), "real": ("directory", 0), "real/mine.csv": ("file", 5),
    }  # fmt: skip
    through_links = [
        api.get(files_url(sid, "p")),
        api.get(files_url(sid, "p.csv")),
        api.get(files_url(sid, "x.csv")),
        api.get(files_url(sid, "other/x.csv")),
        api.get(files_url(sid, f"up/{victim}/x.csv")),
        api.get(files_url(sid), params={"path": "other/"}),
        api.get(files_url(sid), params={"path": f"up/{victim}"}),
        api.get(f"/api/v1/files/download/{sid}/x.csv"),
        api.put(files_url(sid, "other/evil.csv"), content=b"a\n"),
        api.put(files_url(sid, f"up/{victim}/evil.csv"), content=b"a\n"),
        api.put(files_url(sid, "x.csv"), content=b"overwrite\n"),
        api.post(files_url(sid), data={"path": "other"}, files={"file": ("evil.csv", b"a\n")}),
        api.patch(files_url(sid, "real/mine.csv"), json={"new_path": "other/mine.csv"}),
        api.patch(files_url(sid, "real"), json={"new_path": f"up/{victim}/real"}),
        api.delete(files_url(sid, "other/x.csv")),
        api.delete(files_url(sid, f"up/{victim}/{HIDDEN}")),
    ]
    for answer in through_links:
        assert 400 <= answer.status_code < 500, (answer.request.url, answer.status_code, answer.text)
        assert_never_leaked(answer)
    for path in ("other", "up"):  # listing a link names the link, nothing behind it
        (entry,) = api.get(files_url(sid), params={"path": path, "recursive": "true"}).json()["files"]
        assert (entry["path"], entry["type"]) == (path, "symlink")
    assert [item["name"] for item in api.get(f"/api/v1/files/list/{sid}").json()] == []

    renamed = api.patch(files_url(sid, "p"), json={"new_path": "renamed-link"})
    assert (renamed.status_code, renamed.json()["type"]) == (200, "symlink")
    for link in ("x.csv", "other", "renamed-link", "p.csv"):
        assert api.delete(files_url(sid, link)).status_code == 204
    assert api.delete(files_url(sid, "up"), params={"recursive": "true"}).status_code == 204
    assert sorted(tree(workspace_of(server, sid))) == ["real", "real/mine.csv"]
    assert outside(server, victim) == before


def test_fifo_download_fails_fast_and_the_server_keeps_serving(
    api: httpx.Client, server: Server, session: dict[str, Any]
) -> None:
    sid = session["id"]
    assert run(api, sid, "import os; os.mkfifo('f.csv')")["status"] == "ok"
    attempts: list[Callable[[], httpx.Response]] = [
        lambda: api.get(files_url(sid, "f.csv")),
        lambda: api.get(f"/api/v1/files/download/{sid}/f.csv"),
        lambda: api.put(files_url(sid, "f.csv"), content=b"a\n"),
        lambda: api.post(files_url(sid), files={"file": ("f.csv", b"a\n")}),
    ]
    for attempt in attempts:
        started = time.monotonic()
        answer = attempt()
        assert time.monotonic() - started < 10  # refused, not stuck on the FIFO
        assert 400 <= answer.status_code < 500, answer.text
    (entry,) = api.get(files_url(sid)).json()["files"]
    assert (entry["name"], entry["type"]) == ("f.csv", "other")
    assert api.get("/api/v1/health").status_code == 200
    assert api.delete(files_url(sid, "f.csv")).status_code == 204


SWAP = """
import shutil, threading, time
os.mkdir('real')
open('real/x.csv', 'w').write('safe\\n')
stop = threading.Event()

def put_back():
    # An upload to d/... may have made 'd' a plain folder meanwhile (the server creates parents).
    if os.path.islink('d'):
        os.unlink('d')
    elif os.path.isdir('d') and os.path.isdir('real'):
        shutil.rmtree('d')
    elif os.path.isdir('d'):
        os.rename('d', 'real')

def swap():
    while not stop.is_set():
        try:
            os.rename('real', 'd')
            time.sleep(0.002)
            os.rename('d', 'real')
            os.symlink(victim, 'd')
            time.sleep(0.002)
            os.unlink('d')
        except OSError:
            put_back()

threading.Thread(target=swap, daemon=True).start()
"""


def test_folder_swapped_for_a_link_during_requests(
    api: httpx.Client, server: Server, session: dict[str, Any], victim: str
) -> None:
    sid = session["id"]
    before = outside(server, victim)
    plant(api, sid, workspace_of(server, victim), SWAP)
    seen: dict[int, int] = {}
    rounds = 0
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and (rounds < 300 or not {200, 400} <= set(seen)):
        rounds += 1
        attempts = [api.get(files_url(sid, "d/x.csv"))]
        if rounds % 10 == 0:
            attempts.append(api.get(files_url(sid), params={"path": "d", "recursive": "true"}))
            attempts.append(api.put(files_url(sid, "d/new.csv"), content=b"a\n"))
        for answer in attempts:
            assert answer.status_code < 500, answer.text
            assert_never_leaked(answer)
        download = attempts[0]
        assert download.status_code in (200, 400, 404), download.text  # folder, link, or gone meanwhile
        seen[download.status_code] = seen.get(download.status_code, 0) + 1
        if download.status_code == 200:
            assert download.content == b"safe\n"
    run(api, sid, "stop.set()")
    assert {200, 400} <= set(seen), seen  # downloads did land on the folder, and on the link
    assert outside(server, victim) == before


def test_kernel_names_that_cannot_be_addressed_still_list_and_delete(
    api: httpx.Client, server: Server, session: dict[str, Any]
) -> None:
    sid = session["id"]
    code = (
        "import os\n"
        "os.mkdir('odd')\n"
        "open(b'odd/\\xff\\xfe.csv', 'w').close()\n"
        "open('odd/line\\nbreak.csv', 'w').close()\n"
        "os.makedirs('/'.join(['deep'] * 100))"
    )
    assert run(api, sid, code)["status"] == "ok"
    listed = api.get(files_url(sid), params={"path": "odd"})
    assert listed.status_code == 200
    assert {entry["name"] for entry in listed.json()["files"]} == {"\ufffd\ufffd.csv", "line\nbreak.csv"}
    everything = api.get(files_url(sid), params={"recursive": "true", "limit": 10000})
    assert everything.status_code == 200
    assert json.dumps(everything.json())  # plain JSON, whatever the names
    assert_error(api.get(files_url(sid, "odd/\ufffd\ufffd.csv")), 404)
    assert_error(api.get(files_url(sid, "odd/line\nbreak.csv")), 400)
    assert api.delete(files_url(sid, "odd"), params={"recursive": "true"}).status_code == 204
    assert api.delete(files_url(sid, "deep"), params={"recursive": "true"}).status_code == 204
    assert tree(workspace_of(server, sid)) == {}
