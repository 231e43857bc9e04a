"""``GET /`` and ``GET /static/{name}``: the built-in web page, shipped in the package.

The few static files are read once, at import, and served from memory with an ``ETag`` (no file access
per request, no path ever resolved from the URL: a name is a key of a fixed table).  The page has its own
headers: a Content-Security-Policy that allows only this server's scripts and styles (no inline script,
no ``eval``), images from itself, ``data:`` and ``blob:`` URLs, and connections to itself.  Kernel HTML is
shown in ``<iframe sandbox>`` frames written with ``srcdoc``, which inherit this policy.
"""

from __future__ import annotations

import dataclasses
import hashlib
from importlib import resources

from workbench.errors import NotFound
from workbench.handlers.base import APIHandler

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
PAGE_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cache-Control": "no-cache",
}
TYPES = {
    ".html": "text/html; charset=UTF-8",
    ".js": "text/javascript; charset=UTF-8",
    ".css": "text/css; charset=UTF-8",
}
INDEX = "index.html"


@dataclasses.dataclass(frozen=True)
class Asset:
    body: bytes
    content_type: str
    etag: str


def load_assets() -> dict[str, Asset]:
    """Every file of ``workbench/static`` by name."""
    assets = {}
    for item in resources.files("workbench").joinpath("static").iterdir():
        suffix = "." + item.name.rpartition(".")[2]
        if item.is_file() and suffix in TYPES:
            body = item.read_bytes()
            etag = '"' + hashlib.sha256(body).hexdigest()[:20] + '"'
            assets[item.name] = Asset(body, TYPES[suffix], etag)
    return assets


ASSETS = load_assets()


class AssetHandler(APIHandler):
    """One file of the page; a name not in the table is a JSON 404, like any unknown path."""

    public = True

    def set_default_headers(self) -> None:
        for name, value in PAGE_HEADERS.items():
            self.set_header(name, value)

    def get(self, name: str = INDEX) -> None:
        asset = ASSETS.get(name)
        if asset is None:
            msg = f"no file {name!r} in the page"
            raise NotFound(msg, code="no-route")
        self.set_header("Content-Type", asset.content_type)
        self.set_header("ETag", asset.etag)
        if asset.etag in self.request.headers.get("If-None-Match", ""):
            self.set_status(304)
            self.finish()
            return
        self.finish(asset.body)


default_handlers = [
    (r"/", AssetHandler),
    (r"/static/(?P<name>[^/]+)", AssetHandler),
]
