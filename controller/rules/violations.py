"""Reading violations and recording people's judgment on them: list, show with evidence, confirm, dismiss.

A violation's status is open, confirmed, dismissed or withdrawn. People confirm or dismiss (with who,
when and why); they may change their mind between the two, again with a reason. ``withdrawn`` is
the rules engine's: it can be neither confirmed nor dismissed. Re-evaluation never touches a
confirmed or dismissed status, so a dismissed violation stays dismissed however often it is found.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.engine import Engine

from controller.clock import Clock, utc_now
from controller.convert import message_values, row_to_fact
from controller.errors import Conflict, InvalidInput, NotFound
from controller.models import AGENT, FACT
from controller.rules.records import VIOLATION, VIOLATION_STATUSES

_MONTH = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$")
# Facts small enough to show whole as evidence; snapshots and inventories are shown by their ids.
_SHOWN_WHOLE = {"process_started", "process_stopped", "session", "power", "activity", "foreground",
                "removable_storage", "antivirus"}
PEOPLE_STATUSES = ("confirmed", "dismissed")


@dataclass(frozen=True)
class EvidenceFact:
    """A fact behind a violation, as stored."""

    fact_id: int
    sequence: int
    kind: str
    observed_at: dt.datetime
    received_at: dt.datetime
    values: dict[str, Any] | None  # the fact's content for small kinds


@dataclass(frozen=True)
class ViolationRecord:
    """A stored violation; ``facts`` is filled by :meth:`ViolationService.get` only."""

    id: int
    key: str
    rule_id: str
    ref: str
    title: str
    kind: str
    category: str
    policy_id: str
    policy_version: str
    agent_id: str
    window: str
    subject: str
    accounts: list[str]  # the OS accounts its evidence names, or those logged in when it happened
    period_start: dt.datetime
    period_end: dt.datetime | None
    occurred_at: dt.datetime
    local_date: dt.date
    summary: str
    fact_ids: list[int]
    informational: bool
    attribute_to_owner: bool
    penalty_points: float
    penalty_money: float
    penalty_section: str | None
    status: str
    status_by: str
    status_at: dt.datetime | None
    status_reason: str
    created_at: dt.datetime
    updated_at: dt.datetime
    facts: list[EvidenceFact] = field(default_factory=list)


def month_range(month: str) -> tuple[dt.date, dt.date]:
    """``2026-11`` → (2026-11-01, 2026-12-01); :class:`InvalidInput` for anything else."""
    match = _MONTH.match(month.strip())
    if not match:
        raise InvalidInput(f"month {month!r} is not of the form YYYY-MM, e.g. 2026-11")
    year, number = int(match.group(1)), int(match.group(2))
    first = dt.date(year, number, 1)
    return first, dt.date(year + number // 12, number % 12 + 1, 1)


class ViolationService:
    """Queries and status changes of violations; knows nothing of the CLI."""

    def __init__(self, engine: Engine, clock: Clock = utc_now) -> None:
        self._engine = engine
        self._clock = clock

    def list(
        self,
        *,
        month: str | None = None,
        rule: str | None = None,
        workstation: str | None = None,
        status: str | None = None,
        limit: int | None = None,
    ) -> list[ViolationRecord]:
        """Violations, oldest first, filtered by month (the policy's local date), rule, workstation
        (agent id or window) and status."""
        query = select(VIOLATION, AGENT.c.window).join(AGENT, AGENT.c.id == VIOLATION.c.agent_id)
        if month:
            first, after = month_range(month)
            query = query.where(VIOLATION.c.local_date >= first, VIOLATION.c.local_date < after)
        if rule:
            query = query.where(VIOLATION.c.rule_id == rule)
        if workstation:
            query = query.where(or_(VIOLATION.c.agent_id == workstation, AGENT.c.window == workstation))
        if status:
            if status not in VIOLATION_STATUSES:
                raise InvalidInput(f"status {status!r} is not one of {', '.join(VIOLATION_STATUSES)}")
            query = query.where(VIOLATION.c.status == status)
        query = query.order_by(VIOLATION.c.occurred_at, VIOLATION.c.id)
        if limit:
            query = query.limit(limit)
        with self._engine.connect() as conn:
            return [_record(row) for row in conn.execute(query)]

    def get(self, violation_id: int) -> ViolationRecord:
        """One violation with the facts behind it."""
        with self._engine.connect() as conn:
            row = conn.execute(
                select(VIOLATION, AGENT.c.window)
                .join(AGENT, AGENT.c.id == VIOLATION.c.agent_id)
                .where(VIOLATION.c.id == violation_id)
            ).one_or_none()
            if row is None:
                raise NotFound(f"no violation {violation_id}; see `counterguard violations list`")
            record = _record(row)
            ids = [i for i in record.fact_ids if isinstance(i, int)]
            facts = conn.execute(
                select(FACT.c.id, FACT.c.sequence, FACT.c.kind, FACT.c.observed_at, FACT.c.received_at, FACT.c.payload)
                .where(FACT.c.id.in_(ids))
                .order_by(FACT.c.sequence)
            ).all() if ids else []
        evidence = [
            EvidenceFact(f.id, f.sequence, f.kind, f.observed_at, f.received_at,
                         _fact_values(f.payload, f.kind) if f.kind in _SHOWN_WHOLE else None)
            for f in facts
        ]
        return _with_facts(record, evidence)

    def confirm(self, violation_id: int, reason: str, by: str) -> ViolationRecord:
        """A person confirms the violation (it counts on the sheet as the policy says)."""
        return self._set_status(violation_id, "confirmed", reason, by)

    def dismiss(self, violation_id: int, reason: str, by: str) -> ViolationRecord:
        """A person dismisses the violation; re-evaluation keeps it dismissed."""
        return self._set_status(violation_id, "dismissed", reason, by)

    def _set_status(self, violation_id: int, status: str, reason: str, by: str) -> ViolationRecord:
        reason = reason.strip()
        if not reason:
            raise InvalidInput(f"a reason is required to mark a violation {status}")
        with self._engine.begin() as conn:
            row = conn.execute(
                select(VIOLATION.c.status, VIOLATION.c.status_reason).where(VIOLATION.c.id == violation_id)
                .with_for_update()
            ).one_or_none()
            if row is None:
                raise NotFound(f"no violation {violation_id}; see `counterguard violations list`")
            if row.status == status:
                raise Conflict(f"violation {violation_id} is already {status}")
            if row.status == "withdrawn":
                raise Conflict(f"violation {violation_id} was withdrawn by the rules engine ({row.status_reason}); "
                               "there is nothing to " + ("confirm" if status == "confirmed" else "dismiss"))
            now = self._clock()
            conn.execute(update(VIOLATION).where(VIOLATION.c.id == violation_id).values(
                status=status, status_by=by[:128], status_at=now, status_reason=reason[:500], updated_at=now))
        return self.get(violation_id)


def _fact_values(payload: bytes, kind: str) -> dict[str, Any]:
    fact = row_to_fact(payload)
    return message_values(getattr(fact, kind))


def _record(row: Any) -> ViolationRecord:
    evidence = row.evidence if isinstance(row.evidence, dict) else {}
    return ViolationRecord(
        id=row.id, key=row.key, rule_id=row.rule_id, ref=row.ref, title=row.title, kind=row.kind,
        category=row.category, policy_id=row.policy_id, policy_version=row.policy_version, agent_id=row.agent_id,
        window=row.window, subject=row.subject, accounts=list(row.accounts or []), period_start=row.period_start, period_end=row.period_end,
        occurred_at=row.occurred_at, local_date=row.local_date, summary=str(evidence.get("summary", "")),
        fact_ids=list(evidence.get("fact_ids", [])), informational=row.informational,
        attribute_to_owner=row.attribute_to_owner, penalty_points=row.penalty_points,
        penalty_money=row.penalty_money, penalty_section=row.penalty_section, status=row.status,
        status_by=row.status_by, status_at=row.status_at, status_reason=row.status_reason,
        created_at=row.created_at, updated_at=row.updated_at,
    )


def _with_facts(record: ViolationRecord, facts: list[EvidenceFact]) -> ViolationRecord:
    return dataclasses.replace(record, facts=facts)
