"""The database schema, as SQLModel tables.

Facts are stored append-only exactly as they arrived (the serialized protobuf, with the
agent's sequence number, its observation time and our receive time); the current state of a
workstation is derived from them (see :mod:`controller.state`). Conversion between protobuf
and rows lives in :mod:`controller.convert` only.
"""

from __future__ import annotations

import datetime as dt
from typing import cast

from sqlalchemy import BigInteger, Column, Index, Integer, LargeBinary, Table, UniqueConstraint
from sqlmodel import Field, SQLModel

from controller.db import UTCDateTime

# Every constraint and index gets a predictable name, the same on SQLite and PostgreSQL, so a
# migration can name what it alters or drops (SQLite's batch mode needs names to drop anything).
SQLModel.metadata.naming_convention = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# SQLite only auto-increments an INTEGER PRIMARY KEY; PostgreSQL gets a BIGSERIAL.
BigId = BigInteger().with_variant(Integer(), "sqlite")


def utc_column(*, nullable: bool = False, index: bool = False) -> Column[dt.datetime]:
    return Column(UTCDateTime(), nullable=nullable, index=index)


class EnrollmentToken(SQLModel, table=True):
    """A token an admin hands to whoever installs an agent; only its hash is stored."""

    __tablename__ = "enrollment_token"

    id: str = Field(primary_key=True, max_length=16)
    secret_hash: str = Field(max_length=64)
    window: str = Field(max_length=64)
    unit: str | None = Field(default=None, max_length=128)
    created_at: dt.datetime = Field(sa_column=utc_column())
    created_by: str = Field(default="", max_length=128)
    expires_at: dt.datetime = Field(sa_column=utc_column())
    max_uses: int = 1
    uses: int = 0
    revoked_at: dt.datetime | None = Field(default=None, sa_column=utc_column(nullable=True))
    note: str = Field(default="", max_length=256)


class Agent(SQLModel, table=True):
    """An enrolled workstation agent and the certificate that identifies it."""

    __tablename__ = "agent"

    id: str = Field(primary_key=True, max_length=32)
    hostname: str = Field(default="", max_length=255)
    machine_id: str = Field(default="", max_length=64)
    os_family: str = Field(default="", max_length=16)
    agent_version: str = Field(default="", max_length=32)
    window: str = Field(default="", max_length=64, index=True)
    unit: str | None = Field(default=None, max_length=128)
    token_id: str | None = Field(default=None, foreign_key="enrollment_token.id", max_length=16)
    enrolled_at: dt.datetime = Field(sa_column=utc_column())
    cert_serial: str = Field(max_length=64, unique=True)
    cert_fingerprint: str = Field(max_length=64, unique=True)
    cert_not_after: dt.datetime = Field(sa_column=utc_column())
    revoked_at: dt.datetime | None = Field(default=None, sa_column=utc_column(nullable=True))
    revoked_reason: str = Field(default="", max_length=256)
    last_seen_at: dt.datetime | None = Field(default=None, sa_column=utc_column(nullable=True))
    last_sequence: int = Field(default=0, sa_type=BigInteger)
    # Facts up to this sequence have been judged by the rules after ingest (the rest wait in the backlog).
    evaluated_sequence: int = Field(default=0, sa_column=Column(BigInteger, nullable=False, server_default="0"))
    # Facts waiting in the agent's outbox behind its latest report (None: never reported by this agent).
    outbox_depth: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))


class Fact(SQLModel, table=True):
    """One fact as the agent sent it; never updated, never deleted by ingest."""

    __tablename__ = "fact"
    __table_args__ = (
        UniqueConstraint("agent_id", "sequence", name="uq_fact_agent_sequence"),
        Index("ix_fact_agent_kind_sequence", "agent_id", "kind", "sequence"),
    )

    id: int | None = Field(default=None, sa_column=Column(BigId, primary_key=True, autoincrement=True))
    agent_id: str = Field(foreign_key="agent.id", max_length=32)
    sequence: int = Field(sa_type=BigInteger)
    kind: str = Field(max_length=32)
    observed_at: dt.datetime = Field(sa_column=utc_column())
    received_at: dt.datetime = Field(sa_column=utc_column())
    payload: bytes = Field(sa_column=Column(LargeBinary, nullable=False))


# The tables themselves, for SQLAlchemy Core statements (bulk ingest and the state queries) that
# want typed columns: ``FACT.c.sequence`` rather than the model's plain ``int`` attribute.
AGENT = cast(Table, Agent.__table__)  # type: ignore[attr-defined]
FACT = cast(Table, Fact.__table__)  # type: ignore[attr-defined]


# The tables of the policy store and the rules engine live beside their code and register on the
# same metadata; importing them here makes ``SQLModel.metadata`` (and so Alembic) see every table.
from controller.policy import records as _policy_records  # noqa: E402,F401
from controller.rules import records as _rule_records  # noqa: E402,F401
from controller.org import records as _org_records  # noqa: E402,F401
from controller.scoring import records as _scoring_records  # noqa: E402,F401
from controller.assets import records as _asset_records  # noqa: E402,F401
