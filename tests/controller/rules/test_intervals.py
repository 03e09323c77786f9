"""Interval algebra, the agent-clock correction, and heartbeats, processes and input activity as intervals."""

from __future__ import annotations

import datetime as dt

from controller.rules.intervals import (
    Interval,
    activity_spans,
    clock_offsets,
    intersect,
    merge,
    power_intervals,
    program_runs,
    pulse_window,
    subtract,
    timed_facts,
)
from tests.controller.rules.builders import MINUTE, Facts, local

T = local(2026, 11, 2, 10)


def span(a: int, b: int) -> Interval:
    return Interval(T + a * MINUTE, T + b * MINUTE)


def test_merge_intersect_subtract() -> None:
    assert merge([span(5, 10), span(0, 5), span(20, 30), span(25, 26), span(40, 40)]) == [span(0, 10), span(20, 30)]
    assert intersect([span(0, 10), span(20, 30)], [span(5, 25)]) == [span(5, 10), span(20, 25)]
    assert subtract([span(0, 30)], [span(5, 10), span(20, 25)]) == [span(0, 5), span(10, 20), span(25, 30)]
    assert subtract([span(0, 10)], [span(-5, 15)]) == []


def test_a_backlog_is_not_mistaken_for_a_slow_clock() -> None:
    fresh = [(T + i * MINUTE, T + i * MINUTE + dt.timedelta(seconds=1)) for i in range(5)]
    backlog = [(T - dt.timedelta(hours=3) + i * MINUTE, T + 5 * MINUTE) for i in range(100)]
    newest = [(T + 5 * MINUTE, T + 5 * MINUTE)]

    assert set(clock_offsets(fresh + backlog + newest)) == {dt.timedelta(0)}


def test_a_clock_off_by_hours_is_measured_from_the_freshest_facts() -> None:
    skew = dt.timedelta(hours=-3)
    points = [(T + skew + i * MINUTE, T + i * MINUTE + dt.timedelta(seconds=2)) for i in range(10)]

    offsets = clock_offsets(points)

    assert all(abs(offset - (skew - dt.timedelta(seconds=2))) < dt.timedelta(seconds=1) for offset in offsets)


def test_heartbeats_merge_into_intervals_and_gaps_boots_and_shutdowns_split_them() -> None:
    facts = Facts()
    facts.heartbeats(T, T + 30 * MINUTE)
    facts.heartbeats(T + 40 * MINUTE, T + 50 * MINUTE)  # a ten-minute gap: the agent was not running
    facts.shutdown(T + 50 * MINUTE + dt.timedelta(seconds=30))
    facts.boot(T + 60 * MINUTE)
    facts.heartbeats(T + 61 * MINUTE, T + 70 * MINUTE)

    intervals = power_intervals(timed_facts(facts.stored), pulse_window(MINUTE))

    assert [(i.start, i.end, i.closed_by) for i in intervals] == [
        (T, T + 30 * MINUTE, ""),
        (T + 40 * MINUTE, T + 50 * MINUTE + dt.timedelta(seconds=30), "shutdown"),
        (T + 60 * MINUTE, T + 70 * MINUTE, ""),
    ]


def test_program_runs_from_starts_stops_and_snapshots() -> None:
    facts = Facts()
    facts.process_snapshot(T, [facts.process(1, "systemd", T - dt.timedelta(days=1)),
                               facts.process(2, "gnome-mines", T - 5 * MINUTE)])
    facts.start(T + MINUTE, 3, "vlc")
    facts.stop(T + 2 * MINUTE, 2, "gnome-mines", T - 5 * MINUTE)
    facts.start(T + 3 * MINUTE, 3, "bash")  # pid 3 reused: vlc ended, bash started
    facts.heartbeats(T + 4 * MINUTE, T + 5 * MINUTE)

    runs = {run.name: run for run in program_runs(timed_facts(facts.stored))}

    assert (runs["gnome-mines"].start, runs["gnome-mines"].end, runs["gnome-mines"].open) == (
        T - 5 * MINUTE, T + 2 * MINUTE, False)
    assert (runs["vlc"].end, runs["vlc"].open) == (T + 3 * MINUTE, False)
    assert (runs["bash"].end, runs["bash"].open) == (T + 5 * MINUTE, True)  # open: up to the last contact
    assert runs["systemd"].open


def test_activity_ends_when_the_input_stopped() -> None:
    facts = Facts()
    facts.active(T)
    facts.idle(T + 10 * MINUTE, idle_seconds=300)
    facts.active(T + 20 * MINUTE, user="li")
    facts.heartbeats(T + 25 * MINUTE, T + 25 * MINUTE)

    spans = activity_spans(timed_facts(facts.stored))

    assert [(s.username, s.start, s.end, s.open) for s in spans] == [
        ("zhang", T, T + 5 * MINUTE, False),
        ("li", T + 20 * MINUTE, T + 25 * MINUTE, True),
    ]
