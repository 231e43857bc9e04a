"""Bearer-token authentication."""

from __future__ import annotations

import dataclasses
import hmac
import os
import secrets
import time
from collections.abc import Callable
from pathlib import Path

from sqlalchemy.orm import Session

from workbench.db.store import Database
from workbench.tokens import TOKEN_PREFIX, find_token, token_hash

ADMIN_TOKEN_FILE = "admin-token"  # noqa: S105 (a file name)
INSTANCE_ID_FILE = "instance-id"


@dataclasses.dataclass(frozen=True)
class Principal:
    """Who is calling: the admin (sees everything) or one tenant (sees its own sessions only)."""

    name: str
    admin: bool
    max_sessions: int | None = None
    max_memory_mb: int | None = None


ADMIN = Principal(name="admin", admin=True)
CACHE_SECONDS = 5.0
MAX_TOKEN_LENGTH = 512


class Authenticator:
    """The admin token (constant-time comparison) and tenants' tokens (looked up by hash, cached briefly:
    a revoked token stops working within ``CACHE_SECONDS``)."""

    def __init__(self, admin_token: str, database: Database | None = None) -> None:
        self._admin_token = admin_token.encode()
        self._database = database
        self._cache: dict[str, tuple[float, Principal | None]] = {}

    async def authenticate(self, token: str | None) -> Principal | None:
        if not token or len(token) > MAX_TOKEN_LENGTH:
            return None
        if hmac.compare_digest(token.encode(), self._admin_token):
            return ADMIN
        if self._database is None or not token.startswith(TOKEN_PREFIX):
            return None
        key = token_hash(token)
        cached = self._cache.get(key)
        if cached is not None and time.monotonic() - cached[0] < CACHE_SECONDS:
            return cached[1]
        principal = await self._database.run(lambda session: _tenant_principal(session, token))
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[key] = (time.monotonic(), principal)
        return principal


def _tenant_principal(session: Session, token: str) -> Principal | None:
    row = find_token(session, token)
    if row is None:
        return None
    return Principal(
        name=row.tenant, admin=False, max_sessions=row.max_sessions, max_memory_mb=row.max_memory_mb
    )


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
    return _load_or_create_secret(state_dir / ADMIN_TOKEN_FILE, lambda: secrets.token_urlsafe(32))


def load_or_create_instance_id(state_dir: Path) -> str:
    """This state directory's identity, labelling its kernel containers (made on first use)."""
    return _load_or_create_secret(state_dir / INSTANCE_ID_FILE, lambda: secrets.token_hex(8))[0]


def _load_or_create_secret(path: Path, make: Callable[[], str]) -> tuple[str, bool]:
    try:
        value = path.read_text().strip()
    except FileNotFoundError:
        value = ""
    if value:
        return value, False
    value = make()
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(descriptor, "w") as stream:
        stream.write(value + "\n")
    path.chmod(0o600)
    return value, True
