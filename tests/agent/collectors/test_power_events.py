"""Boot time, power events and the shutdown probe against a fake /proc and /run."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

import pytest

from agent.collectors.power import (
    BootTimeUnavailable,
    boot_event,
    boot_time,
    heartbeat,
    shutdown_event,
    system_is_stopping,
)
from protos.counterguard.v1 import facts_pb2

if TYPE_CHECKING:
    from conftest import FakeSystem

BOOTED = dt.datetime(2026, 11, 2, 0, 41, 7, tzinfo=dt.UTC)
NOW = dt.datetime(2026, 11, 2, 9, 0, tzinfo=dt.UTC)


def test_boot_time_from_proc_stat_is_aware_utc(fake: FakeSystem) -> None:
    fake.proc_stat(int(BOOTED.timestamp()))
    booted = boot_time(fake.roots)
    assert booted == BOOTED and booted.tzinfo == dt.UTC


def test_events_carry_their_kind_and_the_boot_time(fake: FakeSystem) -> None:
    fake.proc_stat(int(BOOTED.timestamp()))
    events = [boot_event(fake.roots), heartbeat(fake.roots), shutdown_event(fake.roots)]
    assert [e.kind for e in events] == [
        facts_pb2.PowerEvent.KIND_BOOT, facts_pb2.PowerEvent.KIND_HEARTBEAT, facts_pb2.PowerEvent.KIND_SHUTDOWN,
    ]
    assert all(e.boot_time.ToDatetime(tzinfo=dt.UTC) == BOOTED for e in events)


def test_unknown_boot_time_raises_a_clear_error_but_events_are_still_made(fake: FakeSystem) -> None:
    fake.write("proc/stat", "cpu  1 2 3\nctxt 4\n")
    with pytest.raises(BootTimeUnavailable, match="btime"):
        boot_time(fake.roots)
    event = heartbeat(fake.roots)
    assert event.kind == facts_pb2.PowerEvent.KIND_HEARTBEAT and not event.HasField("boot_time")


def test_real_boot_time_is_in_the_past() -> None:
    assert boot_time() < dt.datetime.now(dt.UTC)


def systemd(fake: FakeSystem) -> None:
    (fake.roots.run / "systemd" / "system").mkdir(parents=True)


def stopping(fake: FakeSystem) -> bool:
    return system_is_stopping(fake.roots, lambda: NOW)


def test_a_running_system_is_not_stopping(fake: FakeSystem) -> None:
    systemd(fake)
    assert not stopping(fake)


def test_a_due_scheduled_shutdown_means_stopping(fake: FakeSystem) -> None:
    systemd(fake)
    due = int((NOW - dt.timedelta(seconds=5)).timestamp() * 1_000_000)
    fake.write("run/systemd/shutdown/scheduled", f"USEC={due}\nWARN_WALL=1\nMODE=reboot\n")
    assert stopping(fake)


def test_a_shutdown_scheduled_for_later_is_not_stopping_yet(fake: FakeSystem) -> None:
    systemd(fake)
    later = int((NOW + dt.timedelta(minutes=30)).timestamp() * 1_000_000)
    fake.write("run/systemd/shutdown/scheduled", f"USEC={later}\nMODE=poweroff\n")
    assert not stopping(fake)


def test_a_scheduled_file_without_time_counts_as_due(fake: FakeSystem) -> None:
    systemd(fake)
    fake.write("run/systemd/shutdown/scheduled", "MODE=poweroff\n")
    assert stopping(fake)


def test_nologin_under_systemd_means_stopping(fake: FakeSystem) -> None:
    systemd(fake)
    fake.write("run/nologin", "System is going down.\n")
    assert stopping(fake)


def test_without_systemd_nothing_counts(fake: FakeSystem) -> None:
    fake.write("run/nologin", "System is going down.\n")
    fake.write("run/systemd/shutdown/scheduled", "MODE=poweroff\n")
    assert not stopping(fake)


def test_this_machine_is_not_stopping() -> None:
    assert system_is_stopping() is False
