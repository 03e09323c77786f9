"""The Windows session back end: sessions read through ``wtsapi32`` and turned into ``UserSession`` facts.

:class:`~tests.agent.windows.fake_win32.FakeWindows` is the OS boundary: it hands out real ctypes buffers as
``WTSEnumerateSessionsW`` and ``WTSQuerySessionInformationW`` do, and overwrites each one when it is freed, so a
value read after ``WTSFreeMemory`` would come out as garbage. The tracker's logins and logouts on top of this
back end are shown in ``test_windows_agent.py``, with ``sys.platform`` forced to ``win32``.
"""

from __future__ import annotations

import ctypes
import datetime as dt
import logging

import pytest

from agent.collectors import _sessions_windows as win
from tests.agent.windows.fake_win32 import FakeWindows, Session, filetime

MORNING = dt.datetime(2026, 11, 30, 0, 55, 12, 345678, tzinfo=dt.UTC)  # 08:55 in Shanghai
ACTIVE, CONNECTED, DISCONNECTED, LISTEN, INIT = win.WTS_ACTIVE, win.WTS_CONNECTED, win.WTS_DISCONNECTED, \
    win.WTS_LISTEN, win.WTS_INIT


@pytest.fixture
def windows() -> FakeWindows:
    """A counter PC: its clerk at the console, a colleague switched away from, IT over Remote Desktop."""
    fake = FakeWindows()
    fake.sessions = [
        Session(0, "Services", DISCONNECTED),
        Session(1, "", DISCONNECTED, "lina", "CK-3F-W07", logon=MORNING - dt.timedelta(hours=1)),
        Session(2, "Console", ACTIVE, "张伟", "CK-3F-W07", client="", logon=MORNING),
        Session(3, "RDP-Tcp#7", ACTIVE, "it-admin", "GOV", client="IT-LAPTOP-02", protocol=2,
                logon=MORNING + dt.timedelta(minutes=30)),
        Session(65536, "RDP-Tcp", LISTEN),
        Session(4, "", INIT),
    ]
    return fake


def test_wtsinfow_has_the_windows_sdk_layout() -> None:
    assert ctypes.sizeof(win.WTSINFOW) == 216 and win.WTSINFOW.LogonTime.offset == 200  # as in wtsapi32.h, x64


def test_every_session_is_read_and_every_buffer_freed(windows: FakeWindows) -> None:
    listed = win.enumerate_sessions(windows)
    assert [(s.session_id, s.station, s.state, s.user, s.domain, s.client, s.protocol) for s in listed] == [
        (1, "", DISCONNECTED, "lina", "CK-3F-W07", "", 0),
        (2, "Console", ACTIVE, "张伟", "CK-3F-W07", "", 0),
        (3, "RDP-Tcp#7", ACTIVE, "it-admin", "GOV", "IT-LAPTOP-02", 2),
    ]
    assert listed[1].logon_time == filetime(MORNING)
    assert {session for session, _ in windows.queried} == {1, 2, 3}  # session 0, the listener, Init: not asked
    assert windows.allocations == {} and windows.bad_frees == []


def test_the_facts(windows: FakeWindows) -> None:
    facts = win.SessionReader(windows)()
    assert [(f.username, f.terminal, f.host, f.started_at.ToDatetime(tzinfo=dt.UTC)) for f in facts] == [
        ("CK-3F-W07\\lina", "1", "", MORNING.replace(microsecond=0) - dt.timedelta(hours=1)),
        ("CK-3F-W07\\张伟", "2", "", MORNING.replace(microsecond=0)),
        ("GOV\\it-admin", "3", "IT-LAPTOP-02", MORNING.replace(microsecond=0) + dt.timedelta(minutes=30)),
    ]


@pytest.mark.parametrize(("session", "expected"), [
    (win.WtsSession(2, "Console", ACTIVE, "zhangwei", "", "", 0, 0), ("zhangwei", "2", "", False)),
    (win.WtsSession(2, "Console", ACTIVE, "zhangwei", "CK-3F-W07", "CK-3F-W07", 0, 0),  # a client name, no RDP
     ("CK-3F-W07\\zhangwei", "2", "", False)),
    (win.WtsSession(5, "", DISCONNECTED, "it-admin", "GOV", "IT-LAPTOP-02", 2, filetime(MORNING)),
     ("GOV\\it-admin", "5", "IT-LAPTOP-02", True)),
    (win.WtsSession(1, "Console", CONNECTED, "", "", "", 0, 0), None),  # the sign-in screen
    (win.WtsSession(0, "Services", DISCONNECTED, "SYSTEM", "NT AUTHORITY", "", 0, 1), None),
    (win.WtsSession(65536, "RDP-Tcp", LISTEN, "", "", "", 0, 0), None),
    (win.WtsSession(6, "", win.WTS_DOWN, "lina", "CK-3F-W07", "", 0, filetime(MORNING)), None),  # signing out
])
def test_what_is_a_session_and_how_it_is_named(session: win.WtsSession,
                                               expected: tuple[str, str, str, bool] | None) -> None:
    fact = win.user_session(session)
    if expected is None:
        assert fact is None
    else:
        assert fact is not None
        assert (fact.username, fact.terminal, fact.host, fact.HasField("started_at")) == expected


def test_filetime() -> None:
    assert win.filetime(filetime(MORNING)) == MORNING.replace(microsecond=0)
    assert win.filetime(116_444_736_000_000_000) == dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    assert win.filetime(0) is None and win.filetime(-5) is None and win.filetime(2**63 - 1) is None


def test_a_session_gone_between_listing_and_asking_is_left_out(windows: FakeWindows) -> None:
    windows.failures["WTSQuerySessionInformationW"] = win.WTS_LISTEN  # any error: Windows refuses every question
    assert win.SessionReader(windows)() == []
    assert windows.allocations == {} and windows.bad_frees == []


def test_when_windows_will_not_list_sessions_the_last_list_stands(windows: FakeWindows,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    reader = win.SessionReader(windows)
    before = reader()
    windows.failures["WTSEnumerateSessionsW"] = 1722
    with caplog.at_level(logging.INFO, logger="agent.collectors"):
        assert [reader(), reader()] == [before, before]  # no spurious logouts
    del windows.failures["WTSEnumerateSessionsW"]
    windows.sessions = windows.sessions[:2]
    assert [f.username for f in reader()] == ["CK-3F-W07\\lina"]
    assert [r.getMessage() for r in caplog.records] == [
        "sessions: nothing to report: WTSEnumerateSessionsW failed (error 1722); keeping the last list"]


def test_off_windows_there_are_no_sessions(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="agent.collectors"):
        assert win.SessionReader()() == []
    assert "not available on this platform" in caplog.records[0].getMessage()


def test_a_session_key_survives_a_disconnect(windows: FakeWindows) -> None:
    """Disconnecting an RDP session clears its station name; the session must not log out and in again."""
    reader = win.SessionReader(windows)
    before = {(f.username, f.terminal, f.started_at.seconds) for f in reader()}
    windows.sessions[3] = Session(3, "", DISCONNECTED, "it-admin", "GOV", client="IT-LAPTOP-02", protocol=2,
                                  logon=MORNING + dt.timedelta(minutes=30))
    assert {(f.username, f.terminal, f.started_at.seconds) for f in reader()} == before

