"""The score sheet service: compute a month, close and reopen it, explain one person, manual entries.

A month that is not closed is computed on every request from what the database holds now: the
month's counted violations (one query by local date), attributed with
:class:`~controller.org.attribution.OrgDirectory`, the staff and unit tables, and the manual
entries, under the active policy's scoring scheme. Closing stores that sheet as JSON; a closed
month is always answered from its frozen copy, whatever changes later (a late dismissal, a new
policy, a staff member leaving), until someone reopens it, with a reason, which is logged like the
close. Manual entries come from CSV files (see :mod:`controller.scoring.entries`) and are refused
for a closed month. Knows nothing of the CLI.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import delete, insert, select, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError

from controller.clock import Clock, utc_now
from controller.errors import Conflict, InvalidInput, NotFound
from controller.models import AGENT
from controller.org.attribution import AttributionInput, OrgDirectory
from controller.org.records import STAFF, UNIT
from controller.policy.model import Scoring
from controller.rules.records import VIOLATION
from controller.scoring.entries import parse_entries
from controller.scoring.model import ManualEntry, Person, Sheet, SheetViolation, StaffInfo, UnitInfo
from controller.scoring.records import SCORE_ENTRY, SCORE_MONTH, SCORE_MONTH_EVENT
from controller.scoring.sheet import compute_sheet

# Advisory-lock keys of months: this base ("CGsc" in ASCII, shifted) plus YYYYMM.
PG_MONTH_LOCK = 0x4347_7363 << 24
MAX_FILE_BYTES = 10 * 2**20
_MONTH = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$")


class ActivePolicies(Protocol):
    """Where the active policy comes from (:class:`controller.policy.store.PolicyStore`)."""

    def active(self) -> Any: ...


@dataclass(frozen=True)
class MonthEvent:
    """A close or a reopen of a month."""

    id: int
    month: str
    action: str
    by: str
    at: dt.datetime
    reason: str
    policy_id: str
    policy_version: str
    sheet_sha256: str


@dataclass(frozen=True)
class ImportResult:
    """What an import stored."""

    month: str
    file: str
    entries: list[ManualEntry]


def parse_month(text: str, what: str = "month") -> tuple[dt.date, dt.date]:
    """``2026-11`` → (2026-11-01, 2026-12-01); :class:`InvalidInput` naming ``what`` for anything else."""
    match = _MONTH.match(text.strip())
    if not match:
        raise InvalidInput(f"{what} {text!r} is not a month of the form YYYY-MM (e.g. 2026-11)")
    year, number = int(match.group(1)), int(match.group(2))
    return dt.date(year, number, 1), dt.date(year + number // 12, number % 12 + 1, 1)


def sheet_sha256(document: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(document, sort_keys=True, ensure_ascii=False).encode("utf-8")).hexdigest()


class ScoreService:
    """Monthly sheets over one database and the active policy; see the module docstring."""

    def __init__(self, engine: Engine, policies: ActivePolicies, clock: Clock = utc_now) -> None:
        self._engine = engine
        self._policies = policies
        self._clock = clock

    # ------------------------------------------------------------------ the sheet

    def month(self, month: str, unit: str | None = None) -> Sheet:
        """The month's sheet (the frozen copy once closed), for the whole centre or one unit's rows."""
        parse_month(month)
        with self._engine.connect() as conn:
            if unit is not None and conn.execute(select(UNIT.c.code).where(UNIT.c.code == unit)).first() is None:
                raise NotFound(f"no unit {unit!r}; see `counterguard unit list`")
            closed = conn.execute(select(SCORE_MONTH.c.sheet).where(SCORE_MONTH.c.month == month)).first()
            sheet = Sheet.from_json(closed.sheet) if closed else self._compute(conn, month)
        return sheet.for_unit(unit) if unit is not None else sheet

    def explain(self, staff: str, month: str) -> tuple[Sheet, Person]:
        """The sheet and one person's row with every line behind it."""
        sheet = self.month(month)
        person = sheet.person(staff)
        if person is None:
            raise NotFound(f"{staff} is not on the sheet of {month}: not in the staff table, or inactive with "
                           "nothing charged; see `counterguard staff list`")
        return sheet, person

    def _compute(self, conn: Connection, month: str) -> Sheet:
        loaded = self._active()
        scoring: Scoring = loaded.policy.scoring
        first, after = parse_month(month)
        directory = OrgDirectory.load(conn)
        rows = conn.execute(
            select(VIOLATION.c.id, VIOLATION.c.rule_id, VIOLATION.c.ref, VIOLATION.c.title, VIOLATION.c.local_date,
                   VIOLATION.c.status, VIOLATION.c.informational, VIOLATION.c.penalty_points,
                   VIOLATION.c.penalty_money, VIOLATION.c.penalty_section, VIOLATION.c.occurred_at,
                   VIOLATION.c.accounts, VIOLATION.c.attribute_to_owner, AGENT.c.window)
            .join(AGENT, AGENT.c.id == VIOLATION.c.agent_id)
            .where(VIOLATION.c.local_date >= first, VIOLATION.c.local_date < after,
                   VIOLATION.c.status.in_(list(scoring.counted_statuses)), VIOLATION.c.informational.is_(False))
        ).all()
        violations = [
            SheetViolation(r.id, r.rule_id, r.ref, r.title, r.local_date, r.status, r.informational,
                           r.penalty_points, r.penalty_money, r.penalty_section, r.window or "",
                           directory.window_unit(r.window or "") or "")
            for r in rows
        ]
        attributions = directory.attribute_all([
            AttributionInput(r.id, r.window or "", r.local_date, r.occurred_at, tuple(r.accounts or ()),
                             r.attribute_to_owner)
            for r in rows
        ])
        return compute_sheet(
            scoring, month, policy_id=loaded.record.policy_id, policy_version=loaded.record.version,
            staff=_staff(conn), units=_units(conn), violations=violations, attributions=attributions,
            entries=_entries(conn, month), computed_at=self._clock(),
        )

    def _active(self) -> Any:
        loaded = self._policies.active()
        if loaded is None:
            raise NotFound("no policy is active; apply one with `counterguard policy apply FILE`")
        return loaded

    # ------------------------------------------------------------------ closing

    def close(self, month: str, by: str, reason: str = "") -> Sheet:
        """Freeze the month's sheet as it is now; :class:`Conflict` when it is already closed."""
        parse_month(month)
        with self._month_transaction(month) as conn:
            self._refuse_closed(conn, month, "close")
            now = self._clock()
            sheet = replace(self._compute(conn, month), closed_at=now, closed_by=by)
            document = sheet.to_json()
            try:
                conn.execute(insert(SCORE_MONTH).values(
                    month=month, closed_at=now, closed_by=by, reason=reason, policy_id=sheet.policy_id,
                    policy_version=sheet.policy_version, sheet=document))
            except IntegrityError:
                raise Conflict(f"month {month} was closed meanwhile by someone else") from None
            self._log(conn, month, "close", by, now, reason, sheet.policy_id, sheet.policy_version,
                      sheet_sha256(document))
        return sheet

    def reopen(self, month: str, by: str, reason: str) -> MonthEvent:
        """Drop the month's frozen copy so it is computed again; the reason is required and logged."""
        parse_month(month)
        if not reason.strip():
            raise InvalidInput(f"a reason is required to reopen {month}")
        with self._month_transaction(month) as conn:
            gone = conn.execute(delete(SCORE_MONTH).where(SCORE_MONTH.c.month == month)).rowcount
            if not gone:
                raise Conflict(f"month {month} is not closed")
            return self._log(conn, month, "reopen", by, self._clock(), reason.strip())

    def history(self, month: str) -> list[MonthEvent]:
        """Every close and reopen of the month, oldest first."""
        parse_month(month)
        with self._engine.connect() as conn:
            rows = conn.execute(select(SCORE_MONTH_EVENT).where(SCORE_MONTH_EVENT.c.month == month)
                                .order_by(SCORE_MONTH_EVENT.c.id)).all()
        return [_event(r) for r in rows]

    @contextmanager
    def _month_transaction(self, month: str) -> Iterator[Connection]:
        """A transaction that changes one month, one at a time: an import cannot slip in while it closes.

        PostgreSQL: a transaction-scoped advisory lock per month; SQLite: the database's write lock,
        taken when the transaction starts.
        """
        with self._engine.begin() as conn:
            if conn.dialect.name == "sqlite":
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            elif conn.dialect.name == "postgresql":
                key = PG_MONTH_LOCK + int(month.replace("-", ""))
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})
            yield conn

    def _refuse_closed(self, conn: Connection, month: str, doing: str) -> None:
        row = conn.execute(select(SCORE_MONTH.c.closed_by, SCORE_MONTH.c.closed_at)
                           .where(SCORE_MONTH.c.month == month)).first()
        if row is not None:
            raise Conflict(f"month {month} was closed by {row.closed_by or 'someone'} at "
                           f"{row.closed_at:%Y-%m-%d %H:%M} UTC; reopen it before you {doing} it")

    def _log(self, conn: Connection, month: str, action: str, by: str, at: dt.datetime, reason: str,
             policy_id: str = "", policy_version: str = "", digest: str = "") -> MonthEvent:
        values = {"month": month, "action": action, "by": by[:128], "at": at, "reason": reason[:500],
                  "policy_id": policy_id, "policy_version": policy_version, "sheet_sha256": digest}
        event_id = conn.execute(insert(SCORE_MONTH_EVENT).values(**values)).inserted_primary_key[0]  # type: ignore[index]
        return MonthEvent(id=int(event_id), **values)

    # ------------------------------------------------------------------ manual entries

    def entries(self, month: str) -> list[ManualEntry]:
        """The month's manual entries, in the order they were entered."""
        parse_month(month)
        with self._engine.connect() as conn:
            return _entries(conn, month)

    def import_entries(self, path: str | Path, month: str, by: str) -> ImportResult:
        """Import a CSV file of manual entries for ``month``: every row or none.

        :class:`InvalidInput` lists every bad row as ``FILE:ROW: field: reason``; :class:`Conflict`
        when the month is closed or this very file was already imported for it.
        """
        parse_month(month)
        source = Path(path)
        try:
            if source.stat().st_size > MAX_FILE_BYTES:
                raise InvalidInput(f"{source} is larger than {MAX_FILE_BYTES // 2**20} MiB; split it")
            data = source.read_bytes()
        except OSError as exc:
            raise InvalidInput(f"cannot read {source}: {exc.strerror or exc}") from None
        digest = hashlib.sha256(data).hexdigest()
        scoring = self._active().policy.scoring
        now = self._clock()
        with self._month_transaction(month) as conn:
            self._refuse_closed(conn, month, "import entries into")
            earlier = conn.execute(select(SCORE_ENTRY.c.entered_by, SCORE_ENTRY.c.entered_at).where(
                SCORE_ENTRY.c.month == month, SCORE_ENTRY.c.source_sha256 == digest).limit(1)).first()
            if earlier is not None:
                raise Conflict(f"{source} was already imported for {month} by {earlier.entered_by} at "
                               f"{earlier.entered_at:%Y-%m-%d %H:%M} UTC; nothing was imported again")
            staff = {s.code: s for s in _staff(conn)}
            rows = parse_entries(data, str(source), scoring, staff, default_by=by)
            if rows:
                conn.execute(insert(SCORE_ENTRY), [
                    {**row, "month": month, "entered_at": now, "source_file": str(source)[:500],
                     "source_sha256": digest} for row in rows])
            stored = _entries(conn, month, digest)
        return ImportResult(month, str(source), stored)


# ------------------------------------------------------------------------------ reading tables


def _staff(conn: Connection) -> list[StaffInfo]:
    rows = conn.execute(select(STAFF.c.code, STAFF.c.name, STAFF.c.unit, STAFF.c.active).order_by(STAFF.c.code))
    return [StaffInfo(r.code, r.name, r.unit, bool(r.active)) for r in rows]


def _units(conn: Connection) -> dict[str, UnitInfo]:
    rows = conn.execute(select(UNIT.c.code, UNIT.c.name, UNIT.c.home_department))
    return {r.code: UnitInfo(r.code, r.name, r.home_department) for r in rows}


def _entries(conn: Connection, month: str, source_sha256: str | None = None) -> list[ManualEntry]:
    query = select(SCORE_ENTRY).where(SCORE_ENTRY.c.month == month)
    if source_sha256 is not None:
        query = query.where(SCORE_ENTRY.c.source_sha256 == source_sha256)
    rows = conn.execute(query.order_by(SCORE_ENTRY.c.id))
    return [
        ManualEntry(id=r.id, month=r.month, staff=r.staff, section=r.section, points=r.points, ref=r.ref,
                    reason=r.reason, entered_by=r.entered_by, entered_at=r.entered_at, votes_for=r.votes_for,
                    votes_total=r.votes_total, flag=r.flag, unit=r.unit, source_file=r.source_file,
                    source_row=r.source_row)
        for r in rows
    ]


def _event(row: Any) -> MonthEvent:
    return MonthEvent(id=row.id, month=row.month, action=row.action, by=row.by, at=row.at, reason=row.reason,
                      policy_id=row.policy_id, policy_version=row.policy_version, sheet_sha256=row.sheet_sha256)
