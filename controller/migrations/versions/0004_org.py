"""The organisation: units, windows, staff, posts over time, absences; the accounts behind each violation.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UTC_TIME = sa.DateTime(timezone=True)
BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _id() -> sa.Column:  # type: ignore[type-arg]
    return sa.Column("id", BIG_ID, autoincrement=True, nullable=False)


def _created() -> list[sa.Column]:  # type: ignore[type-arg]
    return [sa.Column("created_by", sa.String(length=128), nullable=False),
            sa.Column("created_at", UTC_TIME, nullable=False)]


def upgrade() -> None:
    with op.batch_alter_table("violation") as batch:
        batch.add_column(sa.Column("accounts", sa.JSON(), nullable=False, server_default="[]"))
    with op.batch_alter_table("violation") as batch:
        batch.alter_column("accounts", server_default=None)

    op.create_table(
        "unit",
        _id(),
        sa.Column("code", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("home_department", sa.String(length=255), nullable=False),
        *_created(),
        sa.PrimaryKeyConstraint("id", name="pk_unit"),
        sa.UniqueConstraint("code", name="uq_unit_code"),
    )
    op.create_table(
        "service_window",
        _id(),
        sa.Column("code", sa.String(length=64), nullable=False),
        sa.Column("unit", sa.String(length=64), nullable=True),
        sa.Column("description", sa.String(length=255), nullable=False),
        *_created(),
        sa.PrimaryKeyConstraint("id", name="pk_service_window"),
        sa.UniqueConstraint("code", name="uq_service_window_code"),
    )
    op.create_table(
        "staff",
        _id(),
        sa.Column("code", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("unit", sa.String(length=64), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("note", sa.String(length=255), nullable=False),
        *_created(),
        sa.PrimaryKeyConstraint("id", name="pk_staff"),
        sa.UniqueConstraint("code", name="uq_staff_code"),
    )
    op.create_table(
        "assignment",
        _id(),
        sa.Column("staff", sa.String(length=64), nullable=False),
        sa.Column("window", sa.String(length=64), nullable=False),
        sa.Column("post", sa.String(length=1), nullable=False),
        sa.Column("valid_from", sa.Date(), nullable=False),
        sa.Column("valid_to", sa.Date(), nullable=True),
        *_created(),
        sa.PrimaryKeyConstraint("id", name="pk_assignment"),
    )
    op.create_index("ix_assignment_window", "assignment", ["window", "valid_from"])
    op.create_index("ix_assignment_staff", "assignment", ["staff", "valid_from"])
    op.create_table(
        "absence",
        _id(),
        sa.Column("staff", sa.String(length=64), nullable=False),
        sa.Column("starts_on", sa.Date(), nullable=False),
        sa.Column("ends_on", sa.Date(), nullable=False),
        sa.Column("reason", sa.String(length=255), nullable=False),
        *_created(),
        sa.PrimaryKeyConstraint("id", name="pk_absence"),
    )
    op.create_index("ix_absence_staff", "absence", ["staff", "starts_on"])


def downgrade() -> None:
    op.drop_index("ix_absence_staff", table_name="absence")
    op.drop_table("absence")
    op.drop_index("ix_assignment_staff", table_name="assignment")
    op.drop_index("ix_assignment_window", table_name="assignment")
    op.drop_table("assignment")
    op.drop_table("staff")
    op.drop_table("service_window")
    op.drop_table("unit")
    with op.batch_alter_table("violation") as batch:
        batch.drop_column("accounts")
