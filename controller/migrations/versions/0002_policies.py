"""The policy store: every applied policy version, and the log of activations.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30

``policy_version`` holds each (policy id, version) once, with its exact YAML text and its
SHA-256; a version's content never changes. ``policy_activation`` is append-only: one row each
time a version is made the active one (first apply, or a roll back to an older version); the
active policy is the version of the newest activation.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UTC_TIME = sa.DateTime(timezone=True)
# SQLite only auto-increments an INTEGER PRIMARY KEY; PostgreSQL gets a BIGSERIAL.
BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "policy_version",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("policy_id", sa.String(length=64), nullable=False),
        sa.Column("version", sa.String(length=64), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("source", sa.String(length=255), nullable=False),
        sa.Column("applied_by", sa.String(length=128), nullable=False),
        sa.Column("applied_at", UTC_TIME, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_policy_version"),
        sa.UniqueConstraint("policy_id", "version", name="uq_policy_version_policy_id_version"),
    )
    op.create_table(
        "policy_activation",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("policy_version_id", sa.BigInteger(), nullable=False),
        sa.Column("activated_by", sa.String(length=128), nullable=False),
        sa.Column("activated_at", UTC_TIME, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_policy_activation"),
        sa.ForeignKeyConstraint(
            ["policy_version_id"], ["policy_version.id"], name="fk_policy_activation_policy_version_id_policy_version"
        ),
    )
    op.create_index("ix_policy_activation_policy_version_id", "policy_activation", ["policy_version_id"])


def downgrade() -> None:
    op.drop_index("ix_policy_activation_policy_version_id", table_name="policy_activation")
    op.drop_table("policy_activation")
    op.drop_table("policy_version")
