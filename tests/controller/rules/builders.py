"""Hand-built facts and small policies for the rules tests: each test states its own rule.

:class:`Facts` plays one agent: it numbers facts, stamps them with the agent's clock (``skew`` off
the true time) and with our receive time (``delay`` after the true time, unless a fact says when
it arrived). Times are given as true UTC instants; :func:`local` makes them from Shanghai time.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from types import SimpleNamespace
from collections.abc import Iterable, Sequence
from typing import Any
from zoneinfo import ZoneInfo

from google.protobuf.timestamp_pb2 import Timestamp

from controller.convert import datetime_to_timestamp
from controller.policy.calendar import WorkCalendar
from controller.policy.catalogue import CatalogueMatcher
from controller.policy.model import (
    Catalogue,
    CatalogueEntry,
    Category,
    Match,
    Period,
    Policy,
    Rule,
    RuleKind,
    Timetable,
)
from controller.rules.evaluate import RuleContext, StoredFact, ViolationCandidate, evaluate_agent
from protos.counterguard.v1 import facts_pb2 as pb

ZONE = ZoneInfo("Asia/Shanghai")
AGENT = "ag-test"
MINUTE = dt.timedelta(minutes=1)


def local(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> dt.datetime:
    """A Shanghai wall-clock time as an aware UTC datetime."""
    return dt.datetime(year, month, day, hour, minute, second, tzinfo=ZONE).astimezone(dt.UTC)


CATALOGUE = Catalogue(
    entries=[
        CatalogueEntry(id="gnome-mines", name="扫雷", category=Category.GAME,
                       match=Match(executables=["gnome-mines"], packages=["gnome-mines"],
                                   desktop_ids=["org.gnome.Mines.desktop"])),
        CatalogueEntry(id="taobao", name="淘宝", category=Category.SHOPPING, match=Match(title_contains=["淘宝"])),
        CatalogueEntry(id="vlc", name="VLC", category=Category.VIDEO, match=Match(executables=["vlc"],
                                                                                  packages=["vlc"])),
        CatalogueEntry(id="wps", name="WPS", category=Category.OFFICE, match=Match(executables=["wps"],
                                                                                  packages=["wps-office"])),
    ],
    sections={"games": Category.GAME},
    desktop_categories={"Game": Category.GAME},
)


def rule(kind: RuleKind, **fields: Any) -> Rule:
    defaults: dict[str, Any] = {"id": kind.value.replace("_", "-"), "ref": "R-test", "title": f"test {kind.value}"}
    if kind is RuleKind.FORBIDDEN_PROGRAM:
        defaults["categories"] = [Category.GAME, Category.VIDEO, Category.SHOPPING]
    if kind is RuleKind.UNAPPROVED_SOFTWARE:
        defaults.update(mode="deny_list", categories=[Category.GAME], per="once")
    return Rule(kind=kind, **{**defaults, **fields})


def policy(*rules: Rule, **extra: Any) -> Policy:
    """Monday–Friday 09:00–12:00 and 13:00–17:00 (regulation 12), the national calendar, a small catalogue."""
    return Policy(
        id="test-policy", version="1", name="test",
        timetable=Timetable(periods=[Period(start=dt.time(9), end=dt.time(12)),
                                     Period(start=dt.time(13), end=dt.time(17))]),
        catalogue=CATALOGUE, rules=list(rules), **extra,
    )


def evaluate(
    the_policy: Policy,
    facts: Facts | Sequence[StoredFact],
    context: RuleContext = RuleContext(window="W01"),
    start: dt.datetime | None = None,
    end: dt.datetime | None = None,
) -> list[ViolationCandidate]:
    stored = facts.stored if isinstance(facts, Facts) else list(facts)
    times = [f.received_at for f in stored]
    return evaluate_agent(the_policy, WorkCalendar(the_policy), CatalogueMatcher(the_policy.catalogue), AGENT,
                          stored, context, start or min(times) - dt.timedelta(days=1), end or max(times))


class Facts:
    """One agent's facts, numbered, with the agent's clock off by ``skew``."""

    def __init__(self, skew: dt.timedelta = dt.timedelta(0), delay: dt.timedelta = dt.timedelta(seconds=2),
                 boot: dt.datetime | None = None) -> None:
        self.stored: list[StoredFact] = []
        self.sequence = 0
        self.skew = skew
        self.delay = delay
        self.boot_time = boot

    def ts(self, moment: dt.datetime) -> Timestamp:
        """A true time as the agent's clock shows it."""
        return datetime_to_timestamp(moment + self.skew)

    def add(self, at: dt.datetime, received: dt.datetime | None = None, **kind: Any) -> int:
        self.sequence += 1
        fact = pb.Fact(sequence=self.sequence, observed_at=self.ts(at), **kind)
        self.stored.append(StoredFact(self.sequence, fact, received or at + self.delay))
        return self.sequence

    def facts(self) -> list[pb.Fact]:
        return [f.fact for f in self.stored]

    # ------------------------------------------------------------ power

    def _power(self, kind: int, boot: dt.datetime | None) -> pb.PowerEvent:
        boot = boot or self.boot_time
        return pb.PowerEvent(kind=kind, boot_time=self.ts(boot) if boot else None)

    def boot(self, at: dt.datetime) -> int:
        self.boot_time = at - MINUTE
        return self.add(at, power=self._power(pb.PowerEvent.KIND_BOOT, None))

    def heartbeats(self, start: dt.datetime, end: dt.datetime, every: dt.timedelta = MINUTE,
                   received: dt.datetime | None = None) -> None:
        """Heartbeats from ``start`` to ``end`` inclusive."""
        if self.boot_time is None:
            self.boot_time = start - dt.timedelta(minutes=5)
        moment = start
        while moment <= end:
            self.add(moment, received, power=self._power(pb.PowerEvent.KIND_HEARTBEAT, None))
            moment += every

    def shutdown(self, at: dt.datetime) -> int:
        return self.add(at, power=self._power(pb.PowerEvent.KIND_SHUTDOWN, None))

    # ------------------------------------------------------------ processes and sessions

    def process(self, pid: int, name: str, started: dt.datetime, user: str = "zhang") -> pb.ProcessInfo:
        return pb.ProcessInfo(pid=pid, name=name, executable=f"/usr/games/{name}", username=user,
                              started_at=self.ts(started))

    def start(self, at: dt.datetime, pid: int, name: str, user: str = "zhang",
              received: dt.datetime | None = None) -> int:
        return self.add(at, received, process_started=pb.ProcessStarted(process=self.process(pid, name, at, user)))

    def stop(self, at: dt.datetime, pid: int, name: str, started: dt.datetime,
             received: dt.datetime | None = None) -> int:
        return self.add(at, received,
                        process_stopped=pb.ProcessStopped(pid=pid, name=name, started_at=self.ts(started)))

    def process_snapshot(self, at: dt.datetime, processes: Iterable[pb.ProcessInfo]) -> int:
        return self.add(at, process_snapshot=pb.ProcessSnapshot(processes=list(processes)))

    def session(self, user: str, started: dt.datetime, terminal: str = ":0") -> pb.UserSession:
        return pb.UserSession(username=user, terminal=terminal, started_at=self.ts(started))

    def login(self, at: dt.datetime, user: str, terminal: str = ":0") -> int:
        return self.add(at, session=pb.SessionEvent(kind=pb.SessionEvent.KIND_LOGIN,
                                                    session=self.session(user, at, terminal)))

    def logout(self, at: dt.datetime, user: str, started: dt.datetime, terminal: str = ":0") -> int:
        return self.add(at, session=pb.SessionEvent(kind=pb.SessionEvent.KIND_LOGOUT,
                                                    session=self.session(user, started, terminal)))

    def session_snapshot(self, at: dt.datetime, sessions: Iterable[pb.UserSession]) -> int:
        return self.add(at, session_snapshot=pb.SessionSnapshot(sessions=list(sessions)))

    # ------------------------------------------------------------ software

    def software(self, at: dt.datetime, items: Iterable[pb.SoftwareItem]) -> int:
        return self.add(at, software_snapshot=pb.SoftwareSnapshot(items=list(items)))

    def delta(self, at: dt.datetime, added: Iterable[pb.SoftwareItem] = (),
              removed: Iterable[pb.SoftwareItem] = ()) -> int:
        return self.add(at, software_delta=pb.SoftwareDelta(added=list(added), removed=list(removed)))

    # ------------------------------------------------------------ usage and devices

    def active(self, at: dt.datetime, user: str = "zhang") -> int:
        return self.add(at, activity=pb.InputActivity(state=pb.InputActivity.STATE_ACTIVE, username=user,
                                                      session=":0", source="x11"))

    def idle(self, at: dt.datetime, user: str = "zhang", idle_seconds: int = 300) -> int:
        return self.add(at, activity=pb.InputActivity(state=pb.InputActivity.STATE_IDLE, username=user,
                                                      session=":0", idle_seconds=idle_seconds, source="x11"))

    def foreground(self, at: dt.datetime, category: str, pattern: str, executable: str, pid: int) -> int:
        return self.add(at, foreground=pb.ForegroundWindow(category=category, pattern_id=pattern,
                                                           executable=executable, pid=pid, username="zhang"))

    def storage(self, at: dt.datetime, action: int, serial: str = "AA01", vendor_id: str = "0781",
                product_id: str = "5581", device: str = "sdb", mount_point: str = "") -> int:
        return self.add(at, removable_storage=pb.RemovableStorage(
            action=action, device=device, bus_id="1-1", vendor_id=vendor_id, product_id=product_id,
            vendor="SanDisk", product="Ultra", serial=serial, size_bytes=32_000_000_000, mount_point=mount_point))

    def antivirus(self, at: dt.datetime, *products: pb.AntivirusProduct) -> int:
        return self.add(at, antivirus=pb.AntivirusStatus(products=list(products)))

    def inventory(self, at: dt.datetime, inventory: pb.InventorySnapshot) -> int:
        return self.add(at, inventory=inventory)


def desktop_game(name: str = "cg-mines.desktop") -> pb.SoftwareItem:
    return pb.SoftwareItem(source=pb.SOFTWARE_SOURCE_DESKTOP_ENTRY, name=name, display_name="Mines",
                           categories=["Game", "LogicGame"], executable="cg-mines")


def dpkg(name: str, section: str = "utils", **extra: Any) -> pb.SoftwareItem:
    return pb.SoftwareItem(source=pb.SOFTWARE_SOURCE_DPKG, name=name, version="1.0", section=section, **extra)


def machine(*, disk_serial: str = "S1", machine_id: str = "m1", gateway: str = "10.0.0.1",
            memory: int = 16 * 2**30, address: str = "10.0.0.5/24") -> pb.InventorySnapshot:
    """An inventory of a small PC; change one argument to change one part of it."""
    return pb.InventorySnapshot(
        hostname="w01",
        system=pb.SystemInfo(vendor="Lenovo", model="M720", serial="PC123", board_serial="MB456"),
        cpu=pb.CpuInfo(model="Intel Core i5-8500"),
        memory=pb.MemoryInfo(total_bytes=memory),
        disks=[pb.Disk(name="sda", model="SSD 860", serial=disk_serial, size_bytes=500_000_000_000)],
        network_interfaces=[pb.NetworkInterface(name="eno1", mac="aa:bb:cc:dd:ee:01", addresses=[address], up=True)],
        default_gateway=gateway,
        os=pb.OsInfo(family="linux", name="UOS", version="20", machine_id=machine_id),
        pci_devices=[pb.PciDevice(slot="0000:00:02.0", vendor_id="8086", device_id="3e92")],
    )


@dataclass
class Active:
    """A policy loaded as :class:`controller.policy.store.PolicyStore` hands it to the rules service."""

    policy: Policy
    calendar: WorkCalendar
    matcher: CatalogueMatcher
    record: Any


class Policies:
    """The active policy of a rules service under test: always ``the_policy``."""

    def __init__(self, the_policy: Policy) -> None:
        self.loaded = Active(the_policy, WorkCalendar(the_policy), CatalogueMatcher(the_policy.catalogue),
                             SimpleNamespace(policy_id=the_policy.id, version=the_policy.version))

    def active(self) -> Active:
        return self.loaded
