"""The rules service on each back end: evaluation on ingest, upserts by key, withdrawal, status, the sweep."""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import select, text
from sqlalchemy.engine import Engine

from controller.db import session_scope
from controller.ingest import IngestService
from controller.models import Agent
from controller.policy.model import Occurrence, RuleKind, When
from controller.rules import claims
from controller.rules.decisions import DecisionService
from controller.rules.records import VIOLATION
from controller.rules.service import RulesService
from controller.rules.violations import ViolationService
from policies import DEFAULT_POLICY
from tests.controller.rules.builders import Policies, MINUTE, Facts, desktop_game, dpkg, local, policy, rule

AGENT = "ag-rules-0001"


RULES = policy(
    rule(RuleKind.FORBIDDEN_PROGRAM, id="games", when=When.WORKING_TIME, per=Occurrence.SESSION,
         penalty={"section": "工作纪律", "points": 5}),
    rule(RuleKind.UNAPPROVED_SOFTWARE, id="software"),
    rule(RuleKind.AGENT_SILENT, id="silent", when=When.WORKING_TIME, per=Occurrence.DAY, grace_minutes=30),
    rule(RuleKind.POWERED_ON_AFTER_HOURS, id="after-hours", per=Occurrence.DAY, grace_minutes=30),
)


class Workstation:
    """An agent reporting ``Facts`` through the real ingest service, batch by batch, each followed by on_ingest."""

    def __init__(self, engine: Engine, clock: Any, rules: RulesService) -> None:
        self.ingest = IngestService(engine, clock)
        self.clock = clock
        self.rules = rules
        self.sent = 0

    def report(self, facts: Facts) -> None:
        """Send every fact not sent yet, in batches by receive time."""
        pending = facts.stored[self.sent:]
        self.sent = len(facts.stored)
        for received, batch in itertools.groupby(pending, key=lambda f: f.received_at):
            self.clock.now = received
            sent = [f.fact for f in batch]
            self.ingest.ingest(AGENT, sent)
            self.rules.on_ingest(AGENT, sent)


@pytest.fixture
def rules(engine: Engine, clock: Any) -> RulesService:
    with session_scope(engine) as session:
        session.add(Agent(id=AGENT, window="W01", unit="市场监管局", enrolled_at=clock(), cert_serial="1",
                          cert_fingerprint="f", cert_not_after=clock() + dt.timedelta(days=365)))
    return RulesService(engine, Policies(RULES), clock)


@pytest.fixture
def workstation(engine: Engine, clock: Any, rules: RulesService) -> Workstation:
    return Workstation(engine, clock, rules)


def violations(engine: Engine) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(select(VIOLATION).order_by(VIOLATION.c.id)))


def play(facts: Facts, start: dt.datetime, end: dt.datetime, pid: int = 4242) -> None:
    """Heartbeats each minute, gnome-mines started at ``start`` and stopped at ``end``, in time order."""
    moment = start - 5 * MINUTE
    while moment <= end + 5 * MINUTE:
        facts.heartbeats(moment, moment)
        if moment == start:
            facts.start(start, pid, "gnome-mines")
        if moment == end:
            facts.stop(end, pid, "gnome-mines", start)
        moment += MINUTE


def test_a_game_reported_over_many_batches_is_one_stored_violation_with_evidence(
        engine: Engine, workstation: Workstation) -> None:
    facts = Facts()
    play(facts, local(2026, 11, 2, 11, 59), local(2026, 11, 2, 13, 5))

    workstation.report(facts)

    [stored] = violations(engine)
    assert (stored.rule_id, stored.status, stored.penalty_points) == ("games", "open", 5)
    assert stored.penalty_section == "工作纪律"
    assert (stored.policy_id, stored.local_date) == ("test-policy", dt.date(2026, 11, 2))
    assert stored.period_end == local(2026, 11, 2, 13, 5)
    detail = ViolationService(engine).get(stored.id)
    assert {f.kind for f in detail.facts} == {"process_started", "process_stopped"}
    assert detail.facts[0].values and detail.facts[0].values["process"]["name"] == "gnome-mines"


def test_the_same_facts_ingested_twice_change_nothing(engine: Engine, workstation: Workstation,
                                                      rules: RulesService, clock: Any) -> None:
    facts = Facts()
    play(facts, local(2026, 11, 2, 10), local(2026, 11, 2, 10, 20))
    workstation.report(facts)
    before = violations(engine)

    workstation.sent = 0
    workstation.report(facts)  # every batch again: the ingest stores nothing, the evaluation finds the same
    result = rules.evaluate(AGENT, local(2026, 11, 2, 9), clock())

    assert violations(engine) == before and len(before) == 1
    assert (result.created, result.updated, result.withdrawn) == (0, 0, 0)


def test_an_approval_granted_afterwards_withdraws_the_violation(engine: Engine, workstation: Workstation,
                                                               rules: RulesService, clock: Any) -> None:
    facts = Facts()
    facts.heartbeats(local(2026, 11, 2, 9), local(2026, 11, 2, 9, 5))
    facts.software(local(2026, 11, 2, 9, 1), [dpkg("coreutils"), desktop_game()])
    facts.shutdown(local(2026, 11, 2, 9, 6))
    workstation.report(facts)
    clock.now = local(2026, 11, 4, 10)  # two days later the centre approves it for this unit
    facts.boot(clock.now - 2 * MINUTE)
    facts.heartbeats(clock.now - MINUTE, clock.now - MINUTE)
    workstation.report(facts)
    assert [v.status for v in violations(engine)] == ["open"]

    recorded = DecisionService(engine, clock).decide_software("cg-mines.desktop", "approved", unit="市场监管局",
                                                             reason="业务需要", by="主任")
    since = rules.earliest_open(recorded.kinds, AGENT)
    assert since is not None
    result = rules.reevaluate(since, clock(), AGENT, kinds=recorded.kinds, reason="software approved afterwards")

    [stored] = violations(engine)
    assert result.withdrawn == 1
    assert (stored.status, stored.status_by, stored.status_reason) == (
        "withdrawn", "rules engine", "software approved afterwards")

    # A more specific denial for the window brings it back.
    DecisionService(engine, clock).decide_software("cg-mines.desktop", "denied", window="W01")
    rules.reevaluate(since, clock(), AGENT, kinds=recorded.kinds)
    assert [(v.status, v.status_reason) for v in violations(engine)] == [("open", "found again on re-evaluation")]


def test_a_dismissed_violation_stays_dismissed(engine: Engine, workstation: Workstation, rules: RulesService,
                                               clock: Any) -> None:
    facts = Facts()
    play(facts, local(2026, 11, 2, 10), local(2026, 11, 2, 10, 20))
    workstation.report(facts)
    [stored] = violations(engine)
    ViolationService(engine, clock).dismiss(stored.id, "演示给群众看的", "主任")

    rules.reevaluate(local(2026, 11, 2, 0), clock())
    play(facts, local(2026, 11, 2, 10), local(2026, 11, 2, 10, 40))  # the same run reported again, longer
    workstation.report(facts)

    [again] = violations(engine)
    assert (again.status, again.status_by, again.status_reason) == ("dismissed", "主任", "演示给群众看的")


def test_people_confirm_or_dismiss_with_a_reason_and_never_a_withdrawn_one(engine: Engine, workstation: Workstation,
                                                                          clock: Any) -> None:
    facts = Facts()
    play(facts, local(2026, 11, 2, 10), local(2026, 11, 2, 10, 20))
    workstation.report(facts)
    [stored] = violations(engine)
    service = ViolationService(engine, clock)

    with pytest.raises(Exception, match="a reason is required"):
        service.confirm(stored.id, " ", "主任")
    confirmed = service.confirm(stored.id, "监控录像核实", "主任")
    assert (confirmed.status, confirmed.status_reason) == ("confirmed", "监控录像核实")
    with pytest.raises(Exception, match="already confirmed"):
        service.confirm(stored.id, "again", "主任")

    with engine.begin() as conn:
        conn.execute(VIOLATION.update().values(status="withdrawn", status_reason="approved"))
    with pytest.raises(Exception, match="withdrawn by the rules engine"):
        service.dismiss(stored.id, "no", "主任")


def test_the_sweep_finds_a_silent_agent_and_a_computer_left_on(engine: Engine, workstation: Workstation,
                                                               rules: RulesService, clock: Any) -> None:
    facts = Facts()
    facts.heartbeats(local(2026, 11, 2, 9), local(2026, 11, 2, 10))
    workstation.report(facts)
    clock.now = local(2026, 11, 2, 11)

    first = rules.sweep()
    second = rules.sweep()

    [silent] = violations(engine)
    assert silent.rule_id == "silent" and silent.occurred_at == local(2026, 11, 2, 10, 30, 2)  # last contact + 30 min
    assert first is not None and first.created == 1 and second is not None and second.created == 0

    # The agent comes back with its backlog: it was observing all along, only the network was down.
    facts.heartbeats(local(2026, 11, 2, 10, 1), local(2026, 11, 2, 11, 5), received=local(2026, 11, 2, 11, 5))
    workstation.report(facts)
    [silent] = violations(engine)
    assert (silent.status, silent.status_reason) == ("withdrawn", "no longer found when newer facts arrived")

    # Left on after work: heartbeats go on to 18:00; the sweep (or the next report) finds it.
    facts.heartbeats(local(2026, 11, 2, 11, 6), local(2026, 11, 2, 18))
    workstation.report(facts)
    assert [v.rule_id for v in violations(engine) if v.status == "open"] == ["after-hours"]


def test_the_sweep_keeps_older_violations_of_an_agent_whose_whole_backlog_just_arrived(
        engine: Engine, workstation: Workstation, rules: RulesService, clock: Any) -> None:
    """Everything the agent ever sent arrived within the sweep's range (an outbox drained after weeks
    offline): the sweep judges its own range only, not the evenings of weeks ago."""
    from protos.counterguard.v1 import facts_pb2 as pb

    facts = Facts()
    arrived = local(2026, 11, 30, 12)
    facts.heartbeats(local(2026, 11, 5, 16, 50), local(2026, 11, 5, 18), received=arrived)
    facts.add(local(2026, 11, 5, 18, 1), arrived, power=pb.PowerEvent(kind=pb.PowerEvent.KIND_SHUTDOWN))
    facts.boot(arrived)
    facts.heartbeats(arrived, arrived)
    workstation.report(facts)
    assert [(v.rule_id, v.status) for v in violations(engine)] == [("after-hours", "open")]

    clock.now = arrived + 2 * MINUTE
    rules.sweep()

    assert [(v.rule_id, v.local_date, v.status) for v in violations(engine)] == [
        ("after-hours", dt.date(2026, 11, 5), "open")]


@pytest.fixture
def sweep_held_elsewhere(engine: Engine) -> Iterator[None]:
    """Every sweep group held by another controller (PostgreSQL) or the sweep by another thread (SQLite)."""
    if engine.dialect.name == "postgresql":
        with engine.connect() as other:
            for group in range(claims.SWEEP_GROUPS):
                other.execute(text("SELECT pg_advisory_lock(:key, :group)"),
                              {"key": claims.PG_SWEEP_LOCK, "group": group})
            other.commit()
            yield
            other.execute(text("SELECT pg_advisory_unlock_all()"))
            other.commit()
    else:
        with claims._SQLITE_SWEEP:
            yield


def test_only_one_sweep_runs_at_a_time(rules: RulesService, sweep_held_elsewhere: None) -> None:
    assert rules.sweep() is None


def test_list_filters_by_month_workstation_rule_and_status(engine: Engine, workstation: Workstation) -> None:
    facts = Facts()
    play(facts, local(2026, 10, 30, 10), local(2026, 10, 30, 10, 20), pid=1)
    play(facts, local(2026, 11, 2, 10), local(2026, 11, 2, 10, 20), pid=2)
    workstation.report(facts)
    service = ViolationService(engine)

    assert [v.local_date.month for v in service.list(month="2026-11", rule="games")] == [11]
    assert len(service.list(workstation="W01", rule="games", status="open")) == 2
    assert service.list(workstation="W99") == []
    with pytest.raises(Exception, match="not of the form YYYY-MM"):
        service.list(month="11/2026")


EVERYTHING = policy(
    rule(RuleKind.FORBIDDEN_PROGRAM, id="games", when=When.WORKING_TIME, per=Occurrence.SESSION),
    rule(RuleKind.FORBIDDEN_PROGRAM, id="games-per-day", when=When.WORKING_TIME, per=Occurrence.DAY),
    rule(RuleKind.UNAPPROVED_SOFTWARE, id="software"),
    rule(RuleKind.POWERED_ON_AFTER_HOURS, id="after-hours", per=Occurrence.DAY, grace_minutes=30),
    rule(RuleKind.ACTIVITY_OUTSIDE_HOURS, id="activity", per=Occurrence.SESSION, grace_minutes=15),
    rule(RuleKind.REMOVABLE_STORAGE, id="storage", per=Occurrence.SESSION),
    rule(RuleKind.SESSION_ACCOUNT, id="accounts", per=Occurrence.SESSION),
    rule(RuleKind.ANTIVIRUS, id="antivirus", per=Occurrence.SESSION),
    rule(RuleKind.ANTIVIRUS, id="antivirus-per-day", per=Occurrence.DAY),
    rule(RuleKind.HARDWARE_CHANGED, id="hardware", per=Occurrence.ONCE),
    rule(RuleKind.AGENT_SILENT, id="silent", when=When.WORKING_TIME, per=Occurrence.SESSION, grace_minutes=30),
    agent={"antivirus": [{"name": "ClamAV", "process_names": ["clamd"]}]},
)


def busy_day(facts: Facts, day: int) -> None:
    """A day with something for every rule, reported minute by minute as an agent does."""
    from protos.counterguard.v1 import facts_pb2 as pb
    from tests.controller.rules.builders import machine

    on, off = local(2026, 11, day, 8, 50), local(2026, 11, day, 19, 30)
    facts.boot(on)
    facts.inventory(on, machine(disk_serial=f"S{day}"))
    facts.software(on, [dpkg("coreutils"), desktop_game()])
    facts.antivirus(on, pb.AntivirusProduct(name="ClamAV", installed=True, running=False))
    facts.login(on, "visitor")
    moment = on
    while moment <= off:
        if moment == on + dt.timedelta(minutes=100):
            facts.start(moment, 4242, "gnome-mines")
            facts.storage(moment, pb.RemovableStorage.ACTION_ATTACHED)
        if moment == on + dt.timedelta(minutes=190):  # over the lunch break
            facts.stop(moment, 4242, "gnome-mines", on + dt.timedelta(minutes=100))
            facts.storage(moment, pb.RemovableStorage.ACTION_REMOVED)
        if moment == local(2026, 11, day, 14):  # the agent stops reporting for 45 minutes
            moment = local(2026, 11, day, 14, 45)
        if moment == local(2026, 11, day, 18, 30):
            facts.active(moment)
        facts.heartbeats(moment, moment)
        moment += MINUTE
    facts.idle(off, idle_seconds=300)
    facts.shutdown(off + MINUTE)


def test_evaluating_batch_by_batch_finds_what_one_evaluation_of_everything_finds(
        engine: Engine, clock: Any) -> None:
    from controller.rules.evaluate import RuleContext, evaluate_agent

    with session_scope(engine) as session:
        session.add(Agent(id=AGENT, window="W01", enrolled_at=clock(), cert_serial="1", cert_fingerprint="f",
                          cert_not_after=clock() + dt.timedelta(days=365)))
    policies = Policies(EVERYTHING)
    rules = RulesService(engine, policies, clock)
    facts = Facts()
    busy_day(facts, 2)
    busy_day(facts, 3)
    Workstation(engine, clock, rules).report(facts)
    clock.now = local(2026, 11, 3, 20)
    rules.sweep()

    stored = {(v.rule_id, v.key) for v in violations(engine) if v.status == "open"}
    withdrawn = [(v.rule_id, v.subject) for v in violations(engine) if v.status != "open"]
    loaded = policies.loaded
    once = evaluate_agent(EVERYTHING, loaded.calendar, loaded.matcher, AGENT, facts.stored,
                          RuleContext(window="W01"), local(2026, 11, 1), clock())

    assert stored == {(c.rule_id, c.key) for c in once}
    assert withdrawn == []
    assert {rule_id for rule_id, _ in stored} == {r.id for r in EVERYTHING.rules}


def test_a_report_is_judged_holding_one_database_connection_at_a_time(engine: Engine, clock: Any) -> None:
    """Report handlers run in parallel threads on one connection pool: a handler that held a connection
    while asking for another would wait for ever once every connection is held by such a handler."""
    from sqlalchemy import create_engine

    from controller.policy.store import PolicyStore

    narrow = create_engine(engine.url, pool_size=1, max_overflow=0, pool_timeout=3)
    try:
        store = PolicyStore(narrow, clock)
        store.apply(DEFAULT_POLICY.read_text(encoding="utf-8"), "default.yaml", "test")
        with session_scope(narrow) as session:
            session.add(Agent(id=AGENT, window="W01", enrolled_at=clock(), cert_serial="1", cert_fingerprint="f",
                              cert_not_after=clock() + dt.timedelta(days=365)))
        facts = Facts()
        play(facts, local(2026, 11, 2, 10, 0), local(2026, 11, 2, 10, 30))
        Workstation(narrow, clock, RulesService(narrow, store, clock)).report(facts)
        assert [v.kind for v in violations(narrow)] == ["forbidden_program"]
    finally:
        narrow.dispose()


ACTIVITY = policy(
    rule(RuleKind.ACTIVITY_OUTSIDE_HOURS, id="after-work-use", when=When.OUTSIDE_WORKING_TIME, per=Occurrence.DAY,
         grace_minutes=15),
    rule(RuleKind.AGENT_SILENT, id="silent", when=When.WORKING_TIME, per=Occurrence.DAY, grace_minutes=30),
)


def test_a_user_still_active_after_work_is_found_by_the_reports_alone(engine: Engine, clock: Any) -> None:
    """Activity goes on with every heartbeat until the user goes idle: the reports judge it, no sweep needed."""
    rules = RulesService(engine, Policies(ACTIVITY), clock)
    with session_scope(engine) as session:
        session.add(Agent(id=AGENT, window="W01", enrolled_at=clock(), cert_serial="1", cert_fingerprint="f",
                          cert_not_after=clock() + dt.timedelta(days=365)))
    facts = Facts()
    facts.heartbeats(local(2026, 11, 2, 16, 30), local(2026, 11, 2, 16, 40))
    facts.active(local(2026, 11, 2, 16, 41))
    facts.heartbeats(local(2026, 11, 2, 16, 42), local(2026, 11, 2, 17, 40))  # heartbeats only, never idle

    Workstation(engine, clock, rules).report(facts)

    [used] = violations(engine)
    assert (used.rule_id, used.status, used.period_start) == ("after-work-use", "open", local(2026, 11, 2, 17, 15))


def test_the_sweep_judges_only_agents_silent_past_the_grace_and_nothing_at_night(engine: Engine, clock: Any) -> None:
    rules = RulesService(engine, Policies(ACTIVITY), clock)
    with session_scope(engine) as session:
        for agent in ("ag-talking", "ag-quiet"):
            session.add(Agent(id=agent, window=agent, enrolled_at=clock(), cert_serial=agent, cert_fingerprint=agent,
                              cert_not_after=clock() + dt.timedelta(days=365)))
    for agent, last in (("ag-talking", local(2026, 11, 2, 10, 50)), ("ag-quiet", local(2026, 11, 2, 10))):
        facts = Facts()
        facts.heartbeats(local(2026, 11, 2, 9), last)
        batch = [f.fact for f in facts.stored]
        clock.now = last
        IngestService(engine, clock).ingest(agent, batch)
        rules.on_ingest(agent, batch)

    swept = rules.sweep(local(2026, 11, 2, 11))

    assert swept is not None and swept.agents == 1  # the one quiet for more than 30 minutes
    assert [(v.agent_id, v.rule_id) for v in violations(engine)] == [("ag-quiet", "silent")]
    night = rules.sweep(local(2026, 11, 3, 2))  # 02:00: no working time in the sweep's three hours
    assert night is not None and night.agents == 0


def test_heartbeats_within_working_time_are_not_evaluated_but_marked(engine: Engine, rules: RulesService,
                                                                     clock: Any) -> None:
    """Most reports of the day: nothing outside working hours can come of them, so no evaluation runs."""
    facts = Facts()
    ingest = IngestService(engine, clock)

    def report(at: dt.datetime) -> Any:
        first = len(facts.stored)
        facts.heartbeats(at, at)
        clock.now = at + dt.timedelta(seconds=2)
        batch = [f.fact for f in facts.stored[first:]]
        ingest.ingest(AGENT, batch)
        return rules.catch_up(AGENT)

    assert report(local(2026, 11, 2, 8, 57)).agents == 1  # before work: judged
    assert report(local(2026, 11, 2, 9, 1)).agents == 1  # the stretch since 08:57 is not all working time
    assert report(local(2026, 11, 2, 9, 2)).agents == 0  # inside the morning's working time
    assert report(local(2026, 11, 2, 9, 40)).agents == 1  # after a silence (agent_silent is judged)
    assert report(local(2026, 11, 2, 9, 41)).agents == 0
    assert report(local(2026, 11, 2, 12, 5)).agents == 1  # lunch break since the last contact: judged
    assert report(local(2026, 11, 2, 17, 10)).agents == 1  # after work: judged
    with engine.connect() as conn:
        marked = conn.execute(select(Agent.evaluated_sequence, Agent.last_sequence)).one()
    assert marked[0] == marked[1] == len(facts.stored)


def test_office_programs_with_the_heartbeat_within_working_time_are_not_evaluated(
        engine: Engine, rules: RulesService, clock: Any) -> None:
    """A report of ordinary programs starting and stopping and a window in front tells the rules outside working
    time nothing; an activity report or a boot in it does (an idle time can reach back before work)."""
    facts = Facts()
    ingest = IngestService(engine, clock)

    def report(at: dt.datetime, *more: Callable[[dt.datetime], Any]) -> Any:
        first = len(facts.stored)
        facts.heartbeats(at, at)
        for add in more:
            add(at)
        clock.now = at + dt.timedelta(seconds=2)
        ingest.ingest(AGENT, [f.fact for f in facts.stored[first:]])
        return rules.catch_up(AGENT)

    def office(at: dt.datetime) -> None:
        facts.start(at, 700 + at.minute, "soffice.bin")
        facts.stop(at, 600 + at.minute, "evince", at - 5 * MINUTE)
        facts.foreground(at, "office", "soffice*", "/usr/bin/soffice.bin", 700 + at.minute)

    assert report(local(2026, 11, 2, 9, 30)).agents == 0  # a heartbeat alone
    assert report(local(2026, 11, 2, 9, 31), office).agents == 0
    assert report(local(2026, 11, 2, 9, 32), office, lambda at: facts.idle(at, idle_seconds=3 * 3600)).agents == 1
    assert report(local(2026, 11, 2, 9, 33), office, lambda at: facts.active(at)).agents == 1
    assert report(local(2026, 11, 2, 9, 34), office, lambda at: facts.boot(at)).agents == 1
    assert report(local(2026, 11, 2, 9, 35), office).agents == 0
    assert report(local(2026, 11, 2, 17, 10), office).agents == 1  # after work: judged
    with engine.connect() as conn:
        marked = conn.execute(select(Agent.evaluated_sequence, Agent.last_sequence)).one()
    assert marked[0] == marked[1] == len(facts.stored)
