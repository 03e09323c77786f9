"""The rules engine: violations, software approvals, exemptions, registered devices, account mappings, maintenance.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30

Column types are plain SQLAlchemy types, as in 0001: ``DateTime(timezone=True)`` is what
``controller.db.UTCDateTime`` stores, ``String(n)`` what SQLModel's ``AutoString`` does.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UTC_TIME = sa.DateTime(timezone=True)
BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _id() -> sa.Column:  # type: ignore[type-arg]
    return sa.Column("id", BIG_ID, autoincrement=True, nullable=False)


def _agent(table: str, *, nullable: bool) -> list[sa.SchemaItem]:
    return [
        sa.Column("agent_id", sa.String(length=32), nullable=nullable),
        sa.ForeignKeyConstraint(["agent_id"], ["agent.id"], name=f"fk_{table}_agent_id_agent"),
    ]


def upgrade() -> None:
    op.create_table(
        "violation",
        _id(),
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("rule_id", sa.String(length=64), nullable=False),
        sa.Column("ref", sa.String(length=500), nullable=False),
        sa.Column("title", sa.String(length=500), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("category", sa.String(length=32), nullable=False),
        sa.Column("policy_id", sa.String(length=64), nullable=False),
        sa.Column("policy_version", sa.String(length=64), nullable=False),
        *_agent("violation", nullable=False),
        sa.Column("subject", sa.String(length=500), nullable=False),
        sa.Column("period_start", UTC_TIME, nullable=False),
        sa.Column("period_end", UTC_TIME, nullable=True),
        sa.Column("occurred_at", UTC_TIME, nullable=False),
        sa.Column("local_date", sa.Date(), nullable=False),
        sa.Column("evidence", sa.JSON(), nullable=False),
        sa.Column("informational", sa.Boolean(), nullable=False),
        sa.Column("attribute_to_owner", sa.Boolean(), nullable=False),
        sa.Column("penalty_points", sa.Float(), nullable=False),
        sa.Column("penalty_money", sa.Float(), nullable=False),
        sa.Column("penalty_section", sa.String(length=64), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("status_by", sa.String(length=128), nullable=False),
        sa.Column("status_at", UTC_TIME, nullable=True),
        sa.Column("status_reason", sa.String(length=500), nullable=False),
        sa.Column("created_at", UTC_TIME, nullable=False),
        sa.Column("updated_at", UTC_TIME, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_violation"),
        sa.UniqueConstraint("key", name="uq_violation_key"),
    )
    op.create_index("ix_violation_agent_rule_period", "violation", ["agent_id", "rule_id", "period_start"])
    op.create_index("ix_violation_local_date", "violation", ["local_date"])
    op.create_index("ix_violation_status", "violation", ["status"])

    op.create_table(
        "software_approval",
        _id(),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.Column("unit", sa.String(length=128), nullable=True),
        sa.Column("window", sa.String(length=64), nullable=True),
        sa.Column("decision", sa.String(length=16), nullable=False),
        sa.Column("decided_by", sa.String(length=128), nullable=False),
        sa.Column("decided_at", UTC_TIME, nullable=False),
        sa.Column("reason", sa.String(length=500), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_software_approval"),
    )
    op.create_index("ix_software_approval_name", "software_approval", ["name"])

    op.create_table(
        "exemption",
        _id(),
        *_agent("exemption", nullable=True),
        sa.Column("window", sa.String(length=64), nullable=True),
        sa.Column("starts_at", UTC_TIME, nullable=False),
        sa.Column("ends_at", UTC_TIME, nullable=False),
        sa.Column("reason", sa.String(length=500), nullable=False),
        sa.Column("created_by", sa.String(length=128), nullable=False),
        sa.Column("created_at", UTC_TIME, nullable=False),
        sa.Column("removed_at", UTC_TIME, nullable=True),
        sa.Column("removed_by", sa.String(length=128), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_exemption"),
    )
    op.create_index("ix_exemption_agent_id", "exemption", ["agent_id"])

    op.create_table(
        "registered_device",
        _id(),
        sa.Column("vendor_id", sa.String(length=8), nullable=False),
        sa.Column("product_id", sa.String(length=8), nullable=False),
        sa.Column("serial", sa.String(length=128), nullable=False),
        sa.Column("description", sa.String(length=255), nullable=False),
        sa.Column("unit", sa.String(length=128), nullable=True),
        sa.Column("window", sa.String(length=64), nullable=True),
        sa.Column("registered_by", sa.String(length=128), nullable=False),
        sa.Column("registered_at", UTC_TIME, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_registered_device"),
    )
    op.create_index("ix_registered_device_ids", "registered_device", ["vendor_id", "product_id"])

    op.create_table(
        "account_mapping",
        _id(),
        sa.Column("account", sa.String(length=128), nullable=False),
        sa.Column("staff", sa.String(length=128), nullable=False),
        sa.Column("windows", sa.String(length=1000), nullable=False),
        sa.Column("valid_from", UTC_TIME, nullable=True),
        sa.Column("valid_to", UTC_TIME, nullable=True),
        sa.Column("created_by", sa.String(length=128), nullable=False),
        sa.Column("created_at", UTC_TIME, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_account_mapping"),
    )
    op.create_index("ix_account_mapping_account", "account_mapping", ["account"])

    op.create_table(
        "maintenance_record",
        _id(),
        *_agent("maintenance_record", nullable=False),
        sa.Column("starts_at", UTC_TIME, nullable=False),
        sa.Column("ends_at", UTC_TIME, nullable=False),
        sa.Column("note", sa.String(length=500), nullable=False),
        sa.Column("recorded_by", sa.String(length=128), nullable=False),
        sa.Column("recorded_at", UTC_TIME, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_maintenance_record"),
    )
    op.create_index("ix_maintenance_record_agent_id", "maintenance_record", ["agent_id"])


def downgrade() -> None:
    for table, indexes in (
        ("maintenance_record", ["ix_maintenance_record_agent_id"]),
        ("account_mapping", ["ix_account_mapping_account"]),
        ("registered_device", ["ix_registered_device_ids"]),
        ("exemption", ["ix_exemption_agent_id"]),
        ("software_approval", ["ix_software_approval_name"]),
        ("violation", ["ix_violation_status", "ix_violation_local_date", "ix_violation_agent_rule_period"]),
    ):
        for index in indexes:
            op.drop_index(index, table_name=table)
        op.drop_table(table)
