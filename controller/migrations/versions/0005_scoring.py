"""The monthly score sheet: manual entries, closed months and their history.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UTC_TIME = sa.DateTime(timezone=True)
BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _id() -> sa.Column:  # type: ignore[type-arg]
    return sa.Column("id", BIG_ID, autoincrement=True, nullable=False)


def upgrade() -> None:
    op.create_table(
        "score_entry",
        _id(),
        sa.Column("month", sa.String(length=7), nullable=False),
        sa.Column("staff", sa.String(length=64), nullable=False),
        sa.Column("section", sa.String(length=64), nullable=False),
        sa.Column("points", sa.Float(), nullable=False),
        sa.Column("unit", sa.String(length=8), nullable=False),
        sa.Column("votes_for", sa.Integer(), nullable=True),
        sa.Column("votes_total", sa.Integer(), nullable=True),
        sa.Column("flag", sa.String(length=255), nullable=False),
        sa.Column("ref", sa.String(length=255), nullable=False),
        sa.Column("reason", sa.String(length=500), nullable=False),
        sa.Column("entered_by", sa.String(length=128), nullable=False),
        sa.Column("entered_at", UTC_TIME, nullable=False),
        sa.Column("source_file", sa.String(length=500), nullable=False),
        sa.Column("source_row", sa.Integer(), nullable=True),
        sa.Column("source_sha256", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_score_entry"),
    )
    op.create_index("ix_score_entry_month_staff", "score_entry", ["month", "staff"])
    op.create_table(
        "score_month",
        _id(),
        sa.Column("month", sa.String(length=7), nullable=False),
        sa.Column("closed_at", UTC_TIME, nullable=False),
        sa.Column("closed_by", sa.String(length=128), nullable=False),
        sa.Column("reason", sa.String(length=500), nullable=False),
        sa.Column("policy_id", sa.String(length=64), nullable=False),
        sa.Column("policy_version", sa.String(length=64), nullable=False),
        sa.Column("sheet", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_score_month"),
        sa.UniqueConstraint("month", name="uq_score_month_month"),
    )
    op.create_table(
        "score_month_event",
        _id(),
        sa.Column("month", sa.String(length=7), nullable=False),
        sa.Column("action", sa.String(length=16), nullable=False),
        sa.Column("by", sa.String(length=128), nullable=False),
        sa.Column("at", UTC_TIME, nullable=False),
        sa.Column("reason", sa.String(length=500), nullable=False),
        sa.Column("policy_id", sa.String(length=64), nullable=False),
        sa.Column("policy_version", sa.String(length=64), nullable=False),
        sa.Column("sheet_sha256", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_score_month_event"),
    )
    op.create_index("ix_score_month_event_month", "score_month_event", ["month"])


def downgrade() -> None:
    op.drop_index("ix_score_month_event_month", table_name="score_month_event")
    op.drop_table("score_month_event")
    op.drop_table("score_month")
    op.drop_index("ix_score_entry_month_staff", table_name="score_entry")
    op.drop_table("score_entry")
