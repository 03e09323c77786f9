"""The rules service: load an agent's facts and decisions, evaluate, and store the violations.

:class:`RulesService` knows nothing of gRPC. It is called after ingest (:meth:`catch_up`, from
the evaluation queue of :mod:`controller.evaluation`, or :meth:`on_ingest` for one batch), by a
periodic sweep for the rules that need time to pass (:meth:`sweep`), and by people after a
decision or a policy change (:meth:`reevaluate`).

**What is loaded.** For a range [start, end], every fact of the agent received from ``start −
lookback`` on and what the rules need from before (see :mod:`controller.rules.loading`).

**Storing.** Violations are upserted by key: a new key is inserted ``open``; an existing one gets
the newer evidence, the wider period, the current rule's title, reference and penalty, the accounts
found now, and keeps its status (a ``withdrawn`` one found again is ``open`` again). A violation is
never deleted.

**Withdrawing.** A range's evaluation is authoritative for the violations that start after
``start − lookback`` (every fact from then on is loaded: a fact cannot be received before it
happens), up to ``end``. Those still ``open`` whose key no longer comes out are ``withdrawn`` with
the reason given (an approval, an exemption, a policy change, facts that arrived late). Violations
that started earlier are only ever updated, never withdrawn, by a narrower range.

**Concurrency.** One agent is evaluated at a time, whichever controller does it: on PostgreSQL the
evaluation holds the agent's row lock (the one ingest takes) for its transaction; on SQLite the
transaction takes the database's write lock at its start, and a violation's key is unique in the
table, so evaluations of one agent by two replicas at once store each violation once. The sweep
claims groups of agents, so across replicas each group is swept by one of them per round (see
:mod:`controller.rules.claims`).
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import BigInteger, bindparam, case, exists, func, insert, select, update
from sqlalchemy.engine import Connection, Engine

from controller.clock import Clock, utc_now
from controller.convert import row_to_fact
from controller.errors import NotFound
from controller.models import AGENT, FACT
from controller.policy.model import Policy, RuleKind, When
from controller.rules.base import Matcher, WorkingTime
from controller.rules.claims import SWEEP_GROUPS, SweepClaims, sweep_group
from controller.rules.decision_tables import REVISION, DecisionCache
from controller.rules.evaluate import TIME_KINDS, ViolationCandidate, evaluate_agent
from controller.rules.loading import KIND_FACTS, FactLoader, Loaded, affected_kinds, kinds_to_evaluate
from controller.rules.records import VIOLATION
from protos.counterguard.v1 import facts_pb2

log = logging.getLogger(__name__)

ENGINE_NAME = "rules engine"

class LoadedPolicyLike(Protocol):
    """What the service needs of :class:`controller.policy.store.LoadedPolicy`."""

    @property
    def policy(self) -> Policy: ...

    @property
    def calendar(self) -> WorkingTime: ...

    @property
    def matcher(self) -> Matcher: ...


class ActivePolicies(Protocol):
    """Where the active policy comes from (:class:`controller.policy.store.PolicyStore`)."""

    def active(self) -> Any: ...


@dataclass(frozen=True)
class EvaluationResult:
    """What one evaluation changed: violations created, updated (incl. reopened) and withdrawn."""

    created: int = 0
    updated: int = 0
    withdrawn: int = 0
    agents: int = 0
    # The violations this evaluation stored for the first time (what an on-screen notice is about).
    new: tuple[ViolationCandidate, ...] = ()

    def __add__(self, other: EvaluationResult) -> EvaluationResult:
        return EvaluationResult(self.created + other.created, self.updated + other.updated,
                                self.withdrawn + other.withdrawn, self.agents + other.agents, self.new + other.new)


class RulesService:
    """Evaluates rules for agents and keeps the violation table in step; see the module docstring."""

    def __init__(
        self,
        engine: Engine,
        policies: ActivePolicies,
        clock: Clock = utc_now,
        *,
        lookback: dt.timedelta = dt.timedelta(minutes=10),
        process_chain_limit: dt.timedelta = dt.timedelta(days=2),
        sweep_lookback: dt.timedelta = dt.timedelta(hours=3),
    ) -> None:
        self._engine = engine
        self._policies = policies
        self._clock = clock
        self.lookback = lookback
        self._loader = FactLoader(lookback, process_chain_limit, clock)
        self.sweep_lookback = sweep_lookback
        self._claims = SweepClaims(engine)
        self._decisions = DecisionCache()
        self._policy_at: tuple[int, Any] | None = None  # the active policy as of a decision revision

    # ------------------------------------------------------------------ entry points

    def evaluate(
        self,
        agent_id: str,
        start: dt.datetime,
        end: dt.datetime,
        *,
        kinds: Collection[RuleKind] | None = None,
        reason: str = "no longer found on re-evaluation",
    ) -> EvaluationResult:
        """Evaluate the agent's violations overlapping [start, end] and store the outcome."""
        return self._evaluate(agent_id, start - self.lookback, end, start, kinds, reason)

    def on_ingest(self, agent_id: str, facts: Sequence[facts_pb2.Fact]) -> EvaluationResult:
        """Evaluate what the newly stored ``facts`` of the agent can change: the rule kinds that read facts of
        their kinds, narrowed for live reports (see :func:`kinds_to_evaluate`), from the agent's previous
        contact to now.

        The range is by receive time, so late facts (observed long before they arrived, e.g. after an
        outage) are all loaded and judged whatever time they carry, with the facts before the outage.
        """
        if not facts:
            return EvaluationResult()
        return self._judge_new(agent_id, facts, min(f.sequence for f in facts), None)

    def catch_up(self, agent_id: str) -> EvaluationResult:
        """Evaluate the agent's facts stored since its last evaluation and mark them evaluated.

        What :meth:`on_ingest` does for one report, for every fact above ``agent.evaluated_sequence``
        up to ``agent.last_sequence`` at once: several reports that arrived while the agent waited for
        its evaluation are judged together. The mark moves in the evaluation's transaction, so facts
        are marked only once their violations are stored; an evaluation that fails leaves them for the
        next attempt. Nothing to evaluate (or an unknown agent) is an empty result.
        """
        loaded: Any = _UNKNOWN
        while True:
            with self._agent_transaction(agent_id, catching_up=True, missing_ok=True) as (conn, agent):
                if agent is None or agent.last_sequence <= agent.evaluated_sequence:
                    return EvaluationResult()
                kept = self._policy_at
                if loaded is _UNKNOWN and kept is not None and kept[0] == agent.decision_revision:
                    loaded = kept[1]
                if loaded is not _UNKNOWN:
                    facts = _facts_to_judge(conn, agent_id, agent.evaluated_sequence, agent.last_sequence)
                    now = self._clock()  # after the facts were read: each was received by now
                    since = min(agent.previous_contact or now, now)
                    in_use = self._in_use(agent, since)
                    kinds = self._kinds_for_report(loaded, facts, now, since, in_use) if facts else set()
                    return self._judge(agent_id, facts, loaded, since, kinds, now, int(agent.last_sequence),
                                       within=(conn, agent))
                revision = agent.decision_revision
            # The policy in force changed: read it with the connection given back (the store takes one of
            # its own), then start again; a revision that moves once more is seen by the next evaluation.
            loaded = self._active_at(revision)

    def _judge_new(self, agent_id: str, facts: Sequence[facts_pb2.Fact], first: int,
                   through: int | None) -> EvaluationResult:
        """Evaluate the kinds new ``facts`` (sequences from ``first`` on) can change; mark ``through`` evaluated."""
        now = self._clock()
        loaded = self._policies.active()  # before taking a connection: it takes one of its own
        with self._engine.connect() as conn:
            since, in_use = self._contact_and_use(conn, agent_id, first, now)
        kinds = self._kinds_for_report(loaded, facts, now, since, in_use) if facts else set()
        return self._judge(agent_id, facts, loaded, since, kinds, now, through)

    def _active_at(self, revision: int | None) -> Any:
        """The active policy, asked of the store again only when ``decision_revision`` moved (a policy put in
        force raises it); read after the revision, so what is kept is never older than its label."""
        kept = self._policy_at
        if revision is not None and kept is not None and kept[0] == revision:
            return kept[1]
        loaded = self._policies.active()
        if revision is not None:
            self._policy_at = (revision, loaded)
        return loaded

    def _contact_and_use(self, conn: Connection, agent_id: str, first: int,
                         now: dt.datetime) -> tuple[dt.datetime, bool]:
        """The agent's previous contact before the fact numbered ``first`` (``now`` when none), and whether a
        forbidden program of it was in use then (see :meth:`_in_use`)."""
        previous = (select(FACT.c.received_at).where(FACT.c.agent_id == AGENT.c.id, FACT.c.sequence < first)
                    .order_by(FACT.c.sequence.desc()).limit(1).scalar_subquery().label("previous_contact"))
        row = conn.execute(select(previous, _PROGRAM_RUNNING, _PROGRAM_ENDED).where(AGENT.c.id == agent_id)
                           ).one_or_none()
        if row is None:
            return now, False
        since = min(row.previous_contact or now, now)
        return since, self._in_use(row, since)

    def _in_use(self, row: Any, since: dt.datetime) -> bool:
        """Whether a forbidden program of the agent was in use at its previous contact ``since``: a violation
        still running, or one that ended less than the lookback before (``row``: :data:`_PROGRAM_RUNNING` and
        :data:`_PROGRAM_ENDED`)."""
        return bool(row.program_running) or (row.program_ended is not None
                                             and row.program_ended >= since - self.lookback)

    def _judge(self, agent_id: str, facts: Sequence[facts_pb2.Fact], loaded: Any, since: dt.datetime,
               kinds: set[RuleKind], now: dt.datetime, through: int | None,
               within: tuple[Connection, Any] | None = None) -> EvaluationResult:
        """Evaluate ``kinds`` from ``since`` on (nothing when the facts change no rule); mark ``through``.

        ``within``: the transaction holding the agent's lock and its row, to evaluate in (else one of its own).
        """
        if kinds <= _OUTSIDE_HOURS and loaded is not None and _heartbeats_within_working_time(
                loaded.calendar, facts, since, now):
            kinds = set()  # after a gap, or with late facts, agent_silent is among the kinds: judged as usual
        if not kinds or loaded is None:
            if through is not None:
                self._mark_evaluated(agent_id, through, within[0] if within else None)
            return EvaluationResult()
        return self._evaluate(agent_id, since - self.lookback, now, None, kinds,
                              "no longer found when newer facts arrived", loaded=loaded, through=through,
                              within=within)

    def _mark_evaluated(self, agent_id: str, through: int, conn: Connection | None = None) -> None:
        """Record that the agent's facts up to ``through`` are evaluated (the mark never moves back)."""
        parameters = {"agent": agent_id, "through": through}
        if conn is not None:
            conn.execute(_MARK_EVALUATED, parameters)
            return
        with self._engine.begin() as own:
            own.execute(_MARK_EVALUATED, parameters)

    def backlog(self, settled_before: dt.datetime | None = None) -> list[str]:
        """The agents holding facts not evaluated yet, oldest contact first; with ``settled_before``, only
        those whose last contact is older (left behind by a controller that stopped, not in flight)."""
        query = select(AGENT.c.id).where(AGENT.c.last_sequence > AGENT.c.evaluated_sequence,
                                         AGENT.c.revoked_at.is_(None))
        if settled_before is not None:
            query = query.where(AGENT.c.last_seen_at < settled_before)
        with self._engine.connect() as conn:
            return list(conn.execute(query.order_by(AGENT.c.last_seen_at)).scalars())

    @staticmethod
    def _kinds_for_report(loaded: Any, facts: Sequence[facts_pb2.Fact], now: dt.datetime, since: dt.datetime,
                          in_use: bool) -> set[RuleKind]:
        """The rule kinds a report can change (:func:`kinds_to_evaluate`); all it touches without an active policy."""
        if loaded is None:
            return affected_kinds(facts)
        forbidden = {c.value for r in loaded.policy.rules if r.enabled and r.kind is RuleKind.FORBIDDEN_PROGRAM
                     for c in r.categories}
        return kinds_to_evaluate(facts, forbidden, loaded.matcher, now=now, previous_contact=since,
                                 program_in_use=in_use)

    def sweep(self, now: dt.datetime | None = None) -> EvaluationResult | None:
        """Evaluate the time-based rules over the recent range for the agents of every group this controller
        can claim; ``None`` when other sweepers hold every group (see :mod:`controller.rules.claims`)."""
        now = now or self._clock()
        loaded = self._policies.active()
        if loaded is None:
            return EvaluationResult()
        timed = [r for r in loaded.policy.rules if r.enabled and r.kind in TIME_KINDS]
        if not timed:
            return EvaluationResult()
        kinds = {r.kind for r in timed}
        window = (now - self.sweep_lookback - self.lookback, now)
        if all(r.when is When.WORKING_TIME for r in timed) and not loaded.calendar.working_intervals(*window):
            return EvaluationResult()  # no silence in the window counts (a night, a weekend)
        quiet_for = dt.timedelta(minutes=min(r.grace_minutes for r in timed))
        with self._claims.round() as claim:
            if claim is None:
                return None
            groups: dict[int, list[str]] = {}
            for agent_id in self._sweepable_agents(now - quiet_for):
                groups.setdefault(sweep_group(agent_id), []).append(agent_id)
            began, claimed, result = time.monotonic(), 0, EvaluationResult()
            for group in range(SWEEP_GROUPS):  # claimed one by one: a slow sweeper leaves the rest to others
                if not claim(group):
                    continue
                claimed += 1
                for agent_id in groups.get(group, ()):
                    result += self._sweep_agent(agent_id, now, kinds, loaded)
        if not claimed:
            return None
        log.log(logging.INFO if result.agents else logging.DEBUG,
                "swept %d of %d agent groups (%d agents) in %.1f s: %d violations new, %d updated, %d withdrawn",
                claimed, SWEEP_GROUPS, result.agents, time.monotonic() - began, result.created, result.updated,
                result.withdrawn)
        return result

    def _sweep_agent(self, agent_id: str, now: dt.datetime, kinds: Collection[RuleKind],
                     loaded: Any) -> EvaluationResult:
        try:
            return self._evaluate(agent_id, now - self.sweep_lookback - self.lookback, now, now - self.sweep_lookback,
                                  kinds, "no longer found by the sweep", loaded=loaded)
        except NotFound:
            return EvaluationResult()  # removed meanwhile
        except Exception:  # noqa: BLE001 - one agent's failure must not stop the sweep of the others
            log.exception("sweep of agent %s failed", agent_id)
            return EvaluationResult()

    def close(self) -> None:
        """Free the sweep groups this service holds (at the end of the process)."""
        self._claims.close()

    def reevaluate(
        self,
        start: dt.datetime,
        end: dt.datetime,
        agent_id: str | None = None,
        *,
        kinds: Collection[RuleKind] | None = None,
        reason: str = "no longer found on re-evaluation",
    ) -> EvaluationResult:
        """Evaluate [start, end] again for one agent or all (after an approval, exemption or policy change)."""
        agents = [agent_id] if agent_id else self._all_agents()
        result = EvaluationResult()
        for agent in agents:
            result += self.evaluate(agent, start, end, kinds=kinds, reason=reason)
        return result

    def earliest_open(self, kinds: Collection[RuleKind], agent_id: str | None = None) -> dt.datetime | None:
        """When the earliest open violation of ``kinds`` (of one agent, or any) starts: where a re-evaluation
        after a decision about them has to begin to be able to withdraw them."""
        query = select(VIOLATION.c.period_start).where(
            VIOLATION.c.status == "open", VIOLATION.c.kind.in_([k.value for k in kinds])
        )
        if agent_id:
            query = query.where(VIOLATION.c.agent_id == agent_id)
        with self._engine.connect() as conn:
            return conn.execute(query.order_by(VIOLATION.c.period_start).limit(1)).scalar_one_or_none()

    # ------------------------------------------------------------------ one agent

    def _evaluate(
        self,
        agent_id: str,
        load_from: dt.datetime,
        end: dt.datetime,
        candidate_start: dt.datetime | None,
        kinds: Collection[RuleKind] | None,
        reason: str,
        *,
        loaded: Any = None,
        through: int | None = None,
        within: tuple[Connection, Any] | None = None,
    ) -> EvaluationResult:
        """Evaluate and store, in ``within`` (the agent's locked transaction and row) or a transaction of its own."""
        loaded = loaded or self._policies.active()
        if loaded is None:
            return EvaluationResult()
        policy: Policy = loaded.policy
        rules = [r for r in policy.rules if r.enabled and (kinds is None or r.kind in kinds)]
        if not rules and kinds is not None:
            if through is not None:
                self._mark_evaluated(agent_id, through, within[0] if within else None)
            return EvaluationResult()
        if within is not None:
            return self._evaluate_in(*within, load_from, end, candidate_start, rules, kinds is None, reason,
                                     loaded, through)
        with self._agent_transaction(agent_id) as (conn, agent):
            return self._evaluate_in(conn, agent, load_from, end, candidate_start, rules, kinds is None, reason,
                                     loaded, through)

    def _evaluate_in(self, conn: Connection, agent: Any, load_from: dt.datetime, end: dt.datetime,
                     candidate_start: dt.datetime | None, rules: list[Any], all_kinds: bool, reason: str,
                     loaded: Any, through: int | None) -> EvaluationResult:
        agent_id, policy = agent.id, loaded.policy
        evaluated_kinds = {r.kind for r in rules}
        context = self._decisions.context(conn, agent, agent.decision_revision)
        data = self._loader.load(conn, agent_id, load_from, end, evaluated_kinds)
        start = candidate_start or dt.datetime.min.replace(tzinfo=dt.UTC)
        candidates = evaluate_agent(policy, loaded.calendar, loaded.matcher, agent_id, data.facts, context,
                                    start, end, kinds=evaluated_kinds)
        new, updated = self._upsert(conn, candidates, loaded)
        owned_from = data.owned_from
        if candidate_start is not None:  # candidates start there: nothing older is this evaluation's to withdraw
            owned_from = candidate_start if owned_from is None else max(owned_from, candidate_start)
        withdrawn = self._withdraw(conn, agent_id, policy, rules, all_kinds, data, owned_from, end,
                                   {c.key for c in candidates}, reason)
        if through is not None:
            self._mark_evaluated(agent_id, through, conn)
        return EvaluationResult(len(new), updated, withdrawn, 1, new)

    @contextmanager
    def _agent_transaction(self, agent_id: str, catching_up: bool = False,
                           missing_ok: bool = False) -> Iterator[tuple[Connection, Any]]:
        """A transaction holding the agent's evaluation lock (see the module docstring), and the agent's row
        with the decision revision (and, ``catching_up``, the columns of :data:`_CATCH_UP`); the row is None for
        an unknown agent with ``missing_ok`` (else :class:`NotFound`)."""
        with self._engine.begin() as conn:
            locking = conn.dialect.name == "postgresql"
            if not locking:  # SQLite: the database's write lock, taken now
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            agent = conn.execute(_AGENT_ROW[catching_up, locking], {"agent": agent_id}).one_or_none()
            if agent is None and not missing_ok:
                raise NotFound(f"no agent {agent_id!r}")
            yield conn, agent

    # ------------------------------------------------------------------ storing violations

    def _upsert(self, conn: Connection, candidates: list[ViolationCandidate],
                loaded: Any) -> tuple[tuple[ViolationCandidate, ...], int]:
        """Store ``candidates``: the ones new to the table, and how many stored ones changed."""
        if not candidates:
            return (), 0
        now = self._clock()
        record = getattr(loaded, "record", None)
        policy_id = getattr(record, "policy_id", loaded.policy.id)
        version = getattr(record, "version", loaded.policy.version)
        existing = {row.key: row for row in conn.execute(_VIOLATIONS_OF_KEYS, {"keys": [c.key for c in candidates]})}
        updated = 0
        new_rows = []
        new: list[ViolationCandidate] = []
        for candidate in candidates:
            values = _row_values(candidate, policy_id, version)
            row = existing.get(candidate.key)
            if row is None:
                new_rows.append({**values, "status": "open", "status_by": "", "status_at": None, "status_reason": "",
                                 "created_at": now, "updated_at": now})
                new.append(candidate)
                continue
            changes = _changes(row, values)
            if row.status == "withdrawn":
                changes.update(status="open", status_by=ENGINE_NAME, status_at=now,
                               status_reason="found again on re-evaluation")
            if changes:
                conn.execute(update(VIOLATION).where(VIOLATION.c.id == row.id).values(**changes, updated_at=now))
                updated += 1
        if new_rows:
            conn.execute(insert(VIOLATION), new_rows)
        return tuple(new), updated

    def _withdraw(self, conn: Connection, agent_id: str, policy: Policy, rules: Sequence[Any], all_kinds: bool,
                  data: Loaded, owned_from: dt.datetime | None, end: dt.datetime, found: set[str],
                  reason: str) -> int:
        """Withdraw the open violations this evaluation was authoritative for that no longer come out."""
        owned_rules = [
            r.id for r in rules
            if not (r.kind is RuleKind.FORBIDDEN_PROGRAM and "process" in data.incomplete)
            and not (r.kind is RuleKind.REMOVABLE_STORAGE and "removable" in data.incomplete)
        ]
        query = select(VIOLATION.c.id, VIOLATION.c.key, VIOLATION.c.rule_id).where(
            VIOLATION.c.agent_id == agent_id, VIOLATION.c.status == "open", VIOLATION.c.period_start <= end
        )
        if owned_from is not None:
            query = query.where(VIOLATION.c.period_start >= owned_from)
        if not all_kinds:
            query = query.where(VIOLATION.c.rule_id.in_(owned_rules))
        now = self._clock()
        enabled = {r.id for r in policy.rules if r.enabled}
        withdrawn = 0
        for row in conn.execute(query).all():
            if row.key in found:
                continue
            if row.rule_id in owned_rules:
                why = reason
            elif row.rule_id not in enabled:
                why = f"rule {row.rule_id} is not in force in policy {policy.id} {policy.version}"
            else:
                continue
            conn.execute(update(VIOLATION).where(VIOLATION.c.id == row.id).values(
                status="withdrawn", status_by=ENGINE_NAME, status_at=now, status_reason=why[:500], updated_at=now))
            withdrawn += 1
        return withdrawn

    # ------------------------------------------------------------------ agents and the sweep lock

    def _all_agents(self) -> list[str]:
        with self._engine.connect() as conn:
            return list(conn.execute(select(AGENT.c.id).order_by(AGENT.c.id)).scalars())

    def _sweepable_agents(self, quiet_since: dt.datetime) -> list[str]:
        """The agents the sweep judges: those not heard from since ``quiet_since`` (the shortest grace of the
        time rules). An agent heard from since cannot have been silent longer; its facts are judged after ingest."""
        with self._engine.connect() as conn:
            return list(conn.execute(
                select(AGENT.c.id).where(AGENT.c.revoked_at.is_(None), AGENT.c.last_sequence > 0,
                                         AGENT.c.last_seen_at < quiet_since).order_by(AGENT.c.id)
            ).scalars())


def _row_values(candidate: ViolationCandidate, policy_id: str, version: str) -> dict[str, Any]:
    return {
        "key": candidate.key,
        "rule_id": candidate.rule_id,
        "ref": candidate.ref,
        "title": candidate.title,
        "kind": candidate.kind,
        "category": candidate.category,
        "policy_id": policy_id,
        "policy_version": version,
        "agent_id": candidate.agent_id,
        "subject": candidate.subject,
        "accounts": list(candidate.accounts),
        "period_start": candidate.period_start,
        "period_end": candidate.period_end,
        "occurred_at": candidate.occurred_at,
        "local_date": candidate.local_date,
        "evidence": {"fact_ids": list(candidate.evidence_fact_ids), "summary": candidate.evidence_summary},
        "informational": candidate.informational,
        "attribute_to_owner": candidate.attribute_to_owner,
        "penalty_points": candidate.penalty.points,
        "penalty_money": candidate.penalty.money,
        "penalty_section": candidate.penalty.section,
    }


_CURRENT_RULE = ("rule_id", "ref", "title", "kind", "category", "policy_id", "policy_version", "subject",
                 "accounts", "informational", "attribute_to_owner", "penalty_points", "penalty_money",
                 "penalty_section")


def _changes(row: Any, values: dict[str, Any]) -> dict[str, Any]:
    """The columns of a stored violation that the new evaluation changes (periods only widen, evidence only grows)."""
    changes = {name: values[name] for name in _CURRENT_RULE if getattr(row, name) != values[name]}
    if values["period_start"] < row.period_start:
        changes["period_start"] = values["period_start"]
    new_end = values["period_end"]
    if new_end is not None and (row.period_end is None or new_end > row.period_end):
        changes["period_end"] = new_end
    if values["occurred_at"] < row.occurred_at:
        changes["occurred_at"] = values["occurred_at"]
        changes["local_date"] = values["local_date"]
    old_ids = list(row.evidence.get("fact_ids", [])) if isinstance(row.evidence, dict) else []
    ids = list(dict.fromkeys([*old_ids, *values["evidence"]["fact_ids"]]))
    if len(ids) > 50:
        ids = ids[:25] + ids[-25:]
    summary = values["evidence"]["summary"]
    newer = new_end is not None and (row.period_end is None or new_end >= row.period_end)
    if not newer:
        summary = row.evidence.get("summary", summary) if isinstance(row.evidence, dict) else summary
    evidence = {"fact_ids": ids, "summary": summary}
    if evidence != row.evidence:
        changes["evidence"] = evidence
    return changes


# What a heartbeat can change (see :func:`kinds_to_evaluate`): rules about time outside working hours.
_OUTSIDE_HOURS = frozenset({RuleKind.POWERED_ON_AFTER_HOURS, RuleKind.ACTIVITY_OUTSIDE_HOURS})
_READ_OUTSIDE_HOURS = frozenset().union(*(KIND_FACTS[kind] or () for kind in _OUTSIDE_HOURS))


def _heartbeats_within_working_time(calendar: WorkingTime, facts: Sequence[facts_pb2.Fact], since: dt.datetime,
                                    now: dt.datetime) -> bool:
    """Whether, of what the rules outside working time read (power and activity), ``facts`` hold heartbeats only,
    and the time from the previous contact to the last of them (as observed and as received) is one stretch of
    working time: then they change nothing. A heartbeat only extends the machine's time on and its user's
    activity, which count against rules outside working time (powered_on_after_hours,
    activity_outside_hours) and never inside it. The other facts of such a report (office programs starting
    and stopping, a window in front) are not read by those rules. This is most reports of the day.

    An activity report is judged: its idle time can place the user's last input outside working time.
    """
    times = [since, now]
    for fact in facts:
        kind = fact.WhichOneof("kind")
        heartbeat = kind == "power" and fact.power.kind == facts_pb2.PowerEvent.KIND_HEARTBEAT
        if kind in _READ_OUTSIDE_HOURS and not heartbeat:
            return False
        times.append(fact.observed_at.ToDatetime(dt.UTC))
    first, last = min(times), max(times)
    spans = calendar.working_intervals(first, last)
    return len(spans) == 1 and spans[0][0] <= first and spans[0][1] >= last


# Read with the agent's row by :meth:`RulesService.catch_up`, in the statement that locks it: the receive time
# of its last evaluated fact (its previous contact before the facts to judge), and whether a forbidden program
# of it is still running or when the last one ended (was one in use then).
_FORBIDDEN_PROGRAM = (VIOLATION.c.agent_id == AGENT.c.id) & (VIOLATION.c.kind == RuleKind.FORBIDDEN_PROGRAM.value)
_PROGRAM_RUNNING = exists().where(_FORBIDDEN_PROGRAM, VIOLATION.c.period_end.is_(None)).label("program_running")
_PROGRAM_ENDED = select(func.max(VIOLATION.c.period_end)).where(_FORBIDDEN_PROGRAM).scalar_subquery().label(
    "program_ended")
_CATCH_UP = (
    select(FACT.c.received_at).where(FACT.c.agent_id == AGENT.c.id, FACT.c.sequence <= AGENT.c.evaluated_sequence)
    .order_by(FACT.c.sequence.desc()).limit(1).scalar_subquery().label("previous_contact"),
    _PROGRAM_RUNNING,
    _PROGRAM_ENDED,
)

# The statements of every evaluation, built once (building and keying a statement costs more than running it).


def _agent_row(catching_up: bool, locking: bool) -> Any:
    query = select(AGENT, REVISION.label("decision_revision"), *(_CATCH_UP if catching_up else ())).where(
        AGENT.c.id == bindparam("agent"))
    return query.with_for_update(of=AGENT, key_share=True) if locking else query


_AGENT_ROW = {(catching_up, locking): _agent_row(catching_up, locking)
              for catching_up in (False, True) for locking in (False, True)}
_MARK_EVALUATED = (update(AGENT).where(AGENT.c.id == bindparam("agent"),
                                       AGENT.c.evaluated_sequence < bindparam("through", type_=BigInteger))
                   .values(evaluated_sequence=bindparam("through", type_=BigInteger)))
_VIOLATIONS_OF_KEYS = select(VIOLATION).where(VIOLATION.c.key.in_(bindparam("keys", expanding=True)))
# No policy looked up yet (None is "no policy in force").
_UNKNOWN = object()


# Facts whose content decides which rule kinds a report can change (see :func:`kinds_to_evaluate`); of the
# others only the kind and time are read, so an inventory's payload is not fetched to find that out.
_JUDGED_BY_CONTENT = ("process_started", "process_stopped", "foreground", "power")


_TO_JUDGE = (select(FACT.c.sequence, FACT.c.kind, FACT.c.observed_at,
                     case((FACT.c.kind.in_(_JUDGED_BY_CONTENT), FACT.c.payload), else_=None))
             .where(FACT.c.agent_id == bindparam("agent"), FACT.c.sequence > bindparam("after", type_=BigInteger),
                    FACT.c.sequence <= bindparam("through", type_=BigInteger))
             .order_by(FACT.c.sequence))


def _facts_to_judge(conn: Connection, agent_id: str, after: int, through: int) -> list[facts_pb2.Fact]:
    """The agent's facts with a sequence in (``after``, ``through``], decoded as far as choosing rule kinds needs."""
    facts = []
    for sequence, kind, observed_at, content in conn.execute(
            _TO_JUDGE, {"agent": agent_id, "after": after, "through": through}):
        if content is not None:
            facts.append(row_to_fact(bytes(content)))
            continue
        fact = facts_pb2.Fact(sequence=sequence)
        fact.observed_at.FromDatetime(observed_at)
        getattr(fact, kind).SetInParent()
        facts.append(fact)
    return facts
