"""Tenants: hashed API tokens, and the tenant owning each session.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from workbench.db.models import UTCDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "tokens",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("revoked_at", UTCDateTime()),
        sa.Column("max_sessions", sa.Integer()),
        sa.Column("max_memory_mb", sa.Integer()),
    )
    op.create_index("ix_tokens_tenant", "tokens", ["tenant"])
    with op.batch_alter_table("sessions") as batch:
        batch.add_column(sa.Column("tenant", sa.String(64), nullable=False, server_default="admin"))
        batch.create_index("ix_sessions_tenant", ["tenant"])


def downgrade() -> None:
    with op.batch_alter_table("sessions") as batch:
        batch.drop_index("ix_sessions_tenant")
        batch.drop_column("tenant")
    op.drop_table("tokens")
