"""The register against what the agents see: unregistered equipment, registered items no longer seen.

The *current inventories* are the latest inventory of every agent that is not revoked. Each is taken
apart into items (:func:`controller.assets.discovery.discover`), and every asset that is not retired
and has an identity is matched to at most one item, one item to at most one asset: first on strong
keys anywhere, then on weak keys at the asset's own window (see :mod:`controller.assets.discovery`).

The report lists:

- *unregistered*: equipment items no asset matched, per workstation;
- *missing*: assets with an identity that no current inventory shows, with when and where they were
  last seen: for a PC registered with its agent, the agent's last contact; otherwise the latest
  inventory, of any agent at the asset's window (revoked ones too) or of its own agent, that showed it;
- *elsewhere*: assets seen on a workstation of another window than the one they are registered at
  (moved without ``asset move``).

Items nobody can discover (phones, desks, chairs, and assets registered without an identity) are
not checked.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, bindparam, func, or_, select
from sqlalchemy.engine import Connection

from controller.assets.discovery import Discovered, Key, asset_keys, discover, inventory_keys, strong
from controller.assets.fields import describe_identity
from controller.assets.records import ASSET
from controller.convert import row_to_fact
from controller.models import AGENT, FACT
from protos.counterguard.v1 import facts_pb2


@dataclass(frozen=True)
class Workstation:
    """An agent that is not revoked, with its latest inventory."""

    agent_id: str
    window: str
    unit: str | None
    hostname: str
    inventory_at: dt.datetime  # when we received the inventory
    inventory: facts_pb2.InventorySnapshot


@dataclass(frozen=True)
class Seen:
    """A discovered item on one workstation."""

    item: Discovered
    workstation: Workstation


@dataclass(frozen=True)
class Registered:
    """What matching needs of an asset."""

    tag: str
    kind: str
    window: str
    unit: str | None
    description: str
    identity: str
    agent_id: str | None
    keys: tuple[Key, ...]


@dataclass(frozen=True)
class Unregistered:
    window: str
    unit: str | None
    agent_id: str
    hostname: str
    kind: str
    description: str
    register_with: str  # the identity option of ``asset register``


@dataclass(frozen=True)
class Missing:
    tag: str
    kind: str
    window: str
    unit: str | None
    description: str
    identity: str
    last_seen_at: dt.datetime | None  # None: never seen
    last_seen_on: str | None  # the agent that saw it


@dataclass(frozen=True)
class Elsewhere:
    tag: str
    kind: str
    window: str  # where it is registered
    seen_window: str
    agent_id: str
    hostname: str
    description: str


@dataclass(frozen=True)
class Reconciliation:
    checked_at: dt.datetime
    workstations: int
    assets_checked: int
    unregistered: tuple[Unregistered, ...]
    missing: tuple[Missing, ...]
    elsewhere: tuple[Elsewhere, ...]


def registered(row: Any) -> Registered:
    keys = asset_keys(row.kind, row.agent_id, row.vendor_id, row.product_id, row.serial, row.printer_name,
                      row.printer_uri)
    return Registered(row.tag, row.kind, row.window, row.unit, row.description, describe_identity(row),
                      row.agent_id, keys)


def active_assets(conn: Connection) -> list[Registered]:
    """Every asset that is not retired, by tag."""
    rows = conn.execute(select(ASSET).where(ASSET.c.retired_at.is_(None)).order_by(ASSET.c.tag))
    return [registered(row) for row in rows]


def current_workstations(conn: Connection) -> list[Workstation]:
    """Every agent that is not revoked and has reported an inventory, with its latest one, by agent id."""
    latest = (
        select(FACT.c.agent_id, func.max(FACT.c.sequence).label("sequence"))
        .where(FACT.c.kind == "inventory")
        .group_by(FACT.c.agent_id)
        .subquery()
    )
    rows = conn.execute(
        select(AGENT.c.id, AGENT.c.window, AGENT.c.unit, AGENT.c.hostname, FACT.c.received_at, FACT.c.payload)
        .join(latest, latest.c.agent_id == AGENT.c.id)
        .join(FACT, and_(FACT.c.agent_id == latest.c.agent_id, FACT.c.sequence == latest.c.sequence))
        .where(AGENT.c.revoked_at.is_(None))
        .order_by(AGENT.c.id)
    )
    return [Workstation(row.id, row.window or "", row.unit, row.hostname, row.received_at,
                        row_to_fact(row.payload).inventory) for row in rows]


def seen_items(workstations: Iterable[Workstation]) -> list[Seen]:
    return [Seen(item, ws) for ws in workstations for item in discover(ws.agent_id, ws.inventory)]


def match(assets: Sequence[Registered], seen: Sequence[Seen]) -> dict[str, Seen]:
    """Asset tag → the item it is, one to one: strong keys anywhere first, then weak keys at the asset's window."""
    index: dict[Key, list[int]] = defaultdict(list)
    for number, one in enumerate(seen):
        for key in one.item.keys:
            index[key].append(number)
    taken: set[int] = set()
    matched: dict[str, Seen] = {}
    for strong_pass in (True, False):
        for asset in assets:
            if asset.tag in matched:
                continue
            for key in (k for k in asset.keys if strong(k) == strong_pass):
                number = next((n for n in index.get(key, ()) if n not in taken
                               and (strong_pass or seen[n].workstation.window == asset.window)), None)
                if number is not None:
                    taken.add(number)
                    matched[asset.tag] = seen[number]
                    break
    return matched


def reconcile(conn: Connection, now: dt.datetime) -> Reconciliation:
    """The report described in the module docstring."""
    workstations = current_workstations(conn)
    seen = seen_items(workstations)
    assets = [a for a in active_assets(conn) if a.keys]
    matched = match(assets, seen)
    taken = {id(s) for s in matched.values()}
    unregistered = tuple(
        Unregistered(s.workstation.window, s.workstation.unit, s.workstation.agent_id, s.workstation.hostname,
                     s.item.kind, s.item.description, s.item.identity)
        for s in seen if s.item.equipment and id(s) not in taken
    )
    elsewhere = tuple(
        Elsewhere(a.tag, a.kind, a.window, s.workstation.window, s.workstation.agent_id, s.workstation.hostname,
                  a.description)
        for a in assets if (s := matched.get(a.tag)) is not None and s.workstation.window != a.window
    )
    gone = [a for a in assets if a.tag not in matched]
    last = last_seen(conn, gone)
    missing = tuple(
        Missing(a.tag, a.kind, a.window, a.unit, a.description, a.identity, *last.get(a.tag, (None, None)))
        for a in gone
    )
    return Reconciliation(now, len(workstations), len(assets), unregistered, missing, elsewhere)


def last_seen(conn: Connection, assets: Sequence[Registered]) -> dict[str, tuple[dt.datetime, str]]:
    """Asset tag → when and on which agent it was last seen (see the module docstring); unseen ones left out."""
    found: dict[str, tuple[dt.datetime, str]] = {}
    pc_agents = {a.agent_id for a in assets if a.kind == "pc" and a.agent_id}
    contact = dict(conn.execute(select(AGENT.c.id, AGENT.c.last_seen_at).where(AGENT.c.id.in_(pc_agents))).all())
    for asset in assets:
        if asset.agent_id in pc_agents and contact.get(asset.agent_id) is not None:
            found[asset.tag] = (contact[asset.agent_id], asset.agent_id)
    by_window: dict[str, list[Registered]] = defaultdict(list)
    for asset in assets:
        if asset.tag not in found:
            by_window[asset.window].append(asset)
    for window, waiting in by_window.items():
        found.update(_last_in_history(conn, window, waiting))
    return found


# The inventories of the agents at a window, and of some agents by id, newest first.
_HISTORY = (
    select(FACT.c.agent_id, FACT.c.received_at, FACT.c.payload)
    .where(FACT.c.kind == "inventory", FACT.c.agent_id.in_(
        select(AGENT.c.id).where(or_(AGENT.c.window == bindparam("window"),
                                     AGENT.c.id.in_(bindparam("own", expanding=True))))))
    .order_by(FACT.c.received_at.desc(), FACT.c.id.desc())
)


def _last_in_history(conn: Connection, window: str,
                     assets: list[Registered]) -> dict[str, tuple[dt.datetime, str]]:
    """Newest inventory first, of the agents at ``window`` and the assets' own agents, until all are found."""
    own = sorted({a.agent_id for a in assets if a.agent_id})
    result = conn.execution_options(yield_per=64).execute(_HISTORY, {"window": window, "own": own})
    found: dict[str, tuple[dt.datetime, str]] = {}
    try:
        for row in result:
            keys = inventory_keys(row.agent_id, row_to_fact(row.payload).inventory)
            for asset in assets:
                if asset.tag not in found and keys.intersection(asset.keys):
                    found[asset.tag] = (row.received_at, row.agent_id)
            if len(found) == len(assets):
                break
    finally:
        result.close()
    return found
