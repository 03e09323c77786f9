"""Notices end to end, every part a real process: controller, agent service, session helper, D-Bus.

A controller (clock on a Monday morning, as in ``test_rules_end_to_end``) with the default policy's
rules and notices turned on; an enrolled agent service; a session helper (``counterguard-agent
session-helper``) connected to the agent over the real Unix socket; a private session bus
(``dbus-daemon``) with a notification server that records every ``Notify`` (``tests/agent/session/dbus.py``).
A catalogued game (``/bin/sleep`` copied as ``gnome-mines``) started on this machine must end up as a
notification with the rule's Chinese text, and again after the agent restarted and the helper
reconnected by itself. Garbage on the agent's socket is refused with a logged reason.

A second test runs the helper on a real X server (Xvfb) with ``desktop_probes = helper``, the way a
Windows service must work: the agent's input-activity facts then come from the helper.
"""

from __future__ import annotations

import shutil
import signal
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from multiprocessing.connection import Client
from pathlib import Path
from typing import Any

import pytest
import yaml

from policies import DEFAULT_POLICY
from protos.counterguard.v1 import facts_pb2
from tests.agent.session.dbus import calls, notification_server, private_bus
from tests.agent.x11 import XServer, xserver_fixture
from tests.integration.processes import Agent, Controller, start_controller, wait_for

pytestmark = pytest.mark.integration
xserver = xserver_fixture

MONDAY_MORNING = "2026-11-02T10:00:00+08:00"
GAMES = "games-video-music"


def notices_policy(path: Path) -> Path:
    """The default policy with notices on and only the games rule enabled (so no other notice competes)."""
    policy = yaml.safe_load(DEFAULT_POLICY.read_text(encoding="utf-8"))
    policy["version"] = "2026.1-notices-e2e"
    policy["agent"]["notices_enabled"] = True
    for rule in policy["rules"]:
        rule["enabled"] = rule["id"] == GAMES
    path.write_text(yaml.safe_dump(policy, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


def games_notice_text() -> str:
    policy = yaml.safe_load(DEFAULT_POLICY.read_text(encoding="utf-8"))
    return next(str(rule["notice"]) for rule in policy["rules"] if rule["id"] == GAMES)


@pytest.fixture
def controller(tmp_path: Path) -> Iterator[Controller]:
    running = start_controller(tmp_path / "controller", env={"COUNTERGUARD_FAKE_NOW": MONDAY_MORNING})
    try:
        running.cli("policy", "apply", str(notices_policy(tmp_path / "notices.yaml")))
        yield running
    finally:
        running.stop()


class Helper:
    """``counterguard-agent session-helper`` in a "session" given by its environment, logging to a file."""

    def __init__(self, agent: Agent, log: Path, **environ: str) -> None:
        self.log = log
        env = {k: v for k, v in agent.env().items()
               if k not in ("DISPLAY", "XAUTHORITY", "XDG_SESSION_ID", "DBUS_SESSION_BUS_ADDRESS")}
        with log.open("a", encoding="utf-8") as out:
            self.process = subprocess.Popen(agent.command("session-helper"), stdout=out, stderr=subprocess.STDOUT,
                                            env={**env, **environ})

    def text(self) -> str:
        return self.log.read_text(encoding="utf-8") if self.log.exists() else ""

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(20)


def read(log: Path) -> str:
    return log.read_text(encoding="utf-8") if log.exists() else ""


def stop_agent(service: subprocess.Popen[str]) -> None:
    service.terminate()
    assert service.wait(30) == 0


def game_copy(tmp_path: Path) -> Path:
    game = tmp_path / "bin" / "gnome-mines"
    game.parent.mkdir(exist_ok=True)
    shutil.copy("/bin/sleep", game)
    return game


def test_a_violation_becomes_a_desktop_notification_and_the_helper_survives_an_agent_restart(
        controller: Controller, agent: Agent, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = tmp_path / "run"
    # A busy controller answers without waiting for the evaluation and the notice rides on the agent's
    # next report: a heartbeat every 10 s bounds that on a slow host (the agent's default is 60 s).
    agent.settings.update(run_dir=str(run_dir), report_interval_seconds="1", process_poll_interval_seconds="1",
                          heartbeat_interval_seconds="10")
    agent.enroll(controller, controller.token("W07"))
    game = game_copy(tmp_path)
    agent_log, second_log = tmp_path / "agent.log", tmp_path / "agent-restarted.log"
    players: list[subprocess.Popen[bytes]] = []
    with private_bus(tmp_path) as bus, notification_server(bus, tmp_path / "notify.jsonl") as record:
        service = agent.start_logged(agent_log)
        helper = Helper(agent, tmp_path / "helper.log", DBUS_SESSION_BUS_ADDRESS=bus)
        try:
            wait_for(lambda: "session helper connected" in read(agent_log), what="the helper to connect")
            players.append(subprocess.Popen([str(game), "600"]))
            started = time.monotonic()
            [first] = wait_for(lambda: calls(record), timeout=60, interval=0.05, what="the first notification")
            latency = time.monotonic() - started
            wait_for(lambda: "notice shown key=" in read(agent_log), what="the helper to confirm it")

            refused = Client(str(run_dir / "session.sock"), family="AF_UNIX")
            refused.send_bytes(b"\x00\x01 not a message")
            with pytest.raises(EOFError):
                refused.recv_bytes()
            refused.close()

            stop_agent(service)
            wait_for(lambda: "the agent closed the channel; reconnecting" in helper.text(), what="the helper to notice")
            service = agent.start_logged(second_log)
            wait_for(lambda: "session helper connected" in read(second_log), timeout=30,
                     what="the helper to reconnect to the restarted agent")
            players.append(subprocess.Popen([str(game), "600"]))
            second = wait_for(lambda: calls(record)[1:], timeout=60, what="the notification after the restart")[0]
            assert helper.process.poll() is None, "the same helper process served both agents"
        finally:
            for player in players:
                player.kill()
                player.wait()
            stop_agent(service)
            assert helper.stop() == 0, helper.text()

    with capsys.disabled():
        print(f"\n    [notices] game started → notification shown: {latency:.2f} s (report interval 1 s, "
              "process poll 1 s)", flush=True)
    title = games_notice_text()
    assert (first["app_name"], first["summary"]) == ("CounterGuard", title)
    assert first["body"].startswith("扫雷 (GNOME Mines) · 10:0") and first["body"].endswith(" · R11.6; R9 7(2)14")
    assert second["summary"] == title
    assert "refused a helper" in read(agent_log) and "not a JSON message" in read(agent_log)
    [violation, *_] = controller.json("violations", "list", "--rule", GAMES)
    assert violation["status"] == "open"


def activity_facts(database: Path) -> list[facts_pb2.InputActivity]:
    with sqlite3.connect(database) as conn:
        rows = conn.execute("SELECT payload FROM fact WHERE kind = 'activity' ORDER BY sequence").fetchall()
    return [facts_pb2.Fact.FromString(payload).activity for (payload,) in rows]


def test_with_helper_probes_input_activity_comes_from_the_helper_in_its_x_session(
        controller: Controller, agent: Agent, xserver: XServer, tmp_path: Path) -> None:
    from agent.session.desktop import current_user

    agent.settings.update(run_dir=str(tmp_path / "run"), report_interval_seconds="1", desktop_probes="helper",
                          activity_poll_interval_seconds="1")
    agent.enroll(controller, controller.token("W08"))
    agent_log = tmp_path / "agent.log"
    service = agent.start_logged(agent_log)
    helper = Helper(agent, tmp_path / "helper.log", **xserver.probe_environ)
    try:
        wait_for(lambda: "session helper connected" in read(agent_log), what="the helper to connect")
        seen: Any = wait_for(lambda: [a for a in activity_facts(controller.database_path) if a.source == "x11"],
                             timeout=60, what="an activity fact read by the helper")
    finally:
        stop_agent(service)
        helper.stop()

    assert seen[0].username == current_user() and seen[0].session == xserver.display
    assert seen[0].state == facts_pb2.InputActivity.STATE_ACTIVE, "Xvfb has just started: input is recent"
