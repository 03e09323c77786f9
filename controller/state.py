"""A workstation's current state, derived from its stored facts (there are no projection tables).

Each view starts from the agent's latest full snapshot of its kind and replays the events that
came after it in sequence order: software snapshot + deltas, process snapshot + starts/stops,
session snapshot + logins/logouts. A shutdown reported after the last of those facts means
nothing runs any more (a boot is not used: the agent sends fresh snapshots when it starts). Inventory is kept as the protobuf ``InventorySnapshot`` itself, and
:func:`diff_inventory` says what changed between two of them.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from google.protobuf.message import Message
from sqlalchemy import select
from sqlalchemy.engine import Connection, Engine

from controller.convert import (
    device_class_label,
    message_values,
    optional_datetime,
    row_to_fact,
    software_source_label,
)
from controller.errors import NotFound
from controller.hints import category_hints
from controller.models import AGENT, FACT
from protos.counterguard.v1 import facts_pb2

InventorySnapshot = facts_pb2.InventorySnapshot


@dataclass(frozen=True)
class InventoryRecord:
    """One stored inventory fact; ``snapshot`` is filled by :func:`inventory`, not by the history."""

    fact_id: int
    sequence: int
    observed_at: dt.datetime
    received_at: dt.datetime
    snapshot: InventorySnapshot | None = None


@dataclass(frozen=True)
class InventoryChange:
    """One difference between two inventories; an added or removed item has field ``present``."""

    section: str  # system, cpu, memory, os, disks, network, usb, printers, pci, filesystems, users, groups
    item: str  # which disk, interface, device or printer; empty for the single-item sections
    field: str
    old: Any
    new: Any


@dataclass(frozen=True)
class InstalledSoftware:
    source: str  # dpkg, desktop-entry, flatpak, snap, windows-registry
    name: str
    version: str
    display_name: str
    publisher: str
    section: str
    categories: tuple[str, ...]
    executable: str
    install_date: dt.datetime | None
    hints: tuple[str, ...]  # see controller.hints


@dataclass(frozen=True)
class RunningProcess:
    pid: int
    name: str
    executable: str
    username: str
    started_at: dt.datetime | None


@dataclass(frozen=True)
class UserSession:
    username: str
    terminal: str
    host: str
    started_at: dt.datetime | None


@dataclass(frozen=True)
class _StoredFact:
    fact_id: int
    sequence: int
    fact: facts_pb2.Fact


# ------------------------------------------------------------------------------ queries


def last_seen(engine: Engine, agent_id: str) -> dt.datetime | None:
    """When we last received a report from the agent (our clock); ``None`` if it never reported."""
    with engine.connect() as conn:
        row = conn.execute(select(AGENT.c.last_seen_at).where(AGENT.c.id == agent_id)).one_or_none()
    if row is None:
        raise NotFound(f"no agent {agent_id!r}")
    return row.last_seen_at


def inventory_history(engine: Engine, agent_id: str) -> list[InventoryRecord]:
    """Every inventory the agent reported, oldest first (without the snapshots themselves)."""
    with engine.connect() as conn:
        _require_agent(conn, agent_id)
        rows = conn.execute(
            select(FACT.c.id, FACT.c.sequence, FACT.c.observed_at, FACT.c.received_at)
            .where(FACT.c.agent_id == agent_id, FACT.c.kind == "inventory")
            .order_by(FACT.c.sequence)
        ).all()
    return [InventoryRecord(row.id, row.sequence, row.observed_at, row.received_at) for row in rows]


def inventory(engine: Engine, agent_id: str, fact_id: int | None = None) -> InventoryRecord:
    """The agent's latest inventory, or the one stored as fact ``fact_id``."""
    query = select(FACT.c.id, FACT.c.sequence, FACT.c.observed_at, FACT.c.received_at, FACT.c.payload).where(
        FACT.c.agent_id == agent_id, FACT.c.kind == "inventory"
    )
    if fact_id is None:
        query = query.order_by(FACT.c.sequence.desc()).limit(1)
    else:
        query = query.where(FACT.c.id == fact_id)
    with engine.connect() as conn:
        _require_agent(conn, agent_id)
        row = conn.execute(query).one_or_none()
    if row is None:
        if fact_id is None:
            raise NotFound(f"agent {agent_id!r} has not reported an inventory yet")
        raise NotFound(f"agent {agent_id!r} has no inventory fact {fact_id}")
    snapshot = row_to_fact(row.payload).inventory
    return InventoryRecord(row.id, row.sequence, row.observed_at, row.received_at, snapshot)


def installed_software(engine: Engine, agent_id: str) -> list[InstalledSoftware]:
    """The installed software: the latest snapshot with every later delta applied, by name.

    Before the first snapshot arrives, the deltas alone are applied to an empty list.
    """
    items: dict[tuple[int, str], facts_pb2.SoftwareItem] = {}
    for stored in _replay(engine, agent_id, "software_snapshot", ("software_delta",)):
        fact = stored.fact
        if fact.HasField("software_snapshot"):
            items = {(item.source, item.name): item for item in fact.software_snapshot.items}
            continue
        delta = fact.software_delta
        for item in delta.removed:
            items.pop((item.source, item.name), None)
        for item in [*delta.added, *delta.changed]:
            items[(item.source, item.name)] = item
    software = [_installed(item) for item in items.values()]
    return sorted(software, key=lambda s: (s.name.lower(), s.source, s.name))


def running_processes(engine: Engine, agent_id: str) -> list[RunningProcess]:
    """The programs running as of the last report: latest snapshot plus later starts and stops.

    A stop removes the process with its pid and start time (a stop without a start time, any
    process with that pid); a start replaces whatever held its pid before.
    """
    running: dict[int, RunningProcess] = {}
    facts = _replay(engine, agent_id, "process_snapshot", ("process_started", "process_stopped"))
    for stored in facts:
        fact = stored.fact
        kind = fact.WhichOneof("kind")
        if kind == "process_snapshot":
            running = {p.pid: _process(p) for p in fact.process_snapshot.processes}
        elif kind == "process_started":
            process = _process(fact.process_started.process)
            running[process.pid] = process
        else:
            stop = fact.process_stopped
            current = running.get(stop.pid)
            started = optional_datetime(stop, "started_at")
            if current and (started is None or current.started_at is None or current.started_at == started):
                del running[stop.pid]
    if facts and _shut_down_after(engine, agent_id, facts[-1].sequence):
        return []
    return sorted(running.values(), key=lambda p: (p.name.lower(), p.pid))


def current_sessions(engine: Engine, agent_id: str) -> list[UserSession]:
    """Who is logged in as of the last report: latest session snapshot plus later logins/logouts."""
    sessions: dict[tuple[str, str], UserSession] = {}
    facts = _replay(engine, agent_id, "session_snapshot", ("session",))
    for stored in facts:
        fact = stored.fact
        if fact.HasField("session_snapshot"):
            sessions = {(s.username, s.terminal): _session(s) for s in fact.session_snapshot.sessions}
            continue
        session = _session(fact.session.session)
        key = (session.username, session.terminal)
        if fact.session.kind == facts_pb2.SessionEvent.KIND_LOGIN:
            sessions[key] = session
        elif fact.session.kind == facts_pb2.SessionEvent.KIND_LOGOUT:
            current = sessions.get(key)
            if current and (session.started_at is None or current.started_at in (None, session.started_at)):
                del sessions[key]
    if facts and _shut_down_after(engine, agent_id, facts[-1].sequence):
        return []
    return sorted(sessions.values(), key=lambda s: (s.username, s.terminal))


# ------------------------------------------------------------------------------ inventory diff


def diff_inventory(old: InventorySnapshot, new: InventorySnapshot) -> list[InventoryChange]:
    """What changed from ``old`` to ``new``, section by section, items sorted by key.

    Sections: system (with the host name), cpu, memory, os, disks (by name and serial), network
    (default gateway, interfaces by name), usb (by vendor:product:serial, or bus id without a
    serial), printers (by name), pci (by slot), filesystems (by mount point; free space is not
    a change), users and groups (by name).
    """
    changes: list[InventoryChange] = []
    changes += _field_changes("system", "", {"hostname": old.hostname, **_values(old.system)},
                              {"hostname": new.hostname, **_values(new.system)})
    for section in ("cpu", "memory", "os"):
        changes += _field_changes(section, "", _values(getattr(old, section)), _values(getattr(new, section)))
    for section, field, key in _LIST_SECTIONS:
        if section == "network":
            changes += _field_changes(section, "", {"default_gateway": old.default_gateway},
                                      {"default_gateway": new.default_gateway})
        changes += _items_changes(section, _keyed(getattr(old, field), key), _keyed(getattr(new, field), key))
    return changes


def usb_device_class(device: facts_pb2.UsbDevice) -> str:
    """The device's class, or its interfaces' classes when the device declares none (composite)."""
    if device.device_class != facts_pb2.DEVICE_CLASS_UNSPECIFIED:
        return device_class_label(device.device_class)
    labels = dict.fromkeys(device_class_label(c) for c in device.interface_classes)
    return ", ".join(labels) or device_class_label(device.device_class)


def _disk_key(disk: facts_pb2.Disk) -> str:
    return f"{disk.name} (serial {disk.serial})" if disk.serial else disk.name


def _usb_key(device: facts_pb2.UsbDevice) -> str:
    ids = f"{device.vendor_id}:{device.product_id}"
    key = f"{ids}:{device.serial}" if device.serial else f"{ids} at {device.bus_id}"
    label = " ".join(part for part in (device.vendor, device.product) if part)
    return f"{key} {label}" if label else key


def _by_name(item: Any) -> str:
    return str(item.name)


_LIST_SECTIONS: tuple[tuple[str, str, Callable[[Any], str]], ...] = (
    ("disks", "disks", _disk_key),
    ("network", "network_interfaces", _by_name),
    ("usb", "usb_devices", _usb_key),
    ("printers", "printers", _by_name),
    ("pci", "pci_devices", lambda device: str(device.slot)),
    ("filesystems", "filesystems", lambda fs: str(fs.mount_point)),
    ("users", "local_users", _by_name),
    ("groups", "local_groups", _by_name),
)
# Fields that change all the time without anything having been changed on the machine.
_VOLATILE = {"free_bytes"}


def _keyed(items: Sequence[Message], key: Callable[[Any], str]) -> dict[str, Message]:
    """Items by key; a repeated key (two identical devices) gets ``#2``, ``#3`` … appended."""
    keyed: dict[str, Message] = {}
    for item in items:
        base = key(item)
        name, n = base, 1
        while name in keyed:
            n += 1
            name = f"{base} #{n}"
        keyed[name] = item
    return keyed


def _items_changes(section: str, old: dict[str, Message], new: dict[str, Message]) -> list[InventoryChange]:
    changes: list[InventoryChange] = []
    for key in sorted(old.keys() | new.keys()):
        if key not in new:
            changes.append(InventoryChange(section, key, "present", True, False))
        elif key not in old:
            changes.append(InventoryChange(section, key, "present", False, True))
        else:
            changes += _field_changes(section, key, _values(old[key]), _values(new[key]))
    return changes


def _field_changes(section: str, item: str, old: dict[str, Any], new: dict[str, Any]) -> list[InventoryChange]:
    return [
        InventoryChange(section, item, name, old[name], new[name])
        for name in old
        if old[name] != new[name] and name not in _VOLATILE
    ]


def _values(message: Message) -> dict[str, Any]:
    """A message's own fields as plain values; nested messages are sections of their own."""
    return message_values(message, nested=False)


# ------------------------------------------------------------------------------ helpers


def _require_agent(conn: Connection, agent_id: str) -> None:
    if conn.execute(select(AGENT.c.id).where(AGENT.c.id == agent_id)).first() is None:
        raise NotFound(f"no agent {agent_id!r}")


def _replay(engine: Engine, agent_id: str, snapshot_kind: str, event_kinds: Sequence[str]) -> list[_StoredFact]:
    """The agent's latest ``snapshot_kind`` fact, then every ``event_kinds`` fact after it, in order.

    Without a snapshot yet, every ``event_kinds`` fact from the first on.
    """
    with engine.connect() as conn:
        _require_agent(conn, agent_id)
        start = conn.execute(
            select(FACT.c.sequence)
            .where(FACT.c.agent_id == agent_id, FACT.c.kind == snapshot_kind)
            .order_by(FACT.c.sequence.desc())
            .limit(1)
        ).scalar_one_or_none()
        rows = conn.execute(
            select(FACT.c.id, FACT.c.sequence, FACT.c.payload)
            .where(
                FACT.c.agent_id == agent_id,
                FACT.c.kind.in_([snapshot_kind, *event_kinds]),
                FACT.c.sequence >= (start or 0),
            )
            .order_by(FACT.c.sequence)
        ).all()
    return [_StoredFact(row.id, row.sequence, row_to_fact(row.payload)) for row in rows]


def _shut_down_after(engine: Engine, agent_id: str, sequence: int) -> bool:
    """Whether the agent reported a shutdown after ``sequence`` (so nothing from before runs).

    Only power facts since the last event of the view are read: usually a few heartbeats.
    """
    with engine.connect() as conn:
        payloads = conn.execute(
            select(FACT.c.payload).where(FACT.c.agent_id == agent_id, FACT.c.kind == "power", FACT.c.sequence > sequence)
        ).scalars()
        return any(row_to_fact(payload).power.kind == facts_pb2.PowerEvent.KIND_SHUTDOWN for payload in payloads)


def _installed(item: facts_pb2.SoftwareItem) -> InstalledSoftware:
    categories = tuple(item.categories)
    return InstalledSoftware(
        source=software_source_label(item.source),
        name=item.name,
        version=item.version,
        display_name=item.display_name,
        publisher=item.publisher,
        section=item.section,
        categories=categories,
        executable=item.executable,
        install_date=optional_datetime(item, "install_date"),
        hints=tuple(category_hints(item.section, categories, item.name, item.executable)),
    )


def _process(info: facts_pb2.ProcessInfo) -> RunningProcess:
    started = optional_datetime(info, "started_at")
    return RunningProcess(info.pid, info.name, info.executable, info.username, started)


def _session(session: facts_pb2.UserSession) -> UserSession:
    return UserSession(session.username, session.terminal, session.host, optional_datetime(session, "started_at"))
