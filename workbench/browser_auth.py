"""What browsers need on WebSockets: the same-origin decision, and a token carried in a subprotocol.

Browsers cannot set ``Authorization`` on a WebSocket.  Besides ``?token=`` (which API.md allows on
WebSocket URLs), a browser may offer two subprotocols, ``workbench.v1`` and
``workbench.bearer.<base64url of the token, unpadded>``; the server authenticates with the second and
selects the first, so the token never appears in a URL, a log line or the handshake's answer.
"""

from __future__ import annotations

import base64
import binascii
from urllib.parse import urlsplit

SUBPROTOCOL = "workbench.v1"
TOKEN_SUBPROTOCOL = "workbench.bearer."  # noqa: S105 (a prefix, not a secret)


def token_from_subprotocols(header: str | None) -> str | None:
    """The token in a ``Sec-WebSocket-Protocol`` header's ``workbench.bearer.<base64url>`` entry."""
    for entry in (header or "").split(","):
        entry = entry.strip()
        if not entry.startswith(TOKEN_SUBPROTOCOL):
            continue
        encoded = entry.removeprefix(TOKEN_SUBPROTOCOL)
        try:
            padded = encoded + "=" * (-len(encoded) % 4)
            return base64.b64decode(padded, altchars=b"-_", validate=True).decode() or None
        except (binascii.Error, ValueError):
            return None
    return None


def same_origin(origin: str, host: str, fetch_site: str | None) -> bool:
    """Does a browser's WebSocket request come from a page of this server?

    ``Sec-Fetch-Site`` decides when the browser sent it (only in secure contexts; it survives a proxy
    that rewrites ``Host``); otherwise the ``Origin``'s host and port must be the ``Host`` header.
    An opaque origin (``null``: a sandboxed frame) is never this server's.
    """
    if fetch_site is not None:
        return fetch_site.strip().lower() == "same-origin"
    try:
        netloc = urlsplit(origin).netloc
    except ValueError:
        return False
    return bool(netloc) and netloc.lower() == host.strip().lower()
