"""Jupyter's own tools on Workbench through the gateway: nbclient, papermill, jupyter server, JupyterLab."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import httpx
import nbformat
import pytest
import websockets

from tests.conftest import IN_CI, Server, running_server
from tests.jupyter_ws import JupyterSocket, stdout
from tests.test_runs import CELLS, essentials
from tests.test_tenants import Tenants
from workbench.testing import free_port, short_tmp

pytestmark = [
    pytest.mark.docker,
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.filterwarnings("ignore::PendingDeprecationWarning"),
]

CHROMIUM = "/usr/bin/chromium"
CHART = """\
import matplotlib.pyplot as plt
fig, ax = plt.subplots()
ax.plot([1, 2, 3], [3, 1, 2])
ax.set_title("部门预算 2023")
plt.show()"""


@pytest.fixture(scope="module")
def tenants(engine: docker.DockerClient) -> Iterator[Tenants]:
    with running_server(engine=engine) as server:
        yield Tenants(server)


@pytest.fixture
def gateway_url(tenants: Tenants) -> Iterator[str]:
    """jupyter_server's GatewayClient pointed at Workbench with tenant alpha's token in the path only."""
    from jupyter_server.gateway.gateway_client import GatewayClient

    url = f"{tenants.server.url}/gateway/{tenants.alpha}"
    GatewayClient.clear_instance()
    GatewayClient.instance(url=url)
    yield url
    GatewayClient.clear_instance()


def kernel_manager_class() -> type[Any]:
    """jupyter_server 2.x's GatewayKernelManager, with the liveness check nbclient calls wired to its own."""
    from jupyter_server.gateway.managers import GatewayKernelManager

    class WorkbenchKernelManager(GatewayKernelManager):  # type: ignore[misc]
        async def _async_is_alive(self) -> bool:
            alive: bool = await self.is_alive()
            return alive

    return WorkbenchKernelManager


def notebook(*cells: str, parameters: str | None = None) -> Any:
    book = nbformat.v4.new_notebook()
    book.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    if parameters is not None:
        book.cells.append(nbformat.v4.new_code_cell(parameters, metadata={"tags": ["parameters"]}))
    book.cells.extend(nbformat.v4.new_code_cell(source) for source in cells)
    return book


def texts(cell: Any) -> str:
    return "".join(output.get("text", "") for output in cell.outputs if output["output_type"] == "stream")


# ------------------------------------------------------------------------------------ nbclient, papermill


def test_nbclient_runs_a_notebook_through_the_gateway(tenants: Tenants, gateway_url: str) -> None:
    from nbclient import NotebookClient

    book = notebook("x = 21", CHART, "open('/data/from_notebook.txt', 'w').write('written in a notebook')",
                    "print(x * 2)")  # fmt: skip
    manager = kernel_manager_class()(kernel_name="python3")
    NotebookClient(book, km=manager, timeout=120, startup_timeout=120, kernel_name="python3").execute()
    kernel_id = manager.kernel_id
    try:
        assert kernel_id.startswith("session_")
        assert texts(book.cells[3]) == "42\n"  # state kept between cells
        images = [out for out in book.cells[1].outputs if "image/png" in out.get("data", {})]
        assert images, book.cells[1].outputs
        assert "Glyph" not in texts(book.cells[1])  # the CJK font is there: no missing-glyph warning
        with tenants.client(tenants.alpha) as alpha:
            files = alpha.get(f"/api/v1/sessions/{kernel_id}/files").json()["files"]
            assert "from_notebook.txt" in [entry["name"] for entry in files]
    finally:
        with tenants.client(tenants.alpha) as alpha:
            alpha.delete(f"/api/v1/sessions/{kernel_id}")


def test_an_exported_notebook_runs_in_nbclient_to_the_same_outputs(
    tenants: Tenants, gateway_url: str
) -> None:
    """Issue 15: the history as a notebook opens in Jupyter's own runner, on a fresh session, and the
    deterministic cells show the same outputs."""
    from nbclient import NotebookClient

    with tenants.client(tenants.alpha) as alpha:
        source = alpha.post("/api/v1/sessions", json={"memory_mb": 512}).json()["id"]
        try:
            for code in CELLS:
                ran = alpha.post(f"/api/v1/sessions/{source}/execute", json={"code": code})
                assert ran.status_code == 200, ran.text
            text = alpha.get(f"/api/v1/sessions/{source}/notebook").text
        finally:
            alpha.delete(f"/api/v1/sessions/{source}")
    exported, executed = nbformat.reads(text, as_version=4), nbformat.reads(text, as_version=4)
    manager = kernel_manager_class()(kernel_name="python3")
    client = NotebookClient(executed, km=manager, timeout=120, startup_timeout=120, allow_errors=True)
    client.execute()
    try:
        nbformat.validate(executed)
        assert essentials(executed) == essentials(exported)
        assert "华东" in nbformat.writes(executed)
    finally:
        with tenants.client(tenants.alpha) as alpha:
            alpha.delete(f"/api/v1/sessions/{manager.kernel_id}")


def test_papermill_runs_a_parameterized_notebook(tenants: Tenants, gateway_url: str, tmp_path: Path) -> None:
    import papermill

    source, target = tmp_path / "in.ipynb", tmp_path / "out.ipynb"
    nbformat.write(notebook("print(f'{n * 10} rows')", parameters="n = 1"), source)
    before = live_kernels(tenants)
    papermill.execute_notebook(str(source), str(target), parameters={"n": 5}, kernel_name="python3",
                               kernel_manager_class=kernel_manager_class(), progress_bar=False,
                               start_timeout=120)  # fmt: skip
    executed = nbformat.read(target, as_version=4)
    assert texts(executed.cells[-1]) == "50 rows\n"
    assert executed.metadata["papermill"]["parameters"] == {"n": 5}
    assert live_kernels(tenants) == before  # papermill shut its kernel down: the session is gone


def live_kernels(tenants: Tenants) -> set[str]:
    with httpx.Client(
        base_url=tenants.server.url, headers={"Authorization": f"token {tenants.alpha}"}
    ) as alpha:
        return {model["id"] for model in alpha.get("/api/kernels").json()}


# ------------------------------------------------------------------------------ jupyter server, JupyterLab


class JupyterServer:
    """``jupyter server`` (or ``jupyter lab``) in gateway mode, token-less, in a directory of its own."""

    def __init__(self, command: str, workbench: Server, token: str) -> None:
        self.root = short_tmp()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        (self.root / "notebooks").mkdir()
        env = {**os.environ, **{f"JUPYTER_{name.upper()}_DIR": str(self.root / name)
                                for name in ("runtime", "config", "data")}}  # fmt: skip
        env["JUPYTER_PLATFORM_DIRS"] = "1"
        args = [sys.executable, "-m", "jupyter", command, "--no-browser", f"--port={self.port}",
                "--ip=127.0.0.1", f"--ServerApp.root_dir={self.root / 'notebooks'}",
                "--IdentityProvider.token=", "--ServerApp.password=", "--ServerApp.disable_check_xsrf=True",
                f"--gateway-url={workbench.url}", f"--GatewayClient.auth_token={token}",
                "--GatewayClient.request_timeout=120", "--LabApp.extension_manager=readonly",
                *(["--allow-root"] if os.geteuid() == 0 else [])]  # fmt: skip
        self.log_path = self.root / "server.log"
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT,
                                            cwd=self.root)  # fmt: skip

    def wait_ready(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(self.log())
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/api/status", timeout=5).status_code == 200:
                    return
            time.sleep(0.3)
        raise RuntimeError(f"jupyter did not start within {timeout} s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.root, ignore_errors=True)


@contextlib.contextmanager
def jupyter(command: str, workbench: Server, token: str) -> Iterator[JupyterServer]:
    server = JupyterServer(command, workbench, token)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


def test_jupyter_server_in_gateway_mode_runs_code_in_a_locked_down_container(
    tenants: Tenants, engine: docker.DockerClient
) -> None:
    with (
        jupyter("server", tenants.server, tenants.alpha) as lab,
        httpx.Client(base_url=lab.url, timeout=180) as api,
    ):
        answer = api.post("/api/sessions", json={"path": "analysis.ipynb", "type": "notebook",
                                                 "kernel": {"name": "python3"}})  # fmt: skip
        assert answer.status_code == 201, answer.text + lab.log()
        session = answer.json()
        kernel_id = session["kernel"]["id"]
        assert kernel_id in live_kernels(tenants)  # the kernel is a Workbench session of tenant alpha
        channels = f"{lab.url.replace('http', 'ws')}/api/kernels/{kernel_id}/channels"
        reply, outputs = asyncio.run(execute_over(channels, "import os\nprint(os.getcwd(), os.getuid())"))
        assert reply["content"]["status"] == "ok"
        cwd, uid = stdout(outputs).split()
        assert cwd == "/data"
        assert uid != "0"

        spec = engine.api.inspect_container(f"workbench-{kernel_id}")
        host = spec["HostConfig"]
        assert host["ReadonlyRootfs"] is True
        assert host["NetworkMode"] == "none"
        assert host["CapDrop"] == ["ALL"]
        assert any("no-new-privileges" in option for option in host["SecurityOpt"])
        assert host["Memory"] > 0
        assert host["Memory"] == host["MemorySwap"]
        assert host["PidsLimit"] > 0
        assert spec["Config"]["User"] not in ("", "0", "root")

        assert api.delete(f"/api/sessions/{session['id']}").status_code == 204
        assert kernel_id not in live_kernels(tenants)


async def execute_over(url: str, code: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    async with websockets.connect(url) as connection:
        return await JupyterSocket(connection).execute(code)


def test_jupyterlab_in_headless_chromium_runs_a_cell(tenants: Tenants) -> None:
    if not Path(CHROMIUM).exists():
        if IN_CI:
            pytest.fail("CI=true and Debian's chromium is missing (scripts/test.sh installs it)")
        pytest.skip("Debian's chromium is not installed (scripts/test.sh installs it)")
    from playwright.sync_api import sync_playwright

    with jupyter("lab", tenants.server, tenants.alpha) as lab:
        book = notebook("print(6 * 7, 'from the sandbox')")
        nbformat.write(book, lab.root / "notebooks" / "lab.ipynb")
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=CHROMIUM,
                args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                      "--disable-component-update", "--disable-sync", "--no-first-run"],
            )  # fmt: skip
            try:
                page = browser.new_page()
                page.set_default_timeout(120_000)
                page.goto(f"{lab.url}/lab/tree/lab.ipynb")
                page.get_by_text("Python 3 (Workbench sandbox) | Idle").wait_for()  # the kernel is connected
                page.locator(".jp-Cell .cm-content").first.click()
                page.keyboard.press("Shift+Enter")
                output = page.locator(".jp-OutputArea-output", has_text="42 from the sandbox")
                output.wait_for()
            finally:
                browser.close()
        kernels = json.loads(httpx.get(f"{lab.url}/api/kernels", timeout=30).text)
        assert {kernel["id"] for kernel in kernels} <= live_kernels(tenants)
