"""Database tables of the equipment register (regulation 11.12): assets, 领用签字, maintenance, history.

An :class:`Asset` is one item a window holds, identified by its asset tag (unique forever: a retired
tag is never given again). The columns ``agent_id`` (a PC's workstation), ``vendor_id`` /
``product_id`` / ``serial`` (a USB peripheral; for a PC ``serial`` is the system serial) and
``printer_name`` / ``printer_uri`` (a print queue) say how the item is recognised among the devices
the agents discover; items nobody can discover (phone, desk, chairs) leave them empty. Window and
unit are the codes of :mod:`controller.org.records`.

Nothing is deleted: retiring sets ``retired_at``; every change is an :class:`AssetEvent` with the
values before and after. Every constraint and index is named explicitly.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, cast

from sqlalchemy import JSON, BigInteger, Column, Date, ForeignKey, Index, Integer, String, Table, UniqueConstraint
from sqlmodel import Field, SQLModel

from controller.db import UTCDateTime

BigId = BigInteger().with_variant(Integer(), "sqlite")

KINDS = ("pc", "printer", "scanner", "card_reader", "signature_pad", "evaluator", "phone", "desk", "chair", "other")
ACTIONS = ("registered", "signed", "maintained", "moved", "edited", "retired")


def _utc(*, nullable: bool = False) -> Any:
    return Field(default=None, sa_column=Column(UTCDateTime(), nullable=nullable))


def _id() -> Any:
    return Field(default=None, sa_column=Column(BigId, primary_key=True, autoincrement=True))


def _asset_fk(table: str) -> Any:
    return Field(
        default=None,
        sa_column=Column("asset_id", BigId, ForeignKey("asset.id", name=f"fk_{table}_asset_id_asset"), nullable=False),
    )


class Asset(SQLModel, table=True):
    """One item of a window's equipment, with how the agents' inventories show it (if they can)."""

    __tablename__ = "asset"
    __table_args__ = (
        UniqueConstraint("tag", name="uq_asset_tag"),
        Index("ix_asset_window", "window"),
        Index("ix_asset_agent_id", "agent_id"),
        Index("ix_asset_usb", "vendor_id", "product_id"),
    )

    id: int | None = _id()
    tag: str = Field(max_length=64)
    kind: str = Field(max_length=16)
    description: str = Field(default="", max_length=255)
    window: str = Field(max_length=64)  # window code
    unit: str | None = Field(default=None, max_length=64)  # unit code: who signed for it
    agent_id: str | None = Field(
        default=None,
        sa_column=Column("agent_id", String(32), ForeignKey("agent.id", name="fk_asset_agent_id_agent"), nullable=True),
    )
    vendor_id: str = Field(default="", max_length=8)
    product_id: str = Field(default="", max_length=8)
    serial: str = Field(default="", max_length=128)
    printer_name: str = Field(default="", max_length=255)
    printer_uri: str = Field(default="", max_length=1000)
    registered_by: str = Field(default="", max_length=128)
    registered_at: dt.datetime = _utc()
    retired_at: dt.datetime | None = _utc(nullable=True)
    retired_by: str = Field(default="", max_length=128)
    retired_reason: str = Field(default="", max_length=500)


class AssetSignature(SQLModel, table=True):
    """领用签字: ``signed_by`` signed for the asset on behalf of ``unit`` on ``signed_on`` (a local date)."""

    __tablename__ = "asset_signature"
    __table_args__ = (Index("ix_asset_signature_asset_id", "asset_id"),)

    id: int | None = _id()
    asset_id: int = _asset_fk("asset_signature")
    unit: str | None = Field(default=None, max_length=64)
    signed_by: str = Field(max_length=128)
    signed_on: dt.date = Field(sa_column=Column(Date(), nullable=False))
    note: str = Field(default="", max_length=500)
    recorded_by: str = Field(default="", max_length=128)
    recorded_at: dt.datetime = _utc()


class AssetMaintenance(SQLModel, table=True):
    """Work on an asset from ``starts_at`` to ``ends_at``.

    ``workstations`` lists the maintenance records written for the workstations the asset is (or is
    attached to) — ``[{"agent_id": ..., "maintenance_record_id": ...}]`` — so their hardware changes
    in that span are not violations (R11.7).
    """

    __tablename__ = "asset_maintenance"
    __table_args__ = (Index("ix_asset_maintenance_asset_id", "asset_id"),)

    id: int | None = _id()
    asset_id: int = _asset_fk("asset_maintenance")
    starts_at: dt.datetime = _utc()
    ends_at: dt.datetime = _utc()
    note: str = Field(max_length=500)
    workstations: list[dict[str, Any]] = Field(default_factory=list, sa_column=Column(JSON(), nullable=False))
    recorded_by: str = Field(default="", max_length=128)
    recorded_at: dt.datetime = _utc()


class AssetEvent(SQLModel, table=True):
    """One change of an asset: ``action`` (see :data:`ACTIONS`) with the changed values before and after."""

    __tablename__ = "asset_event"
    __table_args__ = (Index("ix_asset_event_asset_id", "asset_id"),)

    id: int | None = _id()
    asset_id: int = _asset_fk("asset_event")
    action: str = Field(max_length=16)
    before: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON(), nullable=True))
    after: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON(), nullable=True))
    note: str = Field(default="", max_length=500)
    recorded_by: str = Field(default="", max_length=128)
    recorded_at: dt.datetime = _utc()


ASSET = cast(Table, Asset.__table__)  # type: ignore[attr-defined]
ASSET_SIGNATURE = cast(Table, AssetSignature.__table__)  # type: ignore[attr-defined]
ASSET_MAINTENANCE = cast(Table, AssetMaintenance.__table__)  # type: ignore[attr-defined]
ASSET_EVENT = cast(Table, AssetEvent.__table__)  # type: ignore[attr-defined]
