"""Self-limits: the shed / restore / restart decisions on scripted readings, the watch's facts, log line and
status file, the service running shed work only when asked, and the process priority."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from agent.clock import utc_now
from agent.config import MiB, AgentConfig, load_config
from agent.errors import ConfigError
from agent.selflimit import OPTIONAL_WORK, Limits, SelfLimiter, SelfLimitWatch, Usage
from agent.service import AgentService, roots_for
from agent.status_file import describe, read_status
from protos.counterguard.v1 import facts_pb2

Health = facts_pb2.AgentHealth
LIMITS = Limits(cpu_percent=5, cpu_window=60, rss_bytes=120 * MiB, hard_rss_bytes=180 * MiB, restore_after=120,
                restart_checks=3, restart_min_uptime=0)
REPO = Path(__file__).resolve().parents[2]
NO_FILE = Path("/nonexistent/counterguard/agent.toml")


class Feed:
    """Readings every ``step`` seconds at a given CPU % and RSS, fed to a limiter; the facts it answered."""

    def __init__(self, limits: Limits = LIMITS, step: float = 10) -> None:
        self.limiter = SelfLimiter(limits, started=1000.0)
        self.now, self.cpu, self.step = 1000.0, 0.0, step
        self.facts: list[Health] = []

    def run(self, checks: int, cpu_percent: float = 1.0, rss_mib: float = 50) -> list[Health]:
        answered = []
        for _ in range(checks):
            fact = self.limiter.check(self.now, Usage(self.cpu, int(rss_mib * MiB)))
            if fact is not None:
                answered.append(fact)
            self.now += self.step
            self.cpu += self.step * cpu_percent / 100
        self.facts += answered
        return answered

    def actions(self) -> list[int]:
        return [fact.action for fact in self.facts]


# ------------------------------------------------------------------------------ decisions


def test_memory_over_the_limit_sheds_at_once_and_cpu_only_over_a_full_window() -> None:
    feed = Feed()
    assert feed.run(6, cpu_percent=40) == []  # 50 s of a busy start: no full window yet
    [shed] = feed.run(1, cpu_percent=40)
    assert shed.action == Health.ACTION_SHED and list(shed.shed) == ["foreground", "software_rescan"]
    assert shed.reason == "CPU 40.0 % over 60 s, limit 5 %" and shed.cpu_percent == pytest.approx(40)
    assert (shed.cpu_limit_percent, shed.rss_limit_bytes, shed.rss_bytes) == (5, 120 * MiB, 50 * MiB)
    assert feed.limiter.shed == ("foreground", "software_rescan")

    memory = Feed()
    [shed] = memory.run(1, rss_mib=130)
    assert shed.action == Health.ACTION_SHED and shed.reason == "RSS 130.0 MiB, limit 120.0 MiB"


def test_cpu_is_averaged_over_the_window_so_a_short_spike_sheds_nothing() -> None:
    feed = Feed()
    feed.run(12, cpu_percent=1)
    feed.run(1, cpu_percent=20)  # 10 s at 20 % in a 60 s window of 1 %: 4.2 % on average, not over
    assert feed.run(5, cpu_percent=1) == [] and feed.limiter.shed == ()


def test_back_under_the_limits_long_enough_restores_the_work() -> None:
    feed = Feed()
    feed.run(1, rss_mib=130)
    assert feed.run(10, rss_mib=100) == []  # 100 s under: not yet 120
    feed.run(1, rss_mib=125)  # over again: the count starts afresh
    assert feed.run(12, rss_mib=100) == []
    [restored] = feed.run(1, rss_mib=100)
    assert restored.action == Health.ACTION_RESTORED and list(restored.shed) == []
    assert "optional work resumed" in restored.reason and feed.limiter.shed == ()
    assert feed.actions() == [Health.ACTION_SHED, Health.ACTION_RESTORED]


def test_memory_still_over_after_shedding_restarts_after_three_checks() -> None:
    feed = Feed()
    feed.run(1, rss_mib=130)
    assert feed.run(2, rss_mib=131) == []
    [restart] = feed.run(1, rss_mib=132)
    assert restart.action == Health.ACTION_RESTART and feed.limiter.restart_due
    assert restart.reason == "RSS 132.0 MiB over the limit 120.0 MiB for 3 checks after shedding: restarting"
    assert feed.run(5, rss_mib=200) == []  # the service is stopping: nothing more


def test_the_hard_limit_restarts_at_the_next_check_and_cpu_alone_never_restarts() -> None:
    feed = Feed()
    feed.run(1, rss_mib=130)
    [restart] = feed.run(1, rss_mib=190)
    assert restart.action == Health.ACTION_RESTART and "hard limit 180.0 MiB" in restart.reason

    busy = Feed()
    busy.run(30, cpu_percent=50)
    assert busy.actions() == [Health.ACTION_SHED] and not busy.limiter.restart_due


def test_no_restart_before_the_minimum_uptime() -> None:
    feed = Feed(dataclasses.replace(LIMITS, restart_min_uptime=300))
    feed.run(25, rss_mib=130)  # 240 s over the limit
    assert feed.actions() == [Health.ACTION_SHED]
    feed.run(6, rss_mib=130)  # 300 s
    assert feed.actions() == [Health.ACTION_SHED, Health.ACTION_RESTART]


def test_limits_from_the_configuration() -> None:
    config = AgentConfig(self_limit_rss_mib=100, self_limit_hard_rss_factor=2, self_limit_cpu_percent=3)
    limits = Limits.from_config(config)
    assert (limits.rss_bytes, limits.hard_rss_bytes, limits.cpu_percent) == (100 * MiB, 200 * MiB, 3)
    assert Limits.from_config(AgentConfig()) == Limits()  # the defaults agree


def test_limits_log_and_debounce_settings_come_from_the_file_and_the_environment(tmp_path: Path) -> None:
    toml = tmp_path / "agent.toml"
    toml.write_text("[agent]\nself_limit_rss_mib = 80\nself_limit_cpu_percent = 2.5\nlog_max_bytes = 1048576\n"
                    "install_watch_quiet_seconds = 1\n", encoding="utf-8")
    config = load_config(toml, environ={"COUNTERGUARD_AGENT_SELF_LIMIT_RSS_MIB": "90",
                                        "COUNTERGUARD_AGENT_LOG_BACKUP_COUNT": "7"}, default_file=NO_FILE)
    assert (config.self_limit_rss_mib, config.self_limit_cpu_percent) == (90, 2.5)
    assert (config.log_max_bytes, config.log_backup_count, config.install_watch_quiet_seconds) == (MiB, 7, 1)
    for environ, message in [
        ({"COUNTERGUARD_AGENT_LOG_BACKUP_COUNT": "0"}, "field 'log_backup_count': must be at least 1"),
        ({"COUNTERGUARD_AGENT_SELF_LIMIT_HARD_RSS_FACTOR": "0.5"}, "field 'self_limit_hard_rss_factor': must be at least 1"),
        ({"COUNTERGUARD_AGENT_INSTALL_WATCH_QUIET_SECONDS": "9"},
         "field 'install_watch_quiet_seconds': must not exceed install_watch_max_delay_seconds"),
        ({"COUNTERGUARD_AGENT_SELF_LIMIT_RSS_MIB": "lots"}, "$COUNTERGUARD_AGENT_SELF_LIMIT_RSS_MIB: field"),
    ]:
        with pytest.raises(ConfigError, match=re.escape(message)):
            load_config(environ=environ, default_file=NO_FILE)


# ------------------------------------------------------------------------------ the watch


class Readings:
    """A settable reading and clock."""

    def __init__(self) -> None:
        self.usage = Usage(1.0, 50 * MiB)
        self.now = 500.0

    def read(self) -> Usage:
        return self.usage

    def monotonic(self) -> float:
        return self.now


def make_watch(tmp_path: Path, readings: Readings, clock, limits: Limits = LIMITS,
               ) -> tuple[SelfLimitWatch, list[Health], list[str]]:
    queued: list[Health] = []
    restarts: list[str] = []
    watch = SelfLimitWatch(limits, interval=10, status_path=tmp_path / "status.json", enqueue=queued.append,
                           restart=lambda: restarts.append("restart"), read=readings.read,
                           monotonic=readings.monotonic, clock=clock)
    return watch, queued, restarts


def test_the_watch_queues_logs_writes_its_status_and_asks_for_the_restart(
        tmp_path: Path, clock, caplog: pytest.LogCaptureFixture) -> None:
    readings = Readings()
    watch, queued, restarts = make_watch(tmp_path, readings, clock)
    assert watch.check() is None
    status = json.loads((tmp_path / "status.json").read_text())
    assert status["pid"] == os.getpid() and status["shed"] == [] and status["rss_bytes"] == 50 * MiB
    assert status["limits"] == {"cpu_percent": 5, "rss_bytes": 120 * MiB, "hard_rss_bytes": 180 * MiB}

    readings.usage, readings.now = Usage(3.0, 130 * MiB), readings.now + 10
    clock.advance(seconds=10)
    with caplog.at_level(logging.WARNING, logger="agent.selflimit"):
        watch.check()
    assert [m for m in caplog.messages if "self-limit" in m] == [
        "self-limit shed shed=foreground,software_rescan: RSS 130.0 MiB, limit 120.0 MiB"]
    assert [f.action for f in queued] == [Health.ACTION_SHED]
    assert watch.shed_steps == {"foreground poll", "software scan"}
    status = json.loads((tmp_path / "status.json").read_text())
    assert status["shed"] == ["foreground", "software_rescan"] and status["uptime_seconds"] == 10
    assert status["cpu_percent_since_start"] == pytest.approx(20)  # 2 s of CPU in 10 s

    for _ in range(3):
        readings.now += 10
        watch.check()
    assert [f.action for f in queued] == [Health.ACTION_SHED, Health.ACTION_RESTART] and restarts == ["restart"]


def test_the_restart_is_asked_for_even_when_the_outbox_fails(tmp_path: Path, clock) -> None:
    readings = Readings()
    readings.usage = Usage(1.0, 200 * MiB)

    def broken(_fact: Health) -> None:
        raise OSError("disk full")

    restarts: list[str] = []
    watch = SelfLimitWatch(LIMITS, interval=10, status_path=tmp_path / "status.json", enqueue=broken,
                           restart=lambda: restarts.append("restart"), read=readings.read,
                           monotonic=readings.monotonic, clock=clock)
    watch.check()
    readings.now += 10
    watch.check()
    assert restarts == ["restart"]


def test_status_reads_fresh_stale_and_missing_files(tmp_path: Path) -> None:
    readings = Readings()
    watch, _, _ = make_watch(tmp_path, readings, utc_now)  # the real clock: compared with real process start times
    watch.check()
    path = tmp_path / "status.json"
    written = dt.datetime.fromisoformat(json.loads(path.read_text())["written_at"])
    fresh = read_status(path, written + dt.timedelta(seconds=20))
    assert fresh["running"] and not fresh["stale"] and fresh["age_seconds"] == 20
    lines = describe(fresh)
    assert lines[0].startswith(f"agent:         running, pid {os.getpid()}")
    assert lines[1].startswith("resources:     RSS 50.0 MiB (limit 120 MiB); CPU 0.00 % of one core since start")
    assert lines[2] == "shed work:     none"

    stale = read_status(path, written + dt.timedelta(minutes=5))
    assert not stale["running"] and stale["stale"]
    assert describe(stale)[0].startswith("agent:         not running (it stopped writing its status; last status")
    data = json.loads(path.read_text())
    path.write_text(json.dumps({**data, "pid": 2**22 + 12345}))  # above any pid_max: no such process
    assert describe(read_status(path, written))[0].startswith("agent:         not running (its process is gone")
    path.write_text("{half")
    assert "unreadable" in read_status(path, written)["reason"]
    assert "only a running agent" in describe(read_status(tmp_path / "absent.json", written))[0]


# ------------------------------------------------------------------------------ in the service


def held(controller) -> list[facts_pb2.Fact]:
    return [controller.servicer.held[s] for s in sorted(controller.servicer.held)]


def wait_for(condition, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting for the agent"
        time.sleep(0.05)


def deltas(controller) -> list[facts_pb2.SoftwareDelta]:
    return [f.software_delta for f in held(controller) if f.WhichOneof("kind") == "software_delta"]


def test_shed_work_runs_only_when_asked_and_resumes_when_restored(
        agent_config: AgentConfig, controller, enrolled, clock, tmp_path: Path) -> None:
    """The install watcher's rescans go on while shed; the scheduled rescan (the only one that sees a
    package's file list rewritten: its install date changes) waits until the work is restored."""
    root = tmp_path / "root"
    (root / "apps").mkdir(parents=True)
    (root / "dpkg/info").mkdir(parents=True)
    (root / "dpkg/status").write_text("Package: mines\nStatus: install ok installed\nVersion: 1\n")
    (root / "dpkg/info/mines.list").write_text("/usr/games/mines\n")
    roots = dataclasses.replace(roots_for(agent_config), application_dirs=(root / "apps",),
                                dpkg_status=root / "dpkg/status", dpkg_info=root / "dpkg/info",
                                flatpak_dirs=(), snap_dir=root / "snap", opt_dirs=())
    config = dataclasses.replace(agent_config, software_scan_interval_seconds=0.3, report_interval_seconds=0.2,
                                 install_watch_quiet_seconds=0.3, install_watch_max_delay_seconds=1)
    service = AgentService(config, clock=clock, roots=roots)
    readings = Readings()
    readings.usage = Usage(1.0, 130 * MiB)  # over the limit from the first check
    limits = dataclasses.replace(LIMITS, restore_after=0.5, restart_checks=10**6)
    service.self_limit = SelfLimitWatch(limits, interval=0.1,
                                        status_path=config.status_path, enqueue=service._enqueue,
                                        restart=lambda: None, read=readings.read, monotonic=time.monotonic)
    thread = threading.Thread(target=service.run)
    thread.start()
    try:
        wait_for(lambda: any(f.agent_health.action == Health.ACTION_SHED for f in held(controller)))
        (root / "apps/mines.desktop").write_text("[Desktop Entry]\nType=Application\nName=Mines\nExec=mines\n")
        wait_for(lambda: [i.name for d in deltas(controller) for i in d.added] == ["mines.desktop"])
        os.utime(root / "dpkg/info/mines.list", (1e9, 1e9))  # only a scheduled rescan sees this
        time.sleep(1.5)  # five scheduled rescans' worth
        assert [d for d in deltas(controller) if d.changed] == []

        readings.usage = Usage(1.0, 60 * MiB)
        wait_for(lambda: any(f.agent_health.action == Health.ACTION_RESTORED for f in held(controller)))
        wait_for(lambda: [i.name for d in deltas(controller) for i in d.changed] == ["mines"])
    finally:
        service.stop()
        thread.join(timeout=20)
        service.close()
    assert not service.restart_requested


def test_the_optional_work_names_steps_the_service_has(agent_config: AgentConfig, enrolled, clock) -> None:
    service = AgentService(agent_config, clock=clock)
    try:
        steps = {name for name, _, _ in service._tasks()}
    finally:
        service.close()
    assert set(OPTIONAL_WORK.values()) <= steps and set(OPTIONAL_WORK) == {"foreground", "software_rescan"}


# ------------------------------------------------------------------------------ priority


def nice_after_lowering(*prefix: str) -> int:
    code = "from agent.selflimit import lower_priority; lower_priority(); import os; print(os.nice(0))"
    result = subprocess.run([*prefix, sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            cwd=REPO)
    return int(result.stdout)


def test_the_agent_lowers_its_priority_to_nice_10_but_never_raises_it() -> None:
    assert nice_after_lowering() == 10
    assert nice_after_lowering("nice", "-n", "15") == 15  # already lower (systemd's Nice=): left alone
