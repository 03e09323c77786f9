"""The service's end of the session channel on a real Unix socket: who may connect, what is refused, samples, notices.

Each test starts a :class:`SessionHub` on a socket under ``tmp_path`` and talks to it with the same
``multiprocessing.connection`` client a helper uses. The kernel names the peer (``SO_PEERCRED``):
these tests run as the account :func:`current_user` reports, and a hello claiming any other is refused.
"""

from __future__ import annotations

import logging
import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.session import hub as hub_module
from agent.session.channel import Endpoint, connect
from agent.session.desktop import current_user
from agent.session.hub import SessionHub
from agent.session.protocol import MAX_FROM_SERVICE, SERVICE_TYPES, Message, decode, encode, message
from protos.counterguard.v1 import agent_pb2

ME = current_user()


class Ticks:
    """A settable monotonic clock for the samples' freshness."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def ticks() -> Ticks:
    return Ticks()


@pytest.fixture
def hub(tmp_path: Path, ticks: Ticks) -> Iterator[SessionHub]:
    running = SessionHub(str(tmp_path / "run" / "session.sock"), monotonic=ticks)
    assert running.start()
    yield running
    running.stop()


def hello(endpoint: Endpoint, user: str = ME, session: str = "7") -> None:
    endpoint.send_bytes(encode(message("hello", session, user, platform="linux", pid=os.getpid())))


def receive(endpoint: Endpoint) -> Message:
    assert endpoint.poll(5), "nothing arrived from the hub within 5 s"
    return decode(endpoint.recv_bytes(MAX_FROM_SERVICE), SERVICE_TYPES)


def send_sample(endpoint: Endpoint, idle: float | None, session: str = "7", **window: Any) -> None:
    foreground = {"category": "", "pattern_id": "", "executable": "", "pid": 0, "title": "", **window} \
        if window else None
    endpoint.send_bytes(encode(message("sample", session, ME, idle_seconds=idle, idle_source="x11",
                                       foreground=foreground)))


def closed_by_hub(endpoint: Endpoint) -> bool:
    """Whether the hub hung up (the next read ends), within 5 s."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if endpoint.poll(0.1):
            try:
                endpoint.recv_bytes(MAX_FROM_SERVICE)
            except (EOFError, OSError):
                return True
    return False


def wait_for(predicate: Any, what: str) -> Any:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def test_every_account_may_connect_to_a_socket_in_a_folder_only_its_owner_writes(hub: SessionHub) -> None:
    socket_path = Path(hub.address)

    assert stat.S_ISSOCK(socket_path.stat().st_mode)
    assert stat.S_IMODE(socket_path.stat().st_mode) == 0o666
    assert stat.S_IMODE(socket_path.parent.stat().st_mode) == 0o755


def test_a_helper_gets_the_settings_on_hello_and_again_when_they_change(hub: SessionHub) -> None:
    pattern = agent_pb2.TitlePattern(id="qqgame", category="game", title_contains=["QQ游戏"],
                                     executables=["QQGame.exe"])
    hub.configure(sample_interval=2, foreground=False)

    with connect(hub.address) as endpoint:
        hello(endpoint)
        first = receive(endpoint)
        hub.configure(foreground=True, title_patterns=[pattern], report_titles=False)
        second = receive(endpoint)

    assert (first["type"], first["session"], first["user"]) == ("config", "7", ME)
    assert (first["sample_interval"], first["foreground"], first["title_patterns"]) == (2, False, [])
    assert (second["sample_interval"], second["foreground"]) == (2, True)
    assert second["title_patterns"] == [{"id": "qqgame", "category": "game", "title_contains": ["QQ游戏"],
                                         "executables": ["QQGame.exe"]}]


def test_samples_are_read_from_the_least_idle_helper_while_fresh(hub: SessionHub, ticks: Ticks) -> None:
    with connect(hub.address) as background, connect(hub.address) as at_screen:
        hello(background, session="2")
        hello(at_screen, session="5")
        receive(background), receive(at_screen)
        send_sample(background, 900.0, session="2")
        send_sample(at_screen, 3.0, session="5", category="game", pattern_id="qqgame", executable="QQGame.exe",
                    pid=42)
        wait_for(lambda: len([h for h in hub._helpers if h.sample]) == 2, "both samples")

        helper, sample = hub.current()  # type: ignore[misc]
        assert (helper.session, helper.user, sample["idle_seconds"]) == ("5", ME, 3.0)
        assert sorted(hub.connected()) == [("2", ME), ("5", ME)]
        ticks.now += 11  # older than three intervals (none configured) and than 10 s
        assert hub.current() is None


def test_a_notice_goes_to_every_helper_and_their_answers_are_logged(
        hub: SessionHub, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=hub_module.__name__)
    notice = agent_pb2.Notice(violation_key="k1", rule_id="games", title="工作时间请勿运行游戏", body="QQ游戏 · 14:05")

    with connect(hub.address) as first, connect(hub.address) as second:
        hello(first, session="2")
        hello(second, session="5")
        receive(first), receive(second)
        wait_for(lambda: len(hub.connected()) == 2, "both helpers")

        assert hub.show(notice) == 2
        got = [receive(first), receive(second)]
        first.send_bytes(encode(message("shown", "2", ME, key="k1", error="")))
        second.send_bytes(encode(message("shown", "5", ME, key="k1", error="no notification service")))
        second.send_bytes(encode(message("shown", "5", ME, key="k2", error="no notification service")))
        wait_for(lambda: "could not show a notice" in caplog.text and "notice shown" in caplog.text, "the answers")

    assert [(m["type"], m["title"], m["body"], m["session"]) for m in got] == [
        ("notice", "工作时间请勿运行游戏", "QQ游戏 · 14:05", "2"), ("notice", "工作时间请勿运行游戏", "QQ游戏 · 14:05", "5")]
    assert caplog.text.count("could not show a notice: no notification service") == 1, "logged once per reason"
    wait_for(lambda: not hub.connected(), "the helpers to be gone")
    assert hub.show(notice) == 0


@pytest.mark.parametrize(("exchange", "reason"), [
    (lambda e: e.send_bytes(b"\x80 not json"), "not a JSON message"),
    (lambda e: hello(e, user="alice"), f"it says it runs as 'alice' but the connection comes from '{ME}'"),
    (lambda e: send_sample(e, 1.0), "'sample' before 'hello'"),
    (lambda e: e.send_bytes(encode(message("hello", "7", ME, platform="linux", pid=1, pad="x" * 9000))),
     "unreadable message"),
    (lambda e: (hello(e), hello(e)), "a second 'hello'"),
    (lambda e: (hello(e), send_sample(e, 1.0, session="8")), "a message for session '8'"),
    (lambda e: (hello(e), e.send_bytes(encode(message("notice", "7", ME, key="k", title="t", body="b")))),
     "unexpected message type 'notice'"),
])
def test_what_does_not_belong_on_the_channel_is_refused_with_the_reason(
        hub: SessionHub, caplog: pytest.LogCaptureFixture, exchange: Any, reason: str) -> None:
    with connect(hub.address) as endpoint:
        exchange(endpoint)
        assert closed_by_hub(endpoint)

    refusals = [r.getMessage() for r in caplog.records if "refused a helper" in r.getMessage()]
    assert len(refusals) == 1 and reason in refusals[0], caplog.text
    assert f"(pid {os.getpid()}, account {ME})" in refusals[0]
    wait_for(lambda: not hub.connected(), "the refused helper to be gone")


def test_a_helper_that_never_says_hello_is_refused(
        hub: SessionHub, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hub_module, "HELLO_TIMEOUT", 0.3)

    with connect(hub.address) as endpoint:
        assert closed_by_hub(endpoint)

    assert "no 'hello' within 0.3 s" in caplog.text


def test_no_more_helpers_than_the_limit(hub: SessionHub, caplog: pytest.LogCaptureFixture,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hub_module, "MAX_HELPERS", 1)

    with connect(hub.address) as first, connect(hub.address) as second:
        hello(first)
        receive(first)
        hello(second)
        assert closed_by_hub(second)

    assert "1 helpers are connected already" in caplog.text


def test_a_running_agent_keeps_its_socket_and_a_stale_one_is_replaced(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    import socket

    address = tmp_path / "run" / "session.sock"
    first = SessionHub(str(address))
    assert first.start()
    try:
        assert not SessionHub(str(address)).start()
        assert "another agent is already listening there" in caplog.text
        with connect(str(address)) as endpoint:
            hello(endpoint)
            assert receive(endpoint)["type"] == "config", "the first agent still answers"
    finally:
        first.stop()
    assert not address.exists(), "a stopped hub removes its socket"

    left_behind = socket.socket(socket.AF_UNIX)
    left_behind.bind(str(address))
    left_behind.close()  # like an agent killed with -9: the socket file stays, nobody answers
    second = SessionHub(str(address))
    try:
        assert second.start()
        with connect(str(address)) as endpoint:
            hello(endpoint)
            assert receive(endpoint)["type"] == "config"
    finally:
        second.stop()
