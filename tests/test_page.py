"""The built-in web page at ``/``, driven in Debian's Chromium by Playwright against a real server and real
kernel containers: sign in, sessions, cells, outputs, files, interrupt, restart; kernel HTML never runs in
the page's origin; the first load stays small.  Screenshots go to ``test-artifacts/page/``."""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import IN_CI, Server
from workbench.handlers.page import ASSETS, CONTENT_SECURITY_POLICY

playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts" / "page"
DEADLINE_MS = 90_000
FIRST_LOAD_BUDGET = 300 * 1024
ROOT = Path(__file__).resolve().parents[1]

expect.set_options(timeout=DEADLINE_MS)


# ------------------------------------------------------------------------------------ without a browser


def test_the_page_ships_in_the_package() -> None:
    assert {"index.html", "main.js", "app.css", "frame.css", "ansi.js"} <= set(ASSETS)
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert "workbench.static" in setuptools["packages"]
    assert {"*.html", "*.js", "*.css"} <= set(setuptools["package-data"]["workbench.static"])
    for name, asset in ASSETS.items():  # every module the page imports is shipped
        for imported in re.findall(rb'from "\./([\w.]+)"', asset.body):
            assert imported.decode() in ASSETS, (name, imported)


def test_the_page_and_its_files_have_their_own_headers(engineless: Server) -> None:
    page = httpx.get(f"{engineless.url}/")
    assert page.status_code == 200
    assert page.headers["Content-Type"].startswith("text/html")
    assert page.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
    for directive in ("default-src 'none'", "script-src 'self'", "frame-ancestors 'none'"):
        assert directive in CONTENT_SECURITY_POLICY
    assert "unsafe" not in CONTENT_SECURITY_POLICY
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    script = httpx.get(f"{engineless.url}/static/main.js")
    assert script.headers["Content-Type"].startswith("text/javascript")
    again = httpx.get(f"{engineless.url}/static/main.js", headers={"If-None-Match": script.headers["ETag"]})
    assert again.status_code == 304
    for missing in ("/static/nope.js", "/static/..%2Fpyproject.toml", "/static/"):
        answer = httpx.get(f"{engineless.url}{missing}")
        assert answer.status_code == 404, missing
        assert answer.json()["error"]["code"] == "no-route"
    api = httpx.get(f"{engineless.url}/api/v1/health")  # the API keeps its own strict policy
    assert "sandbox" in api.headers["Content-Security-Policy"]


# ------------------------------------------------------------------------------------------ the browser


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not os.path.exists(CHROMIUM):
        if IN_CI:
            pytest.fail(f"CI=true and {CHROMIUM} is missing (scripts/test.sh installs it)")
        pytest.skip(f"{CHROMIUM} is missing: apt-get install chromium")
    with playwright_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(DEADLINE_MS)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    yield page
    context.close()
    assert errors == [], errors  # no uncaught exception in the page's own code


@pytest.fixture
def report(capsys: pytest.CaptureFixture[str]) -> Callable[[str], None]:
    """Print past pytest's capture: the artefacts' paths and the figures show in every run."""

    def say(line: str) -> None:
        with capsys.disabled():
            print(f"\n[page] {line}", end="")

    return say


def screenshot(page: Any, name: str, report: Callable[[str], None]) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    report(f"screenshot: {path}")


def sign_in(page: Any, server: Server) -> None:
    page.goto(f"{server.url}/")
    page.get_by_label("API token").fill(server.token)
    page.get_by_label("API token").press("Enter")
    expect(page.get_by_role("heading", name="Sessions")).to_be_visible()


def run(page: Any, code: str) -> Any:
    """Type ``code`` into the last cell and run it with Shift+Enter; the cell's locator."""
    label = page.locator("section.cell").last.get_attribute("aria-label")
    cell = page.get_by_role("region", name=label, exact=True)
    cell.locator("textarea").fill(code)
    cell.locator("textarea").press("Shift+Enter")
    return cell


def finished(cell: Any) -> None:
    expect(cell).to_have_attribute("data-state", re.compile("ok|failed"))


def eventually(page: Any, condition: Any) -> None:
    """Wait (with a deadline) for ``condition()`` to hold."""
    for _ in range(DEADLINE_MS // 250):
        if condition():
            return
        page.wait_for_timeout(250)
    assert condition()


def cleanup_sessions(server: Server, name: str) -> None:
    with server.client() as client:
        for session in client.get("/api/v1/sessions").json()["sessions"]:
            if session["metadata"].get("name") == name:
                client.delete(f"/api/v1/sessions/{session['id']}")


@pytest.mark.docker
def test_first_load_is_small_and_a_wrong_token_says_so(
    page: Any, server: Server, report: Callable[[str], None]
) -> None:
    sizes: list[int] = []
    page.on("requestfinished", lambda request: sizes.append(sum(request.sizes().values())))
    page.goto(f"{server.url}/")
    expect(page.get_by_label("API token")).to_be_focused()
    page.wait_for_load_state("networkidle")
    total = sum(sizes)
    report(f"first load: {len(sizes)} requests, {total / 1024:.1f} KB transferred")
    assert total < FIRST_LOAD_BUDGET
    page.get_by_label("API token").fill("not-a-token")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert").filter(has_text="refused")).to_contain_text("token was refused")
    assert page.evaluate("sessionStorage.length") == 0


@pytest.mark.docker
def test_work_in_a_session_from_the_page(page: Any, server: Server, report: Callable[[str], None]) -> None:
    name = "page-test-flow"
    try:
        work_in_a_session(page, server, name, report)
    finally:
        cleanup_sessions(server, name)


def work_in_a_session(page: Any, server: Server, name: str, report: Callable[[str], None]) -> None:
    sign_in(page, server)
    assert server.token not in page.url
    page.get_by_label("Name").fill(name)
    page.get_by_label("Memory (MB)").fill("512")
    page.get_by_role("button", name="Create session").click()
    expect(page.get_by_text("live", exact=True)).to_be_visible()  # the WebSocket from the page is open
    assert server.token not in page.url

    run(page, "x = 21")
    answer = run(page, "print(x * 2)")
    expect(answer.locator(".stream.stdout")).to_have_text("42")
    finished(answer)
    expect(answer.locator(".cell-status")).to_contain_text(re.compile(r"done in \d"))

    label = page.locator("section.cell").last.get_attribute("aria-label")
    loop = page.get_by_role("region", name=label, exact=True)  # Shift+Enter moved the focus here: type
    expect(loop.locator("textarea")).to_be_focused()
    page.keyboard.type("for i in range(2):")
    page.keyboard.press("Enter")  # keeps the block's indentation
    page.keyboard.type("print(i)")
    page.keyboard.press("Shift+Enter")
    expect(loop.locator(".stream.stdout")).to_have_text(re.compile(r"^0\s+1\s*$"))

    chart = run(page, CHART)
    image = chart.locator("img.image-output")
    expect(image).to_be_visible()
    assert image.evaluate("img => img.complete && img.naturalWidth > 100")
    assert image.get_attribute("src").startswith("data:image/png;base64,")

    asked = run(page, "who = input('Your name: ')\nprint('你好', who)")
    asked.get_by_label("Your name:").fill("小王")
    asked.get_by_label("Your name:").press("Enter")
    expect(asked.locator(".stream.stdout").last).to_have_text("你好 小王")

    traceback = run(page, "def f():\n    raise ValueError('坏值')\nf()")
    expect(traceback.locator(".traceback .ansi-fg-1").first).to_be_visible()  # IPython's red, as spans
    expect(traceback.locator(".traceback")).to_contain_text("ValueError: 坏值")
    finished(traceback)
    screenshot(page, "session-1280", report)

    files = page.get_by_role("region", name="Files")
    csv_name, renamed = "部门预算报告2023.csv", "预算-已审核.csv"
    csv = "部门,预算\n财务,100\n".encode()
    files.locator("input[type=file]").set_input_files(
        [{"name": csv_name, "mimeType": "text/csv", "buffer": csv}]
    )
    expect(files.get_by_role("list", name="Workspace files")).to_contain_text(csv_name)
    expect(files.get_by_role("list", name="Workspace files")).to_contain_text("25 B")

    drop_refused_file(page)
    expect(files.get_by_role("alert").filter(has_text="tool.exe")).to_contain_text("tool.exe:")

    page.get_by_role("button", name=f"Rename {csv_name}").click()
    page.get_by_label("New path in the workspace").fill(renamed)
    page.get_by_label("New path in the workspace").press("Enter")
    expect(files.get_by_role("button", name=f"Download {renamed}")).to_be_visible()
    expect(files.get_by_role("list", name="Workspace files")).not_to_contain_text(csv_name)

    with page.expect_download() as download:
        files.get_by_role("button", name=f"Download {renamed}").click()
    assert download.value.suggested_filename == renamed
    assert Path(download.value.path()).read_bytes() == csv
    assert server.token not in download.value.url

    seen = run(page, "import pandas as pd\npd.read_csv('预算-已审核.csv')")
    expect(seen.locator("iframe.html-output")).to_be_visible()
    expect(seen.frame_locator("iframe.html-output").locator("table")).to_contain_text("财务")

    page.get_by_role("button", name=f"Delete {renamed}").click()
    page.get_by_role("dialog").get_by_role("button", name="Delete").click()
    expect(files.get_by_role("list", name="Workspace files")).not_to_contain_text(renamed)

    spin = run(page, "print('spinning', flush=True)\nwhile True:\n    pass")
    expect(spin.locator(".stream.stdout")).to_have_text("spinning")  # the kernel is in the loop
    expect(spin.locator(".cell-status")).to_contain_text(re.compile(r"running \d"))
    page.get_by_role("button", name="Interrupt").click()
    expect(spin.locator(".traceback")).to_contain_text("KeyboardInterrupt")
    finished(spin)

    page.get_by_role("button", name="Restart").click()
    page.get_by_role("dialog").get_by_role("button", name="Restart").click()
    expect(page.get_by_role("alert").filter(has_text="restarted")).to_be_visible()
    after = run(page, "print('x' in globals())")
    expect(after.locator(".stream.stdout")).to_have_text("False")
    screenshot(page, "session-1280-end", report)

    page.set_viewport_size({"width": 390, "height": 844})
    assert page.evaluate("document.documentElement.scrollWidth") <= 390  # no sideways scrolling
    screenshot(page, "session-390", report)

    page.get_by_role("link", name="← Sessions").click()
    row = page.locator("tr", has_text=name)
    expect(row).to_contain_text("ready")
    screenshot(page, "sessions-390", report)
    row.get_by_role("button", name=f"Delete {name}").click()
    page.get_by_role("dialog").get_by_role("button", name="Delete session").click()
    expect(page.locator("tr", has_text=name)).to_have_count(0)


CHART = """\
import matplotlib.pyplot as plt
plt.plot([3, 1, 4, 1, 5])
plt.title('每月销售额（万元）')
plt.show()"""


def drop_refused_file(page: Any) -> None:
    """Drop a file of a refused type on the file panel, as a drag from the desktop does."""
    page.evaluate(
        """() => {
          const data = new DataTransfer();
          data.items.add(new File(["MZ..."], "tool.exe", {type: "application/octet-stream"}));
          const zone = document.querySelector(".files-panel");
          const options = {dataTransfer: data, bubbles: true, cancelable: true};
          zone.dispatchEvent(new DragEvent("dragover", options));
          zone.dispatchEvent(new DragEvent("drop", options));
        }"""
    )


PRINTED = """print('<script>window.canary = "print"</script><img src=x onerror="window.canary=1">')"""
DATAFRAMES = """\
import pandas as pd
from IPython.display import HTML, display
df = pd.DataFrame({
    "html": ['<script>parent.canary = "df"</script>', '<img src=x onerror="top.canary=2">'],
    "js": ['<a href="javascript:top.canary=3">x</a>', '<iframe srcdoc="<script>top.canary=4</script>">'],
})
display(df)
display(HTML(df.to_html(escape=False)))
HTML(df.to_html(escape=False, render_links=True))"""
SVG_AND_SCRIPTS = """\
from IPython.display import SVG, Javascript, HTML, display
display(SVG('<svg xmlns="http://www.w3.org/2000/svg" onload="top.canary=5" width="40" height="40">'
            '<script>top.canary=6</script><rect width="40" height="40" fill="teal"/></svg>'))
display(Javascript('top.canary = 7'))
display(HTML('<script>top.canary=8</script><img src="http://198.51.100.7/beacon.png"><form><button>x</button></form>'))"""
HOSTILE_CELLS = [PRINTED, DATAFRAMES, SVG_AND_SCRIPTS]


@pytest.mark.docker
def test_kernel_html_and_svg_never_run_script_in_the_page(
    page: Any, server: Server, session: dict[str, Any], report: Callable[[str], None]
) -> None:
    console: list[str] = []
    page.on("console", lambda message: console.append(message.text))
    sign_in(page, server)
    page.goto(f"{server.url}/#/s/{session['id']}")
    expect(page.get_by_text("live", exact=True)).to_be_visible()
    cells = [run(page, code) for code in HOSTILE_CELLS]
    for cell in cells:
        finished(cell)
    expect(cells[0].locator(".stream.stdout")).to_contain_text("<script>window.canary")
    expect(cells[1].locator("iframe.html-output")).to_have_count(3)
    expect(cells[2].locator("img.image-output")).to_have_attribute("src", re.compile("^data:image/svg"))
    expect(cells[2].locator("iframe.html-output")).to_have_count(1)
    page.wait_for_timeout(1000)  # let any (wrongly) running script do its work before the canary is read
    assert page.evaluate("window.canary") is None
    blocked = "'http://198.51.100.7/beacon.png' violates the following Content Security Policy"
    eventually(page, lambda: any(blocked in text for text in console))  # the frames inherit the page's CSP
    sandboxes = page.locator("iframe").evaluate_all("frames => frames.map(f => f.getAttribute('sandbox'))")
    assert sandboxes == ["", "", "", ""]
    screenshot(page, "hostile-output", report)

    with server.client() as client:  # the session goes away behind the page's back
        assert client.delete(f"/api/v1/sessions/{session['id']}").status_code == 204
    expect(page.get_by_role("alert").filter(has_text="no longer exists")).to_be_visible()


@pytest.mark.docker
def test_ansi_colours_become_spans_and_markup_stays_text(page: Any, server: Server) -> None:
    page.goto(f"{server.url}/")
    spans = page.evaluate(
        """async () => {
          const {parseAnsi, appendAnsi} = await import('/static/ansi.js');
          const pre = document.createElement('pre');
          let state = appendAnsi(pre, '\\x1b[0;31mred<b>\\x1b[1;38;5;28m bold-green\\x1b');
          state = appendAnsi(pre, '[0m plain \\x1b[38;2;1;2;3mrgb\\x1b[K', state);
          const {segments} = parseAnsi('\\x1b[44mblue bg\\x1b[49m');
          const {OutputArea} = await import('/static/outputs.js');
          const area = new OutputArea(document.createElement('div'));
          for (const text of ['start\\n', '10%\\r', '50%', '\\r100%', '\\r\\n', 'done\\n']) {
            area.add({type: 'stream', name: 'stdout', text});
          }
          return {
            html: pre.innerHTML,
            text: pre.textContent,
            classes: [...pre.children].map(s => s.className),
            colours: [...pre.children].map(s => s.style.color),
            bg: segments[0].style.bg,
            progress: area.element.textContent,
          };
        }"""
    )
    assert spans["text"] == "red<b> bold-green plain rgb"
    assert "&lt;b&gt;" in spans["html"]
    assert spans["classes"] == ["ansi-fg-1", "ansi-bold", ""]
    assert spans["colours"] == ["", "rgb(0, 135, 0)", "rgb(1, 2, 3)"]
    assert spans["bg"] == {"cls": 4}
    assert spans["progress"] == "start\n100%\ndone\n"  # a progress bar's rewrites, as a terminal shows them


@pytest.mark.docker
def test_an_unreachable_server_is_said_clearly(page: Any, server: Server) -> None:
    sign_in(page, server)
    page.context.set_offline(True)
    banner = page.locator("#banner")
    expect(banner).to_contain_text("Cannot reach the Workbench server")
    page.context.set_offline(False)
    expect(banner).to_be_hidden()
