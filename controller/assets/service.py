"""The equipment register of regulation 11.12, transport-free: register, edit, move, sign, maintain, retire,
list, show, import a CSV file, and check the register against what the agents see.

Every change is one transaction that writes the asset's new state together with its
:class:`~controller.assets.records.AssetEvent` (the changed values before and after, who, when).
Windows and units must exist in the organisation tables; a window's unit is the asset's unit unless
another is given. A strong identity (a workstation, a system serial, a USB serial, a unique printer
URI; see :mod:`controller.assets.discovery`) belongs to one asset that is not retired.

**Maintenance.** Maintaining an asset also records a
:class:`~controller.rules.records.MaintenanceRecord` (through
:meth:`~controller.rules.decisions.DecisionService.add_maintenance`) for each workstation it concerns:
a PC's own workstation (by agent, else by its system serial in the current inventories), or the
workstations whose current inventory shows a peripheral. A hardware change in that span is then not
a violation (R11.7); with a rules service given, the affected workstations are re-evaluated at once,
as ``counterguard maintenance add`` does, so an open violation the record covers is withdrawn. The
workstation records are written before the asset's own record (they are another service's
transactions); everything is checked before either is written.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import insert, select, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError

from controller.assets import fields, importing
from controller.assets.discovery import strong
from controller.assets.reconcile import (
    Reconciliation,
    current_workstations,
    match,
    reconcile,
    registered,
    seen_items,
)
from controller.assets.records import ASSET, ASSET_EVENT, ASSET_MAINTENANCE, ASSET_SIGNATURE
from controller.clock import Clock, utc_now
from controller.errors import Conflict, InvalidInput, NotFound
from controller.rules.decisions import DecisionService, Recorded
from controller.rules.service import EvaluationResult, RulesService

DEFAULT_ZONE = ZoneInfo("Asia/Shanghai")
_Event = tuple[int, str, "dict[str, Any] | None", "dict[str, Any] | None", str]  # asset id, action, before, after, note


@dataclass(frozen=True)
class AssetView:
    """An asset as people read it, with its latest signature (if any)."""

    tag: str
    kind: str
    description: str
    window: str
    unit: str | None
    identity: str
    agent_id: str | None
    vendor_id: str
    product_id: str
    serial: str
    printer_name: str
    printer_uri: str
    registered_by: str
    registered_at: dt.datetime
    retired_at: dt.datetime | None
    retired_by: str
    retired_reason: str
    signed_by: str | None = None
    signed_on: dt.date | None = None


@dataclass(frozen=True)
class Signature:
    unit: str | None
    signed_by: str
    signed_on: dt.date
    note: str
    recorded_by: str
    recorded_at: dt.datetime


@dataclass(frozen=True)
class Maintenance:
    id: int
    starts_at: dt.datetime
    ends_at: dt.datetime
    note: str
    workstations: tuple[dict[str, Any], ...]  # {"agent_id", "maintenance_record_id"}
    recorded_by: str
    recorded_at: dt.datetime


@dataclass(frozen=True)
class Event:
    action: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    note: str
    recorded_by: str
    recorded_at: dt.datetime


@dataclass(frozen=True)
class AssetDetail:
    asset: AssetView
    signatures: tuple[Signature, ...]
    maintenance: tuple[Maintenance, ...]
    history: tuple[Event, ...]


@dataclass(frozen=True)
class Maintained:
    """An asset's maintenance as recorded, and what re-evaluating its workstations changed."""

    tag: str
    maintenance: Maintenance
    evaluation: EvaluationResult | None


class AssetService:
    """The equipment register; see the module docstring. ``zone`` makes local dates (signatures)."""

    def __init__(self, engine: Engine, clock: Clock = utc_now, *, zone: ZoneInfo = DEFAULT_ZONE,
                 rules: RulesService | None = None) -> None:
        self._engine = engine
        self._clock = clock
        self._zone = zone
        self._rules = rules

    # ------------------------------------------------------------------ registering and changing

    def register(self, tag: str, kind: str, window: str, *, unit: str | None = None, description: str = "",
                 agent: str | None = None, serial: str | None = None, usb: str | None = None,
                 printer: str | None = None, printer_uri: str | None = None, by: str = "") -> AssetView:
        """Add an asset to the register at ``window``; see :mod:`controller.assets.fields` for the identities."""
        values = {"tag": fields.tag(tag), "kind": fields.kind(kind),
                  "description": fields.text("description", description, 255)}
        values.update(fields.identity(values["kind"], agent=agent, serial=serial, usb_ids=usb, printer=printer,
                                      printer_uri=printer_uri))
        with _concurrent_change(f"asset tag {values['tag']} was registered at the same time"), \
                self._write() as conn:
            lookups = importing.Lookups.load(conn)
            values.update(lookups.place(fields.code("window", window), fields.code("unit", unit)))
            lookups.fill_serial(values)
            lookups.check_new(values)
            self._insert_assets(conn, [values], by)
            return self._view(conn, values["tag"])

    def import_csv(self, path: Path, by: str = "") -> list[str]:
        """Register every row of a CSV file, or none (see :mod:`controller.assets.importing`); the tags added."""
        rows = importing.read(path)
        with _concurrent_change(f"{path}: the register changed while it was imported; nothing imported, try again"), \
                self._write() as conn:
            prepared = importing.prepare(path, rows, importing.Lookups.load(conn), self._today())
            ids = self._insert_assets(conn, [values for values, _ in prepared], by, note=f"imported from {path.name}")
            signatures = [(asset_id, Signature(values["unit"], cells.signed_by, cells.signed_on, cells.note, by[:128],
                                               self._clock()))
                          for asset_id, (values, cells) in zip(ids, prepared) if cells is not None]
            self._sign(conn, signatures, None, by)
        return [values["tag"] for values, _ in prepared]

    def edit(self, tag: str, *, description: str | None = None, agent: str | None = None, serial: str | None = None,
             usb: str | None = None, printer: str | None = None, printer_uri: str | None = None,
             by: str = "") -> AssetView:
        """Change the description or the identity (given parts replace the whole identity); ``edited`` event."""
        with self._write() as conn:
            row = self._active(conn, tag)
            changes: dict[str, Any] = {}
            if description is not None:
                changes["description"] = fields.text("description", description, 255)
            if any(v is not None for v in (agent, serial, usb, printer, printer_uri)):
                changes.update(fields.identity(row.kind, agent=agent, serial=serial, usb_ids=usb, printer=printer,
                                               printer_uri=printer_uri))
                lookups = importing.Lookups.load(conn, ignore_tag=row.tag)
                lookups.fill_serial(changes)
                lookups.check_new({**dict(row._mapping), **changes})
            self._change(conn, row, changes, "edited", by)
            return self._view(conn, row.tag)

    def move(self, tag: str, window: str, *, unit: str | None = None, note: str = "", by: str = "") -> AssetView:
        """Move an asset to another window (and unit: the window's, unless given); ``moved`` event."""
        with self._write() as conn:
            row = self._active(conn, tag)
            place = importing.Lookups.load(conn).place(fields.code("window", window), fields.code("unit", unit))
            self._change(conn, row, place, "moved", by, fields.text("note", note, 500))
            return self._view(conn, row.tag)

    def sign(self, tag: str, signed_by: str, *, unit: str | None = None, on: dt.date | None = None, note: str = "",
             by: str = "") -> Signature:
        """Record 领用签字: ``signed_by`` signed for the asset for ``unit`` (default the asset's) on ``on`` (today).

        A unit other than the asset's becomes the asset's unit (recorded in the ``signed`` event).
        """
        person = fields.text("by", signed_by, 128, required=True)
        on = on or self._today()
        if on > self._today():
            raise fields.FieldError("on", f"{on} is in the future")
        with self._write() as conn:
            row = self._active(conn, tag)
            unit_code = fields.code("unit", unit) or row.unit
            if unit_code is None:
                raise fields.FieldError("unit", f"asset {row.tag} has no unit; give the unit that signs for it")
            importing.Lookups.load(conn).require_unit(unit_code)
            signature = Signature(unit_code, person, on, fields.text("note", note, 500), by[:128], self._clock())
            if unit_code != row.unit:
                conn.execute(update(ASSET).where(ASSET.c.id == row.id).values(unit=unit_code))
            self._sign(conn, [(row.id, signature)], row.unit, by)
        return signature

    def retire(self, tag: str, reason: str, *, by: str = "") -> AssetView:
        """Take an asset out of service; it stays in the register, its tag is never reused."""
        why = fields.text("reason", reason, 500, required=True)
        with self._write() as conn:
            row = self._active(conn, tag)
            now = self._clock()
            conn.execute(update(ASSET).where(ASSET.c.id == row.id).values(retired_at=now, retired_by=by[:128],
                                                                          retired_reason=why))
            self._events(conn, [(row.id, "retired", {"retired_at": None}, _plain({"retired_at": now}), why)], by)
            return self._view(conn, row.tag)

    # ------------------------------------------------------------------ maintenance

    def maintain(self, tag: str, starts_at: dt.datetime, ends_at: dt.datetime, note: str, *,
                 by: str = "") -> Maintained:
        """Record maintenance of an asset and of the workstations it concerns (see the module docstring)."""
        what = fields.text("note", note, 500, required=True)
        if starts_at.tzinfo is None or ends_at.tzinfo is None:
            raise InvalidInput("maintenance times must carry a time zone")
        if ends_at <= starts_at:
            raise fields.FieldError("to", f"the maintenance ends ({ends_at:%Y-%m-%d %H:%M} UTC) before it starts "
                                          f"({starts_at:%Y-%m-%d %H:%M} UTC)")
        with self._engine.connect() as conn:
            row = self._active(conn, tag, lock=False)
            agents = self._workstations_of(conn, row)
        decisions = DecisionService(self._engine, self._clock)
        recorded = [decisions.add_maintenance(agent, starts_at, ends_at, f"{row.tag}: {what}", by=by)
                    for agent in agents]
        workstations = tuple({"agent_id": r.agent_id, "maintenance_record_id": r.id} for r in recorded)
        now = self._clock()
        with self._write() as conn:
            key = conn.execute(insert(ASSET_MAINTENANCE).values(
                asset_id=row.id, starts_at=starts_at, ends_at=ends_at, note=what, workstations=list(workstations),
                recorded_by=by[:128], recorded_at=now).returning(ASSET_MAINTENANCE.c.id)).scalar_one()
            after = {"starts_at": starts_at, "ends_at": ends_at, "workstations": list(agents)}
            self._events(conn, [(row.id, "maintained", None, _plain(after), what)], by)
        maintenance = Maintenance(int(key), starts_at, ends_at, what, workstations, by[:128], now)
        return Maintained(row.tag, maintenance, self._reevaluate(recorded))

    def _workstations_of(self, conn: Connection, row: Any) -> list[str]:
        """The agents whose maintenance record this asset's maintenance also is."""
        if row.kind == "pc" and row.agent_id:
            return [row.agent_id]
        asset = registered(row)
        if not asset.keys:
            return []
        seen = seen_items(current_workstations(conn))
        if row.kind == "pc":
            found = match([asset], seen).get(asset.tag)
            return [found.workstation.agent_id] if found else []
        agents = {s.workstation.agent_id for s in seen
                  if any(k in s.item.keys and (strong(k) or s.workstation.window == row.window) for k in asset.keys)}
        return sorted(agents)

    def _reevaluate(self, recorded: Sequence[Recorded]) -> EvaluationResult | None:
        """Evaluate the records' rule kinds again on their workstations, far enough back to withdraw what they cover."""
        if self._rules is None:
            return None
        now = self._clock()
        result = EvaluationResult()
        for record in recorded:
            agent = str(record.agent_id)
            starts = [now - dt.timedelta(days=1), (record.since or now) - dt.timedelta(days=1)]
            earliest = self._rules.earliest_open(record.kinds, agent)
            if earliest is not None:
                starts.append(earliest)
            result += self._rules.evaluate(agent, min(starts), now, kinds=record.kinds, reason="maintenance recorded")
        return result

    # ------------------------------------------------------------------ reading

    def list(self, *, window: str | None = None, unit: str | None = None, kind: str | None = None,
             include_retired: bool = False) -> list[AssetView]:
        """Assets by window and tag, optionally of one window, unit or kind; retired ones only when asked."""
        query = select(ASSET)
        if window:
            query = query.where(ASSET.c.window == window.strip())
        if unit:
            query = query.where(ASSET.c.unit == unit.strip())
        if kind:
            query = query.where(ASSET.c.kind == fields.kind(kind))
        if not include_retired:
            query = query.where(ASSET.c.retired_at.is_(None))
        with self._engine.connect() as conn:
            rows = conn.execute(query.order_by(ASSET.c.window, ASSET.c.tag)).all()
            latest = _latest_signatures(conn, query.with_only_columns(ASSET.c.id))
        return [_asset_view(row, latest.get(row.id)) for row in rows]

    def show(self, tag: str) -> AssetDetail:
        """One asset with its signatures, maintenance and full history, oldest first."""
        with self._engine.connect() as conn:
            row = self._row(conn, tag)
            signatures = tuple(
                Signature(s.unit, s.signed_by, s.signed_on, s.note, s.recorded_by, s.recorded_at)
                for s in conn.execute(select(ASSET_SIGNATURE).where(ASSET_SIGNATURE.c.asset_id == row.id)
                                      .order_by(ASSET_SIGNATURE.c.signed_on, ASSET_SIGNATURE.c.id))
            )
            maintenance = tuple(
                Maintenance(m.id, m.starts_at, m.ends_at, m.note, tuple(m.workstations), m.recorded_by, m.recorded_at)
                for m in conn.execute(select(ASSET_MAINTENANCE).where(ASSET_MAINTENANCE.c.asset_id == row.id)
                                      .order_by(ASSET_MAINTENANCE.c.starts_at, ASSET_MAINTENANCE.c.id))
            )
            history = tuple(
                Event(e.action, e.before, e.after, e.note, e.recorded_by, e.recorded_at)
                for e in conn.execute(select(ASSET_EVENT).where(ASSET_EVENT.c.asset_id == row.id)
                                      .order_by(ASSET_EVENT.c.id))
            )
        return AssetDetail(_asset_view(row, signatures[-1] if signatures else None), signatures, maintenance, history)

    def check(self) -> Reconciliation:
        """Unregistered equipment and registered items no longer seen (see :mod:`controller.assets.reconcile`)."""
        with self._engine.connect() as conn:
            return reconcile(conn, self._clock())

    # ------------------------------------------------------------------ helpers

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        """A transaction that changes the register; on SQLite it takes the write lock at its start, so what it
        reads is still true when it writes (on PostgreSQL, :meth:`_row` locks the asset's row)."""
        with self._engine.begin() as conn:
            if conn.dialect.name == "sqlite":
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            yield conn

    def _row(self, conn: Connection, tag: str, *, lock: bool = False) -> Any:
        """The asset's row; with ``lock``, locked until the transaction ends."""
        query = select(ASSET).where(ASSET.c.tag == tag.strip())
        row = conn.execute(query.with_for_update() if lock else query).one_or_none()
        if row is None:
            raise NotFound(f"no asset {tag.strip()!r}; see `counterguard asset list`")
        return row

    def _active(self, conn: Connection, tag: str, *, lock: bool = True) -> Any:
        """The asset's row, refusing a retired one."""
        row = self._row(conn, tag, lock=lock)
        if row.retired_at is not None:
            raise Conflict(f"asset {row.tag} was retired on {row.retired_at:%Y-%m-%d} ({row.retired_reason})")
        return row

    def _view(self, conn: Connection, tag: str) -> AssetView:
        row = self._row(conn, tag)
        latest = _latest_signatures(conn, select(ASSET.c.id).where(ASSET.c.id == row.id))
        return _asset_view(row, latest.get(row.id))

    def _insert_assets(self, conn: Connection, assets: list[dict[str, Any]], by: str, note: str = "") -> list[int]:
        """Store new assets with their ``registered`` events; their ids, in order."""
        if not assets:
            return []
        now = self._clock()
        rows = [{**values, "registered_by": by[:128], "registered_at": now, "retired_at": None, "retired_by": "",
                 "retired_reason": ""} for values in assets]
        ids = [int(k) for k in conn.execute(
            insert(ASSET).returning(ASSET.c.id, sort_by_parameter_order=True), rows).scalars()]
        self._events(conn, [(key, "registered", None, _plain(values), note) for key, values in zip(ids, assets)], by)
        return ids

    def _sign(self, conn: Connection, signatures: list[tuple[int, Signature]], unit_before: str | None,
              by: str) -> None:
        """Store signatures and their ``signed`` events (with the unit before, when signing changed it)."""
        if not signatures:
            return
        conn.execute(insert(ASSET_SIGNATURE), [
            {"asset_id": asset_id, "unit": s.unit, "signed_by": s.signed_by, "signed_on": s.signed_on, "note": s.note,
             "recorded_by": s.recorded_by, "recorded_at": s.recorded_at} for asset_id, s in signatures])
        self._events(conn, [
            (asset_id, "signed", {"unit": unit_before} if unit_before != s.unit else None,
             _plain({"unit": s.unit, "signed_by": s.signed_by, "signed_on": s.signed_on}), s.note)
            for asset_id, s in signatures], by)

    def _today(self) -> dt.date:
        return self._clock().astimezone(self._zone).date()

    def _change(self, conn: Connection, row: Any, changes: dict[str, Any], action: str, by: str,
                note: str = "") -> None:
        """Apply the values that differ from ``row`` and record them as one ``action`` event (none: nothing)."""
        changed = {k: v for k, v in changes.items() if getattr(row, k) != v}
        if not changed:
            return
        conn.execute(update(ASSET).where(ASSET.c.id == row.id).values(**changed))
        self._events(conn, [(row.id, action, _plain({k: getattr(row, k) for k in changed}), _plain(changed), note)], by)

    def _events(self, conn: Connection, events: list[_Event], by: str) -> None:
        """Store ``(asset id, action, before, after, note)`` events by ``by``, now."""
        now = self._clock()
        conn.execute(insert(ASSET_EVENT), [
            {"asset_id": asset_id, "action": action, "before": before, "after": after, "note": note[:500],
             "recorded_by": by[:128], "recorded_at": now} for asset_id, action, before, after, note in events])


@contextmanager
def _concurrent_change(message: str) -> Iterator[None]:
    """A unique constraint broken by a change committed since the checks is a conflict, not a crash."""
    try:
        yield
    except IntegrityError:
        raise Conflict(message) from None


def _latest_signatures(conn: Connection, asset_ids: Any) -> dict[int, Any]:
    """Asset id → its latest signature, for the assets ``asset_ids`` (a query of ids) selects."""
    latest: dict[int, Any] = {}
    for row in conn.execute(select(ASSET_SIGNATURE).where(ASSET_SIGNATURE.c.asset_id.in_(asset_ids))
                            .order_by(ASSET_SIGNATURE.c.signed_on, ASSET_SIGNATURE.c.id)):
        latest[row.asset_id] = row
    return latest


def _asset_view(row: Any, signature: Any) -> AssetView:
    return AssetView(
        row.tag, row.kind, row.description, row.window, row.unit, fields.describe_identity(row), row.agent_id,
        row.vendor_id, row.product_id, row.serial, row.printer_name, row.printer_uri, row.registered_by,
        row.registered_at, row.retired_at, row.retired_by, row.retired_reason,
        signature.signed_by if signature is not None else None, signature.signed_on if signature is not None else None,
    )


def _plain(values: dict[str, Any]) -> dict[str, Any]:
    """Values as JSON keeps them: dates and times as ISO text."""
    return {k: v.isoformat() if isinstance(v, (dt.date, dt.datetime)) else v for k, v in values.items()}
