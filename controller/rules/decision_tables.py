"""The decisions the rules read besides facts, read once per change instead of once per evaluation.

Every evaluation needs the software approvals, registered devices, exemptions, account mappings
and maintenance records that apply to its workstation. Reading five tables for each of hundreds of
reports a second costs more than the evaluation itself, and these tables change a few times a
day, when somebody records a decision. So a :class:`DecisionCache` keeps them in memory, whole,
with the revision they were read at.

The revision is ``decision_revision.revision``, a counter that database triggers (migration 0009)
raise with every insert, update or delete on those five tables, whoever writes: the CLI, another
controller, an administrator in ``psql``. An evaluation reads the counter in the statement that
takes its agent lock (:data:`REVISION`) and reads the tables again only when it moved. Data read
after the counter is at least as new as the counter says, so a stale table is never labelled with a
newer revision; at worst a decision committed meanwhile is read twice. Putting a policy in force
raises the same counter, so :meth:`controller.rules.service.RulesService.catch_up` keeps the active
policy the same way.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Connection

from controller.rules.base import Account, Approval, Device, RuleContext, TimeSpan
from controller.rules.records import (
    ACCOUNT_MAPPING,
    DECISION_REVISION,
    EXEMPTION,
    MAINTENANCE_RECORD,
    REGISTERED_DEVICE,
    SOFTWARE_APPROVAL,
)

# The counter, as a column to add to the query that locks the agent (one round trip for both).
REVISION = select(DECISION_REVISION.c.revision).where(DECISION_REVISION.c.id == 1).scalar_subquery()


def _scope(row: Any, window: str, unit: str | None) -> str | None:
    """How a decision recorded for a window, a unit or everyone applies to this workstation (None: not)."""
    if row.window:
        return "window" if row.window == window else None
    if row.unit:
        return "unit" if unit and row.unit == unit else None
    return "all"


def _spans(rows: Iterable[Any], text: str) -> tuple[TimeSpan, ...]:
    return tuple(TimeSpan(row.starts_at, row.ends_at, getattr(row, text), row.id) for row in rows)


@dataclass
class DecisionTables:
    """The five tables as read at one revision, and the parts of them each window/unit has asked for."""

    revision: int | None
    approvals: list[Any]
    devices: list[Any]
    accounts: tuple[Account, ...]
    exemptions_by_agent: dict[str, list[Any]]  # not removed, by id
    exemptions_by_window: dict[str, list[Any]]
    maintenance: dict[str, tuple[TimeSpan, ...]]
    _scoped: dict[tuple[str, str | None], tuple[tuple[Approval, ...], tuple[Device, ...]]] = field(
        default_factory=dict)

    @classmethod
    def read(cls, conn: Connection, revision: int | None) -> DecisionTables:
        maintenance: dict[str, list[Any]] = defaultdict(list)
        for row in conn.execute(select(MAINTENANCE_RECORD).order_by(MAINTENANCE_RECORD.c.id)):
            maintenance[row.agent_id].append(row)
        by_agent: dict[str, list[Any]] = defaultdict(list)
        by_window: dict[str, list[Any]] = defaultdict(list)
        for row in conn.execute(select(EXEMPTION).where(EXEMPTION.c.removed_at.is_(None)).order_by(EXEMPTION.c.id)):
            if row.agent_id is not None:
                by_agent[row.agent_id].append(row)
            if row.window is not None:
                by_window[row.window].append(row)
        return cls(
            revision=revision,
            approvals=list(conn.execute(select(SOFTWARE_APPROVAL).order_by(SOFTWARE_APPROVAL.c.id))),
            devices=list(conn.execute(select(REGISTERED_DEVICE).order_by(REGISTERED_DEVICE.c.id))),
            accounts=tuple(
                Account(row.account, row.staff, tuple(w.strip() for w in row.windows.split(",") if w.strip()),
                        row.valid_from, row.valid_to)
                for row in conn.execute(select(ACCOUNT_MAPPING).order_by(ACCOUNT_MAPPING.c.id))
            ),
            exemptions_by_agent=dict(by_agent),
            exemptions_by_window=dict(by_window),
            maintenance={agent: _spans(rows, "note") for agent, rows in maintenance.items()},
        )

    def context(self, agent: Any) -> RuleContext:
        """The decisions that apply to ``agent`` (its row: id, window, unit, last_seen_at), as plain data."""
        window, unit = agent.window or "", agent.unit
        scoped = self._scoped.get((window, unit))
        if scoped is None:
            approvals = tuple(
                Approval(row.name, row.source, s, row.decision, row.decided_at)
                for row in self.approvals if (s := _scope(row, window, unit)) is not None
            )
            devices = tuple(
                Device(row.vendor_id, row.product_id, row.serial, row.description)
                for row in self.devices if _scope(row, window, unit) is not None
            )
            scoped = self._scoped[(window, unit)] = (approvals, devices)
        # The agent's own and its window's, each once (one naming both is in both lists), by id.
        mine = {row.id: row for row in (*self.exemptions_by_agent.get(agent.id, ()),
                                        *self.exemptions_by_window.get(window, ()))}
        exemptions = _spans((mine[key] for key in sorted(mine)), "reason")
        return RuleContext(window, unit, scoped[0], exemptions, scoped[1], self.accounts,
                           self.maintenance.get(agent.id, ()), agent.last_seen_at)


class DecisionCache:
    """The latest :class:`DecisionTables` a process read; shared by its evaluation threads."""

    def __init__(self) -> None:
        self._tables: DecisionTables | None = None
        self._lock = threading.Lock()
        self.reads = 0  # how many times the tables were read (for tests and the benchmark)

    def context(self, conn: Connection, agent: Any, revision: int | None) -> RuleContext:
        """``agent``'s decisions as of ``revision`` (read on ``conn`` when the cache holds another).

        ``revision`` None (the counter's row is missing) reads the tables every time.
        """
        tables = self._tables
        if tables is None or revision is None or tables.revision != revision:
            tables = DecisionTables.read(conn, revision)
            with self._lock:
                self.reads += 1
                current = self._tables
                if current is None or current.revision is None or (
                        revision is not None and current.revision < revision):
                    self._tables = tables
        return tables.context(agent)
