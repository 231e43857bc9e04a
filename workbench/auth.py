"""Bearer-token authentication."""

from __future__ import annotations

import dataclasses
import hmac
import os
import secrets
from pathlib import Path

ADMIN_TOKEN_FILE = "admin-token"  # noqa: S105 (a file name)


@dataclasses.dataclass(frozen=True)
class Principal:
    """Who is calling: the admin (sees everything) or one tenant."""

    name: str
    admin: bool


ADMIN = Principal(name="admin", admin=True)


class Authenticator:
    def __init__(self, admin_token: str) -> None:
        self._admin_token = admin_token.encode()

    def authenticate(self, token: str | None) -> Principal | None:
        if not token:
            return None
        if hmac.compare_digest(token.encode(), self._admin_token):
            return ADMIN
        return None


def token_from_header(header: str | None) -> str | None:
    """``Authorization: Bearer <token>`` or ``Authorization: token <token>``."""
    if not header:
        return None
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() in ("bearer", "token") and value.strip():
        return value.strip()
    return None


def load_or_create_admin_token(state_dir: Path) -> tuple[str, bool]:
    """The admin token saved in the state directory (mode 0600), made on first use; ``(token, created)``."""
    path = state_dir / ADMIN_TOKEN_FILE
    try:
        token = path.read_text().strip()
    except FileNotFoundError:
        token = ""
    if token:
        return token, False
    token = secrets.token_urlsafe(32)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(descriptor, "w") as stream:
        stream.write(token + "\n")
    path.chmod(0o600)
    return token, True
