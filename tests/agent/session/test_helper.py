"""The session helper against a real hub on a real Unix socket: sampling, notices, reconnecting, exiting.

The helper runs in a thread with readers standing in for the session's X11/Win32 probes (those are
tested with a real X server and a fake user32 under ``tests/agent/collectors``; the last test runs the
Win32 parsing itself behind those fakes) and a notifier that records what it was asked to show (the
real ones: ``test_notifiers.py``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from agent.collectors import Roots
from agent.collectors._foreground_windows import ForegroundReader as WindowsForeground
from agent.collectors._idle_windows import IdleReader as WindowsIdle
from agent.collectors._probes import ForegroundSample, IdleSample, LogOnce
from agent.collectors.activity import ActivityTracker
from agent.session import helper as helper_module
from agent.session.desktop import current_user, session_alive
from agent.session.helper import Probes, SessionHelper
from agent.session.hub import SessionHub
from agent.session.notifiers import NotifierError
from agent.session.probes import HelperForegroundTracker, HelperIdleReader
from protos.counterguard.v1 import agent_pb2, facts_pb2
from tests.agent.collectors.test_activity import FakeInputApi
from tests.agent.collectors.test_foreground import FakeUser32

ME = current_user()
QQGAME = agent_pb2.TitlePattern(id="qqgame", category="game", title_contains=["QQ游戏"], executables=["QQGame.exe"])


@dataclass
class Notifier:
    """Shows nothing; records what it was asked, failing the first ``failures`` times."""

    failures: int = 0
    shown: list[tuple[str, str]] = field(default_factory=list)

    def show(self, title: str, body: str) -> None:
        if self.failures:
            self.failures -= 1
            raise NotifierError("the notification service is not running")
        self.shown.append((title, body))


def probes() -> Probes:
    return Probes(idle=lambda: IdleSample(42.0, "zhang", ":0", "x11"),
                  foreground=lambda: ForegroundSample("QQ游戏 - 大厅", 4242, ":0"),
                  identify=lambda pid: ("QQGame.exe", "zhang") if pid == 4242 else ("", ""))


def wait_for(predicate: Any, what: str, timeout: float = 10) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def address(tmp_path: Path) -> str:
    return str(tmp_path / "run" / "session.sock")


@pytest.fixture
def hub(address: str) -> Iterator[SessionHub]:
    running = SessionHub(address)
    assert running.start()
    yield running
    running.stop()


class Running:
    """A helper serving in a thread until stopped."""

    def __init__(self, helper: SessionHelper) -> None:
        self.helper = helper
        self.code: list[int] = []
        self.thread = threading.Thread(target=lambda: self.code.append(helper.run()), daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.helper.stop()
        self.thread.join(10)


@pytest.fixture
def start(address: str) -> Iterator[Any]:
    started: list[Running] = []

    def make(notifier: Notifier | None = None, **options: Any) -> Running:
        running = Running(SessionHelper(address, "7", ME, notifier or Notifier(), probes(), **options))
        started.append(running)
        return running

    yield make
    for running in started:
        running.stop()


def test_the_helper_samples_what_the_service_asks_and_sends_a_title_only_when_allowed(hub: SessionHub, start: Any) -> None:
    hub.configure(sample_interval=0.2, foreground=True, report_titles=False, title_patterns=[QQGAME])
    start()

    helper, sample = wait_for(lambda: (c := hub.current()) and c[1]["foreground"] and c, "a sample with the window")
    assert (helper.session, helper.user) == ("7", ME)
    assert sample["idle_seconds"] == 42.0 and sample["idle_source"] == "x11"
    assert sample["foreground"] == {"category": "game", "pattern_id": "qqgame", "executable": "QQGame.exe",
                                    "pid": 4242, "title": ""}

    hub.configure(report_titles=True)
    wait_for(lambda: (c := hub.current()) and c[1]["foreground"]["title"] == "QQ游戏 - 大厅", "the title")
    hub.configure(foreground=False)
    wait_for(lambda: (c := hub.current()) and c[1]["foreground"] is None, "samples without the window")


def test_nothing_is_sampled_until_the_service_asks(hub: SessionHub, start: Any) -> None:
    start()
    wait_for(lambda: hub.connected(), "the helper")
    time.sleep(1.0)

    assert hub.current() is None


def test_notices_are_shown_and_a_failing_notifier_is_logged_once_and_survived(
        hub: SessionHub, start: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    notifier = Notifier(failures=2)
    start(notifier)
    wait_for(lambda: hub.connected(), "the helper")

    for number in (1, 2, 3):
        hub.show(agent_pb2.Notice(violation_key=f"k{number}", title="工作时间请勿运行游戏", body=f"第{number}次"))
    wait_for(lambda: notifier.shown, "the third notice")

    assert notifier.shown == [("工作时间请勿运行游戏", "第3次")]
    helper_says = [r.getMessage() for r in caplog.records if r.name == helper_module.__name__]
    assert helper_says.count("cannot show a notice: the notification service is not running") == 1
    wait_for(lambda: "notice shown key=k3 session=7" in caplog.text, "the hub to hear it was shown")
    assert caplog.text.count("could not show a notice: the notification service is not running") == 1


def test_the_helper_waits_for_the_service_and_reconnects_when_it_comes_back(
        address: str, start: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    start()
    wait_for(lambda: "cannot connect to the agent" in caplog.text, "the helper to try")

    for _ in range(2):  # the agent starts, then restarts
        hub = SessionHub(address)
        assert hub.start()
        try:
            wait_for(lambda: hub.connected() == [("7", ME)], "the helper to connect", timeout=15)
        finally:
            hub.stop()

    assert "the agent closed the channel; reconnecting" in caplog.text
    # (A helper trying while no agent listens logs "Connection refused" from the OS; that is not this.)
    assert "refused a helper" not in caplog.text, "an agent stopping refuses nobody"


def test_the_helper_exits_when_its_session_ends(hub: SessionHub, start: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(helper_module, "ALIVE_CHECK", 0.1)
    ended = threading.Event()
    running = start(alive=lambda: not ended.is_set())
    wait_for(lambda: hub.connected(), "the helper")

    ended.set()
    running.thread.join(5)

    assert not running.thread.is_alive() and running.code == [0]


def test_a_session_ends_with_its_logind_state_file_or_its_x_display(tmp_path: Path) -> None:
    roots = Roots(run=tmp_path / "run", x11_sockets=tmp_path / "x11")
    sessions = roots.run / "systemd" / "sessions"
    sessions.mkdir(parents=True)
    roots.x11_sockets.mkdir()
    (sessions / "4").write_text("UID=1000\nUSER=zhang\nACTIVE=1\nSTATE=active\n")
    (roots.x11_sockets / "X0").touch()
    environ = {"XDG_SESSION_ID": "4", "DISPLAY": ":0"}

    assert session_alive(environ, roots)
    (sessions / "4").write_text("UID=1000\nUSER=zhang\nACTIVE=0\nSTATE=closing\n")
    assert not session_alive(environ, roots)
    (sessions / "4").unlink()
    assert not session_alive(environ, roots)
    assert session_alive({"DISPLAY": ":0"}, roots)
    (roots.x11_sockets / "X0").unlink()
    assert not session_alive({"DISPLAY": ":0"}, roots)
    assert session_alive({"DISPLAY": "localhost:10.0"}, roots), "a remote display is not judged by local sockets"
    assert session_alive({}, roots), "nothing to tell by: alive"


def test_the_windows_path_a_service_in_session_zero_relies_on(hub: SessionHub, address: str) -> None:
    """The helper reading through the Win32 parsing (user32 and the input API faked, as in the collectors'
    tests), the service's activity and foreground collectors reading what it sent."""
    probes = Probes(idle=WindowsIdle(FakeInputApi(last_input=1_000, now=401_000)),
                    foreground=WindowsForeground(FakeUser32(0x3012A, {0x3012A: ("QQ游戏 - 斗地主", 12)})),
                    identify=lambda pid: ("QQGame.exe", "HALL\\zhang") if pid == 12 else ("", ""))
    activity = ActivityTracker(300, HelperIdleReader(hub, LogOnce(logging.getLogger("test"), "idle")))
    foreground = HelperForegroundTracker(hub)
    foreground.set_policy([QQGAME], report_titles=False)
    hub.configure(sample_interval=0.2, foreground=True)
    running = Running(SessionHelper(address, "1", ME, Notifier(), probes, platform="win32"))
    try:
        wait_for(lambda: hub.current(), "a sample from the helper")
        idle, window = activity.poll(), foreground.poll()
    finally:
        running.stop()

    assert (idle.state, idle.idle_seconds, idle.session, idle.source, idle.username) == \
        (facts_pb2.InputActivity.STATE_IDLE, 400, "1", "windows", ME)
    assert (window.category, window.pattern_id, window.executable, window.pid, window.title) == \
        ("game", "qqgame", "QQGame.exe", 12, "")
