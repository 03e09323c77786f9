"""Time, the way the rules see it: corrected fact times, and the intervals built from facts.

Pure functions over stored facts, no database. Every interval is half-open ``[start, end)`` in
aware UTC datetimes.

**The agent's clock.** A fact carries the agent's ``observed_at`` and our ``received_at``. A fact
cannot arrive before it happened, so ``observed_at − received_at`` is the agent's clock offset minus
the delivery delay, and the freshest fact of a batch (sent seconds after it was observed) shows the
offset almost exactly, while older facts of a backlog only show a smaller number. The exact rule:

1. Facts received at the same instant form a batch; a batch's offset is the largest
   ``observed_at − received_at`` among its facts.
2. The agent's clock offset at a batch is the largest batch offset among the batches received
   within :data:`SKEW_NEIGHBOURHOOD` (one hour) either side of it, so one backlog batch does not
   hide the offset the fresh ones show (the minimum-delay filter NTP uses).
3. When that offset is more than :data:`SKEW_TOLERANCE` (five minutes) either way, every time the
   agent put into those facts (``observed_at``, process and session start times, boot times, scan
   times) is moved back by it; within the tolerance the agent's times are used as they are.

Identities never use corrected times: a process run is (pid, the start time exactly as the agent
reported it), so a better or worse estimate of the offset never changes which run a fact is about.

**Power.** Heartbeats become power-on intervals the ActivityWatch way: a heartbeat within the pulse
window (2.5 heartbeat intervals) of the previous one extends the interval; a longer gap, a different
boot time, a boot, a shutdown or a suspend ends it. A boot or resume starts one; a shutdown or
suspend closes one at its own time.

**Programs.** A run is a process from its start (``started_at``, else the first fact showing it)
to its stop, to a shutdown, to the last contact before a new boot or a new process list that no
longer has it; a run still open at the last fact ends, open, at the last contact.

**Activity.** An ACTIVE report starts a span for its user and session; the IDLE report that follows
ends it when the input stopped (its time minus the idle seconds it reports); a span still open ends,
open, at the last contact. Shutdown and boot end every span.
"""

from __future__ import annotations

import datetime as dt
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from google.protobuf.timestamp_pb2 import Timestamp

from controller.convert import timestamp_is_valid
from protos.counterguard.v1 import facts_pb2

SKEW_TOLERANCE = dt.timedelta(minutes=5)
SKEW_NEIGHBOURHOOD = dt.timedelta(hours=1)
PULSE_FACTOR = 2.5
DEFAULT_HEARTBEAT = dt.timedelta(seconds=60)
SAME_BOOT = dt.timedelta(seconds=10)  # boot times computed from uptime jitter by a second or so
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_ZERO = dt.timedelta(0)

FactId = int | str
Power = facts_pb2.PowerEvent
Activity = facts_pb2.InputActivity


class StoredFact(NamedTuple):
    """A fact as the rules get it: its id (database id, or a name in ``policy test``), the fact, our receive time."""

    fact_id: FactId
    fact: facts_pb2.Fact
    received_at: dt.datetime


class Interval(NamedTuple):
    start: dt.datetime
    end: dt.datetime


@dataclass(frozen=True)
class TimedFact:
    """A stored fact with its corrected time and the clock offset that was removed from it."""

    fact_id: FactId
    fact: facts_pb2.Fact
    kind: str
    observed_at: dt.datetime  # as the agent reported it
    time: dt.datetime  # corrected
    received_at: dt.datetime
    offset: dt.timedelta  # agent clock − our clock, zero within the tolerance

    def at(self, ts: Timestamp) -> dt.datetime | None:
        """A timestamp of this fact's agent, corrected like the fact; ``None`` when unset or invalid."""
        raw = raw_time(ts)
        return None if raw is None else raw - self.offset


# ------------------------------------------------------------------------------ interval algebra


def merge(intervals: Iterable[Interval]) -> list[Interval]:
    """The union, as sorted, non-overlapping, non-touching intervals; empty ones are dropped."""
    result: list[Interval] = []
    for start, end in sorted(i for i in intervals if i.end > i.start):
        if result and start <= result[-1].end:
            if end > result[-1].end:
                result[-1] = Interval(result[-1].start, end)
        else:
            result.append(Interval(start, end))
    return result


def intersect(a: Sequence[Interval], b: Sequence[Interval]) -> list[Interval]:
    """The intersection of two merged interval lists."""
    result: list[Interval] = []
    i = j = 0
    while i < len(a) and j < len(b):
        start, end = max(a[i].start, b[j].start), min(a[i].end, b[j].end)
        if start < end:
            result.append(Interval(start, end))
        if a[i].end < b[j].end:
            i += 1
        else:
            j += 1
    return result


def subtract(a: Sequence[Interval], b: Sequence[Interval]) -> list[Interval]:
    """``a`` without ``b`` (both merged)."""
    result: list[Interval] = []
    j = 0
    for start, end in a:
        while j < len(b) and b[j].end <= start:
            j += 1
        k, cursor = j, start
        while k < len(b) and b[k].start < end:
            if b[k].start > cursor:
                result.append(Interval(cursor, b[k].start))
            cursor = max(cursor, b[k].end)
            k += 1
        if cursor < end:
            result.append(Interval(cursor, end))
    return result


def clip(intervals: Iterable[Interval], start: dt.datetime, end: dt.datetime) -> list[Interval]:
    """The parts of ``intervals`` within [start, end)."""
    return [Interval(max(s, start), min(e, end)) for s, e in intervals if min(e, end) > max(s, start)]


def total(intervals: Iterable[Interval]) -> dt.timedelta:
    return sum((i.end - i.start for i in intervals), _ZERO)


def overlaps(intervals: Iterable[Interval], start: dt.datetime, end: dt.datetime) -> bool:
    """Whether any interval shares time with [start, end]; a zero-length span counts at its instant."""
    if end <= start:
        return any(i.start <= start < i.end for i in intervals)
    return any(i.start < end and i.end > start for i in intervals)


# ------------------------------------------------------------------------------ fact times


def raw_time(ts: Timestamp) -> dt.datetime | None:
    """A protobuf timestamp as the agent reported it; ``None`` when unset (zero) or out of range."""
    if (ts.seconds == 0 and ts.nanos == 0) or not timestamp_is_valid(ts):
        return None
    return _EPOCH + dt.timedelta(seconds=ts.seconds, microseconds=ts.nanos // 1000)


def clock_offsets(points: Sequence[tuple[dt.datetime, dt.datetime]]) -> list[dt.timedelta]:
    """The offset to remove from each (observed_at, received_at) point, by the rule in the module docstring."""
    if not points:
        return []
    batches: dict[dt.datetime, dt.timedelta] = {}
    for observed, received in points:
        offset = observed - received
        if received not in batches or offset > batches[received]:
            batches[received] = offset
    times = sorted(batches)
    estimates = _sliding_max(times, [batches[t] for t in times], SKEW_NEIGHBOURHOOD)
    by_batch = {t: (e if abs(e) > SKEW_TOLERANCE else _ZERO) for t, e in zip(times, estimates)}
    return [by_batch[received] for _, received in points]


def _sliding_max(times: list[dt.datetime], values: list[dt.timedelta], radius: dt.timedelta) -> list[dt.timedelta]:
    """For each time, the largest value among the times within ``radius`` either side (times sorted)."""
    result: list[dt.timedelta] = []
    window: deque[int] = deque()  # indexes, values decreasing
    ahead = 0
    for i, moment in enumerate(times):
        while ahead < len(times) and times[ahead] <= moment + radius:
            while window and values[window[-1]] <= values[ahead]:
                window.pop()
            window.append(ahead)
            ahead += 1
        while times[window[0]] < moment - radius:
            window.popleft()
        result.append(values[window[0]])
    return result


def timed_facts(facts: Iterable[StoredFact]) -> list[TimedFact]:
    """The facts in sequence order with corrected times (see the module docstring)."""
    ordered = sorted(facts, key=lambda f: f.fact.sequence)
    observed = [raw_time(f.fact.observed_at) or f.received_at for f in ordered]
    offsets = clock_offsets([(o, f.received_at) for o, f in zip(observed, ordered)])
    return [
        TimedFact(f.fact_id, f.fact, f.fact.WhichOneof("kind") or "", o, o - off, f.received_at, off)
        for f, o, off in zip(ordered, observed, offsets)
    ]


def last_contact(facts: Sequence[TimedFact]) -> dt.datetime | None:
    """The latest corrected time among the facts: when we last know the machine was up."""
    return max((f.time for f in facts), default=None)


# ------------------------------------------------------------------------------ power


@dataclass
class PowerInterval:
    """The machine was on from ``start`` to ``end`` (the last heartbeat or other power event seen)."""

    start: dt.datetime
    end: dt.datetime
    boot_time: dt.datetime | None  # corrected
    fact_ids: list[FactId] = field(default_factory=list)
    closed_by: str = ""  # "shutdown", "suspend", or "" (the heartbeats just stopped)
    boot_reported: dt.datetime | None = None  # the boot time exactly as the agent reported it, for keys


def pulse_window(heartbeat: dt.timedelta | None) -> dt.timedelta:
    return (heartbeat or DEFAULT_HEARTBEAT) * PULSE_FACTOR


def _same_boot(a: dt.datetime | None, b: dt.datetime | None) -> bool:
    return a is None or b is None or abs(a - b) <= SAME_BOOT


def power_intervals(facts: Iterable[TimedFact], pulse: dt.timedelta) -> list[PowerInterval]:
    """Merge the power facts (boot, heartbeat, resume, suspend, shutdown) into on-intervals, by time."""
    events = sorted((f for f in facts if f.kind == "power"), key=lambda f: (f.time, f.fact.sequence))
    intervals: list[PowerInterval] = []
    current: PowerInterval | None = None
    for event in events:
        power = event.fact.power
        boot = event.at(power.boot_time) if power.HasField("boot_time") else None
        kind = power.kind
        if kind in (Power.KIND_SHUTDOWN, Power.KIND_SUSPEND):
            if current is not None and event.time - current.end <= pulse and _same_boot(current.boot_time, boot):
                current.end = event.time
                current.fact_ids.append(event.fact_id)
                current.closed_by = "shutdown" if kind == Power.KIND_SHUTDOWN else "suspend"
            current = None
            continue
        starts_new = (
            current is None
            or kind in (Power.KIND_BOOT, Power.KIND_RESUME)
            or event.time - current.end > pulse
            or not _same_boot(current.boot_time, boot)
        )
        reported = raw_time(power.boot_time) if power.HasField("boot_time") else None
        if starts_new:
            current = PowerInterval(event.time, event.time, boot, [event.fact_id], boot_reported=reported)
            intervals.append(current)
        else:
            assert current is not None
            current.end = max(current.end, event.time)
            current.boot_time = current.boot_time or boot
            current.boot_reported = current.boot_reported or reported
            current.fact_ids.append(event.fact_id)
    return intervals


def as_intervals(spans: Iterable[PowerInterval]) -> list[Interval]:
    return merge(Interval(s.start, s.end) for s in spans)


# ------------------------------------------------------------------------------ activity


@dataclass
class ActivitySpan:
    """The person at the workstation was active from ``start`` to ``end``."""

    username: str
    session: str
    start: dt.datetime
    end: dt.datetime
    open: bool
    fact_ids: list[FactId] = field(default_factory=list)


def activity_spans(facts: Sequence[TimedFact], until: dt.datetime | None = None) -> list[ActivitySpan]:
    """ACTIVE/IDLE transitions (in sequence order) as spans of activity, per user and session."""
    spans: list[ActivitySpan] = []
    active: dict[tuple[str, str], ActivitySpan] = {}
    previous: dt.datetime | None = None

    def end_all(at: dt.datetime) -> None:
        for span in active.values():
            span.end = max(span.start, at)
        active.clear()

    for fact in facts:
        if fact.kind == "power" and fact.fact.power.kind in (Power.KIND_SHUTDOWN, Power.KIND_SUSPEND):
            end_all(fact.time)
        elif fact.kind == "power" and fact.fact.power.kind == Power.KIND_BOOT:
            end_all(previous or fact.time)
        elif fact.kind == "activity":
            report = fact.fact.activity
            key = (report.username, report.session)
            if report.state == Activity.STATE_ACTIVE:
                # A new ACTIVE for another user or session means the previous person left that seat.
                for other in [k for k in active if k != key]:
                    active.pop(other).end = fact.time
                if key not in active:
                    span = ActivitySpan(report.username, report.session, fact.time, fact.time, True, [fact.fact_id])
                    active[key] = span
                    spans.append(span)
                else:
                    active[key].fact_ids.append(fact.fact_id)
            elif report.state == Activity.STATE_IDLE:
                for other in [k for k in active if k == key or not report.username]:
                    span = active.pop(other)
                    span.end = max(span.start, fact.time - dt.timedelta(seconds=report.idle_seconds))
                    span.open = False
                    span.fact_ids.append(fact.fact_id)
        previous = fact.time if previous is None else max(previous, fact.time)
    end = until if until is not None else previous
    for span in active.values():
        span.end = max(span.start, end or span.start)
    return spans


# ------------------------------------------------------------------------------ programs


@dataclass
class ProgramRun:
    """One run of a program: ``key`` is (pid, start time as the agent reported it)."""

    pid: int
    name: str
    executable: str
    username: str
    started_raw: dt.datetime | None
    start: dt.datetime
    end: dt.datetime
    open: bool
    fact_ids: list[FactId] = field(default_factory=list)

    @property
    def key(self) -> str:
        started = self.started_raw.isoformat() if self.started_raw else "unknown start"
        return f"pid {self.pid} started {started}"


def program_runs(facts: Sequence[TimedFact]) -> list[ProgramRun]:
    """Process snapshots, starts and stops (in sequence order) as program runs.

    A snapshot replaces the list: runs it still has continue, runs it lacks ended at the last
    contact before it. A stop without a start time stops whatever runs with its pid.
    """
    runs: list[ProgramRun] = []
    running: dict[int, ProgramRun] = {}
    previous: dt.datetime | None = None

    def end(run: ProgramRun, at: dt.datetime) -> None:
        run.end, run.open = max(run.start, at), False

    def start(info: facts_pb2.ProcessInfo, fact: TimedFact) -> None:
        raw = raw_time(info.started_at)
        begun = (raw - fact.offset) if raw is not None else fact.time
        run = ProgramRun(info.pid, info.name, info.executable, info.username, raw, min(begun, fact.time),
                         fact.time, True, [fact.fact_id])
        running[info.pid] = run
        runs.append(run)

    for fact in facts:
        kind = fact.kind
        if kind == "process_snapshot":
            listed = {p.pid: p for p in fact.fact.process_snapshot.processes}
            for pid, run in list(running.items()):
                info = listed.get(pid)
                if info is None or raw_time(info.started_at) != run.started_raw:
                    end(run, previous or fact.time)
                    del running[pid]
                else:
                    run.fact_ids.append(fact.fact_id)
            for pid, info in listed.items():
                if pid not in running:
                    start(info, fact)
        elif kind == "process_started":
            info = fact.fact.process_started.process
            current = running.pop(info.pid, None)
            if current is not None:
                if current.started_raw is not None and current.started_raw == raw_time(info.started_at):
                    running[info.pid] = current  # the same run reported again
                    current.fact_ids.append(fact.fact_id)
                    previous = _later(previous, fact.time)
                    continue
                end(current, fact.time)
            start(info, fact)
        elif kind == "process_stopped":
            stop = fact.fact.process_stopped
            current = running.get(stop.pid)
            started = raw_time(stop.started_at)
            if current and (started is None or current.started_raw is None or current.started_raw == started):
                end(current, fact.time)
                current.fact_ids.append(fact.fact_id)
                del running[stop.pid]
        elif kind == "power" and fact.fact.power.kind in (Power.KIND_SHUTDOWN, Power.KIND_BOOT):
            at = fact.time if fact.fact.power.kind == Power.KIND_SHUTDOWN else (previous or fact.time)
            for run in running.values():
                end(run, at)
            running.clear()
        previous = _later(previous, fact.time)
    for run in running.values():
        run.end, run.open = max(run.start, previous or run.start), True
    return runs


def _later(a: dt.datetime | None, b: dt.datetime) -> dt.datetime:
    return b if a is None or b > a else a
