"""A counter of changes to the decisions the rules read, raised by triggers.

``decision_revision`` holds one row whose ``revision`` every insert, update or delete on
``software_approval``, ``exemption``, ``registered_device``, ``account_mapping``,
``maintenance_record`` and ``policy_activation`` (a policy put in force) raises by one, from
whichever process or tool writes. Controllers keep those tables, and the active policy, in memory and
read them again only when the counter moved. On PostgreSQL one trigger function
serves every table (a statement-level trigger each); SQLite has one trigger per table and operation.
A later migration that rebuilds one of these tables on SQLite (``batch_alter_table``) must create
its triggers again.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = ("software_approval", "exemption", "registered_device", "account_mapping", "maintenance_record",
          "policy_activation")
OPERATIONS = ("INSERT", "UPDATE", "DELETE")
FUNCTION = "counterguard_raise_decision_revision"
BUMP = "UPDATE decision_revision SET revision = revision + 1 WHERE id = 1"


def upgrade() -> None:
    op.create_table(
        "decision_revision",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("revision", sa.BigInteger(), server_default="0", nullable=False),
    )
    op.execute("INSERT INTO decision_revision (id, revision) VALUES (1, 0)")
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"CREATE FUNCTION {FUNCTION}() RETURNS trigger LANGUAGE plpgsql AS $$ "
                   f"BEGIN {BUMP}; RETURN NULL; END $$")
        for table in TABLES:
            op.execute(f"CREATE TRIGGER trg_{table}_revision AFTER INSERT OR UPDATE OR DELETE ON {table} "
                       f"FOR EACH STATEMENT EXECUTE FUNCTION {FUNCTION}()")
        return
    for table in TABLES:
        for operation in OPERATIONS:
            op.execute(f"CREATE TRIGGER trg_{table}_{operation.lower()}_revision AFTER {operation} ON {table} "
                       f"BEGIN {BUMP}; END")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for table in TABLES:
            op.execute(f"DROP TRIGGER trg_{table}_revision ON {table}")
        op.execute(f"DROP FUNCTION {FUNCTION}()")
    else:
        for table in TABLES:
            for operation in OPERATIONS:
                op.execute(f"DROP TRIGGER trg_{table}_{operation.lower()}_revision")
    op.drop_table("decision_revision")
