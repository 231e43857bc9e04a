"""The tenant file library: v1 and "global" routes, /library in every kernel, publishing from a session."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from urllib.parse import quote

import docker
import httpx
import pytest

from tests.conftest import Server, run, running_server
from tests.test_files import assert_error, multipart, new_session

pytestmark = pytest.mark.docker

GLOBAL = "/api/v1/files/global"
LIBRARY = "/api/v1/library"


def tenant_token(server: Server, tenant: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "workbench", "tokens", "create", "--tenant", tenant,
         "--state-dir", str(server.state_dir), "--json"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    token: str = json.loads(done.stdout)["token"]
    return token


class Tenant:
    """A fresh tenant of the shared server (a unique name per test), with a client of its own."""

    def __init__(self, server: Server) -> None:
        self.name = f"lib-{uuid.uuid4().hex[:10]}"
        self.client = server.client(token=tenant_token(server, self.name))
        self.library = server.state_dir / "library" / self.name


@pytest.fixture
def alpha(server: Server) -> Iterator[Tenant]:
    tenant = Tenant(server)
    with tenant.client:
        yield tenant


@pytest.fixture
def beta(server: Server) -> Iterator[Tenant]:
    tenant = Tenant(server)
    with tenant.client:
        yield tenant


def library_url(path: str | None = None) -> str:
    return LIBRARY if path is None else f"{LIBRARY}/{quote(path)}"


def upload_global(client: httpx.Client, name: str, content: bytes) -> httpx.Response:
    body, headers = multipart([("file", name, content)])
    return client.post(f"{GLOBAL}/upload", content=body, headers=headers)


# ---------------------------------------------------------------------------------------------- routes


def test_the_original_global_routes_with_chinese_names(alpha: Tenant, beta: Tenant) -> None:
    client = alpha.client
    uploaded = upload_global(client, "预算模板.csv", "部门,预算\n研发,100\n".encode())
    assert uploaded.status_code == 200, uploaded.text
    assert uploaded.json()["name"] == "预算模板.csv"
    assert upload_global(client, "其他.csv", b"a\n1\n").status_code == 200
    listing = client.get(f"{GLOBAL}/list")
    assert listing.status_code == 200
    assert [item["name"] for item in listing.json()] == sorted(["预算模板.csv", "其他.csv"])
    download = client.get(f"{GLOBAL}/download/{quote('预算模板.csv')}")
    assert download.status_code == 200
    assert download.content == "部门,预算\n研发,100\n".encode()
    assert "filename*=UTF-8''" + quote("预算模板.csv") in download.headers["Content-Disposition"]

    renamed = client.patch(f"{GLOBAL}/rename/{quote('预算模板.csv')}", json={"new_filename": "新文件名.csv"})
    assert renamed.status_code == 200, renamed.text
    assert renamed.json()["name"] == "新文件名.csv"
    taken = client.patch(f"{GLOBAL}/rename/{quote('新文件名.csv')}", json={"new_filename": "其他.csv"})
    assert_error(taken, 409)
    assert_error(
        client.patch(f"{GLOBAL}/rename/{quote('新文件名.csv')}", json={"new_filename": "a/b.csv"}), 400
    )
    assert_error(client.patch(f"{GLOBAL}/rename/a/b.csv", json={"new_filename": "c.csv"}), 400)
    assert_error(client.patch(f"{GLOBAL}/rename/{quote('新文件名.csv')}", json={}), 422)
    assert_error(client.get(f"{GLOBAL}/download/a/b.csv"), 400)

    # Another tenant: the same names are not there, and its library is empty.
    other = beta.client
    assert other.get(f"{GLOBAL}/list").json() == []
    assert other.get(LIBRARY).json()["files"] == []
    assert_error(other.get(f"{GLOBAL}/download/{quote('新文件名.csv')}"), 404)
    assert_error(other.patch(f"{GLOBAL}/rename/{quote('新文件名.csv')}", json={"new_filename": "x.csv"}), 404)
    assert_error(other.delete(f"{GLOBAL}/delete/{quote('新文件名.csv')}"), 404)

    deleted = client.delete(f"{GLOBAL}/delete/{quote('新文件名.csv')}")
    assert deleted.status_code == 200, deleted.text
    assert_error(client.get(f"{GLOBAL}/download/{quote('新文件名.csv')}"), 404)
    assert [item["name"] for item in client.get(f"{GLOBAL}/list").json()] == ["其他.csv"]


def test_v1_routes(alpha: Tenant, beta: Tenant) -> None:
    client = alpha.client
    put = client.put(library_url("模板/预算.csv"), content=b"a,b\n1,2\n")
    assert put.status_code == 201, put.text
    assert put.headers["Location"] == library_url("模板/预算.csv")
    body, headers = multipart([("path", None, b"models"), ("file", "notes.txt", b"hello\n")])
    posted = client.post(LIBRARY, content=body, headers=headers)
    assert posted.status_code == 201, posted.text
    assert [entry["path"] for entry in posted.json()["files"]] == ["models/notes.txt"]

    listing = client.get(LIBRARY, params={"recursive": "true", "limit": 2}).json()
    assert listing["total"] == 4
    assert [entry["path"] for entry in listing["files"]] == ["models", "models/notes.txt"]

    whole = client.get(library_url("模板/预算.csv"))
    assert whole.content == b"a,b\n1,2\n"
    ranged = client.get(library_url("模板/预算.csv"), headers={"Range": "bytes=0-2"})
    assert ranged.status_code == 206
    assert ranged.content == b"a,b"
    again = client.get(library_url("模板/预算.csv"), headers={"If-None-Match": whole.headers["ETag"]})
    assert again.status_code == 304

    moved = client.patch(library_url("模板/预算.csv"), json={"new_path": "预算.csv"})
    assert moved.status_code == 200, moved.text
    assert moved.json()["path"] == "预算.csv"
    assert_error(client.patch(library_url("预算.csv"), json={"new_path": "models/notes.txt"}), 409)
    assert_error(client.delete(library_url("models")), 409)
    assert client.delete(library_url("models"), params={"recursive": "true"}).status_code == 204

    assert_error(client.put(library_url("tool.exe"), content=b"MZ"), 415)
    assert_error(client.put(library_url("fake.xlsx"), content=b"not a zip"), 415)
    assert_error(client.put(f"{LIBRARY}/%2e%2e/escape.csv", content=b"a\n"), 400)
    assert_error(client.get(library_url("nothing.csv")), 404)
    assert_error(beta.client.get(library_url("预算.csv")), 404)
    assert beta.client.get(LIBRARY).json()["total"] == 0
    # The files belong to the server, readable by the kernel's user but not writable.
    mode = (alpha.library / "预算.csv").stat().st_mode & 0o777
    assert mode & 0o004
    assert not mode & 0o002


def test_the_library_has_its_own_quota(engine: docker.DockerClient) -> None:
    with running_server("--library-quota-mb", "1", engine=engine) as small, small.client() as client:
        assert client.put(library_url("a.txt"), content=b"x" * 600_000).status_code == 201
        refused = client.put(library_url("b.txt"), content=b"x" * 600_000)
        assert_error(refused, 413)
        assert "library" in refused.json()["error"]["message"]
        assert sorted(entry["name"] for entry in client.get(LIBRARY).json()["files"]) == ["a.txt"]


# ---------------------------------------------------------------------------------------------- kernels


READ = """
import os
try:
    print(open('/library/预算模板.csv', encoding='utf-8').read(), end='')
except FileNotFoundError:
    print('missing')
"""


def test_a_running_kernel_sees_its_tenants_library_at_once_and_read_only(alpha: Tenant, beta: Tenant) -> None:
    mine, theirs = new_session(alpha.client), new_session(beta.client)
    try:
        assert run(alpha.client, mine, READ)["stdout"] == "missing\n"
        assert (
            alpha.client.put(library_url("预算模板.csv"), content="部门\n研发\n".encode()).status_code == 201
        )
        assert run(alpha.client, mine, READ)["stdout"] == "部门\n研发\n"

        write = run(alpha.client, mine, "open('/library/预算模板.csv', 'a').write('x')")
        assert write["status"] == "error"
        assert write["error"]["ename"] in {"OSError", "PermissionError"}
        create = run(alpha.client, mine, "open('/library/new.csv', 'w')")
        assert create["status"] == "error"
        assert (
            run(alpha.client, mine, "import os; os.rename('/library/预算模板.csv', '/library/x.csv')")[
                "status"
            ]
            == "error"
        )

        listing = run(beta.client, theirs, "import os; print(os.listdir('/library'))")
        assert listing["stdout"] == "[]\n"

        renamed = alpha.client.patch(library_url("预算模板.csv"), json={"new_path": "old.csv"})
        assert renamed.status_code == 200
        assert run(alpha.client, mine, READ)["stdout"] == "missing\n"
        assert alpha.client.delete(library_url("old.csv")).status_code == 204
        assert run(alpha.client, mine, "import os; print(os.listdir('/library'))")["stdout"] == "[]\n"
    finally:
        alpha.client.delete(f"/api/v1/sessions/{mine}")
        beta.client.delete(f"/api/v1/sessions/{theirs}")


CHART = """
import matplotlib
matplotlib.use('Agg')
import matplotlib.pyplot as plt
plt.plot([1, 3, 2])
plt.title('销售额')
plt.savefig('图表.png')
import hashlib
print(hashlib.sha256(open('图表.png', 'rb').read()).hexdigest())
"""

READ_CHART = """
import hashlib
print(hashlib.sha256(open('/library/charts/图表.png', 'rb').read()).hexdigest())
"""

PLANTS = """
import os
open('data.csv', 'w').write('a\\n1\\n')
os.symlink('/etc/passwd', 'passwd.csv')
os.mkfifo('pipe.csv')
os.link('data.csv', 'hard.csv')
open('binary.csv', 'wb').write(bytes(range(256)))
"""


def test_publishing_a_chart_then_reading_it_from_another_session(alpha: Tenant, beta: Tenant) -> None:
    first, second = new_session(alpha.client), new_session(alpha.client)
    stranger = new_session(beta.client)
    try:
        digest = run(alpha.client, first, CHART)["stdout"].strip()
        published = alpha.client.post(
            library_url("charts/图表.png"), json={"from_session": first, "path": "图表.png"}
        )
        assert published.status_code == 201, published.text
        assert published.json()["path"] == "charts/图表.png"
        code = (
            "import hashlib; print(hashlib.sha256(open('/library/charts/图表.png', 'rb').read()).hexdigest())"
        )
        read = run(alpha.client, second, code)
        assert read["stdout"].strip() == digest
        assert hashlib.sha256(alpha.client.get(library_url("charts/图表.png")).content).hexdigest() == digest

        # Only the caller's sessions; the other tenant can't publish from them, nor see the result.
        foreign = beta.client.post(library_url("x.png"), json={"from_session": first, "path": "图表.png"})
        assert_error(foreign, 404)
        assert_error(beta.client.get(library_url("charts/图表.png")), 404)
        assert_error(
            alpha.client.post(library_url("y.png"), json={"from_session": stranger, "path": "a"}), 404
        )

        # Links, FIFOs and hard links planted by the kernel: content is copied, links never followed.
        assert run(alpha.client, first, PLANTS)["status"] == "ok"

        def publish(source: str, target: str) -> httpx.Response:
            return alpha.client.post(library_url(target), json={"from_session": first, "path": source})

        assert_error(publish("passwd.csv", "passwd.csv"), 400)
        assert_error(publish("pipe.csv", "pipe.csv"), 400)
        assert_error(publish("binary.csv", "binary.csv"), 415)
        assert_error(publish("../../etc/passwd", "p.csv"), 400)
        assert_error(publish("nothing.csv", "n.csv"), 404)
        assert publish("hard.csv", "hard.csv").status_code == 201
        copied = alpha.library / "hard.csv"
        assert copied.stat().st_nlink == 1
        assert copied.read_bytes() == b"a\n1\n"
        assert_error(alpha.client.post(library_url("z.csv"), json={"path": "data.csv"}), 422)
    finally:
        for client, session_id in ((alpha.client, first), (alpha.client, second), (beta.client, stranger)):
            client.delete(f"/api/v1/sessions/{session_id}")


def test_publishing_takes_any_type(alpha: Tenant) -> None:
    session_id = new_session(alpha.client)
    try:
        run(alpha.client, session_id, "open('model.pkl', 'wb').write(b'\\x80\\x04K\\x01.')")
        body = {"from_session": session_id, "path": "model.pkl"}
        published = alpha.client.post(library_url("model.pkl"), json=body)
        assert published.status_code == 201, published.text  # no type list for publishing
        assert (alpha.library / "model.pkl").read_bytes() == b"\x80\x04K\x01."
    finally:
        alpha.client.delete(f"/api/v1/sessions/{session_id}")
