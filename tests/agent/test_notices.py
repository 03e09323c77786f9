"""Notices on the agent: queued without blocking, at most a few a minute, the rest coalesced, failures logged once."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import pytest

from agent.notices import NoticeDispatcher, coalesce
from protos.counterguard.v1 import agent_pb2


class Ticks:
    """A settable monotonic clock: the dispatcher's minute."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def notice(number: int, title: str = "工作时间请勿运行游戏") -> agent_pb2.Notice:
    return agent_pb2.Notice(violation_key=f"k{number}", rule_id="games", title=title, body=f"扫雷 · 14:0{number}")


def wait_for(predicate: Any, what: str) -> None:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def test_coalescing_shows_what_fits_and_counts_the_rest_on_the_last() -> None:
    waiting = [notice(n) for n in range(1, 6)]

    assert [n.body for n in coalesce(waiting, 3)] == ["扫雷 · 14:01", "扫雷 · 14:02", "扫雷 · 14:03(另有 2 条记录)"]
    assert [n.body for n in coalesce(waiting[:2], 3)] == ["扫雷 · 14:01", "扫雷 · 14:02"]
    assert [n.body for n in coalesce(waiting[:1], 1, dropped=4)] == ["扫雷 · 14:01(另有 4 条记录)"]
    assert coalesce(waiting, 0) == []
    assert waiting[2].body == "扫雷 · 14:03", "the notices handed in are not changed"


def test_at_most_a_few_notices_a_minute_and_none_lost() -> None:
    ticks = Ticks()
    shown: list[str] = []
    dispatcher = NoticeDispatcher(lambda n: shown.append(n.body) or 1, per_minute=3, monotonic=ticks)
    try:
        dispatcher.submit([notice(n) for n in range(1, 6)])
        wait_for(lambda: len(shown) == 3, "the first minute's notices")
        dispatcher.submit([notice(6)])
        time.sleep(0.3)
        assert len(shown) == 3, "the minute's three are used up: the sixth waits"

        ticks.now += 61
        dispatcher.submit([notice(7)])
        wait_for(lambda: len(shown) == 5, "the next minute's notices")
    finally:
        dispatcher.stop()

    assert shown == ["扫雷 · 14:01", "扫雷 · 14:02", "扫雷 · 14:03(另有 2 条记录)", "扫雷 · 14:06", "扫雷 · 14:07"]


def test_submitting_never_waits_for_a_slow_notifier() -> None:
    release = threading.Event()
    dispatcher = NoticeDispatcher(lambda n: release.wait(10) and 1)
    try:
        dispatcher.submit([notice(1)])
        started = time.monotonic()
        dispatcher.submit([notice(2), notice(3)])
        assert time.monotonic() - started < 0.1
    finally:
        release.set()
        dispatcher.stop()


def test_a_failing_notifier_is_logged_once_and_the_next_notice_still_goes_out(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    ticks = Ticks()
    attempts: list[str] = []

    def deliver(n: agent_pb2.Notice) -> int:
        attempts.append(n.violation_key)
        if len(attempts) <= 2:
            raise RuntimeError("the hub broke")
        return 1

    dispatcher = NoticeDispatcher(deliver, per_minute=1, monotonic=ticks)
    try:
        for number in (1, 2, 3):
            dispatcher.submit([notice(number)])
            wait_for(lambda: len(attempts) == number, f"attempt {number}")
            ticks.now += 61
        wait_for(lambda: "notice handed to" in caplog.text, "the last notice to go out")
    finally:
        dispatcher.stop()

    assert caplog.text.count("notices cannot be delivered to the session helpers: RuntimeError('the hub broke')") == 1
    assert "notice handed to 1 session helper(s) rule=games key=k3" in caplog.text


def test_a_notice_nobody_can_show_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    dispatcher = NoticeDispatcher(lambda n: 0)
    try:
        dispatcher.submit([notice(1)])
        wait_for(lambda: "notice not shown" in caplog.text, "the log line")
    finally:
        dispatcher.stop()

    assert "notice not shown: no session helper is connected rule=games key=k1 title=工作时间请勿运行游戏" in caplog.text
