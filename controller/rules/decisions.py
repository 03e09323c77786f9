"""The decisions people record about workstations, which the rules read besides the facts.

Software approvals and denials (R11.2), exemptions such as overtime (R11.8), registered removable
devices (R11.2), OS-account → staff mappings (R11.1, R11.3) and maintenance records (R11.7). Each
keeps who recorded it and when. Recording one does not evaluate anything by itself: the caller
(the CLI) asks :class:`~controller.rules.service.RulesService` to re-evaluate what it affects; the
``affects`` of each method's result says which rule kinds and which agents.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.engine import Connection, Engine

from controller.clock import Clock, utc_now
from controller.errors import Conflict, InvalidInput, NotFound
from controller.models import AGENT
from controller.org.records import STAFF
from controller.policy.model import RuleKind
from controller.rules.records import (
    ACCOUNT_MAPPING,
    DECISIONS,
    EXEMPTION,
    MAINTENANCE_RECORD,
    REGISTERED_DEVICE,
    SOFTWARE_APPROVAL,
)

_HEX4 = re.compile(r"^[0-9a-fA-F]{4}$")
SOURCES = ("dpkg", "desktop-entry", "flatpak", "snap", "windows-registry")


@dataclass(frozen=True)
class Recorded:
    """A decision as stored: its table, id and values; which rule kinds and agents it affects."""

    table: str
    id: int
    values: dict[str, Any]
    kinds: tuple[RuleKind, ...]
    agent_id: str | None = None  # None: possibly every agent
    since: dt.datetime | None = None  # re-evaluate from here (when the decision is about a time span)


def _check_span(start: dt.datetime, end: dt.datetime) -> None:
    if start.tzinfo is None or end.tzinfo is None:
        raise InvalidInput("times must carry a time zone")
    if end <= start:
        raise InvalidInput(f"the span ends ({end:%Y-%m-%d %H:%M}) before it starts ({start:%Y-%m-%d %H:%M})")


def _scope(unit: str | None, window: str | None) -> tuple[str | None, str | None]:
    unit, window = (unit or "").strip() or None, (window or "").strip() or None
    if unit and window:
        raise InvalidInput("give either a unit or a window, not both")
    return unit, window


class DecisionService:
    """Records and lists decisions; transport-free."""

    def __init__(self, engine: Engine, clock: Clock = utc_now) -> None:
        self._engine = engine
        self._clock = clock

    def _insert(self, table: Any, values: dict[str, Any], kinds: tuple[RuleKind, ...], agent_id: str | None = None,
                since: dt.datetime | None = None) -> Recorded:
        with self._engine.begin() as conn:
            key = conn.execute(insert(table).values(**values).returning(table.c.id)).scalar_one()
        return Recorded(table.name, int(key), values, kinds, agent_id, since)

    def _agent(self, conn: Connection, agent_id: str) -> Any:
        agent = conn.execute(select(AGENT.c.id, AGENT.c.window).where(AGENT.c.id == agent_id)).one_or_none()
        if agent is None:
            raise NotFound(f"no agent {agent_id!r}; see `counterguard agents list`")
        return agent

    # ------------------------------------------------------------------ software

    def decide_software(self, name: str, decision: str, *, source: str = "", unit: str | None = None,
                        window: str | None = None, reason: str = "", by: str = "") -> Recorded:
        """Approve or deny a program (by its package/desktop/registry name) for a unit, a window or everyone."""
        name, source = name.strip(), (source or "").strip().lower().replace("_", "-")
        if not name:
            raise InvalidInput("a software name is required")
        if decision not in DECISIONS:
            raise InvalidInput(f"decision {decision!r} is not one of {', '.join(DECISIONS)}")
        if source and source not in SOURCES:
            raise InvalidInput(f"source {source!r} is not one of {', '.join(SOURCES)}")
        unit, window = _scope(unit, window)
        values = {"name": name[:255], "source": source, "unit": unit, "window": window, "decision": decision,
                  "decided_by": by[:128], "decided_at": self._clock(), "reason": reason[:500]}
        return self._insert(SOFTWARE_APPROVAL, values, (RuleKind.UNAPPROVED_SOFTWARE,))

    def software_decisions(self) -> list[dict[str, Any]]:
        return self._rows(SOFTWARE_APPROVAL, SOFTWARE_APPROVAL.c.id)

    # ------------------------------------------------------------------ exemptions

    def add_exemption(self, starts_at: dt.datetime, ends_at: dt.datetime, reason: str, *, agent_id: str | None = None,
                      window: str | None = None, by: str = "") -> Recorded:
        """Allow use of a workstation (or every workstation of a window) outside working hours, e.g. 加班."""
        _check_span(starts_at, ends_at)
        if bool(agent_id) == bool(window):
            raise InvalidInput("give either a workstation (agent id) or a window")
        if not reason.strip():
            raise InvalidInput("a reason is required, e.g. 加班 or 周末值班")
        if agent_id:
            with self._engine.connect() as conn:
                self._agent(conn, agent_id)
        values = {"agent_id": agent_id or None, "window": window or None, "starts_at": starts_at, "ends_at": ends_at,
                  "reason": reason.strip()[:500], "created_by": by[:128], "created_at": self._clock(),
                  "removed_at": None, "removed_by": ""}
        return self._insert(EXEMPTION, values, (RuleKind.ACTIVITY_OUTSIDE_HOURS,), agent_id, starts_at)

    def remove_exemption(self, exemption_id: int, by: str = "") -> Recorded:
        """Take an exemption back (it stays in the list, marked removed)."""
        with self._engine.begin() as conn:
            row = conn.execute(select(EXEMPTION).where(EXEMPTION.c.id == exemption_id)).one_or_none()
            if row is None:
                raise NotFound(f"no exemption {exemption_id}; see `counterguard exemption list`")
            if row.removed_at is not None:
                raise Conflict(f"exemption {exemption_id} was already removed on {row.removed_at:%Y-%m-%d %H:%M} UTC")
            conn.execute(update(EXEMPTION).where(EXEMPTION.c.id == exemption_id).values(
                removed_at=self._clock(), removed_by=by[:128]))
        return Recorded("exemption", exemption_id, dict(row._mapping), (RuleKind.ACTIVITY_OUTSIDE_HOURS,),
                        row.agent_id, row.starts_at)

    def exemptions(self, include_removed: bool = False) -> list[dict[str, Any]]:
        rows = self._rows(EXEMPTION, EXEMPTION.c.starts_at)
        return rows if include_removed else [r for r in rows if r["removed_at"] is None]

    # ------------------------------------------------------------------ devices, accounts, maintenance

    def register_device(self, vendor_id: str, product_id: str, *, serial: str = "", description: str = "",
                        unit: str | None = None, window: str | None = None, by: str = "") -> Recorded:
        """Register a removable device (signing key, ID-card reader …); without a serial, every one of the model."""
        for label, value in (("vendor id", vendor_id), ("product id", product_id)):
            if not _HEX4.match(value.strip()):
                raise InvalidInput(f"{label} {value!r} is not four hex digits, e.g. 0781")
        unit, window = _scope(unit, window)
        values = {"vendor_id": vendor_id.strip().lower(), "product_id": product_id.strip().lower(),
                  "serial": serial.strip()[:128], "description": description[:255], "unit": unit, "window": window,
                  "registered_by": by[:128], "registered_at": self._clock()}
        return self._insert(REGISTERED_DEVICE, values, (RuleKind.REMOVABLE_STORAGE,))

    def devices(self) -> list[dict[str, Any]]:
        return self._rows(REGISTERED_DEVICE, REGISTERED_DEVICE.c.id)

    def map_account(self, account: str, staff: str, *, windows: tuple[str, ...] = (),
                    valid_from: dt.datetime | None = None, valid_to: dt.datetime | None = None,
                    by: str = "") -> Recorded:
        """Map an OS account to a staff member on the staff list, with the windows they may use (none: any)."""
        if not account.strip() or not staff.strip():
            raise InvalidInput("an account and a staff member are required")
        if valid_from and valid_to:
            _check_span(valid_from, valid_to)
        with self._engine.connect() as conn:
            if conn.execute(select(STAFF.c.code).where(STAFF.c.code == staff.strip())).one_or_none() is None:
                raise NotFound(f"no staff member {staff.strip()!r}; add them first with `counterguard staff add`")
        values = {"account": account.strip()[:128], "staff": staff.strip()[:128],
                  "windows": ",".join(w.strip() for w in windows if w.strip())[:1000], "valid_from": valid_from,
                  "valid_to": valid_to, "created_by": by[:128], "created_at": self._clock()}
        return self._insert(ACCOUNT_MAPPING, values, (RuleKind.SESSION_ACCOUNT,))

    def accounts(self) -> list[dict[str, Any]]:
        return self._rows(ACCOUNT_MAPPING, ACCOUNT_MAPPING.c.account)

    def add_maintenance(self, agent_id: str, starts_at: dt.datetime, ends_at: dt.datetime, note: str,
                        by: str = "") -> Recorded:
        """Record maintenance of a workstation: hardware, OS and network changes then are not violations."""
        _check_span(starts_at, ends_at)
        if not note.strip():
            raise InvalidInput("a note is required: what was done, by whom")
        with self._engine.connect() as conn:
            self._agent(conn, agent_id)
        values = {"agent_id": agent_id, "starts_at": starts_at, "ends_at": ends_at, "note": note.strip()[:500],
                  "recorded_by": by[:128], "recorded_at": self._clock()}
        kinds = (RuleKind.HARDWARE_CHANGED, RuleKind.OS_REINSTALLED, RuleKind.NETWORK_CHANGED,
                 RuleKind.ACTIVITY_OUTSIDE_HOURS)
        return self._insert(MAINTENANCE_RECORD, values, kinds, agent_id, starts_at)

    def maintenance(self) -> list[dict[str, Any]]:
        return self._rows(MAINTENANCE_RECORD, MAINTENANCE_RECORD.c.starts_at)

    def _rows(self, table: Any, order: Any) -> list[dict[str, Any]]:
        with self._engine.connect() as conn:
            return [dict(row._mapping) for row in conn.execute(select(table).order_by(order, table.c.id))]
