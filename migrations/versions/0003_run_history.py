"""Run history: a number per session, the end reason, the change-set, resources and kept outputs.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("executions") as batch:
        batch.add_column(sa.Column("n", sa.Integer()))
        batch.add_column(sa.Column("reason", sa.String(200)))
        batch.add_column(sa.Column("files", sa.JSON()))
        batch.add_column(sa.Column("resources", sa.JSON()))
        batch.add_column(sa.Column("outputs", sa.JSON()))
        batch.add_column(sa.Column("outputs_cut", sa.Boolean(), nullable=False, server_default=sa.false()))
        batch.add_column(sa.Column("stored_bytes", sa.Integer(), nullable=False, server_default="0"))
    # Number the executions recorded before this revision, per session, in the order they started.
    executions = sa.table(
        "executions",
        sa.column("id", sa.String()),
        sa.column("session_id", sa.String()),
        sa.column("started_at", sa.DateTime()),
        sa.column("n", sa.Integer()),
    )
    connection = op.get_bind()
    rows = connection.execute(
        sa.select(executions.c.id, executions.c.session_id).order_by(
            executions.c.session_id, executions.c.started_at, executions.c.id
        )
    ).all()
    counters: dict[str, int] = {}
    for execution_id, session_id in rows:
        counters[session_id] = counters.get(session_id, 0) + 1
        connection.execute(
            executions.update().where(executions.c.id == execution_id).values(n=counters[session_id])
        )
    op.create_index("ix_executions_session_n", "executions", ["session_id", "n"], unique=True)


def downgrade() -> None:
    op.drop_index("ix_executions_session_n", "executions")
    with op.batch_alter_table("executions") as batch:
        for name in ("stored_bytes", "outputs_cut", "outputs", "resources", "files", "reason", "n"):
            batch.drop_column(name)
