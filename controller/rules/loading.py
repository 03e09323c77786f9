"""Loading what one evaluation of an agent needs, from the append-only fact table.

For a range starting at ``load_from`` (by our receive time) and ending at ``end``: every fact of the
agent received from ``load_from`` on (a fact cannot be received before it happens, so every fact
that happened since is among them), plus what the rules need from before it: the last process,
session and software snapshot and every event of its kind since (process events at most
``process_chain_limit`` back: a machine running for days), the last inventory, antivirus status,
foreground and power facts and the last fact of any kind, the last activity reports, and the
removable-storage reports since the agent last started; for a range that ends in the past, also
the first fact and the first power fact after it. Only the fact kinds the evaluated rule kinds
read are loaded, and always the login sessions (the accounts stored with every violation). Every query
is built once and walks the (agent, sequence) indexes.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlalchemy import Integer, bindparam, select
from sqlalchemy.engine import Connection

from controller.clock import Clock
from controller.convert import row_to_fact
from controller.models import FACT
from controller.policy.model import RuleKind
from controller.rules.intervals import SKEW_TOLERANCE, StoredFact
from protos.counterguard.v1 import facts_pb2

# A fact observed this long before it arrived is late (an outbox draining): see :func:`kinds_to_evaluate`.
LATE_FACT = dt.timedelta(minutes=5)

# The facts each rule kind reads (None: every kind, e.g. any fact shows the agent was alive).
KIND_FACTS: dict[RuleKind, frozenset[str] | None] = {
    RuleKind.FORBIDDEN_PROGRAM: frozenset({"process_snapshot", "process_started", "process_stopped", "foreground",
                                           "power"}),
    RuleKind.UNAPPROVED_SOFTWARE: frozenset({"software_snapshot", "software_delta"}),
    RuleKind.POWERED_ON_AFTER_HOURS: frozenset({"power"}),
    RuleKind.ACTIVITY_OUTSIDE_HOURS: frozenset({"activity", "power"}),
    RuleKind.REMOVABLE_STORAGE: frozenset({"removable_storage", "power"}),
    RuleKind.SESSION_ACCOUNT: frozenset({"session_snapshot", "session", "power"}),
    RuleKind.HARDWARE_CHANGED: frozenset({"inventory"}),
    RuleKind.OS_REINSTALLED: frozenset({"inventory"}),
    RuleKind.ANTIVIRUS: frozenset({"antivirus", "power"}),
    RuleKind.NETWORK_CHANGED: frozenset({"inventory"}),
    RuleKind.AGENT_SILENT: None,
}
# Who was logged in: every evaluation reads them (see controller.rules.sessions).
LOGIN_FACTS = frozenset({"session_snapshot", "session"})
# Snapshot + events: (snapshot kind, event kinds).
_CHAINS = {
    "process": ("process_snapshot", ("process_started", "process_stopped")),
    "session": ("session_snapshot", ("session",)),
    "software": ("software_snapshot", ("software_delta",)),
}


# The loading queries, built once: every evaluation runs a dozen of them.
_COLUMNS = (FACT.c.id, FACT.c.kind, FACT.c.received_at, FACT.c.payload, FACT.c.sequence)
_AGENT = FACT.c.agent_id == bindparam("agent")
_BEFORE = (select(FACT.c.sequence).where(_AGENT, FACT.c.received_at < bindparam("boundary"))
           .order_by(FACT.c.sequence.desc()).limit(1))
_WINDOW = (select(*_COLUMNS).where(_AGENT, FACT.c.sequence >= bindparam("first"),
                                   FACT.c.received_at <= bindparam("until")).order_by(FACT.c.sequence))
_WINDOW_OF = _WINDOW.where(FACT.c.kind.in_(bindparam("kinds", expanding=True)))
_LATEST = (select(*_COLUMNS).where(_AGENT, FACT.c.sequence < bindparam("first"))
           .order_by(FACT.c.sequence.desc()).limit(1))
_LATEST_OF = (select(*_COLUMNS).where(_AGENT, FACT.c.sequence < bindparam("first"), FACT.c.kind == bindparam("kind"))
              .order_by(FACT.c.sequence.desc()).limit(bindparam("count", type_=Integer)))
_CHAIN = select(*_COLUMNS).where(_AGENT, FACT.c.sequence >= bindparam("since"), FACT.c.sequence < bindparam("first"),
                                 FACT.c.kind.in_(bindparam("kinds", expanding=True)))
_CHAIN_SINCE = _CHAIN.where(FACT.c.received_at >= bindparam("received"))
_NEXT = select(*_COLUMNS).where(_AGENT, FACT.c.sequence > bindparam("after")).order_by(FACT.c.sequence).limit(1)
_NEXT_OF = _NEXT.where(FACT.c.kind == bindparam("kind"))


@dataclass
class Loaded:
    """An agent's facts for one evaluation, and from when the evaluation can judge everything."""

    facts: list[StoredFact]
    owned_from: dt.datetime | None  # None: everything the agent ever reported was loaded
    incomplete: set[str] = field(default_factory=set)  # chains cut short (their rules withdraw nothing)


class FactLoader:
    """Loads one agent's facts for an evaluation (see the module docstring)."""

    def __init__(self, lookback: dt.timedelta, process_chain_limit: dt.timedelta, clock: Clock) -> None:
        self.lookback = lookback
        self.process_chain_limit = process_chain_limit
        self._clock = clock

    def load(self, conn: Connection, agent_id: str, load_from: dt.datetime, end: dt.datetime,
             kinds: Collection[RuleKind]) -> Loaded:
        """The agent's facts from ``load_from`` (by receive time) and what the rules need from before."""
        wanted, needed, any_kind = _fact_kinds(kinds)
        before = conn.execute(_BEFORE, {"agent": agent_id, "boundary": load_from}).scalar_one_or_none()
        first = 0 if before is None else before + 1
        until = end + self.lookback
        if wanted is None:
            rows = list(conn.execute(_WINDOW, {"agent": agent_id, "first": first, "until": until}))
        else:
            rows = list(conn.execute(_WINDOW_OF, {"agent": agent_id, "first": first, "until": until,
                                                  "kinds": sorted(wanted)}))
        loaded = Loaded([], None if before is None else load_from + SKEW_TOLERANCE)
        if before is not None:
            rows += self._prefix(conn, agent_id, first, load_from, needed, any_kind, loaded)
        if "power" in needed and until < self._clock():
            after = max((row.sequence for row in rows), default=first - 1)
            rows += conn.execute(_NEXT, {"agent": agent_id, "after": after})
            rows += conn.execute(_NEXT_OF, {"agent": agent_id, "after": after, "kind": "power"})
        seen: set[int] = set()
        for row in rows:
            if row.id not in seen:
                seen.add(row.id)
                loaded.facts.append(StoredFact(row.id, row_to_fact(row.payload), row.received_at))
        return loaded

    def _prefix(self, conn: Connection, agent_id: str, first: int, load_from: dt.datetime,
                needed: frozenset[str], any_kind: bool, loaded: Loaded) -> list[Any]:
        """The facts before sequence ``first`` that the rules still need (see the module docstring)."""
        needs = needed.__contains__
        rows: list[Any] = []
        oldest = load_from - self.process_chain_limit

        def latest(kind: str, count: int = 1) -> list[Any]:
            return list(conn.execute(_LATEST_OF, {"agent": agent_id, "first": first, "kind": kind, "count": count}))

        for family, (snapshot, events) in _CHAINS.items():
            if not needs(snapshot):
                continue
            head = latest(snapshot)
            since = head[0].sequence if head else 0
            if family == "process" and head and head[0].received_at < oldest:
                loaded.incomplete.add(family)  # running for days: only the last days of starts and stops
                rows += conn.execute(_CHAIN_SINCE, {"agent": agent_id, "since": since, "first": first,
                                                    "kinds": list(events), "received": oldest})
            else:
                rows += conn.execute(_CHAIN, {"agent": agent_id, "since": since, "first": first,
                                              "kinds": [snapshot, *events]})
        for kind, count in (("inventory", 1), ("antivirus", 1), ("foreground", 1), ("power", 1), ("activity", 5)):
            if needs(kind):
                rows += latest(kind, count)
        if any_kind:
            rows += conn.execute(_LATEST, {"agent": agent_id, "first": first})
        if needs("removable_storage"):
            started = latest("process_snapshot")  # the agent reports what is attached when it starts
            since = started[0].sequence if started else 0
            if started and started[0].received_at < oldest:
                loaded.incomplete.add("removable")
                rows += conn.execute(_CHAIN_SINCE, {"agent": agent_id, "since": since, "first": first,
                                                    "kinds": ["removable_storage"], "received": oldest})
            else:
                rows += conn.execute(_CHAIN, {"agent": agent_id, "since": since, "first": first,
                                              "kinds": ["removable_storage"]})
        return rows


def affected_kinds(facts: Sequence[facts_pb2.Fact]) -> set[RuleKind]:
    """The rule kinds whose outcome new ``facts`` can change (a heartbeat does not change installed software)."""
    kinds = {f.WhichOneof("kind") for f in facts}
    return {kind for kind, reads in KIND_FACTS.items() if reads is None or reads & kinds}


class ProcessMatcher(Protocol):
    def match_process(self, name: str, executable: str = "") -> Any: ...


def kinds_to_evaluate(
    facts: Sequence[facts_pb2.Fact],
    forbidden: Collection[str],
    matcher: ProcessMatcher,
    *,
    now: dt.datetime,
    previous_contact: dt.datetime,
    program_in_use: bool,
    late: dt.timedelta = LATE_FACT,
) -> set[RuleKind]:
    """The rule kinds a live report of ``facts`` can change: :func:`affected_kinds`, narrowed for the common report.

    Most reports are a heartbeat and a few office programs starting or stopping; judging all programs
    and the agent's whole presence again for each would cost every report a full evaluation. So:

    * a heartbeat changes no program run, session or device: it only shows the machine is still on
      (``powered_on_after_hours``) and extends the activity of a user not gone idle
      (``activity_outside_hours``); boot, shutdown, suspend and resume still count as power facts;
    * programs (``forbidden_program``) are judged again only when a started or stopped process, or a
      foreground window, is of a ``forbidden`` category, when a process snapshot arrives, or when
      ``program_in_use`` (a forbidden-program violation of the agent was still growing lately: its
      end moves with the facts that follow);
    * ``agent_silent`` (any fact shows the agent alive) only after a silence: the agent's previous contact,
      or a fact of the batch, is more than ``late`` before ``now`` (an outbox draining after an outage);
      silences still going on are the sweep's.
    """
    kinds: set[str] = set()
    program_facts = False
    for fact in facts:
        kind = fact.WhichOneof("kind") or ""
        if kind == "power" and fact.power.kind == facts_pb2.PowerEvent.KIND_HEARTBEAT:
            kinds.add("heartbeat")
            continue
        kinds.add(kind)
        if kind == "process_started":
            process = fact.process_started.process
            program_facts |= _forbidden(matcher.match_process(process.name, process.executable), forbidden)
        elif kind == "process_stopped":
            program_facts |= _forbidden(matcher.match_process(fact.process_stopped.name), forbidden)
        elif kind == "foreground":
            program_facts |= fact.foreground.category in forbidden
        elif kind in ("process_snapshot", "power"):
            program_facts = True
    affected = {kind for kind, reads in KIND_FACTS.items() if reads is not None and reads & kinds}
    if "heartbeat" in kinds:
        affected |= {RuleKind.POWERED_ON_AFTER_HOURS, RuleKind.ACTIVITY_OUTSIDE_HOURS}
    if not (program_facts or program_in_use):
        affected.discard(RuleKind.FORBIDDEN_PROGRAM)
    oldest = min((f.observed_at.ToDatetime(dt.UTC) for f in facts if f.HasField("observed_at")), default=now)
    if now - min(oldest, previous_contact) > late:
        affected.add(RuleKind.AGENT_SILENT)
    return affected


def _forbidden(hit: Any, forbidden: Collection[str]) -> bool:
    category = getattr(hit, "category", None)
    return category is not None and str(getattr(category, "value", category)) in forbidden


def _fact_kinds(kinds: Collection[RuleKind]) -> tuple[frozenset[str] | None, frozenset[str], bool]:
    """(fact kinds to load in the range, None: all; fact kinds to load from before it; whether any fact counts)."""
    reads: set[str] = set(LOGIN_FACTS)
    any_kind = False
    for kind in kinds:
        facts = KIND_FACTS[kind]
        if facts is None:
            any_kind = True
        else:
            reads |= facts
    needed = frozenset(reads | ({"power"} if any_kind else set()))
    return (None if any_kind else frozenset(reads)), needed, any_kind
