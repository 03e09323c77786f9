"""The rules end to end: a real controller with the default policy, a real agent, a real catalogued program.

The controller's clock is set to a Monday morning with the ``COUNTERGUARD_FAKE_NOW`` test hook of
``serve``, so the test is in working time whenever it runs; the agent keeps the real clock, and the
controller's receive times correct its reports (see :mod:`controller.rules.intervals`), exactly as
for an agent whose clock is off. The program is ``/bin/sleep`` copied as ``gnome-mines``, a game in
the default catalogue; the ``.desktop`` file with ``Categories=Game;`` is installed software.
"""

from __future__ import annotations

import shutil
import subprocess
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.processes import Agent, Controller, start_controller, wait_for

pytestmark = pytest.mark.integration

MONDAY_MORNING = "2026-11-02T10:00:00+08:00"  # in the past: the controller makes its certificates with it


def start_controller_at(data_dir: Path, fake_now: str, database_url: str | None = None) -> Controller:
    """``counterguard serve`` on free loopback ports with its clock starting at ``fake_now``."""
    return start_controller(data_dir, database_url, env={"COUNTERGUARD_FAKE_NOW": fake_now})


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def controller_at_work(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Controller]:
    url = request.getfixturevalue("postgres_url") if request.param == "postgres" else None
    running = start_controller_at(tmp_path / "controller", MONDAY_MORNING, url)
    try:
        yield running
    finally:
        running.stop()


def _violations(controller: Controller, **filters: str) -> list[dict[str, Any]]:
    args = [x for key, value in filters.items() for x in (f"--{key}", value)]
    return list(controller.json("violations", "list", *args))


def test_a_catalogued_program_and_an_installed_game_become_violations(
        controller_at_work: Controller, agent: Agent, tmp_path: Path) -> None:
    controller = controller_at_work
    apps = tmp_path / "applications"
    apps.mkdir()
    (apps / "cg-e2e-solitaire.desktop").write_text(textwrap.dedent("""\
        [Desktop Entry]
        Type=Application
        Name=CG E2E Solitaire
        Exec=cg-e2e-solitaire
        Categories=Game;CardGame;
        """), encoding="utf-8")
    game = tmp_path / "bin" / "gnome-mines"
    game.parent.mkdir()
    shutil.copy("/bin/sleep", game)
    agent.settings.update(extra_application_dirs=str(apps), report_interval_seconds="1",
                          process_poll_interval_seconds="1")
    agent_id = agent.enroll(controller, controller.token("W07"))
    service = agent.start()
    player = None
    try:
        wait_for(lambda: controller.json("agents", "show", agent_id).get("last_sequence"), what="the first report")
        player = subprocess.Popen([str(game), "600"])

        found = wait_for(lambda: _violations(controller, rule="games-video-music", workstation=agent_id), timeout=60,
                         what="the game's violation")
        software = wait_for(lambda: _violations(controller, rule="unapproved-software"), timeout=30,
                            what="the installed game's violation")
    finally:
        if player is not None:
            player.kill()
            player.wait()
        service.terminate()
        assert service.wait(20) == 0, service.stderr.read() if service.stderr else ""

    [played] = found
    assert (played["ref"], played["status"], played["penalty_points"]) == ("R11.6; R9 7(2)14", "open", 5)
    assert played["local_date"] == "2026-11-02"  # the controller's Monday, not the agent's real date
    assert "gnome-mines" in played["subject"] and f"pid {player.pid}" in played["subject"]
    assert "during working time" in played["summary"]
    shown = controller.json("violations", "show", str(played["id"]))
    assert any(f["kind"] == "process_started" and f["values"]["process"]["pid"] == player.pid for f in shown["facts"])

    [installed] = software
    assert installed["subject"].startswith("desktop-entry:cg-e2e-solitaire.desktop")
    assert "desktop_category:Game" in installed["summary"]
    assert controller.json("violations", "list", "--month", "2026-11", "--status", "open")
