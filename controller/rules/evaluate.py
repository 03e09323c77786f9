"""Pure evaluation: one agent's facts + the policy + the decisions about it → violation candidates.

No database here. :func:`evaluate_agent` is what the rules service runs; :func:`evaluate_facts` is
what ``counterguard policy test`` runs on a file of facts. Each rule kind is one function in
:data:`EVALUATORS` (this module refuses to import if a :class:`RuleKind` has none); the modules
:mod:`~controller.rules.programs`, :mod:`~controller.rules.presence`,
:mod:`~controller.rules.devices` and :mod:`~controller.rules.machine` say what "each time" means for
each. Same inputs, same candidates, same keys, in the same order.

Each candidate carries the OS accounts its evidence names (a process's user, a session's account);
one whose evidence names none (a machine left on, a disk plugged in) gets the accounts logged in on
the workstation when it occurred (:mod:`~controller.rules.sessions`). Attribution starts from these.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable, Collection, Sequence

from controller.policy.model import Policy, Rule, RuleKind
from controller.rules import devices, machine, presence, programs
from controller.rules.base import (
    Account,
    Approval,
    Device,
    Env,
    Matcher,
    RuleContext,
    TimeSpan,
    ViolationCandidate,
    WorkingTime,
    evidence_ids,
    violation_key,
)
from controller.rules.intervals import StoredFact, raw_time, timed_facts
from controller.rules.sessions import accounts_at, login_sessions
from protos.counterguard.v1 import facts_pb2

Evaluator = Callable[[Rule, Env], list[ViolationCandidate]]

EVALUATORS: dict[RuleKind, Evaluator] = {
    RuleKind.FORBIDDEN_PROGRAM: programs.forbidden_program,
    RuleKind.UNAPPROVED_SOFTWARE: programs.unapproved_software,
    RuleKind.POWERED_ON_AFTER_HOURS: presence.powered_on_after_hours,
    RuleKind.ACTIVITY_OUTSIDE_HOURS: presence.activity_outside_hours,
    RuleKind.REMOVABLE_STORAGE: devices.removable_storage,
    RuleKind.SESSION_ACCOUNT: devices.session_account,
    RuleKind.HARDWARE_CHANGED: machine.hardware_changed,
    RuleKind.OS_REINSTALLED: machine.os_reinstalled,
    RuleKind.ANTIVIRUS: devices.antivirus,
    RuleKind.NETWORK_CHANGED: machine.network_changed,
    RuleKind.AGENT_SILENT: presence.agent_silent,
}

_missing = sorted(kind.value for kind in RuleKind if kind not in EVALUATORS)
if _missing:  # a rule kind the policy model accepts but nothing evaluates would silently never fire
    raise ImportError(f"controller.rules.evaluate has no evaluator for rule kind(s): {', '.join(_missing)}")

# The kinds whose outcome can change with time passing and no new fact: what the sweep evaluates. A
# silence grows until the next contact. A machine's time on and a user's activity end at the latest fact
# (a heartbeat extends both), so powered_on_after_hours and activity_outside_hours change only when facts
# arrive, and the evaluation after ingest judges them then (see ``kinds_to_evaluate``).
TIME_KINDS: frozenset[RuleKind] = frozenset({RuleKind.AGENT_SILENT})


def evaluate_agent(
    policy: Policy,
    calendar: WorkingTime,
    matcher: Matcher,
    agent_id: str,
    facts: Sequence[StoredFact],
    context: RuleContext,
    start: dt.datetime,
    end: dt.datetime,
    *,
    kinds: Collection[RuleKind] | None = None,
) -> list[ViolationCandidate]:
    """The violations the enabled rules (of ``kinds``, default all) find in ``facts``, overlapping [start, end].

    ``facts`` are one agent's stored facts (fact id, fact, our receive time) in any order, with
    whatever came before ``start`` that the rules need (the last snapshots and the facts since).
    ``end`` is "now" for the rules that wait for time to pass (an agent still silent at ``end``).
    """
    env = Env(policy, calendar, matcher, agent_id, timed_facts(facts), context, start, end)
    found: dict[str, ViolationCandidate] = {}
    for rule in policy.rules:
        if not rule.enabled or (kinds is not None and rule.kind not in kinds):
            continue
        for candidate in EVALUATORS[rule.kind](rule, env):
            if candidate.period_start > end or (candidate.period_end or candidate.period_start) < start:
                continue
            found[candidate.key] = _merged(found.get(candidate.key), candidate)
    return _with_accounts(sorted(found.values(), key=lambda c: (c.occurred_at, c.rule_id, c.key)), env)


def _with_accounts(candidates: list[ViolationCandidate], env: Env) -> list[ViolationCandidate]:
    """Give a candidate whose evidence names no account the accounts logged in when it happened."""
    if all(c.accounts for c in candidates):
        return candidates
    sessions = login_sessions(env.facts)
    return [c if c.accounts else dataclasses.replace(c, accounts=accounts_at(sessions, c.occurred_at))
            for c in candidates]


def _merged(old: ViolationCandidate | None, new: ViolationCandidate) -> ViolationCandidate:
    if old is None:
        return new
    return dataclasses.replace(
        old,
        period_start=min(old.period_start, new.period_start),
        period_end=max(old.period_end or old.period_start, new.period_end or new.period_start),
        occurred_at=min(old.occurred_at, new.occurred_at),
        evidence_fact_ids=evidence_ids((*old.evidence_fact_ids, *new.evidence_fact_ids)),
        accounts=tuple(sorted({*old.accounts, *new.accounts})),
    )


def evaluate_facts(policy: Policy, facts: Sequence[tuple[str, facts_pb2.Fact]], *,
                   agent_id: str = "test") -> list[ViolationCandidate]:
    """Evaluate one workstation's facts under ``policy`` as ``policy test`` does: no decisions recorded.

    Each fact is (a name for the evidence, the fact); receive times are taken to equal the
    observation times (no clock correction), and the range is the facts' own. Keys are computed
    for ``agent_id``, so they equal the controller's for that agent.
    """
    from controller.policy.calendar import WorkCalendar
    from controller.policy.catalogue import CatalogueMatcher

    stored = []
    for name, fact in facts:
        observed = raw_time(fact.observed_at)
        if observed is None:
            raise ValueError(f"fact {name} has no valid observed_at")
        stored.append(StoredFact(name, fact, observed))
    if not stored:
        return []
    times = [f.received_at for f in stored]
    return evaluate_agent(policy, WorkCalendar(policy), CatalogueMatcher(policy.catalogue), agent_id,
                          stored, RuleContext(), min(times), max(times))


__all__ = [
    "EVALUATORS",
    "TIME_KINDS",
    "Account",
    "Approval",
    "Device",
    "RuleContext",
    "StoredFact",
    "TimeSpan",
    "ViolationCandidate",
    "evaluate_agent",
    "evaluate_facts",
    "violation_key",
]
