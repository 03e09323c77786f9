"""Database tables of the rules engine: violations, and the decisions people record about workstations.

A :class:`Violation` is derived (facts + policy + these decisions); its ``key`` is a hash of
(rule id, agent id, subject, period), so evaluating twice updates one row instead of adding
another. Its ``status`` is the only part people change (open → confirmed or dismissed); the
engine itself only ever moves an open violation to ``withdrawn`` (and back to ``open`` when it
is found again), never deletes one.

The other tables are what the rules read besides facts: software approvals and denials,
exemptions (overtime, weekend duty), registered removable devices, OS-account → staff mappings
and maintenance records. Every one keeps who recorded it and when.

Column helpers come from :mod:`controller.db` (not :mod:`controller.models`, which imports this
module at its end). Every constraint and index is named explicitly, so the names do not depend on
the order in which modules are imported.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, cast

from sqlalchemy import JSON, BigInteger, Column, Date, ForeignKey, Index, Integer, String, Table, UniqueConstraint
from sqlmodel import Field, SQLModel

from controller.db import UTCDateTime

BigId = BigInteger().with_variant(Integer(), "sqlite")

VIOLATION_STATUSES = ("open", "confirmed", "dismissed", "withdrawn")
DECISIONS = ("approved", "denied")


def _utc(*, nullable: bool = False) -> Any:
    return Field(default=None, sa_column=Column(UTCDateTime(), nullable=nullable))


def _id() -> Any:
    return Field(default=None, sa_column=Column(BigId, primary_key=True, autoincrement=True))


def _agent_fk(table: str, *, nullable: bool) -> Any:
    return Field(
        default=None,
        sa_column=Column(
            "agent_id", String(32), ForeignKey("agent.id", name=f"fk_{table}_agent_id_agent"), nullable=nullable
        ),
    )


class Violation(SQLModel, table=True):
    """One judgment: this rule was broken on this workstation, about this subject, in this period."""

    __tablename__ = "violation"
    __table_args__ = (
        UniqueConstraint("key", name="uq_violation_key"),
        Index("ix_violation_agent_rule_period", "agent_id", "rule_id", "period_start"),
        Index("ix_violation_local_date", "local_date"),
        Index("ix_violation_status", "status"),
    )

    id: int | None = _id()
    key: str = Field(max_length=64)
    rule_id: str = Field(max_length=64)
    ref: str = Field(max_length=500)
    title: str = Field(max_length=500)
    kind: str = Field(max_length=32)
    category: str = Field(default="", max_length=32)
    policy_id: str = Field(max_length=64)
    policy_version: str = Field(max_length=64)
    agent_id: str = _agent_fk("violation", nullable=False)
    subject: str = Field(max_length=500)
    # The OS accounts the evidence names, or the ones logged in when it happened ([] if none known):
    # what attribution (controller.org.attribution) starts from.
    accounts: list[str] = Field(default_factory=list, sa_column=Column(JSON(), nullable=False, default=list))
    period_start: dt.datetime = _utc()
    period_end: dt.datetime | None = _utc(nullable=True)
    occurred_at: dt.datetime = _utc()
    local_date: dt.date = Field(sa_column=Column(Date(), nullable=False))
    # {"fact_ids": [...], "summary": "..."}
    evidence: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON(), nullable=False))
    informational: bool = False
    attribute_to_owner: bool = False
    penalty_points: float = 0
    penalty_money: float = 0
    penalty_section: str | None = Field(default=None, max_length=64)
    status: str = Field(default="open", max_length=16)
    status_by: str = Field(default="", max_length=128)
    status_at: dt.datetime | None = _utc(nullable=True)
    status_reason: str = Field(default="", max_length=500)
    created_at: dt.datetime = _utc()
    updated_at: dt.datetime = _utc()


class SoftwareApproval(SQLModel, table=True):
    """The centre's decision on one program for a unit, a window or everyone (R11.2).

    ``source`` empty means any source; ``unit`` and ``window`` both empty mean every workstation.
    Decisions apply to evaluations from the moment they are recorded, also to software installed
    before: an approval granted later withdraws the open violation on re-evaluation.
    """

    __tablename__ = "software_approval"
    __table_args__ = (Index("ix_software_approval_name", "name"),)

    id: int | None = _id()
    name: str = Field(max_length=255)
    source: str = Field(default="", max_length=32)
    unit: str | None = Field(default=None, max_length=128)
    window: str | None = Field(default=None, max_length=64)
    decision: str = Field(max_length=16)
    decided_by: str = Field(default="", max_length=128)
    decided_at: dt.datetime = _utc()
    reason: str = Field(default="", max_length=500)


class Exemption(SQLModel, table=True):
    """Permission to use a workstation (or every workstation of a window) outside working hours (R11.8)."""

    __tablename__ = "exemption"
    __table_args__ = (Index("ix_exemption_agent_id", "agent_id"),)

    id: int | None = _id()
    agent_id: str | None = _agent_fk("exemption", nullable=True)
    window: str | None = Field(default=None, max_length=64)
    starts_at: dt.datetime = _utc()
    ends_at: dt.datetime = _utc()
    reason: str = Field(max_length=500)  # e.g. 加班, 周末值班
    created_by: str = Field(default="", max_length=128)
    created_at: dt.datetime = _utc()
    removed_at: dt.datetime | None = _utc(nullable=True)
    removed_by: str = Field(default="", max_length=128)


class RegisteredDevice(SQLModel, table=True):
    """A removable device the centre allows (signing key, ID-card reader …); ``serial`` empty: any of the model."""

    __tablename__ = "registered_device"
    __table_args__ = (Index("ix_registered_device_ids", "vendor_id", "product_id"),)

    id: int | None = _id()
    vendor_id: str = Field(max_length=8)
    product_id: str = Field(max_length=8)
    serial: str = Field(default="", max_length=128)
    description: str = Field(default="", max_length=255)
    unit: str | None = Field(default=None, max_length=128)
    window: str | None = Field(default=None, max_length=64)
    registered_by: str = Field(default="", max_length=128)
    registered_at: dt.datetime = _utc()


class AccountMapping(SQLModel, table=True):
    """An OS account and the staff member it belongs to, with the windows they may work at (R11.1, R11.3).

    ``windows`` is a comma-separated list; empty means any window. ``valid_from``/``valid_to``
    bound the mapping in time (empty: unbounded). The organisation model will extend this.
    """

    __tablename__ = "account_mapping"
    __table_args__ = (Index("ix_account_mapping_account", "account"),)

    id: int | None = _id()
    account: str = Field(max_length=128)
    staff: str = Field(max_length=128)
    windows: str = Field(default="", max_length=1000)
    valid_from: dt.datetime | None = _utc(nullable=True)
    valid_to: dt.datetime | None = _utc(nullable=True)
    created_by: str = Field(default="", max_length=128)
    created_at: dt.datetime = _utc()


class MaintenanceRecord(SQLModel, table=True):
    """Registered work on a workstation (hardware, OS, network): changes in this time are not violations (R11.7)."""

    __tablename__ = "maintenance_record"
    __table_args__ = (Index("ix_maintenance_record_agent_id", "agent_id"),)

    id: int | None = _id()
    agent_id: str = _agent_fk("maintenance_record", nullable=False)
    starts_at: dt.datetime = _utc()
    ends_at: dt.datetime = _utc()
    note: str = Field(max_length=500)
    recorded_by: str = Field(default="", max_length=128)
    recorded_at: dt.datetime = _utc()


class DecisionRevision(SQLModel, table=True):
    """A counter of changes to the decision tables above, raised by database triggers (migration 0009).

    One row (id 1). Every insert, update or delete on ``software_approval``, ``exemption``,
    ``registered_device``, ``account_mapping``, ``maintenance_record`` or ``policy_activation`` adds
    one, whoever writes, so a controller can keep those tables and the active policy in memory and
    read them again only when the counter moved (:mod:`controller.rules.decision_tables`). A
    migration that rebuilds one of those tables on SQLite (``batch_alter_table``) drops its triggers
    and must create them again.
    """

    __tablename__ = "decision_revision"

    id: int = Field(sa_column=Column(Integer, primary_key=True, autoincrement=False))
    revision: int = Field(default=0, sa_column=Column(BigInteger, nullable=False, server_default="0"))


VIOLATION = cast(Table, Violation.__table__)  # type: ignore[attr-defined]
SOFTWARE_APPROVAL = cast(Table, SoftwareApproval.__table__)  # type: ignore[attr-defined]
EXEMPTION = cast(Table, Exemption.__table__)  # type: ignore[attr-defined]
REGISTERED_DEVICE = cast(Table, RegisteredDevice.__table__)  # type: ignore[attr-defined]
ACCOUNT_MAPPING = cast(Table, AccountMapping.__table__)  # type: ignore[attr-defined]
MAINTENANCE_RECORD = cast(Table, MaintenanceRecord.__table__)  # type: ignore[attr-defined]
DECISION_REVISION = cast(Table, DecisionRevision.__table__)  # type: ignore[attr-defined]
# The tables whose every change raises ``decision_revision.revision``.
DECISION_TABLES = ("software_approval", "exemption", "registered_device", "account_mapping", "maintenance_record",
                   "policy_activation")
