"""The agent's log file: JSON lines, rotated by size, only in an existing state folder, and never a window title."""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.config import AgentConfig
from agent.logs import log_to_file
from agent.service import AgentService
from protos.counterguard.v1 import agent_pb2
from tests.agent.x11 import XServer, xserver_fixture

xserver = xserver_fixture
MARKER = "CG-TITLE-MARKER-5b1e"


@pytest.fixture
def file_log(agent_config: AgentConfig) -> Iterator[AgentConfig]:
    """The state folder exists; the root logger logs everything to its file during the test."""
    agent_config.state_dir.mkdir(parents=True, exist_ok=True)
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.DEBUG)
    handler = log_to_file(agent_config)
    assert handler is not None
    try:
        yield agent_config
    finally:
        root.removeHandler(handler)
        handler.close()
        root.setLevel(level)


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_each_line_is_a_json_object_with_time_level_logger_message_and_fields(file_log: AgentConfig) -> None:
    logger = logging.getLogger("agent.test")
    logger.info("report sent facts=%d", 12, extra={"facts": 12, "controller": "10.0.0.5:7443"})
    try:
        raise ValueError("boom")
    except ValueError:
        logger.exception("collector failed step=%s", "inventory")
    info, error = [entry for entry in lines(file_log.log_path) if entry["logger"] == "agent.test"]
    assert (info["level"], info["msg"], info["facts"], info["controller"]) == ("INFO", "report sent facts=12", 12,
                                                                            "10.0.0.5:7443")
    assert info["ts"].endswith("+00:00") and len(info["ts"]) == len("2026-11-02T01:30:00.123+00:00")
    assert error["level"] == "ERROR" and "ValueError: boom" in error["exc"]
    log_to_file(file_log)  # a second call adds no second handler
    mine = str(file_log.log_path.absolute())
    assert [getattr(h, "baseFilename", "") for h in logging.getLogger().handlers].count(mine) == 1


def test_the_file_is_rotated_by_size_keeping_the_configured_count(agent_config: AgentConfig) -> None:
    config = dataclasses.replace(agent_config, log_max_bytes=64 * 1024, log_backup_count=2)
    config.state_dir.mkdir(parents=True)
    handler = log_to_file(config)
    assert handler is not None
    logger = logging.getLogger("agent.rotation")
    logger.addHandler(handler)  # directly: the root logger's level does not matter here
    logger.propagate = False
    try:
        for index in range(2000):
            logger.warning("line %d %s", index, "x" * 100)
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
        logging.getLogger().removeHandler(handler)
        handler.close()
    files = sorted(p.name for p in config.state_dir.glob("agent.log*"))
    assert files == ["agent.log", "agent.log.1", "agent.log.2"]
    assert all((config.state_dir / name).stat().st_size <= 64 * 1024 for name in files)
    assert lines(config.log_path)[-1]["msg"].startswith("line 1999 ")
    assert config.log_path.stat().st_mode & 0o777 == 0o600


def test_no_file_before_enrolment(tmp_path: Path) -> None:
    config = AgentConfig(state_dir=tmp_path / "not-enrolled")
    assert log_to_file(config) is None
    assert not config.state_dir.exists()


def test_a_window_title_never_reaches_the_log(file_log: AgentConfig, controller, enrolled, clock, xserver: XServer,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Even with the policy reporting titles (so the title travels in a fact), no log line carries it."""
    for name, value in xserver.probe_environ.items():
        monkeypatch.setenv(name, value)
    window, _ = xserver.window(f"{MARKER} 淘宝网 - 购物")
    xserver.run("xdotool", "windowfocus", "--sync", str(window))
    fake = controller.servicer
    fake.policy = agent_pb2.AgentPolicy(
        foreground_enabled=True, report_titles=True,
        title_patterns=[agent_pb2.TitlePattern(id="taobao", category="shopping", title_contains=["淘宝"])])
    fake.policy_version = "titles-1"
    config = dataclasses.replace(file_log, report_interval_seconds=0.3, foreground_poll_interval_seconds=0.3)
    service = AgentService(config, clock=clock)
    thread = threading.Thread(target=service.run)
    thread.start()
    try:
        deadline = time.monotonic() + 15
        while not any(f.WhichOneof("kind") == "foreground" for f in fake.held.values()):
            assert time.monotonic() < deadline, "no foreground fact"
            time.sleep(0.05)
    finally:
        service.stop()
        thread.join(timeout=20)
        service.close()
    [seen] = [f.foreground for f in fake.held.values() if f.WhichOneof("kind") == "foreground"]
    assert MARKER in seen.title and seen.category == "shopping"  # the title was there to leak
    text = file_log.log_path.read_text(encoding="utf-8")
    assert "policy applied version=titles-1" in text and "agent stopped" in text  # the service did log
    assert MARKER not in text and "淘宝" not in text
