"""Rule evaluation off the acknowledgement path: how far each agent's facts have been evaluated.

``agent.evaluated_sequence`` is the highest sequence of the agent whose facts the rules have judged
after ingest; facts above it (up to ``last_sequence``) still wait for their evaluation. Agents that
exist already were evaluated with each report, so they start evaluated up to what they hold.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("agent") as batch:
        batch.add_column(sa.Column("evaluated_sequence", sa.BigInteger(), server_default="0", nullable=False))
    op.execute("UPDATE agent SET evaluated_sequence = last_sequence")


def downgrade() -> None:
    with op.batch_alter_table("agent") as batch:
        batch.drop_column("evaluated_sequence")
