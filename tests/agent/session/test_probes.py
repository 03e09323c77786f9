"""The service's desktop collectors fed by a session helper, and the service's link to the helpers.

A real hub on a real Unix socket; the "helper" is a client sending the samples a helper in a Windows
session would send (what a Windows service cannot read itself), read through the same collectors
the agent uses on Linux.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.collectors._probes import LogOnce
from agent.collectors.activity import ActivityTracker
from agent.config import AgentConfig
from agent.session.channel import Endpoint, connect
from agent.session.desktop import current_user
from agent.session.hub import SessionHub
from agent.session.link import SessionLink
from agent.session.probes import HelperForegroundTracker, HelperIdleReader, use_helper_probes
from agent.session.protocol import MAX_FROM_SERVICE, SERVICE_TYPES, Message, decode, encode, message
from protos.counterguard.v1 import agent_pb2, facts_pb2

ME = current_user()
IDLE, ACTIVE = facts_pb2.InputActivity.STATE_IDLE, facts_pb2.InputActivity.STATE_ACTIVE


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[SessionHub]:
    running = SessionHub(str(tmp_path / "run" / "session.sock"))
    assert running.start()
    yield running
    running.stop()


@pytest.fixture
def helper(hub: SessionHub) -> Iterator[Endpoint]:
    with connect(hub.address) as endpoint:
        endpoint.send_bytes(encode(message("hello", "2", ME, platform="win32", pid=os.getpid())))
        receive(endpoint)
        yield endpoint


def receive(endpoint: Endpoint) -> Message:
    assert endpoint.poll(5)
    return decode(endpoint.recv_bytes(MAX_FROM_SERVICE), SERVICE_TYPES)


def sample(endpoint: Endpoint, hub: SessionHub, idle: float | None, window: dict[str, Any] | None = None) -> None:
    """Send one sample and wait until the hub holds it."""
    foreground = {"category": "", "pattern_id": "", "executable": "", "pid": 0, "title": "", **window} \
        if window is not None else None
    sent = message("sample", "2", ME, idle_seconds=idle, idle_source="windows", foreground=foreground)
    endpoint.send_bytes(encode(sent))
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        current = hub.current()
        if current is not None and current[1] == sent:
            return
        time.sleep(0.02)
    raise AssertionError("the hub did not take the sample")


def test_where_the_desktop_is_read() -> None:
    assert use_helper_probes("auto", "win32") and use_helper_probes("helper", "linux")
    assert not use_helper_probes("auto", "linux") and not use_helper_probes("agent", "win32")


def test_input_activity_from_the_helper_is_attributed_to_the_account_the_system_named(
        hub: SessionHub, helper: Endpoint) -> None:
    tracker = ActivityTracker(300, HelperIdleReader(hub, LogOnce(logging.getLogger("test"), "idle")))
    assert tracker.poll() is None, "no sample yet"

    sample(helper, hub, 12.0)
    active = tracker.poll()
    sample(helper, hub, 301.0)
    idle = tracker.poll()
    sample(helper, hub, None)

    assert (active.state, active.username, active.session, active.source) == (ACTIVE, ME, "2", "windows")
    assert (idle.state, idle.idle_seconds) == (IDLE, 301)
    assert tracker.poll() is None, "the helper cannot read idleness: nothing, not a guess"


def test_the_foreground_window_from_the_helper_is_reported_on_change_and_titled_only_when_allowed(
        hub: SessionHub, helper: Endpoint) -> None:
    tracker = HelperForegroundTracker(hub)
    pattern = agent_pb2.TitlePattern(id="taobao", category="shopping", title_contains=["淘宝"])
    tracker.set_policy([pattern], report_titles=False)
    config = receive(helper)
    shop = {"category": "shopping", "pattern_id": "taobao", "executable": "chrome.exe", "pid": 77,
            "title": "淘宝网 - 淘！我喜欢"}  # a helper that sends the title anyway

    sample(helper, hub, 1.0, shop)
    first = tracker.poll()
    again = tracker.poll()
    tracker.reset()
    after_reset = tracker.poll()
    sample(helper, hub, 1.0, {**shop, "category": "", "pattern_id": "", "executable": "notepad.exe", "pid": 78})
    changed = tracker.poll()

    assert config["title_patterns"] == [{"id": "taobao", "category": "shopping", "title_contains": ["淘宝"],
                                         "executables": []}]
    assert (first.category, first.pattern_id, first.executable, first.pid, first.username, first.title) == \
        ("shopping", "taobao", "chrome.exe", 77, ME, "")
    assert again is None and after_reset == first
    assert (changed.category, changed.executable) == ("", "notepad.exe")


def test_the_link_follows_the_policy(tmp_path: Path, hub: SessionHub, helper: Endpoint,
                                     caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    config = dataclasses.replace(AgentConfig(), run_dir=tmp_path, desktop_probes="helper")
    link = SessionLink(config, hub)
    started = receive(helper)
    notice = agent_pb2.Notice(violation_key="k1", rule_id="games", title="工作时间请勿运行游戏", body="QQ游戏 · 14:05")
    try:
        link.announce([notice])
        link.apply_policy(agent_pb2.AgentPolicy(notices_enabled=True, foreground_enabled=True), 5, 2)
        applied = receive(helper)
        link.announce([notice])
        shown = receive(helper)
    finally:
        link.notices.stop()

    assert started["sample_interval"] == config.activity_poll_interval_seconds
    assert "notices from the controller ignored: the policy held here has them off" in caplog.text
    assert (applied["sample_interval"], applied["foreground"]) == (2, True)
    assert (shown["type"], shown["key"], shown["title"]) == ("notice", "k1", "工作时间请勿运行游戏")
    assert SessionLink(dataclasses.replace(config, desktop_probes="agent"), hub).foreground_tracker() is None
