"""Database tables of the policy store: applied policy versions and the log of activations.

A :class:`PolicyVersion` row is one (policy id, version) with its exact YAML text; its content
never changes once stored. :class:`PolicyActivation` is append-only: each apply (or roll back to
an older version) adds a row, and the active policy is the version of the newest one. Nothing
is ever updated in place, so controllers sharing one database never race on a flag.

Helpers come from :mod:`controller.db`, not :mod:`controller.models` (which imports this module).
"""

from __future__ import annotations

import datetime as dt
from typing import cast

from sqlalchemy import BigInteger, Column, ForeignKey, Integer, Table, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

from controller.db import UTCDateTime

# SQLite only auto-increments an INTEGER PRIMARY KEY; PostgreSQL gets a BIGSERIAL.
_BIG_ID = BigInteger().with_variant(Integer(), "sqlite")


class PolicyVersion(SQLModel, table=True):
    """One version of one policy as it was first applied: the YAML text, its hash, who and when."""

    __tablename__ = "policy_version"
    __table_args__ = (UniqueConstraint("policy_id", "version", name="uq_policy_version_policy_id_version"),)

    id: int | None = Field(default=None, sa_column=Column(_BIG_ID, primary_key=True, autoincrement=True))
    policy_id: str = Field(max_length=64)
    version: str = Field(max_length=64)
    sha256: str = Field(max_length=64)
    content: str = Field(sa_column=Column(Text, nullable=False))
    source: str = Field(default="", max_length=255)
    applied_by: str = Field(default="", max_length=128)
    applied_at: dt.datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))


class PolicyActivation(SQLModel, table=True):
    """One time a policy version became the active one; the newest row is the active policy."""

    __tablename__ = "policy_activation"

    id: int | None = Field(default=None, sa_column=Column(_BIG_ID, primary_key=True, autoincrement=True))
    policy_version_id: int = Field(
        sa_column=Column(
            BigInteger,
            ForeignKey("policy_version.id", name="fk_policy_activation_policy_version_id_policy_version"),
            nullable=False,
            index=True,
        )
    )
    activated_by: str = Field(default="", max_length=128)
    activated_at: dt.datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))


POLICY_VERSION = cast(Table, PolicyVersion.__table__)  # type: ignore[attr-defined]
POLICY_ACTIVATION = cast(Table, PolicyActivation.__table__)  # type: ignore[attr-defined]
