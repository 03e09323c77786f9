"""The OS accounts stored with each violation: named by its evidence, else those logged in when it happened."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.engine import Engine

from controller.db import session_scope
from controller.ingest import IngestService
from controller.models import Agent
from controller.policy.model import Occurrence, RuleKind
from controller.rules.records import VIOLATION
from controller.rules.service import RulesService
from controller.rules.violations import ViolationService
from protos.counterguard.v1 import facts_pb2 as pb
from tests.controller.rules.builders import Policies, Facts, evaluate, local, policy, rule

AGENT = "ag-accounts-01"


def at(hour: int, minute: int = 0, day: int = 2) -> dt.datetime:
    return local(2026, 11, day, hour, minute)


GAMES = policy(rule(RuleKind.FORBIDDEN_PROGRAM, id="games", per=Occurrence.SESSION))
AFTER_HOURS = policy(rule(RuleKind.POWERED_ON_AFTER_HOURS, id="after-hours", grace_minutes=30))
STORAGE = policy(rule(RuleKind.REMOVABLE_STORAGE, per=Occurrence.SESSION))


# ------------------------------------------------------------------------------ evaluation (pure)


def test_a_program_run_names_the_account_that_started_it() -> None:
    facts = Facts()
    facts.heartbeats(at(9), at(11))
    facts.login(at(9), "zhang")
    facts.start(at(10), 4242, "gnome-mines", user="li")
    facts.stop(at(10, 20), 4242, "gnome-mines", at(10))

    [found] = evaluate(GAMES, facts)

    assert found.accounts == ("li",)  # the process's owner, not whoever else is logged in


def test_a_foreground_window_activity_and_a_session_name_their_accounts() -> None:
    shopping = Facts()
    shopping.heartbeats(at(9), at(11))
    shopping.foreground(at(10), "shopping", "taobao", "firefox", 77)
    assert [v.accounts for v in evaluate(GAMES, shopping)] == [("zhang",)]

    evening = Facts()
    evening.heartbeats(at(18, 55), at(19, 50))
    evening.active(at(19), user="wang")
    evening.idle(at(19, 45), user="wang")
    activity = policy(rule(RuleKind.ACTIVITY_OUTSIDE_HOURS))
    assert [v.accounts for v in evaluate(activity, evening)] == [("wang",)]

    visitor = Facts()
    visitor.heartbeats(at(9), at(11))
    visitor.login(at(9, 5), "visitor")
    sessions = policy(rule(RuleKind.SESSION_ACCOUNT, per=Occurrence.SESSION))
    assert [v.accounts for v in evaluate(sessions, visitor)] == [("visitor",)]


def test_a_violation_without_an_account_gets_those_logged_in_when_it_happened() -> None:
    facts = Facts()
    facts.heartbeats(at(9), at(12))
    facts.login(at(9), "zhang")
    facts.login(at(9, 30), "li", terminal="pts/1")
    facts.storage(at(10), pb.RemovableStorage.ACTION_ATTACHED)
    facts.logout(at(10, 30), "li", at(9, 30), terminal="pts/1")
    facts.storage(at(11), pb.RemovableStorage.ACTION_ATTACHED, serial="BB02")

    found = evaluate(STORAGE, facts)

    assert [v.accounts for v in found] == [("li", "zhang"), ("zhang",)]


def test_a_shutdown_ends_the_sessions_and_nobody_logged_in_is_no_account() -> None:
    facts = Facts()
    facts.heartbeats(at(9), at(10))
    facts.login(at(9), "zhang")
    facts.shutdown(at(10, 1))
    facts.boot(at(14))
    facts.heartbeats(at(14, 1), at(15))
    facts.storage(at(14, 30), pb.RemovableStorage.ACTION_ATTACHED)

    [found] = evaluate(STORAGE, facts)

    assert found.accounts == ()


def test_accounts_are_not_part_of_the_key() -> None:
    logged_in, nobody = Facts(), Facts()
    for facts in (logged_in, nobody):
        facts.heartbeats(at(16, 50), at(17, 45))
    logged_in.session_snapshot(at(16, 50), [logged_in.session("zhang", at(8, 50))])

    [with_account] = evaluate(AFTER_HOURS, logged_in)
    [without] = evaluate(AFTER_HOURS, nobody)

    assert (with_account.accounts, without.accounts) == (("zhang",), ())
    assert with_account.key == without.key


# ------------------------------------------------------------------------------ stored, on each back end


@pytest.fixture
def rules(engine: Engine, clock: Any) -> RulesService:
    with session_scope(engine) as session:
        session.add(Agent(id=AGENT, window="W01", enrolled_at=clock(), cert_serial="1", cert_fingerprint="f",
                          cert_not_after=clock() + dt.timedelta(days=365)))
    return RulesService(engine, Policies(policy(*GAMES.rules, *AFTER_HOURS.rules)), clock)


def report(engine: Engine, rules: RulesService, clock: Any, facts: Facts, received: dt.datetime) -> None:
    """Send the facts not sent yet as one batch received at ``received``, as the server does."""
    batch = [f.fact for f in facts.stored if f.fact.sequence > getattr(facts, "sent", 0)]
    facts.sent = facts.sequence  # type: ignore[attr-defined]
    clock.now = received
    IngestService(engine, clock).ingest(AGENT, batch)
    rules.on_ingest(AGENT, batch)


def stored(engine: Engine) -> dict[str, list[str]]:
    with engine.connect() as conn:
        return {row.rule_id: row.accounts for row in conn.execute(select(VIOLATION).order_by(VIOLATION.c.id))}


def test_a_program_started_by_a_user_is_stored_with_that_account(engine: Engine, rules: RulesService,
                                                                 clock: Any) -> None:
    facts = Facts()
    facts.heartbeats(at(9, 55), at(10, 25))
    facts.start(at(10), 4242, "gnome-mines", user="ZhangSan")
    facts.stop(at(10, 20), 4242, "gnome-mines", at(10))
    report(engine, rules, clock, facts, at(10, 26))

    assert stored(engine) == {"games": ["ZhangSan"]}
    [record] = ViolationService(engine).list()
    assert record.accounts == ["ZhangSan"]


def test_a_machine_left_on_is_stored_with_the_session_open_then(engine: Engine, rules: RulesService,
                                                                 clock: Any) -> None:
    facts = Facts()
    facts.boot(at(8, 50))
    facts.login(at(8, 55), "zhang")
    report(engine, rules, clock, facts, at(8, 56))
    facts.heartbeats(at(16, 50), at(17, 40))  # a later batch of heartbeats: only the power rules run on it
    report(engine, rules, clock, facts, at(17, 41))

    assert stored(engine) == {"after-hours": ["zhang"]}


def test_a_machine_left_on_with_nobody_logged_in_has_no_account(engine: Engine, rules: RulesService,
                                                                  clock: Any) -> None:
    facts = Facts()
    facts.boot(at(8, 50))
    facts.login(at(8, 55), "zhang")
    facts.logout(at(12), "zhang", at(8, 55))
    report(engine, rules, clock, facts, at(12, 1))
    facts.heartbeats(at(16, 50), at(17, 40))
    report(engine, rules, clock, facts, at(17, 41))

    assert stored(engine) == {"after-hours": []}


def test_re_evaluation_updates_the_accounts_when_a_late_login_arrives(engine: Engine, rules: RulesService,
                                                                        clock: Any) -> None:
    facts = Facts()
    facts.heartbeats(at(16, 50), at(17, 40))
    report(engine, rules, clock, facts, at(17, 41))
    assert stored(engine) == {"after-hours": []}

    facts.add(at(8, 55), at(17, 50), session=pb.SessionEvent(kind=pb.SessionEvent.KIND_LOGIN,
                                                            session=facts.session("zhang", at(8, 55))))
    report(engine, rules, clock, facts, at(17, 50))
    result = rules.evaluate(AGENT, at(8), clock())

    assert stored(engine) == {"after-hours": ["zhang"]}
    assert (result.created, result.updated) == (0, 1)
