"""The process collector: which programs start and stop, without listing every process on every poll.

A process is identified by ``(pid, start time)``, so a PID the kernel hands out again is a different
process. A poll lists the PIDs (one directory read) and reads only the new ones in full (name, executable,
user, parent, start time, through one ``psutil`` ``oneshot``); a PID already known is checked by set
membership alone. The consequence: a PID that dies and is reused between two polls goes unnoticed until
the new process stops. Kernel threads are not programs and are never reported.

psutil is itself the platform layer here, so this module has no per-platform back end.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable

import psutil

from agent.clock import Clock, utc_now
from agent.collectors._files import timestamp
from protos.counterguard.v1 import facts_pb2

__all__ = ["ProcessReader", "ProcessTracker", "is_kernel_thread", "read_process"]

ProcessReader = Callable[[int], facts_pb2.ProcessInfo | None]
"""Reads one process in full; ``None`` when it is gone. Fields it may not read stay empty."""

ProcessEvent = facts_pb2.ProcessStarted | facts_pb2.ProcessStopped

_ATTRS = ["name", "exe", "username", "ppid", "create_time"]
_KTHREADD_PID = 2


def read_process(pid: int) -> facts_pb2.ProcessInfo | None:
    """One process read through psutil; attributes psutil may not read (access denied, zombie) stay empty."""
    try:
        values = psutil.Process(pid).as_dict(attrs=_ATTRS, ad_value=None)
    except psutil.NoSuchProcess:
        return None
    except psutil.AccessDenied:  # not even the start time is readable: report the PID alone
        return facts_pb2.ProcessInfo(pid=pid)
    info = facts_pb2.ProcessInfo(
        pid=pid,
        ppid=values["ppid"] or 0,
        name=values["name"] or "",
        executable=values["exe"] or "",
        username=values["username"] or "",
    )
    if values["create_time"] is not None:
        info.started_at.CopyFrom(timestamp(dt.datetime.fromtimestamp(values["create_time"], dt.UTC)))
    return info


def is_kernel_thread(info: facts_pb2.ProcessInfo) -> bool:
    """``kthreadd`` (PID 2) and its children without an executable are kernel threads, not programs."""
    return info.pid == _KTHREADD_PID or (info.ppid == _KTHREADD_PID and not info.executable)


class ProcessTracker:
    """Remembers the processes it has seen and reports the ones that started or stopped since."""

    def __init__(
        self,
        clock: Clock = utc_now,
        *,
        reader: ProcessReader = read_process,
        list_pids: Callable[[], Iterable[int]] = psutil.pids,
    ) -> None:
        self._clock = clock
        self._read = reader
        self._list_pids = list_pids
        # Every PID of the last listing; None for those not reported (kernel threads, vanished while read).
        self._known: dict[int, facts_pb2.ProcessInfo | None] = {}

    def snapshot(self) -> facts_pb2.ProcessSnapshot:
        """Every program running now (read in full); later polls report changes against it."""
        self._known = {pid: self._read_new(pid) for pid in self._list_pids()}
        return facts_pb2.ProcessSnapshot(processes=self._reported(self._known.values()))

    def poll(self) -> list[ProcessEvent]:
        """Stops, then starts, since the previous call. Before any snapshot, every program counts as started."""
        pids = set(self._list_pids())
        gone = [info for pid, info in self._known.items() if pid not in pids]
        new = {pid: self._read_new(pid) for pid in sorted(pids) if pid not in self._known}
        self._known = {pid: info for pid, info in self._known.items() if pid in pids} | new
        stopped = [
            facts_pb2.ProcessStopped(pid=info.pid, name=info.name, started_at=info.started_at)
            for info in self._reported(gone)
        ]
        return [*stopped, *(facts_pb2.ProcessStarted(process=info) for info in self._reported(new.values()))]

    def _read_new(self, pid: int) -> facts_pb2.ProcessInfo | None:
        """A PID seen for the first time, read in full; ``None`` when it is not to be reported."""
        info = self._read(pid)
        if info is None or is_kernel_thread(info):
            return None
        if not info.HasField("started_at"):
            info.started_at.CopyFrom(timestamp(self._clock()))  # no start time readable: first seen now
        return info

    @staticmethod
    def _reported(infos: Iterable[facts_pb2.ProcessInfo | None]) -> list[facts_pb2.ProcessInfo]:
        """The processes worth reporting, in start order."""
        found = [info for info in infos if info is not None]
        return sorted(found, key=lambda info: (info.started_at.seconds, info.started_at.nanos, info.pid))
