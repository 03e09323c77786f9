"""The initial schema: enrolment tokens, agents, and the append-only fact log.

Revision ID: 0001
Revises:
Create Date: 2026-11-02

Column types are plain SQLAlchemy types: ``DateTime(timezone=True)`` is what
``controller.db.UTCDateTime`` stores, ``String(n)`` what SQLModel's ``AutoString`` does.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UTC_TIME = sa.DateTime(timezone=True)
# SQLite only auto-increments an INTEGER PRIMARY KEY; PostgreSQL gets a BIGSERIAL.
BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "enrollment_token",
        sa.Column("id", sa.String(length=16), nullable=False),
        sa.Column("secret_hash", sa.String(length=64), nullable=False),
        sa.Column("window", sa.String(length=64), nullable=False),
        sa.Column("unit", sa.String(length=128), nullable=True),
        sa.Column("created_at", UTC_TIME, nullable=False),
        sa.Column("created_by", sa.String(length=128), nullable=False),
        sa.Column("expires_at", UTC_TIME, nullable=False),
        sa.Column("max_uses", sa.Integer(), nullable=False),
        sa.Column("uses", sa.Integer(), nullable=False),
        sa.Column("revoked_at", UTC_TIME, nullable=True),
        sa.Column("note", sa.String(length=256), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_enrollment_token"),
    )
    op.create_table(
        "agent",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("hostname", sa.String(length=255), nullable=False),
        sa.Column("machine_id", sa.String(length=64), nullable=False),
        sa.Column("os_family", sa.String(length=16), nullable=False),
        sa.Column("agent_version", sa.String(length=32), nullable=False),
        sa.Column("window", sa.String(length=64), nullable=False),
        sa.Column("unit", sa.String(length=128), nullable=True),
        sa.Column("token_id", sa.String(length=16), nullable=True),
        sa.Column("enrolled_at", UTC_TIME, nullable=False),
        sa.Column("cert_serial", sa.String(length=64), nullable=False),
        sa.Column("cert_fingerprint", sa.String(length=64), nullable=False),
        sa.Column("cert_not_after", UTC_TIME, nullable=False),
        sa.Column("revoked_at", UTC_TIME, nullable=True),
        sa.Column("revoked_reason", sa.String(length=256), nullable=False),
        sa.Column("last_seen_at", UTC_TIME, nullable=True),
        sa.Column("last_sequence", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_agent"),
        sa.ForeignKeyConstraint(["token_id"], ["enrollment_token.id"], name="fk_agent_token_id_enrollment_token"),
        sa.UniqueConstraint("cert_serial", name="uq_agent_cert_serial"),
        sa.UniqueConstraint("cert_fingerprint", name="uq_agent_cert_fingerprint"),
    )
    op.create_index("ix_agent_window", "agent", ["window"])
    op.create_table(
        "fact",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("agent_id", sa.String(length=32), nullable=False),
        sa.Column("sequence", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("observed_at", UTC_TIME, nullable=False),
        sa.Column("received_at", UTC_TIME, nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_fact"),
        sa.ForeignKeyConstraint(["agent_id"], ["agent.id"], name="fk_fact_agent_id_agent"),
        sa.UniqueConstraint("agent_id", "sequence", name="uq_fact_agent_sequence"),
    )
    op.create_index("ix_fact_agent_kind_sequence", "fact", ["agent_id", "kind", "sequence"])


def downgrade() -> None:
    op.drop_index("ix_fact_agent_kind_sequence", table_name="fact")
    op.drop_table("fact")
    op.drop_index("ix_agent_window", table_name="agent")
    op.drop_table("agent")
    op.drop_table("enrollment_token")
