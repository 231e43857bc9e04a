"""Browsers on the WebSocket: a page of this server connects (no allow-list needed), other origins are
refused, and the token may travel in a subprotocol instead of the URL."""

from __future__ import annotations

import base64
from typing import Any

import pytest
import websockets
from websockets.exceptions import InvalidStatus

from tests.conftest import Server
from tests.wsclient import execute, of
from workbench.browser_auth import SUBPROTOCOL, same_origin, token_from_subprotocols


def bearer(token: str) -> str:
    return "workbench.bearer." + base64.urlsafe_b64encode(token.encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    ("origin", "host", "fetch_site", "same"),
    [
        ("http://10.1.2.3:9000", "10.1.2.3:9000", None, True),
        ("http://WB.internal:9000", "wb.internal:9000", None, True),
        ("http://10.1.2.3:9001", "10.1.2.3:9000", None, False),
        ("http://10.1.2.3", "10.1.2.3:9000", None, False),
        ("http://wb.internal.evil.net:9000", "wb.internal:9000", None, False),
        ("null", "wb.internal:9000", None, False),
        ("", "", None, False),
        ("https://wb.example.org", "127.0.0.1:9000", "same-origin", True),  # behind a proxy
        ("http://10.1.2.3:9000", "10.1.2.3:9000", "cross-site", False),
        ("http://10.1.2.3:9000", "10.1.2.3:9000", "same-site", False),
    ],
)
def test_same_origin(origin: str, host: str, fetch_site: str | None, same: bool) -> None:
    assert same_origin(origin, host, fetch_site) is same


def test_token_from_subprotocols() -> None:
    token = "wbt_令牌-with/odd+chars="
    assert token_from_subprotocols(f"{SUBPROTOCOL}, {bearer(token)}") == token
    assert token_from_subprotocols(SUBPROTOCOL) is None
    assert token_from_subprotocols(None) is None
    assert token_from_subprotocols("workbench.bearer.%%%") is None
    assert token_from_subprotocols("workbench.bearer.__8") is None  # not UTF-8


def socket_url(server: Server, session_id: str) -> str:
    return server.url.replace("http://", "ws://") + f"/api/v1/sessions/{session_id}/ws"


async def refused_with(url: str, **options: Any) -> int:
    with pytest.raises(InvalidStatus) as refused:
        async with websockets.connect(url, **options):
            pass
    return refused.value.response.status_code


@pytest.mark.docker
async def test_a_page_of_this_server_connects_without_an_allow_list(
    server: Server, session: dict[str, Any]
) -> None:
    """The browser's view: the page at http://127.0.0.1:PORT/ opens a socket with its token in a
    subprotocol, no Authorization header and no token in the URL."""
    url = socket_url(server, session["id"])
    protocols: Any = [SUBPROTOCOL, bearer(server.token)]
    async with websockets.connect(url, origin=server.url, subprotocols=protocols) as socket:  # type: ignore[arg-type]
        assert socket.subprotocol == SUBPROTOCOL
        events = await execute(socket, "same", "print(6 * 7)")
    assert of(events, "same")[-1]["stdout"] == "42\n"
    headers = {"Sec-Fetch-Site": "same-origin", "Authorization": f"Bearer {server.token}"}
    async with websockets.connect(url, origin="https://proxy.example", additional_headers=headers):  # type: ignore[arg-type]
        pass


@pytest.mark.docker
async def test_other_origins_and_wrong_tokens_are_refused(server: Server, session: dict[str, Any]) -> None:
    url = socket_url(server, session["id"])
    auth = {"Authorization": f"Bearer {server.token}"}
    other_port = server.url.rsplit(":", 1)[0] + ":1"
    for origin, headers in [
        (server.url.replace("127.0.0.1", "localhost"), auth),  # another host name is another origin
        (other_port, auth),
        ("null", auth),  # a sandboxed frame
        (server.url, {**auth, "Sec-Fetch-Site": "cross-site"}),
    ]:
        assert await refused_with(url, origin=origin, additional_headers=headers) == 403, origin
    wrong: Any = [SUBPROTOCOL, bearer("not-the-token")]
    assert await refused_with(url, origin=server.url, subprotocols=wrong) == 401
