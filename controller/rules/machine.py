"""Rule kinds that compare consecutive inventories of one workstation: the case opened (R11.7), the
OS reinstalled (R11.6), the network jack moved (R11.10).

Every kind looks at each pair of consecutive inventories (the one before the evaluated facts is
loaded with them) and ignores a change when a maintenance record of the workstation overlaps the
time between the two. A value one of the two inventories could not read (an empty serial, an empty
list) is never a change.

**hardware_changed** — components added, removed or replaced: the system and board serials, the
CPU model, the memory size (more than 256 MiB and 3 % apart: the kernel's own reservations move by
a few MiB between versions), fixed disks by serial (else model and size), PCI devices by slot.
Firmware versions, USB peripherals and removable disks are not components.

**os_reinstalled** — the same hardware (a system, board or disk serial in common; without any
serial, the same CPU and PCI devices) with another OS machine id, or an install date that moved
more than a day later, to after the previous inventory (a reinstall between the two). A reinstall
that also re-enrolled the agent under a new id is not seen here (see the report).

**network_changed** — the physical interfaces' MAC addresses, their IPv4 addresses, or the
default gateway changed (IPv6 addresses are not compared: privacy addresses rotate by themselves).

"Each time" for all three: ``once`` = one per distinct change (the same change seen again is the
same violation); ``session`` = one per pair of inventories with changes; ``day`` = one per local day.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections import Counter
from collections.abc import Callable

from controller.policy.model import Occurrence, Rule
from controller.rules.base import Env, ViolationCandidate, conditions_pass, raw_iso
from controller.rules.intervals import TimedFact, raw_time
from protos.counterguard.v1 import facts_pb2

Inventory = facts_pb2.InventorySnapshot
MiB = 1024 * 1024
Changes = Callable[[Inventory, Inventory, TimedFact], list[str]]


# ------------------------------------------------------------------------------ components


def hardware_components(inv: Inventory) -> dict[str, dict[str, str]]:
    """Section → {component: description}; a section the inventory could not read is left out."""
    sections: dict[str, dict[str, str]] = {}
    for name, value in (("system serial", inv.system.serial), ("board serial", inv.system.board_serial),
                        ("CPU", inv.cpu.model)):
        if value.strip():
            sections[name] = {name: value.strip()}
    disks: dict[str, str] = {}
    counts: Counter[str] = Counter()
    for disk in inv.disks:
        if disk.removable or not disk.size_bytes:
            continue
        described = f"{disk.vendor} {disk.model}".strip() + f" {disk.size_bytes / 1e9:.0f} GB"
        if disk.serial:
            disks[f"disk serial {disk.serial}"] = described
        else:
            counts[described] += 1
            disks[f"disk {described} #{counts[described]}"] = described
    if disks:
        sections["disks"] = disks
    pci = {f"PCI {d.slot}": f"{d.vendor_id}:{d.device_id} {d.vendor} {d.device}".strip() for d in inv.pci_devices}
    if pci:
        sections["pci"] = pci
    return sections


def hardware_changes(old: Inventory, new: Inventory, _fact: TimedFact | None = None) -> list[str]:
    """What changed between two inventories' components, as sentences."""
    changes: list[str] = []
    before, after = hardware_components(old), hardware_components(new)
    for section in sorted(before.keys() & after.keys()):
        a, b = before[section], after[section]
        for key in sorted(a.keys() | b.keys()):
            if key not in b:
                changes.append(f"{key} removed ({a[key]})")
            elif key not in a:
                changes.append(f"{key} added ({b[key]})")
            elif a[key] != b[key]:
                changes.append(f"{key} changed from {a[key]} to {b[key]}")
    old_memory, new_memory = old.memory.total_bytes, new.memory.total_bytes
    if old_memory and new_memory and abs(old_memory - new_memory) > max(256 * MiB, 0.03 * old_memory):
        changes.append(f"memory changed from {old_memory / 2**30:.1f} GiB to {new_memory / 2**30:.1f} GiB")
    return changes


def _serials(inv: Inventory) -> set[str]:
    found = {f"system {inv.system.serial}", f"board {inv.system.board_serial}"}
    found |= {f"disk {d.serial}" for d in inv.disks if d.serial and not d.removable}
    return {s for s in found if not s.endswith(" ")}


def same_hardware(old: Inventory, new: Inventory) -> bool:
    a, b = _serials(old), _serials(new)
    if a or b:
        return bool(a & b)
    pci = lambda inv: sorted((d.slot, d.vendor_id, d.device_id) for d in inv.pci_devices)  # noqa: E731
    return bool(old.cpu.model) and old.cpu.model == new.cpu.model and pci(old) == pci(new)


def os_changes(old: Inventory, new: Inventory, fact: TimedFact, previous_time: dt.datetime | None = None) -> list[str]:
    """The OS identity changes that mean a reinstall on the same hardware."""
    if not same_hardware(old, new):
        return []
    changes = []
    if old.os.machine_id and new.os.machine_id and old.os.machine_id != new.os.machine_id:
        changes.append(f"machine id changed from {old.os.machine_id} to {new.os.machine_id}")
    old_date, new_date = raw_time(old.os.install_date), raw_time(new.os.install_date)
    if old_date and new_date and new_date - old_date > dt.timedelta(days=1):
        after_previous = previous_time is None or new_date - fact.offset >= previous_time - dt.timedelta(days=1)
        if after_previous:
            changes.append(f"install date changed from {old_date:%Y-%m-%d} to {new_date:%Y-%m-%d}")
    if changes and (old.os.name, old.os.version) != (new.os.name, new.os.version):
        changes.append(f"system now {new.os.name} {new.os.version} (was {old.os.name} {old.os.version})")
    return changes


def _network(inv: Inventory) -> tuple[set[str], set[str], str]:
    physical = [i for i in inv.network_interfaces if not i.virtual]
    macs = {i.mac.lower() for i in physical if i.mac}
    ipv4 = {a.split("/")[0] for i in physical for a in i.addresses if ":" not in a}
    return macs, ipv4, inv.default_gateway


def network_changes(old: Inventory, new: Inventory, _fact: TimedFact | None = None) -> list[str]:
    (old_macs, old_ips, old_gateway), (new_macs, new_ips, new_gateway) = _network(old), _network(new)
    changes = []
    if old_macs and new_macs and old_macs != new_macs:
        changes.append(f"network adapters (MAC) {', '.join(sorted(old_macs))} → {', '.join(sorted(new_macs))}")
    if old_ips and new_ips and old_ips != new_ips:
        changes.append(f"IPv4 addresses {', '.join(sorted(old_ips))} → {', '.join(sorted(new_ips))}")
    if old_gateway and new_gateway and old_gateway != new_gateway:
        changes.append(f"default gateway {old_gateway} → {new_gateway}")
    return changes


# ------------------------------------------------------------------------------ the rule kinds


def _inventory_pairs(env: Env) -> list[tuple[TimedFact, TimedFact]]:
    inventories = [f for f in env.facts if f.kind == "inventory"]
    return list(zip(inventories, inventories[1:]))


def _compare(rule: Rule, env: Env, what: str,
             changes_of: Callable[[TimedFact, TimedFact], list[str]]) -> list[ViolationCandidate]:
    found: dict[tuple[str, str], list[tuple[TimedFact, TimedFact, list[str]]]] = {}
    for old, new in _inventory_pairs(env):
        changes = changes_of(old, new)
        if not changes:
            continue
        if env.maintenance_covering(min(old.time, new.time), max(old.time, new.time)) is not None:
            continue
        values = {"changes": changes, "agent": env.agent_values(), "hostname": new.fact.inventory.hostname}
        if not conditions_pass(rule, values):
            continue
        digest = hashlib.sha256("\n".join(changes).encode("utf-8")).hexdigest()[:16]
        if rule.per is Occurrence.ONCE:
            key = (f"{what} {digest}", "")
        elif rule.per is Occurrence.SESSION:
            key = (f"{what} {digest}", raw_iso(new))
        else:
            key = (what, env.local_date(new.time).isoformat())
        found.setdefault(key, []).append((old, new, changes))
    candidates = []
    for (subject_key, period), members in sorted(found.items()):
        old, new, _ = members[0]
        changes = list(dict.fromkeys(c for _, _, cs in members for c in cs))
        text = "; ".join(changes)
        summary = (f"Between the inventories of {env.local(old.time)} and {env.local(members[-1][1].time)}: {text}; "
                   "no maintenance record covers that time.")
        candidates.append(env.candidate(
            rule, subject=f"{what}: {text}", subject_key=subject_key, period_key=period,
            period_start=old.time, period_end=members[-1][1].time, occurred_at=new.time,
            fact_ids=[i for o, n, _ in members for i in (o.fact_id, n.fact_id)], summary=summary,
        ))
    return candidates


def hardware_changed(rule: Rule, env: Env) -> list[ViolationCandidate]:
    """Components added, removed or replaced between inventories, without a maintenance record."""
    return _compare(rule, env, "hardware", lambda old, new: hardware_changes(old.fact.inventory, new.fact.inventory))


def os_reinstalled(rule: Rule, env: Env) -> list[ViolationCandidate]:
    """Same hardware, new OS identity, without a maintenance record."""
    return _compare(rule, env, "operating system",
                    lambda old, new: os_changes(old.fact.inventory, new.fact.inventory, new, old.time))


def network_changed(rule: Rule, env: Env) -> list[ViolationCandidate]:
    """Network adapters, addresses or gateway changed, without a maintenance record."""
    return _compare(rule, env, "network", lambda old, new: network_changes(old.fact.inventory, new.fact.inventory))
