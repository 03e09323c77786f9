"""ProcessTracker: real processes started and killed, and a counting reader at the psutil boundary."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess
import time

import psutil
import pytest

from agent.collectors.processes import ProcessTracker, read_process
from protos.counterguard.v1 import facts_pb2

CLOCK_NOW = dt.datetime(2026, 11, 2, 1, 30, tzinfo=dt.UTC)


def started(events: list[facts_pb2.ProcessStarted | facts_pb2.ProcessStopped]) -> dict[int, facts_pb2.ProcessInfo]:
    return {e.process.pid: e.process for e in events if isinstance(e, facts_pb2.ProcessStarted)}


def stopped(events: list[facts_pb2.ProcessStarted | facts_pb2.ProcessStopped]) -> dict[int, facts_pb2.ProcessStopped]:
    return {e.pid: e for e in events if isinstance(e, facts_pb2.ProcessStopped)}


def test_a_real_process_is_seen_starting_and_stopping() -> None:
    tracker = ProcessTracker()
    snapshot = tracker.snapshot()
    assert os.getpid() in {p.pid for p in snapshot.processes}
    process = subprocess.Popen(["sleep", "30"])
    try:
        events = tracker.poll()
        info = started(events)[process.pid]
        assert info.name == "sleep"
        assert info.executable == os.path.realpath(shutil.which("sleep") or "")
        assert info.ppid == os.getpid()
        assert info.username == psutil.Process().username()
        born = info.started_at.ToDatetime(tzinfo=dt.UTC)
        assert abs(born.timestamp() - time.time()) < 60
        assert process.pid not in stopped(events)
        assert process.pid not in started(tracker.poll())  # known now: not reported again
    finally:
        process.kill()
        process.wait()
    gone = stopped(tracker.poll())[process.pid]
    assert gone.name == "sleep" and gone.started_at == info.started_at


def test_a_zombie_keeps_what_is_readable() -> None:
    child = subprocess.Popen(["true"])
    deadline = time.monotonic() + 10
    while psutil.Process(child.pid).status() != psutil.STATUS_ZOMBIE and time.monotonic() < deadline:
        time.sleep(0.01)
    try:
        info = read_process(child.pid)  # not reaped yet: a zombie, whose executable cannot be read
        assert info is not None
        assert info.pid == child.pid and info.name == "true" and info.executable == ""
        assert info.HasField("started_at")
    finally:
        child.wait()


def test_a_process_that_is_gone_reads_as_none() -> None:
    child = subprocess.Popen(["true"])
    child.wait()
    assert read_process(child.pid) is None


class FakeProcesses:
    """A process table at the psutil boundary that counts full reads."""

    def __init__(self) -> None:
        self.table: dict[int, facts_pb2.ProcessInfo | None] = {}
        self.reads: list[int] = []

    def add(self, pid: int, name: str, *, ppid: int = 1, exe: str | None = None, started: int = 1_000) -> None:
        self.table[pid] = facts_pb2.ProcessInfo(
            pid=pid, ppid=ppid, name=name, executable=f"/usr/bin/{name}" if exe is None else exe,
            started_at={"seconds": started},
        )

    def pids(self) -> list[int]:
        return list(self.table)

    def read(self, pid: int) -> facts_pb2.ProcessInfo | None:
        self.reads.append(pid)
        info = self.table.get(pid)
        return None if info is None else facts_pb2.ProcessInfo.FromString(info.SerializeToString())


@pytest.fixture
def procs() -> FakeProcesses:
    table = FakeProcesses()
    table.add(1, "systemd", ppid=0, exe="/usr/lib/systemd/systemd")
    table.add(2, "kthreadd", ppid=0, exe="")
    table.add(3, "rcu_gp", ppid=2, exe="")
    table.add(812, "lightdm")
    return table


def tracker_for(procs: FakeProcesses) -> ProcessTracker:
    return ProcessTracker(lambda: CLOCK_NOW, reader=procs.read, list_pids=procs.pids)


def test_known_pids_are_not_read_again(procs: FakeProcesses) -> None:
    tracker = tracker_for(procs)
    tracker.snapshot()
    assert sorted(procs.reads) == [1, 2, 3, 812]
    procs.reads.clear()
    for _ in range(3):
        assert tracker.poll() == []
    assert procs.reads == []
    procs.add(4242, "wps")
    events = tracker.poll()
    assert procs.reads == [4242]  # only the new PID is read in full
    assert [e.process.name for e in events if isinstance(e, facts_pb2.ProcessStarted)] == ["wps"]


def test_kernel_threads_are_neither_reported_nor_re_read(procs: FakeProcesses) -> None:
    tracker = tracker_for(procs)
    assert [p.name for p in tracker.snapshot().processes] == ["systemd", "lightdm"]
    procs.add(77, "kworker/0:1", ppid=2, exe="")
    assert tracker.poll() == []
    procs.reads.clear()
    del procs.table[77]
    assert tracker.poll() == []  # a kernel thread that was never reported never "stops"
    assert procs.reads == []


def test_a_reused_pid_is_a_stop_and_a_start(procs: FakeProcesses) -> None:
    tracker = tracker_for(procs)
    tracker.snapshot()
    del procs.table[812]
    assert [e.pid for e in tracker.poll() if isinstance(e, facts_pb2.ProcessStopped)] == [812]
    procs.add(812, "sol", started=5_000)
    events = tracker.poll()
    assert len(events) == 1
    assert [(p.pid, p.name, p.started_at.seconds) for p in started(events).values()] == [(812, "sol", 5_000)]


def test_stops_come_before_starts_and_carry_the_identity(procs: FakeProcesses) -> None:
    tracker = tracker_for(procs)
    tracker.snapshot()
    del procs.table[812]
    procs.add(900, "gnome-mines", started=2_000)
    first, second = tracker.poll()
    assert isinstance(first, facts_pb2.ProcessStopped) and isinstance(second, facts_pb2.ProcessStarted)
    assert (first.pid, first.name, first.started_at.seconds) == (812, "lightdm", 1_000)


def test_a_process_that_vanishes_while_read_is_skipped(procs: FakeProcesses) -> None:
    tracker = tracker_for(procs)
    tracker.snapshot()
    procs.table[5000] = None  # listed, but gone by the time it is read
    assert tracker.poll() == []
    del procs.table[5000]
    assert tracker.poll() == []  # and it does not "stop" either


def test_missing_start_time_is_taken_from_the_clock(procs: FakeProcesses) -> None:
    tracker = tracker_for(procs)
    tracker.snapshot()
    procs.table[6000] = facts_pb2.ProcessInfo(pid=6000, ppid=1, name="mystery")
    (event,) = tracker.poll()
    assert isinstance(event, facts_pb2.ProcessStarted)
    assert event.process.started_at.ToDatetime(tzinfo=dt.UTC) == CLOCK_NOW


def test_poll_before_snapshot_reports_every_program_as_started(procs: FakeProcesses) -> None:
    events = tracker_for(procs).poll()
    assert sorted(e.process.name for e in events if isinstance(e, facts_pb2.ProcessStarted)) == ["lightdm", "systemd"]


def test_a_process_denying_access_is_still_reported_by_pid(monkeypatch: pytest.MonkeyPatch) -> None:
    def denied(pid: int) -> psutil.Process:
        raise psutil.AccessDenied(pid)

    monkeypatch.setattr(psutil, "Process", denied)
    assert read_process(4321) == facts_pb2.ProcessInfo(pid=4321)
    tracker = ProcessTracker(lambda: CLOCK_NOW, list_pids=lambda: [4321])
    (info,) = tracker.snapshot().processes
    assert info.pid == 4321 and info.started_at.ToDatetime(tzinfo=dt.UTC) == CLOCK_NOW
