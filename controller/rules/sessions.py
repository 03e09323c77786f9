"""Login sessions on a workstation, from the session list the agent sends at start and its logins and logouts.

A session is (account, terminal, the start the agent reported). It ends at its logout, at a
shutdown or a new boot, or when a later session list no longer shows it; one that nothing ended
is still ``open`` at the last report. Both the ``session_account`` rule and the accounts the engine
stores with every violation (who was logged in when it happened) read sessions from here.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass, field

from controller.rules.base import raw_iso
from controller.rules.intervals import FactId, TimedFact, raw_time
from protos.counterguard.v1 import facts_pb2

Power = facts_pb2.PowerEvent


def power_ends(fact: TimedFact) -> bool:
    """A shutdown or a boot: whatever was attached or logged in before has ended."""
    return fact.kind == "power" and fact.fact.power.kind in (Power.KIND_SHUTDOWN, Power.KIND_BOOT)


@dataclass
class Session:
    """One login session and the facts that show it."""

    username: str
    terminal: str
    host: str
    key: str  # account, terminal and start as the agent reported it
    start: dt.datetime
    end: dt.datetime
    open: bool
    fact_ids: list[FactId] = field(default_factory=list)


def login_sessions(facts: Iterable[TimedFact]) -> list[Session]:
    """Session snapshots, logins and logouts (in sequence order; other facts are passed over) as login sessions."""
    facts = [f for f in facts if f.kind in ("session", "session_snapshot") or power_ends(f)]
    result: list[Session] = []
    current: dict[tuple[str, str], Session] = {}
    previous: dt.datetime | None = None

    def begin(session: facts_pb2.UserSession, fact: TimedFact) -> None:
        raw = raw_time(session.started_at)
        key = f"{session.username} on {session.terminal or '?'} started {raw.isoformat() if raw else raw_iso(fact)}"
        existing = current.get((session.username, session.terminal))
        if existing is not None and existing.key == key:
            existing.fact_ids.append(fact.fact_id)
            return
        if existing is not None:
            existing.end, existing.open = max(existing.start, fact.time), False
        start = min(fact.time, raw - fact.offset) if raw is not None else fact.time
        opened = Session(session.username, session.terminal, session.host, key, start, fact.time, True, [fact.fact_id])
        current[(session.username, session.terminal)] = opened
        result.append(opened)

    def finish(key: tuple[str, str], at: dt.datetime, fact_id: FactId | None = None) -> None:
        session = current.pop(key, None)
        if session is not None:
            session.end, session.open = max(session.start, at), False
            if fact_id is not None:
                session.fact_ids.append(fact_id)

    for fact in facts:
        if power_ends(fact):
            at = fact.time if fact.fact.power.kind == Power.KIND_SHUTDOWN else (previous or fact.time)
            for key in list(current):
                finish(key, at)
        elif fact.kind == "session_snapshot":
            listed = {(s.username, s.terminal): s for s in fact.fact.session_snapshot.sessions}
            for key in [k for k in current if k not in listed]:
                finish(key, previous or fact.time)
            for session in listed.values():
                begin(session, fact)
        elif fact.kind == "session":
            event = fact.fact.session
            if event.kind == facts_pb2.SessionEvent.KIND_LOGIN:
                begin(event.session, fact)
            elif event.kind == facts_pb2.SessionEvent.KIND_LOGOUT:
                finish((event.session.username, event.session.terminal), fact.time, fact.fact_id)
        previous = fact.time if previous is None else max(previous, fact.time)
    for session in current.values():
        session.end = max(session.end, previous or session.end)
    return result


def accounts_at(sessions: Iterable[Session], moment: dt.datetime) -> tuple[str, ...]:
    """The accounts logged in at ``moment``, sorted (a session nothing ended counts as still open)."""
    return tuple(sorted({s.username for s in sessions
                         if s.username and s.start <= moment and (s.open or moment <= s.end)}))
