"""A real controller process and a real agent process on loopback, with real certificates."""

from __future__ import annotations

import json
import socket
import subprocess
import textwrap
from pathlib import Path

import pytest

from tests.integration.processes import Agent, Controller, start_controller, wait_for

pytestmark = pytest.mark.integration


def _install_desktop_file(folder: Path, file_id: str, name: str, categories: str, exe: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / file_id).write_text(textwrap.dedent(f"""\
        [Desktop Entry]
        Type=Application
        Name={name}
        Exec={exe} %U
        Categories={categories}
        """), encoding="utf-8")


def _software(controller: Controller, agent_id: str) -> list[dict]:
    return controller.json("software", "list", agent_id)


def _outbox_depth(agent: Agent) -> int:
    return int(json.loads(agent.run("status", "--json").stdout)["outbox"]["depth"])


def _pids(controller: Controller, agent_id: str) -> set[int]:
    return {int(p["pid"]) for p in controller.json("processes", agent_id)}


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def any_controller(request: pytest.FixtureRequest, tmp_path: Path):
    url = request.getfixturevalue("postgres_url") if request.param == "postgres" else None
    running = start_controller(tmp_path / "controller", url)
    try:
        yield running
    finally:
        running.stop()


def test_enrolled_agent_reports_inventory_software_and_processes(any_controller: Controller, agent: Agent, tmp_path: Path) -> None:
    apps = tmp_path / "applications"
    _install_desktop_file(apps, "cg-test-mines.desktop", "CG Test Mines", "Game;LogicGame;", "/usr/games/cg-test-mines")
    agent.settings["extra_application_dirs"] = str(apps)
    sleeper = subprocess.Popen(["sleep", "300"])
    try:
        agent_id = agent.enroll(any_controller, any_controller.token("W07"))
        agent.run("run", "--once")

        listed = {a["id"]: a for a in any_controller.json("agents", "list")}
        assert agent_id in listed and listed[agent_id]["window"] == "W07"
        assert listed[agent_id]["last_seen_at"], "the controller never saw the agent"

        inventory = any_controller.json("inventory", "show", agent_id)
        assert inventory["snapshot"]["hostname"] == socket.gethostname()
        assert int(inventory["snapshot"]["memory"]["total_bytes"]) > 0

        entry = next(s for s in _software(any_controller, agent_id) if s["name"] == "cg-test-mines.desktop")
        assert entry["categories"] == ["Game", "LogicGame"]
        assert "game" in entry["hints"]
        assert entry["executable"] == "cg-test-mines"
        assert any(s["name"] == "dpkg" and s["section"] for s in _software(any_controller, agent_id))

        assert sleeper.pid in _pids(any_controller, agent_id)
    finally:
        sleeper.kill()


def test_running_agent_reports_starts_stops_and_new_installs(controller: Controller, agent: Agent, tmp_path: Path) -> None:
    apps = tmp_path / "applications"
    apps.mkdir()
    agent.settings.update(extra_application_dirs=str(apps), report_interval_seconds="1",
                          process_poll_interval_seconds="1", software_scan_interval_seconds="1")
    agent_id = agent.enroll(controller, controller.token())
    service = agent.start()
    sleeper = None
    try:
        wait_for(lambda: controller.json("agents", "show", agent_id).get("last_sequence"), what="the first report")
        sleeper = subprocess.Popen(["sleep", "300"])
        wait_for(lambda: sleeper.pid in _pids(controller, agent_id), what="the new process at the controller")
        sleeper.kill()
        sleeper.wait()
        wait_for(lambda: sleeper.pid not in _pids(controller, agent_id), what="the process stop at the controller")

        _install_desktop_file(apps, "cg-test-music.desktop", "CG Test Music", "AudioVideo;Audio;", "cg-test-music")
        entry = wait_for(lambda: next((s for s in _software(controller, agent_id) if s["name"] == "cg-test-music.desktop"), None),
                         what="the newly installed .desktop entry")
        assert "music" in entry["hints"]
    finally:
        if sleeper is not None and sleeper.poll() is None:
            sleeper.kill()
        service.terminate()
        assert service.wait(20) == 0, service.stderr.read() if service.stderr else ""


def test_revoked_agent_is_refused_and_its_facts_are_not_stored(controller: Controller, agent: Agent) -> None:
    agent_id = agent.enroll(controller, controller.token())
    agent.run("run", "--once")
    held = controller.json("agents", "show", agent_id)["last_sequence"]

    controller.cli("agents", "revoke", agent_id, "--reason", "PC returned to IT")
    result = agent.run("run", "--once", check=False, timeout=180)

    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert "revoked" in result.stderr.lower() or "enrol" in result.stderr.lower()
    assert controller.json("agents", "show", agent_id)["last_sequence"] == held


def test_enrolment_with_a_bad_or_used_token_is_refused_with_the_reason(controller: Controller, tmp_path: Path) -> None:
    token = controller.token(uses="1")
    first = Agent(state_dir=tmp_path / "first")
    first.enroll(controller, token)

    second = Agent(state_dir=tmp_path / "second")
    used = second.run("enroll", "--controller", f"127.0.0.1:{controller.enroll_port}", "--token", token,
                      "--ca-cert", str(controller.ca_cert), check=False)
    assert used.returncode == 1 and "Traceback" not in used.stderr
    assert "used" in used.stderr.lower()

    forged = second.run("enroll", "--controller", f"127.0.0.1:{controller.enroll_port}", "--token",
                        token.split(".")[0] + ".not-the-secret", "--ca-cert", str(controller.ca_cert), check=False)
    assert forged.returncode == 1 and "Traceback" not in forged.stderr
    assert not (tmp_path / "second" / "cert.pem").exists()


def test_facts_wait_in_the_outbox_while_the_controller_is_down(tmp_path: Path, agent: Agent) -> None:
    data = tmp_path / "controller"
    controller = start_controller(data)
    agent_id = agent.enroll(controller, controller.token())
    ports = (controller.port, controller.enroll_port)
    controller.stop()

    agent.settings.update(rpc_timeout_seconds="2", run_once_timeout_seconds="5")
    offline = agent.run("run", "--once", check=False, timeout=180)
    assert offline.returncode != 0
    assert _outbox_depth(agent) > 0, "the facts observed while the controller was down are not in the outbox"

    restarted = start_controller(data, ports=ports)
    try:
        agent.run("run", "--once")
        shown = restarted.json("agents", "show", agent_id)
        assert shown["last_sequence"] > 0
        assert shown["outbox_depth"] == 0, "the agent's last batch said nothing waits behind it"
        assert _outbox_depth(agent) == 0
    finally:
        restarted.stop()
