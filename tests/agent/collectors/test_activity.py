"""Input activity: the ACTIVE/IDLE state machine, Windows' tick arithmetic with a fake API, logind over a
real (private) D-Bus, and the X11 idle counter of a real Xvfb moved by xdotool."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from jeepney import HeaderFields, MessageType, new_error, new_method_return
from jeepney.bus_messages import message_bus
from jeepney.io.blocking import open_dbus_connection

from agent.collectors import Roots
from agent.collectors._idle_linux import IdleReader, active_user_session, logind_idle_seconds
from agent.collectors._idle_windows import IdleReader as WindowsIdleReader
from agent.collectors._idle_windows import idle_milliseconds
from agent.collectors._probes import IdleSample
from agent.collectors.activity import ActivityTracker, state_of
from protos.counterguard.v1 import facts_pb2
from tests.agent.session import dbus
from tests.agent.x11 import XServer, xserver_fixture

xserver = xserver_fixture  # a real Xvfb for the tests that ask for it

ACTIVE, IDLE = facts_pb2.InputActivity.STATE_ACTIVE, facts_pb2.InputActivity.STATE_IDLE


class Readings:
    """A reader answering from a list of samples, then repeating the last."""

    def __init__(self, *samples: IdleSample | None) -> None:
        self.samples = list(samples)

    def __call__(self) -> IdleSample | None:
        return self.samples.pop(0) if len(self.samples) > 1 else self.samples[0]


def alice(idle: float, session: str = ":0", user: str = "alice") -> IdleSample:
    return IdleSample(idle, user, session, "x11")


# ------------------------------------------------------------------ state machine


def test_only_transitions_are_reported_starting_with_the_first_reading() -> None:
    tracker = ActivityTracker(300, Readings(alice(3), alice(200), alice(299.9), alice(300), alice(950), alice(0.4)))
    first = tracker.poll()
    assert (first.state, first.username, first.session, first.idle_seconds, first.source) == (ACTIVE, "alice", ":0", 3, "x11")
    assert tracker.poll() is None and tracker.poll() is None
    idle = tracker.poll()
    assert (idle.state, idle.idle_seconds) == (IDLE, 300)  # the threshold itself is idle
    assert tracker.poll() is None
    assert tracker.poll().state == ACTIVE


def test_another_user_or_session_is_a_transition_and_no_reading_is_nothing() -> None:
    tracker = ActivityTracker(60, Readings(alice(1), None, alice(2, user="bob"), alice(2, session=":1", user="bob")))
    assert tracker.poll().username == "alice"
    assert tracker.poll() is None
    assert tracker.poll().username == "bob"
    assert tracker.poll().session == ":1"


def test_the_threshold_comes_from_the_policy_and_must_be_positive() -> None:
    tracker = ActivityTracker(300, Readings(alice(120)))
    assert tracker.poll().state == ACTIVE
    tracker.set_threshold(60)
    assert tracker.poll().state == IDLE
    tracker.set_threshold(0)  # "zero: keep the agent's own setting"
    assert tracker.threshold == 60
    with pytest.raises(ValueError, match="above 0"):
        ActivityTracker(0, Readings(None))
    assert state_of(59.99, 60) == ACTIVE and state_of(60, 60) == IDLE


# ------------------------------------------------------------------ Windows


class FakeInputApi:
    """``GetLastInputInfo``/``GetTickCount`` as Windows answers them: 32-bit millisecond ticks."""

    def __init__(self, last_input: int, now: int, ok: bool = True) -> None:
        self.last_input, self.now, self.ok = last_input, now, ok

    def GetLastInputInfo(self, info: Any) -> int:
        assert info.contents.cbSize == 8  # Windows refuses a structure of the wrong size
        info.contents.dwTime = self.last_input
        return int(self.ok)

    def GetTickCount(self) -> int:
        return self.now

    def WTSGetActiveConsoleSessionId(self) -> int:
        return 1


def test_windows_idle_time_survives_the_tick_counter_wrapping() -> None:
    assert idle_milliseconds(FakeInputApi(last_input=5_000, now=65_000)) == 60_000
    assert idle_milliseconds(FakeInputApi(last_input=2**32 - 1_000, now=500)) == 1_500  # after 49.7 days
    assert idle_milliseconds(FakeInputApi(last_input=0, now=0, ok=False)) is None


def test_windows_reader_feeds_the_tracker() -> None:
    tracker = ActivityTracker(300, WindowsIdleReader(FakeInputApi(last_input=1_000, now=401_000), username="alice"))
    seen = tracker.poll()
    assert (seen.state, seen.idle_seconds, seen.session, seen.source, seen.username) == (IDLE, 400, "1", "windows", "alice")
    assert WindowsIdleReader(None)() is None  # no Win32 API off Windows: nothing, no crash


# ------------------------------------------------------------------ logind


def write_session(run: Path, name: str, text: str) -> None:
    sessions = run / "systemd/sessions"
    sessions.mkdir(parents=True, exist_ok=True)
    (sessions / name).write_text(text)


def test_the_active_user_session_is_chosen_and_logind_hints_give_idle_seconds(tmp_path: Path) -> None:
    write_session(tmp_path, "c1", "USER=lightdm\nACTIVE=1\nCLASS=greeter\n")
    write_session(tmp_path, "4", "USER=bob\nACTIVE=0\nCLASS=user\n")
    write_session(tmp_path, "5", "USER=alice\nACTIVE=1\nCLASS=user\nTYPE=wayland\n")
    session = active_user_session(Roots(run=tmp_path))
    assert session is not None and (session["ID"], session["USER"]) == ("5", "alice")
    now = 1_800_000_000.0
    assert logind_idle_seconds({"IdleHint": ("b", True), "IdleSinceHint": ("t", int((now - 90) * 1e6))}, now) == 90
    assert logind_idle_seconds({"IdleHint": ("b", False), "IdleSinceHint": ("t", int((now - 90) * 1e6))}, now) == 0
    assert logind_idle_seconds({"IdleHint": ("b", True), "IdleSinceHint": ("t", 0)}, now) == 0


class FakeLogind(threading.Thread):
    """``org.freedesktop.login1`` on a private bus: ``GetSession`` and the session's ``GetAll``."""

    def __init__(self, address: str, properties: dict[str, tuple[str, Any]]) -> None:
        super().__init__(daemon=True)
        self.address, self.properties = address, properties
        self.calls: list[str] = []
        self.ready, self.done = threading.Event(), threading.Event()

    def run(self) -> None:
        with open_dbus_connection(self.address) as conn:
            conn.send_and_get_reply(message_bus.RequestName("org.freedesktop.login1"))
            self.ready.set()
            while not self.done.is_set():
                try:
                    message = conn.receive(timeout=0.1)
                except TimeoutError:
                    continue
                if message.header.message_type == MessageType.method_call:
                    conn.send(self.answer(message))

    def answer(self, message: Any) -> Any:
        member = message.header.fields[HeaderFields.member]
        self.calls.append(member)
        if member == "GetSession" and message.body == ("5",):
            return new_method_return(message, "o", ("/org/freedesktop/login1/session/_35",))
        if member == "GetAll" and message.body == ("org.freedesktop.login1.Session",):
            return new_method_return(message, "a{sv}", (self.properties,))
        return new_error(message, "org.freedesktop.login1.NoSuchSession", "s", ("no such session",))


@pytest.fixture
def private_bus(tmp_path: Path) -> Iterator[str]:
    """A dbus-daemon of our own, listening on a socket in the test's directory."""
    with dbus.private_bus(tmp_path) as address:
        yield address


def test_logind_over_d_bus_when_there_is_no_x_display(tmp_path: Path, private_bus: str) -> None:
    write_session(tmp_path / "run", "5", "USER=alice\nACTIVE=1\nCLASS=user\nTYPE=wayland\n")
    roots = Roots(run=tmp_path / "run", x11_sockets=tmp_path / "no-sockets")
    since = int((time.time() - 120) * 1_000_000)
    logind = FakeLogind(private_bus, {"IdleHint": ("b", True), "IdleSinceHint": ("t", since), "Name": ("s", "alice")})
    logind.start()
    try:
        assert logind.ready.wait(10)
        tracker = ActivityTracker(60, IdleReader(roots, {}, bus=private_bus))
        seen = tracker.poll()
        assert (seen.state, seen.username, seen.session, seen.source) == (IDLE, "alice", "5", "logind")
        assert 119 <= seen.idle_seconds <= 125
        logind.properties["IdleHint"] = ("b", False)
        assert tracker.poll().state == ACTIVE
        assert logind.calls[:2] == ["GetSession", "GetAll"]
    finally:
        logind.done.set()
        logind.join(timeout=5)


def test_no_display_and_no_logind_is_nothing_logged_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    write_session(tmp_path / "run", "5", "USER=alice\nACTIVE=1\nCLASS=user\n")
    roots = Roots(run=tmp_path / "run", x11_sockets=tmp_path / "no-sockets")
    reader = IdleReader(roots, {}, bus=f"unix:path={tmp_path / 'no-bus'}")
    with caplog.at_level("INFO", logger="agent.collectors"):
        assert [reader(), reader(), reader()] == [None, None, None]
    messages = [r.getMessage() for r in caplog.records]
    assert len([m for m in messages if "logind did not answer" in m]) == 1
    assert len([m for m in messages if "no X display" in m]) == 1


# ------------------------------------------------------------------ a real X server


def test_x11_input_makes_active_and_a_quiet_second_makes_idle(xserver: XServer) -> None:
    tracker = ActivityTracker(1.0, IdleReader(Roots(), xserver.probe_environ))
    xserver.run("xdotool", "mousemove", "100", "100")
    seen = tracker.poll()
    assert (seen.state, seen.session, seen.source) == (ACTIVE, xserver.display, "x11")
    assert seen.idle_seconds == 0
    time.sleep(1.3)
    seen = tracker.poll()
    assert seen is not None and seen.state == IDLE and seen.idle_seconds >= 1
    assert tracker.poll() is None
    xserver.run("xdotool", "mousemove", "200", "150")
    assert tracker.poll().state == ACTIVE
