"""The equipment register: assets, signatures, maintenance and history.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UTC_TIME = sa.DateTime(timezone=True)
BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _id() -> sa.Column:  # type: ignore[type-arg]
    return sa.Column("id", BIG_ID, autoincrement=True, nullable=False)


def _asset(table: str) -> list[sa.SchemaItem]:
    return [
        sa.Column("asset_id", BIG_ID, nullable=False),
        sa.ForeignKeyConstraint(["asset_id"], ["asset.id"], name=f"fk_{table}_asset_id_asset"),
    ]


def _recorded() -> list[sa.Column]:  # type: ignore[type-arg]
    return [sa.Column("recorded_by", sa.String(length=128), nullable=False),
            sa.Column("recorded_at", UTC_TIME, nullable=False)]


def upgrade() -> None:
    op.create_table(
        "asset",
        _id(),
        sa.Column("tag", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("description", sa.String(length=255), nullable=False),
        sa.Column("window", sa.String(length=64), nullable=False),
        sa.Column("unit", sa.String(length=64), nullable=True),
        sa.Column("agent_id", sa.String(length=32), nullable=True),
        sa.Column("vendor_id", sa.String(length=8), nullable=False),
        sa.Column("product_id", sa.String(length=8), nullable=False),
        sa.Column("serial", sa.String(length=128), nullable=False),
        sa.Column("printer_name", sa.String(length=255), nullable=False),
        sa.Column("printer_uri", sa.String(length=1000), nullable=False),
        sa.Column("registered_by", sa.String(length=128), nullable=False),
        sa.Column("registered_at", UTC_TIME, nullable=False),
        sa.Column("retired_at", UTC_TIME, nullable=True),
        sa.Column("retired_by", sa.String(length=128), nullable=False),
        sa.Column("retired_reason", sa.String(length=500), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_asset"),
        sa.UniqueConstraint("tag", name="uq_asset_tag"),
        sa.ForeignKeyConstraint(["agent_id"], ["agent.id"], name="fk_asset_agent_id_agent"),
    )
    op.create_index("ix_asset_window", "asset", ["window"])
    op.create_index("ix_asset_agent_id", "asset", ["agent_id"])
    op.create_index("ix_asset_usb", "asset", ["vendor_id", "product_id"])
    op.create_table(
        "asset_signature",
        _id(),
        *_asset("asset_signature"),
        sa.Column("unit", sa.String(length=64), nullable=True),
        sa.Column("signed_by", sa.String(length=128), nullable=False),
        sa.Column("signed_on", sa.Date(), nullable=False),
        sa.Column("note", sa.String(length=500), nullable=False),
        *_recorded(),
        sa.PrimaryKeyConstraint("id", name="pk_asset_signature"),
    )
    op.create_index("ix_asset_signature_asset_id", "asset_signature", ["asset_id"])
    op.create_table(
        "asset_maintenance",
        _id(),
        *_asset("asset_maintenance"),
        sa.Column("starts_at", UTC_TIME, nullable=False),
        sa.Column("ends_at", UTC_TIME, nullable=False),
        sa.Column("note", sa.String(length=500), nullable=False),
        sa.Column("workstations", sa.JSON(), nullable=False),
        *_recorded(),
        sa.PrimaryKeyConstraint("id", name="pk_asset_maintenance"),
    )
    op.create_index("ix_asset_maintenance_asset_id", "asset_maintenance", ["asset_id"])
    op.create_table(
        "asset_event",
        _id(),
        *_asset("asset_event"),
        sa.Column("action", sa.String(length=16), nullable=False),
        sa.Column("before", sa.JSON(), nullable=True),
        sa.Column("after", sa.JSON(), nullable=True),
        sa.Column("note", sa.String(length=500), nullable=False),
        *_recorded(),
        sa.PrimaryKeyConstraint("id", name="pk_asset_event"),
    )
    op.create_index("ix_asset_event_asset_id", "asset_event", ["asset_id"])


def downgrade() -> None:
    for table in ("asset_event", "asset_maintenance", "asset_signature"):
        op.drop_index(f"ix_{table}_asset_id", table_name=table)
        op.drop_table(table)
    op.drop_index("ix_asset_usb", table_name="asset")
    op.drop_index("ix_asset_agent_id", table_name="asset")
    op.drop_index("ix_asset_window", table_name="asset")
    op.drop_table("asset")
