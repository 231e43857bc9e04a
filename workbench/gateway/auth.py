"""Who calls a gateway route: the ``Authorization`` header, else the ``/gateway/{token}`` path segment.

jupyter_server's gateway client sends ``Authorization: token <t>`` (``token None`` when no token is set,
so a bad header falls through to the path).  Its ``GatewayKernelClient`` opens the channels socket with no
header, on a URL made from ``GatewayClient.url`` by ``url.lower().replace("http", "ws")``: the token in the
path arrives mangled.  So a token that authenticated recently is also recognised in that mangled form, and
then authenticated again as itself (a revoked token stops working as usual).
"""

from __future__ import annotations

import collections
import hashlib

from workbench.auth import Authenticator, Principal, token_from_header

MAX_REMEMBERED = 4096


def mangled(token: str) -> str:
    """The token as jupyter_server's default ``GatewayClient.ws_url`` rewrites it."""
    return token.lower().replace("http", "ws")


def _key(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class GatewayAuth:
    def __init__(self, authenticator: Authenticator) -> None:
        self.authenticator = authenticator
        self._originals: collections.OrderedDict[str, str] = collections.OrderedDict()

    async def principal(self, header: str | None, path_token: str | None) -> Principal | None:
        for token in (token_from_header(header), path_token):
            if not token:
                continue
            principal = await self.authenticator.authenticate(token)
            if principal is not None:
                self._remember(token)
                return principal
        original = self._originals.get(_key(path_token)) if path_token else None
        if original is not None:
            return await self.authenticator.authenticate(original)
        return None

    def _remember(self, token: str) -> None:
        key = _key(mangled(token))
        self._originals[key] = token
        self._originals.move_to_end(key)
        while len(self._originals) > MAX_REMEMBERED:
            self._originals.popitem(last=False)
