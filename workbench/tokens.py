"""Tenants' API tokens: made once, shown once, stored as SHA-256 hashes, revocable."""

from __future__ import annotations

import dataclasses
import hashlib
import re
import secrets

from sqlalchemy import select
from sqlalchemy.orm import Session

from workbench.db.models import TokenRow, utcnow
from workbench.errors import Invalid

TOKEN_PREFIX = "wbt_"  # noqa: S105 (a prefix, not a secret)
TENANT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
RESERVED_TENANTS = {"admin"}


@dataclasses.dataclass(frozen=True)
class IssuedToken:
    id: str
    tenant: str
    token: str


def token_hash(token: str) -> str:
    """Tokens are 256-bit random strings, so a plain SHA-256 is a safe, indexable digest."""
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(session: Session, tenant: str, *, max_sessions: int | None = None,
                 max_memory_mb: int | None = None) -> IssuedToken:  # fmt: skip
    if not TENANT_NAME.fullmatch(tenant) or tenant in RESERVED_TENANTS:
        msg = f"bad tenant name {tenant!r}: 1-64 of letters, digits, '_', '.', '-' (and not 'admin')"
        raise Invalid(msg)
    for name, value in (("max-sessions", max_sessions), ("max-memory-mb", max_memory_mb)):
        if value is not None and value < 1:
            msg = f"--{name} must be at least 1"
            raise Invalid(msg)
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = TokenRow(id=f"tok_{secrets.token_hex(6)}", tenant=tenant, token_hash=token_hash(token),
                   created_at=utcnow(), max_sessions=max_sessions, max_memory_mb=max_memory_mb)  # fmt: skip
    session.add(row)
    return IssuedToken(id=row.id, tenant=tenant, token=token)


def list_tokens(session: Session) -> list[TokenRow]:
    return list(session.scalars(select(TokenRow).order_by(TokenRow.tenant, TokenRow.created_at)))


def revoke_tokens(session: Session, id_or_tenant: str) -> list[str]:
    """Revoke one token by id, or every token of a tenant; returns the ids revoked."""
    query = select(TokenRow).where(
        ((TokenRow.id == id_or_tenant) | (TokenRow.tenant == id_or_tenant)) & TokenRow.revoked_at.is_(None)
    )
    rows = list(session.scalars(query))
    for row in rows:
        row.revoked_at = utcnow()
    return [row.id for row in rows]


def find_token(session: Session, token: str) -> TokenRow | None:
    """The live token row for ``token``, if any."""
    query = select(TokenRow).where(TokenRow.token_hash == token_hash(token), TokenRow.revoked_at.is_(None))
    return session.scalars(query).first()
