"""Pure evaluation: forbidden programs, working time and the calendar, the agent's clock, keys, conditions."""

from __future__ import annotations

import dataclasses
import datetime as dt
import random

from controller.policy.model import Condition, Occurrence, RuleKind, When
from controller.rules.evaluate import EVALUATORS, evaluate_facts
from tests.controller.rules.builders import MINUTE, Facts, evaluate, local, policy, rule

GAMES = policy(rule(RuleKind.FORBIDDEN_PROGRAM, when=When.WORKING_TIME, per=Occurrence.SESSION))


def game(facts: Facts, start: dt.datetime, end: dt.datetime | None, pid: int = 4242) -> None:
    """Heartbeats around a run of gnome-mines from ``start`` to ``end`` (still running when ``None``)."""
    facts.heartbeats(start - 10 * MINUTE, (end or start + 30 * MINUTE) + 10 * MINUTE)
    facts.start(start, pid, "gnome-mines")
    if end is not None:
        facts.stop(end, pid, "gnome-mines", start)
    facts.stored.sort(key=lambda f: f.received_at)
    for number, stored in enumerate(facts.stored, 1):
        stored.fact.sequence = number


def test_every_rule_kind_has_an_evaluator() -> None:
    assert set(EVALUATORS) == set(RuleKind)


def test_a_game_across_the_lunch_break_is_one_violation() -> None:
    facts = Facts()
    game(facts, local(2026, 11, 2, 11, 59), local(2026, 11, 2, 13, 5))

    found = evaluate(GAMES, facts)

    assert len(found) == 1
    violation = found[0]
    assert violation.rule_id == "forbidden-program" and violation.category == "game"
    assert violation.occurred_at == local(2026, 11, 2, 11, 59)
    assert violation.local_date == dt.date(2026, 11, 2)
    assert "6 min during working time" in violation.evidence_summary
    assert violation.period_end == local(2026, 11, 2, 13, 5)


def test_a_game_only_during_the_lunch_break_is_no_violation() -> None:
    facts = Facts()
    game(facts, local(2026, 11, 2, 12, 5), local(2026, 11, 2, 12, 55))

    assert evaluate(GAMES, facts) == []


def test_a_weekend_make_up_working_day_is_working_time() -> None:
    facts = Facts()  # Saturday 2026-02-14 is a working day (调休 for the Spring Festival)
    game(facts, local(2026, 2, 14, 10), local(2026, 2, 14, 10, 20))

    assert [v.local_date for v in evaluate(GAMES, facts)] == [dt.date(2026, 2, 14)]


def test_a_weekday_holiday_is_not_working_time() -> None:
    facts = Facts()  # Thursday 2026-10-01, National Day
    game(facts, local(2026, 10, 1, 10), local(2026, 10, 1, 10, 20))

    assert evaluate(GAMES, facts) == []


def test_when_always_counts_holidays_too() -> None:
    facts = Facts()
    game(facts, local(2026, 10, 1, 10), local(2026, 10, 1, 10, 20))

    assert len(evaluate(policy(rule(RuleKind.FORBIDDEN_PROGRAM, when=When.ALWAYS)), facts)) == 1


def test_the_agents_clock_off_by_hours_is_corrected_by_our_receive_time() -> None:
    # The agent's clock is 3 hours slow: it says the game started at 07:30, before work; it was 10:30.
    slow = Facts(skew=-dt.timedelta(hours=3))
    game(slow, local(2026, 11, 2, 10, 30), local(2026, 11, 2, 10, 50))
    found = evaluate(GAMES, slow)
    assert len(found) == 1
    assert abs(found[0].occurred_at - local(2026, 11, 2, 10, 30)) <= slow.delay  # corrected up to the delivery delay

    # 10 hours slow: it says the game ran at 10:00, in working time; it was 20:00, after work.
    slower = Facts(skew=-dt.timedelta(hours=10))
    game(slower, local(2026, 11, 2, 20), local(2026, 11, 2, 20, 30))
    assert evaluate(GAMES, slower) == []

    # 4 hours fast: it says 20:00; it was 16:00.
    fast = Facts(skew=dt.timedelta(hours=4))
    game(fast, local(2026, 11, 2, 16), local(2026, 11, 2, 16, 30))
    found = evaluate(GAMES, fast)
    assert len(found) == 1 and abs(found[0].occurred_at - local(2026, 11, 2, 16)) <= fast.delay


def test_a_small_clock_difference_is_left_as_the_agent_reported_it() -> None:
    facts = Facts(skew=dt.timedelta(minutes=2))
    game(facts, local(2026, 11, 2, 10), local(2026, 11, 2, 10, 20))

    assert evaluate(GAMES, facts)[0].occurred_at == local(2026, 11, 2, 10, 2)


def test_late_facts_are_judged_by_when_they_happened() -> None:
    # The network was down from 10:00 to 14:00; the agent's outbox delivered everything at 14:00.
    facts = Facts()
    facts.heartbeats(local(2026, 11, 2, 9), local(2026, 11, 2, 10))
    outage_end = local(2026, 11, 2, 14)
    facts.heartbeats(local(2026, 11, 2, 10, 1), local(2026, 11, 2, 14), received=outage_end)
    facts.start(local(2026, 11, 2, 10, 30), 7, "gnome-mines", received=outage_end)
    facts.stop(local(2026, 11, 2, 11), 7, "gnome-mines", local(2026, 11, 2, 10, 30), received=outage_end)

    found = evaluate(GAMES, facts)

    assert [(v.occurred_at, v.period_end) for v in found] == [(local(2026, 11, 2, 10, 30), local(2026, 11, 2, 11))]


def test_the_same_facts_in_any_order_give_the_same_violations_and_keys() -> None:
    facts = Facts()
    game(facts, local(2026, 11, 2, 10), local(2026, 11, 2, 10, 40))
    first = evaluate(GAMES, facts)
    shuffled = list(facts.stored)
    random.Random(7).shuffle(shuffled)

    assert evaluate(GAMES, shuffled) == first
    assert evaluate(GAMES, facts) == first


def test_facts_of_a_batch_sent_twice_do_not_double_a_violation() -> None:
    facts = Facts()
    game(facts, local(2026, 11, 2, 10), local(2026, 11, 2, 10, 40))

    assert evaluate(GAMES, facts.stored + facts.stored) == evaluate(GAMES, facts)


def test_the_process_list_at_an_agent_restart_continues_the_same_run() -> None:
    facts = Facts()
    started = local(2026, 11, 2, 10)
    facts.heartbeats(started, local(2026, 11, 2, 11))
    facts.start(started, 5, "gnome-mines")
    for minute in (15, 30, 45):  # the agent restarted three times; the game kept running
        facts.process_snapshot(started + minute * MINUTE, [facts.process(5, "gnome-mines", started)])

    found = evaluate(GAMES, facts)

    assert len(found) == 1
    assert found[0].period_end == local(2026, 11, 2, 11)  # still running: up to the last contact
    assert "still running at the last report" in found[0].evidence_summary


def test_a_window_that_starts_mid_run_gives_the_same_key() -> None:
    facts = Facts()
    game(facts, local(2026, 11, 2, 10), local(2026, 11, 2, 11))
    whole = evaluate(GAMES, facts)
    later = [f for f in facts.stored if f.fact.WhichOneof("kind") == "process_started"] + [
        f for f in facts.stored if f.received_at >= local(2026, 11, 2, 10, 30)]

    assert [v.key for v in evaluate(GAMES, later, start=local(2026, 11, 2, 10, 30))] == [whole[0].key]


def test_per_day_is_one_violation_per_program_per_local_day() -> None:
    per_day = policy(rule(RuleKind.FORBIDDEN_PROGRAM, when=When.WORKING_TIME, per=Occurrence.DAY))
    facts = Facts()
    facts.heartbeats(local(2026, 11, 2, 9), local(2026, 11, 3, 17))
    for pid, (day, hour) in enumerate([(2, 9), (2, 15), (3, 10)], 100):
        facts.start(local(2026, 11, day, hour), pid, "gnome-mines")
        facts.stop(local(2026, 11, day, hour, 20), pid, "gnome-mines", local(2026, 11, day, hour))
    facts.stored.sort(key=lambda f: f.received_at)
    for number, stored in enumerate(facts.stored, 1):
        stored.fact.sequence = number

    found = evaluate(per_day, facts)

    assert [v.local_date for v in found] == [dt.date(2026, 11, 2), dt.date(2026, 11, 3)]
    assert len({v.key for v in found}) == 2


def test_a_forbidden_title_in_the_foreground_counts_once_per_browser_run() -> None:
    shopping = policy(rule(RuleKind.FORBIDDEN_PROGRAM, id="shopping", categories=["shopping"],
                           when=When.WORKING_TIME))
    facts = Facts()
    facts.heartbeats(local(2026, 11, 2, 9), local(2026, 11, 2, 11))
    browser = local(2026, 11, 2, 9)
    facts.start(browser, 77, "firefox")
    facts.foreground(local(2026, 11, 2, 9, 30), "shopping", "taobao", "firefox", 77)
    facts.foreground(local(2026, 11, 2, 9, 40), "", "", "wps", 80)
    facts.foreground(local(2026, 11, 2, 10, 10), "shopping", "taobao", "firefox", 77)
    facts.foreground(local(2026, 11, 2, 10, 20), "", "", "wps", 80)

    found = evaluate(shopping, facts)

    assert len(found) == 1 and found[0].category == "shopping"
    assert "20 min" in found[0].evidence_summary


def test_a_game_in_the_foreground_is_not_counted_twice() -> None:
    facts = Facts()
    game(facts, local(2026, 11, 2, 10), local(2026, 11, 2, 10, 30))
    facts.foreground(local(2026, 11, 2, 10, 1), "game", "gnome-mines", "gnome-mines", 4242)
    facts.foreground(local(2026, 11, 2, 10, 29), "", "", "wps", 80)

    assert len(evaluate(GAMES, facts)) == 1


def test_conditions_select_the_facts_a_rule_applies_to() -> None:
    facts = Facts()
    game(facts, local(2026, 11, 2, 10), local(2026, 11, 2, 10, 30))
    not_zhang = rule(RuleKind.FORBIDDEN_PROGRAM, condition="none",
                     conditions=[Condition(field="process.username", op="eq", value="ZHANG")])
    only_zhang = rule(RuleKind.FORBIDDEN_PROGRAM, id="only-zhang",
                      conditions=[Condition(field="process.username", op="in", value=["li", "zhang"])])

    assert evaluate(policy(not_zhang), facts) == []
    assert len(evaluate(policy(only_zhang), facts)) == 1


def test_a_disabled_rule_finds_nothing() -> None:
    facts = Facts()
    game(facts, local(2026, 11, 2, 10), local(2026, 11, 2, 10, 30))

    assert evaluate(policy(rule(RuleKind.FORBIDDEN_PROGRAM, enabled=False)), facts) == []


def test_evaluate_facts_is_what_policy_test_runs() -> None:
    facts = Facts()
    game(facts, local(2026, 11, 2, 10), local(2026, 11, 2, 10, 30))

    found = evaluate_facts(GAMES, [(f"line {f.fact_id}", f.fact) for f in facts.stored])

    assert len(found) == 1 and all(str(i).startswith("line ") for i in found[0].evidence_fact_ids)
    assert dataclasses.replace(found[0], evidence_fact_ids=()).agent_id == "test"
