"""SessionTracker against fake utmp files written with struct.pack."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

from agent.collectors.sessions import SessionTracker, collect_sessions
from protos.counterguard.v1 import facts_pb2

if TYPE_CHECKING:
    from conftest import FakeSystem

MORNING = int(dt.datetime(2026, 11, 2, 0, 55, tzinfo=dt.UTC).timestamp())  # 08:55 in Shanghai
BOOT_TIME, LOGIN_PROCESS, USER_PROCESS, DEAD_PROCESS = 2, 6, 7, 8  # ut_type values from <utmp.h>
LOGIN = facts_pb2.SessionEvent.KIND_LOGIN
LOGOUT = facts_pb2.SessionEvent.KIND_LOGOUT


def test_only_user_processes_are_sessions(fake: FakeSystem) -> None:
    fake.utmp(
        fake.utmp_record(BOOT_TIME, "reboot", "~", MORNING - 600),
        fake.utmp_record(LOGIN_PROCESS, "LOGIN", "tty1", MORNING - 500),
        fake.utmp_record(USER_PROCESS, "zhangwei", ":0", MORNING, host=":0"),
        fake.utmp_record(USER_PROCESS, "admin", "pts/0", MORNING + 120, host="10.20.30.40"),
        fake.utmp_record(DEAD_PROCESS, "", "pts/1", MORNING + 60),
    )
    sessions = collect_sessions(fake.roots)
    assert [(s.username, s.terminal, s.host) for s in sessions] == [
        ("zhangwei", ":0", ""),  # a local display, not a remote host
        ("admin", "pts/0", "10.20.30.40"),
    ]
    assert sessions[0].started_at.ToDatetime(tzinfo=dt.UTC) == dt.datetime(2026, 11, 2, 0, 55, tzinfo=dt.UTC)


def test_a_truncated_last_record_is_ignored(fake: FakeSystem) -> None:
    whole = fake.utmp_record(USER_PROCESS, "lina", "tty2", MORNING)
    fake.utmp(whole, fake.utmp_record(USER_PROCESS, "half", "tty3", MORNING)[:200])
    assert [s.username for s in collect_sessions(fake.roots)] == ["lina"]


def test_missing_or_unreadable_utmp_means_no_sessions(fake: FakeSystem) -> None:
    assert SessionTracker(fake.roots).snapshot() == facts_pb2.SessionSnapshot()
    fake.unreadable("run/utmp")
    assert collect_sessions(fake.roots) == []


def test_logins_and_logouts_between_polls(fake: FakeSystem) -> None:
    desk = fake.utmp_record(USER_PROCESS, "zhangwei", ":0", MORNING, host=":0")
    fake.utmp(desk)
    tracker = SessionTracker(fake.roots)
    assert [s.username for s in tracker.snapshot().sessions] == ["zhangwei"]
    assert tracker.poll() == []

    remote = fake.utmp_record(USER_PROCESS, "admin", "pts/0", MORNING + 300, host="10.20.30.40")
    fake.utmp(desk, remote)
    (event,) = tracker.poll()
    assert event.kind == LOGIN
    assert (event.session.username, event.session.terminal, event.session.host) == ("admin", "pts/0", "10.20.30.40")
    assert tracker.poll() == []

    # The remote login ends (its record becomes DEAD_PROCESS) and the clerk logs in again at the desk.
    fake.utmp(fake.utmp_record(USER_PROCESS, "zhangwei", ":0", MORNING + 3600, host=":0"),
              fake.utmp_record(DEAD_PROCESS, "", "pts/0", MORNING + 900))
    events = tracker.poll()
    assert [(e.kind, e.session.username, e.session.terminal, e.session.started_at.seconds) for e in events] == [
        (LOGOUT, "zhangwei", ":0", MORNING),
        (LOGOUT, "admin", "pts/0", MORNING + 300),
        (LOGIN, "zhangwei", ":0", MORNING + 3600),
    ]


def test_poll_before_snapshot_reports_every_session_as_login(fake: FakeSystem) -> None:
    fake.utmp(fake.utmp_record(USER_PROCESS, "lina", "tty2", MORNING))
    (event,) = SessionTracker(fake.roots).poll()
    assert event.kind == LOGIN and event.session.username == "lina"
