"""The service with the real collectors on this machine, reporting to a real gRPC server on 127.0.0.1."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from agent.cli import main
from agent.config import AgentConfig
from agent.errors import DeliveryError
from agent.service import BOOT_TIME, AgentService, Intervals, inventory_digest, roots_for
from protos.counterguard.v1 import agent_pb2, facts_pb2
from tests.agent.x11 import XServer, xserver_fixture

xserver = xserver_fixture  # a real Xvfb for the tests that ask for it

REPO = Path(__file__).resolve().parents[2]
STARTUP_KINDS = {"inventory", "software_snapshot", "process_snapshot", "session_snapshot"}


def power_kinds(facts: list[facts_pb2.Fact]) -> list[int]:
    return [f.power.kind for f in facts if f.WhichOneof("kind") == "power"]


def held(controller) -> list[facts_pb2.Fact]:
    return [controller.servicer.held[s] for s in sorted(controller.servicer.held)]


def wait_for(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting for the agent"
        time.sleep(0.05)


def test_intervals_take_the_policys_non_zero_values() -> None:
    base = Intervals.from_config(AgentConfig())
    changed = base.with_policy(agent_pb2.AgentPolicy(heartbeat_interval_seconds=30, report_interval_seconds=0))
    assert changed == dataclasses.replace(base, heartbeat_interval=30.0)
    assert base.report_interval == 5 and base.inventory_interval == 3600


def test_the_inventory_digest_ignores_free_space_only() -> None:
    def snapshot(free: int, host: str = "counter-07") -> facts_pb2.InventorySnapshot:
        inventory = facts_pb2.InventorySnapshot(hostname=host)
        inventory.filesystems.add(mount_point="/", total_bytes=100, free_bytes=free)
        return inventory

    assert inventory_digest(snapshot(10)) == inventory_digest(snapshot(20))
    assert inventory_digest(snapshot(10)) != inventory_digest(snapshot(10, host="counter-08"))
    assert snapshot(10).filesystems[0].free_bytes == 10  # the caller's snapshot is left alone


def test_run_once_delivers_the_start_up_facts_in_order(agent_config: AgentConfig, controller, enrolled, clock) -> None:
    service = AgentService(agent_config, clock=clock)
    try:
        delivered = service.run_once()
        assert service.outbox.depth() == 0
    finally:
        service.close()
    facts = held(controller)
    assert delivered == len(facts) >= 6
    assert STARTUP_KINDS <= {f.WhichOneof("kind") for f in facts}
    assert power_kinds(facts) == [facts_pb2.PowerEvent.KIND_BOOT, facts_pb2.PowerEvent.KIND_HEARTBEAT]
    assert facts[0].power.kind == facts_pb2.PowerEvent.KIND_BOOT and facts[0].power.HasField("boot_time")
    sent = [f.sequence for _, request in controller.servicer.reports for f in request.facts]
    assert sent == sorted(set(sent)) and sent[0] == 1  # strictly increasing, nothing twice
    inventory = next(f.inventory for f in facts if f.WhichOneof("kind") == "inventory")
    assert inventory.hostname and facts[1].observed_at.ToDatetime() == clock().replace(tzinfo=None)


def test_a_boot_is_reported_once_and_again_after_a_reboot(agent_config: AgentConfig, controller, enrolled, clock) -> None:
    for _ in range(2):
        service = AgentService(agent_config, clock=clock)
        service.run_once()
        service.close()
    facts = held(controller)
    assert power_kinds(facts).count(facts_pb2.PowerEvent.KIND_BOOT) == 1
    assert [f.WhichOneof("kind") for f in facts].count("inventory") == 2  # always at start
    service = AgentService(agent_config, clock=clock)
    service.outbox.set_meta(BOOT_TIME, "2026-10-01T00:00:00+00:00")  # as if the last run was an earlier boot
    service.run_once()
    service.close()
    assert power_kinds(held(controller)).count(facts_pb2.PowerEvent.KIND_BOOT) == 2


def test_the_inventory_is_queued_only_when_changed_or_a_day_old(agent_config: AgentConfig, controller, enrolled, clock) -> None:
    service = AgentService(agent_config, clock=clock)
    try:
        service.run_once()
        service.check_inventory()
        assert service.outbox.depth() == 0
        clock.advance(hours=23)
        service.check_inventory()
        assert service.outbox.depth() == 0
        clock.advance(hours=1)
        service.check_inventory()
        assert [f.WhichOneof("kind") for f in service.outbox.head(10, 1 << 24)] == ["inventory"]
        service.outbox.set_meta("inventory_hash", "something else")
        service.outbox.acknowledge(service.outbox.last_sequence())
        service.check_inventory()
        assert service.outbox.depth() == 1
    finally:
        service.close()


def test_commands_and_a_new_policy_are_carried_out(agent_config: AgentConfig, controller, enrolled, clock) -> None:
    fake = controller.servicer
    fake.commands = [agent_pb2.Command(kind=agent_pb2.Command.KIND_SEND_FULL_INVENTORY),
                     agent_pb2.Command(kind=agent_pb2.Command.KIND_SEND_FULL_SOFTWARE)]
    fake.policy_version = "2026-11-01.3"
    fake.policy = agent_pb2.AgentPolicy(heartbeat_interval_seconds=30, process_poll_interval_seconds=5)
    service = AgentService(agent_config, clock=clock)
    try:
        service.run_once()
        assert service.policy_version == "2026-11-01.3"
        assert (service.intervals.heartbeat_interval, service.intervals.process_poll_interval) == (30, 5)
        assert service.intervals.report_interval == agent_config.report_interval_seconds
    finally:
        service.close()
    kinds = [f.WhichOneof("kind") for f in held(controller)]
    assert kinds.count("inventory") == 2 and kinds.count("software_snapshot") == 2
    assert fake.policy_fetches == [""]  # fetched once, when the version first changed


def test_run_once_fails_clearly_when_the_controller_is_down(agent_config: AgentConfig, controller, enrolled, clock) -> None:
    controller.stop()
    config = dataclasses.replace(agent_config, run_once_timeout_seconds=1.5, backoff_initial_seconds=0.1,
                                 backoff_max_seconds=0.5)
    service = AgentService(config, clock=clock)
    try:
        with pytest.raises(DeliveryError, match=r"facts not delivered to 127\.0\.0\.1:\d+ within 1\.5s \(UNAVAILABLE"):
            service.run_once()
        assert service.outbox.depth() >= 6  # kept for later
    finally:
        service.close()


def test_the_service_loop_reports_until_stopped(agent_config: AgentConfig, controller, enrolled, clock) -> None:
    config = dataclasses.replace(agent_config, report_interval_seconds=0.2, heartbeat_interval_seconds=0.2,
                                 process_poll_interval_seconds=0.1, session_poll_interval_seconds=0.1)
    service = AgentService(config, clock=clock)
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(service.run()))
    thread.start()
    try:
        wait_for(lambda: power_kinds(held(controller)).count(facts_pb2.PowerEvent.KIND_HEARTBEAT) >= 4)
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.5)"])  # a program starts
        wait_for(lambda: any(f.process_started.process.pid == child.pid for f in held(controller)))
        child.wait()
        wait_for(lambda: any(f.process_stopped.pid == child.pid for f in held(controller)))
    finally:
        service.stop()
        thread.join(timeout=20)
        service.close()
    assert result == [0]
    assert {f.WhichOneof("kind") for f in held(controller)} >= STARTUP_KINDS
    assert facts_pb2.PowerEvent.KIND_SHUTDOWN not in power_kinds(held(controller))  # the system is not stopping


def test_the_running_loop_follows_the_policys_intervals(agent_config: AgentConfig, controller, enrolled, clock) -> None:
    fake = controller.servicer
    fake.policy_version = "fast-heartbeats"
    fake.policy = agent_pb2.AgentPolicy(heartbeat_interval_seconds=1, report_interval_seconds=1)
    config = dataclasses.replace(agent_config, heartbeat_interval_seconds=3600)
    service = AgentService(config, clock=clock)
    thread = threading.Thread(target=service.run)
    thread.start()
    try:
        wait_for(lambda: power_kinds(held(controller)).count(facts_pb2.PowerEvent.KIND_HEARTBEAT) >= 3)
    finally:
        service.stop()
        thread.join(timeout=20)
        service.close()
    assert service.intervals.heartbeat_interval == 1


def test_a_stopping_system_gets_its_shutdown_event_out(agent_config: AgentConfig, controller, enrolled, clock,
                                                      tmp_path: Path) -> None:
    run = tmp_path / "run"
    (run / "systemd" / "system").mkdir(parents=True)
    (run / "nologin").touch()  # systemd creates it when shutdown begins
    roots = dataclasses.replace(roots_for(agent_config), run=run)
    service = AgentService(agent_config, clock=clock, roots=roots)
    thread = threading.Thread(target=service.run)
    thread.start()
    try:
        wait_for(lambda: "process_snapshot" in {f.WhichOneof("kind") for f in held(controller)})
    finally:
        service.stop()
        thread.join(timeout=20)
        service.close()
    kinds = power_kinds(held(controller))
    assert kinds[-1] == facts_pb2.PowerEvent.KIND_SHUTDOWN and held(controller)[-1].power.HasField("boot_time")


def test_sigterm_stops_the_service_with_exit_code_0(agent_config: AgentConfig, controller, enrolled, tmp_path: Path) -> None:
    env = {**os.environ, "COUNTERGUARD_AGENT_REPORT_INTERVAL_SECONDS": "0.2", "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-c", "from agent.cli import main; raise SystemExit(main())",
               "--state-dir", str(agent_config.state_dir), "run"]
    process = subprocess.Popen(command, env=env, cwd=tmp_path, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: "process_snapshot" in {f.WhichOneof("kind") for f in held(controller)}, timeout=30)
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
    finally:
        process.kill()
    assert process.returncode == 0, stderr
    assert "stopping on signal=SIGTERM" in stderr and "agent stopped" in stderr and "Traceback" not in stderr


def test_run_once_and_status_commands(agent_config: AgentConfig, controller, enrolled, capsys: pytest.CaptureFixture[str]) -> None:
    state = ["--state-dir", str(agent_config.state_dir)]
    assert main([*state, "run", "--once"]) == 0
    assert capsys.readouterr().out.startswith("delivered ")
    assert main([*state, "status", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["enrolled"] and report["agent_id"] == controller.servicer.agent_id
    assert report["controller"] == f"127.0.0.1:{controller.report_port}"
    assert report["outbox"]["depth"] == 0 and report["outbox"]["last_report_at"]
    assert report["outbox"]["next_sequence"] == max(controller.servicer.held) + 1
    assert main([*state, "status"]) == 0
    text = capsys.readouterr().out
    assert f"yes, as {controller.servicer.agent_id}" in text and "0 facts waiting" in text


def test_status_and_run_before_enrolment(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    state = ["--state-dir", str(tmp_path / "nowhere")]
    assert main([*state, "status"]) == 0
    assert "enrolled:      no" in capsys.readouterr().out
    assert main([*state, "run", "--once"]) == 1
    assert capsys.readouterr().err.startswith("error: this agent is not enrolled")
    assert not (tmp_path / "nowhere").exists()  # neither created anything


def test_roots_take_the_configured_application_dirs_and_dpkg_status() -> None:
    config = AgentConfig(extra_application_dirs=(Path("/opt/gov/apps"),), dpkg_status=Path("/srv/dpkg/status"))
    roots = roots_for(config)
    assert roots.application_dirs[-1] == Path("/opt/gov/apps") and len(roots.application_dirs) > 1
    assert roots.dpkg_status == Path("/srv/dpkg/status")
    assert roots_for(AgentConfig()).dpkg_status == Path("/var/lib/dpkg/status")


# ------------------------------------------------- usage rules: activity, foreground, removable, antivirus


def test_intervals_take_the_policys_usage_settings_and_keep_the_agents_own() -> None:
    base = Intervals.from_config(AgentConfig())
    assert (base.activity_poll_interval, base.idle_threshold, base.foreground_poll_interval) == (5, 300, 2)
    assert (base.removable_poll_interval, base.antivirus_check_interval) == (2, 600)
    policy = agent_pb2.AgentPolicy(activity_poll_interval_seconds=1, idle_threshold_seconds=60,
                                   foreground_poll_interval_seconds=3, antivirus_check_interval_seconds=30)
    assert base.with_policy(policy) == dataclasses.replace(
        base, activity_poll_interval=1.0, idle_threshold=60.0, foreground_poll_interval=3.0,
        antivirus_check_interval=30.0)  # the removable poll has no policy field: the agent's own stays


def kinds_of(controller, kind: str) -> list:
    return [getattr(f, kind) for f in held(controller) if f.WhichOneof("kind") == kind]


def fake_usb_machine(root: Path) -> None:
    """A /sys with one USB stick (sdb), a /proc with the real boot time and an empty mount table."""
    usb = root / "sys/devices/pci0000:00/0000:00:14.0/usb1/1-4"
    scsi = usb / "1-4:1.0/host6/target6:0:0/6:0:0:0"
    scsi.mkdir(parents=True)
    for name, value in (("idVendor", "0951"), ("idProduct", "1666"), ("manufacturer", "Kingston"),
                        ("product", "DataTraveler 3.0"), ("serial", "E0D55EA573E1")):
        (usb / name).write_text(value + "\n")
    block = root / "sys/block/sdb"
    block.mkdir(parents=True)
    (block / "size").write_text("60555264\n")
    (block / "removable").write_text("1\n")
    (block / "device").symlink_to(scsi)
    (root / "proc/self").mkdir(parents=True)
    (root / "proc/stat").write_text(Path("/proc/stat").read_text())
    (root / "proc/self/mounts").write_text("sysfs /sys sysfs rw 0 0\n")


def test_a_mount_wakes_the_service_and_reaches_the_controller_within_seconds(
        agent_config: AgentConfig, controller, enrolled, clock, tmp_path: Path) -> None:
    fake_usb_machine(tmp_path / "root")
    media = tmp_path / "media"
    media.mkdir()
    roots = dataclasses.replace(roots_for(agent_config), sysfs=tmp_path / "root/sys", procfs=tmp_path / "root/proc",
                                mount_roots=(media,))
    config = dataclasses.replace(agent_config, removable_poll_interval_seconds=3600, report_interval_seconds=0.5)
    service = AgentService(config, clock=clock, roots=roots)
    thread = threading.Thread(target=service.run)
    thread.start()
    try:
        wait_for(lambda: [(s.action, s.device, s.serial) for s in kinds_of(controller, "removable_storage")]
                 == [(facts_pb2.RemovableStorage.ACTION_ATTACHED, "sdb", "E0D55EA573E1")])
        with (tmp_path / "root/proc/self/mounts").open("a") as table:
            table.write(f"/dev/sdb1 {media}/KINGSTON vfat rw,nosuid,nodev 0 0\n")
        started = time.monotonic()
        (media / "KINGSTON").mkdir()  # what udisks does just before it mounts; the poll is an hour away
        wait_for(lambda: len(kinds_of(controller, "removable_storage")) == 2, timeout=5)
        assert time.monotonic() - started < 5
    finally:
        service.stop()
        thread.join(timeout=20)
        service.close()
    mounted = kinds_of(controller, "removable_storage")[-1]
    assert (mounted.action, mounted.device, mounted.mount_point) == (
        facts_pb2.RemovableStorage.ACTION_MOUNTED, "sdb1", f"{media}/KINGSTON")
    assert (mounted.vendor_id, mounted.product, mounted.fs_type) == ("0951", "DataTraveler 3.0", "vfat")


def test_the_policy_turns_on_the_foreground_probe_and_sets_threshold_and_antivirus(
        agent_config: AgentConfig, controller, enrolled, clock, xserver: XServer,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A real X server: the service finds it through DISPLAY/XAUTHORITY, as when run by hand in a session."""
    for name, value in xserver.probe_environ.items():
        monkeypatch.setenv(name, value)
    window, _ = xserver.window("淘宝网 - 购物")
    xserver.run("xdotool", "windowfocus", "--sync", str(window))
    xserver.run("xdotool", "mousemove", "10", "10")
    config = dataclasses.replace(agent_config, report_interval_seconds=0.3, heartbeat_interval_seconds=0.3,
                                 activity_poll_interval_seconds=0.3, foreground_poll_interval_seconds=0.3)
    service = AgentService(config, clock=clock)
    thread = threading.Thread(target=service.run)
    thread.start()
    fake = controller.servicer
    try:
        wait_for(lambda: len(kinds_of(controller, "activity")) == 1)
        assert kinds_of(controller, "activity")[0].state == facts_pb2.InputActivity.STATE_ACTIVE
        time.sleep(1.0)
        assert kinds_of(controller, "foreground") == []  # off until the policy turns it on
        fake.policy = agent_pb2.AgentPolicy(
            foreground_enabled=True, idle_threshold_seconds=1,
            title_patterns=[agent_pb2.TitlePattern(id="taobao", category="shopping", title_contains=["淘宝"])],
            antivirus=[agent_pb2.AntivirusProbe(name="ClamAV", process_names=["clamd"], packages=["clamav-daemon"])])
        fake.policy_version = "usage-1"
        wait_for(lambda: kinds_of(controller, "foreground") and kinds_of(controller, "antivirus"))
        wait_for(lambda: len(kinds_of(controller, "activity")) >= 2)  # a second without input is idle now
        xserver.run("xdotool", "mousemove", "300", "200")
        wait_for(lambda: len(kinds_of(controller, "activity")) >= 3)
    finally:
        service.stop()
        thread.join(timeout=20)
        service.close()
    [seen] = kinds_of(controller, "foreground")
    assert (seen.category, seen.pattern_id, seen.executable, seen.title) == ("shopping", "taobao", "xmessage", "")
    states = [a.state for a in kinds_of(controller, "activity")]
    assert states[:3] == [facts_pb2.InputActivity.STATE_ACTIVE, facts_pb2.InputActivity.STATE_IDLE,
                          facts_pb2.InputActivity.STATE_ACTIVE]
    [antivirus] = kinds_of(controller, "antivirus")
    assert [p.name for p in antivirus.products] == ["ClamAV"]
