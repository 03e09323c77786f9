"""``counterguard inventory show | software list | processes``: what a workstation has and runs.

Everything shown is derived from the facts the agent reported (see :mod:`controller.state`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any, Optional

import typer

from controller import state
from controller.cli import context
from controller.cli.output import JsonOption, print_fields, print_json, print_table, to_jsonable
from controller.convert import message_values
from controller.errors import NotFound
from controller.state import InventoryRecord

_NEVER = dt.datetime.min.replace(tzinfo=dt.UTC)

inventory_app = typer.Typer(help="Hardware, peripheral and OS inventory of a workstation.", no_args_is_help=True)
software_app = typer.Typer(help="Software installed on a workstation.", no_args_is_help=True)

AgentArgument = typer.Argument(..., metavar="AGENT", help="Agent id (see `counterguard agents list`).")


def _known_agent(agent_id: str) -> None:
    """Fail with one sentence, pointing at the agent list, when the agent does not exist."""
    try:
        state.last_seen(context.engine(), agent_id)
    except NotFound:
        raise NotFound(f"no agent {agent_id!r}; see `counterguard agents list`") from None


@inventory_app.command("show")
def show(
    agent_id: str = AgentArgument,
    diff: bool = typer.Option(False, "--diff", help="Show what changed between two inventories instead."),
    from_fact: Optional[int] = typer.Option(None, "--from", metavar="FACT_ID", help="Older inventory (with --diff)."),
    to_fact: Optional[int] = typer.Option(None, "--to", metavar="FACT_ID", help="Newer inventory (with --diff)."),
    as_json: bool = JsonOption,
) -> None:
    """The latest inventory, or with --diff the changes between the last two (or the given ones)."""
    _known_agent(agent_id)
    if diff or from_fact is not None or to_fact is not None:
        _show_diff(agent_id, from_fact, to_fact, as_json)
        return
    record = state.inventory(context.engine(), agent_id)
    if as_json:
        print_json({**_record_json(agent_id, record), "snapshot": message_values(record.snapshot)})
        return
    _print_inventory(agent_id, record)


@software_app.command("list")
def list_software(
    agent_id: str = AgentArgument,
    category: Optional[str] = typer.Option(
        None, "--category", help="Only this category: a hint (game, video, music, chat, stock, office) "
        "or a package Section/Categories value."
    ),
    hinted: bool = typer.Option(False, "--hinted", help="Only software with a category hint."),
    limit: Optional[int] = typer.Option(None, "--limit", min=1, help="Show at most this many."),
    as_json: bool = JsonOption,
) -> None:
    """Installed software: the latest full list with the later changes applied."""
    _known_agent(agent_id)
    software = state.installed_software(context.engine(), agent_id)
    total = len(software)
    if category:
        wanted = category.strip().lower()
        software = [s for s in software if wanted in {*s.hints, *(c.lower() for c in s.categories), s.section.lower()}]
    if hinted:
        software = [s for s in software if s.hints]
    matching = len(software)
    software = software[:limit] if limit else software
    if as_json:
        print_json(software)
        return
    if not software:
        if not total:
            typer.echo(f"No installed software reported by agent {agent_id} yet.")
        else:
            wanted_text = " and ".join(
                text for text, on in ((f"is in category {category!r}", category), ("has a category hint", hinted)) if on
            )
            typer.echo(f"None of the {total} installed programs on agent {agent_id} {wanted_text}.")
        return
    shown = f"{matching}, first {len(software)}" if len(software) < matching else str(matching)
    print_table(
        f"Software on {agent_id} ({shown})",
        ("source", "name", "version", "section", "categories", "hints"),
        ((s.source, s.name, s.version, s.section, list(s.categories), list(s.hints)) for s in software),
    )


def processes(
    agent_id: str = AgentArgument,
    limit: Optional[int] = typer.Option(None, "--limit", min=1, help="Show at most this many."),
    as_json: bool = JsonOption,
) -> None:
    """Programs running on the workstation as of its last report."""
    _known_agent(agent_id)
    running = state.running_processes(context.engine(), agent_id)
    running.sort(key=lambda p: p.started_at or _NEVER, reverse=True)  # the programs people start come last
    shown = running[:limit] if limit else running
    if as_json:
        print_json(shown)
        return
    if not running:
        typer.echo(f"No running programs reported by agent {agent_id}.")
        return
    count = f"{len(running)}, newest {len(shown)}" if len(shown) < len(running) else f"{len(running)}, newest first"
    title = f"Programs running on {agent_id} ({count})"
    print_table(
        title,
        ("pid", "name", "executable", "user", "started"),
        ((p.pid, p.name, p.executable, p.username, p.started_at) for p in shown),
    )


def register(app: typer.Typer) -> None:
    app.add_typer(inventory_app, name="inventory")
    app.add_typer(software_app, name="software")
    app.command("processes")(processes)


# ------------------------------------------------------------------------------ inventory text


def _print_inventory(agent_id: str, record: InventoryRecord) -> None:
    inv = record.snapshot
    assert inv is not None
    print_fields(
        f"Inventory of {agent_id}",
        (
            ("host name", inv.hostname),
            ("fact", f"{record.fact_id} (sequence {record.sequence})"),
            ("observed at", record.observed_at),
            ("received at", record.received_at),
        ),
    )
    s, cpu, mem, os_ = inv.system, inv.cpu, inv.memory, inv.os
    print_fields(
        "System",
        (
            ("vendor", s.vendor), ("model", s.model), ("serial", s.serial), ("UUID", s.uuid),
            ("BIOS", _join(s.bios_vendor, s.bios_version, s.bios_date)),
            ("board", _join(s.board_vendor, s.board_model, f"serial {s.board_serial}" if s.board_serial else "")),
            ("chassis", s.chassis_type),
        ),
    )
    print_fields(
        "CPU",
        (
            ("model", cpu.model), ("vendor", cpu.vendor), ("architecture", cpu.architecture),
            ("cores", f"{cpu.physical_cores} physical, {cpu.logical_cores} logical"),
            ("max MHz", f"{cpu.max_mhz:.0f}" if cpu.max_mhz else ""),
        ),
    )
    print_fields("Memory", (("total", _size(mem.total_bytes)), ("swap", _size(mem.swap_bytes))))
    print_fields(
        "Operating system",
        (
            ("name", os_.name), ("version", os_.version), ("id", os_.id), ("family", os_.family),
            ("kernel", os_.kernel), ("architecture", os_.architecture), ("machine id", os_.machine_id),
            ("installed", message_values(os_)["install_date"]),
        ),
    )
    _table("Disks", ("name", "vendor", "model", "serial", "size", "removable", "rotational"), (
        (d.name, d.vendor, d.model, d.serial, _size(d.size_bytes), d.removable, d.rotational) for d in inv.disks
    ))
    gateway = f", default gateway {inv.default_gateway}" if inv.default_gateway else ""
    _table("Network interfaces", ("interface", "MAC", "addresses", "up", "speed", "virtual"), (
        (n.name, n.mac, list(n.addresses), n.up, f"{n.speed_mbps} Mb/s" if n.speed_mbps else "", n.virtual)
        for n in inv.network_interfaces
    ), note=gateway)
    _table("USB devices", ("bus", "id", "vendor", "product", "serial", "class"), (
        (u.bus_id, f"{u.vendor_id}:{u.product_id}", u.vendor, u.product, u.serial, state.usb_device_class(u))
        for u in inv.usb_devices
    ))
    _table("Printers", ("name", "make and model", "URI", "location", "default"), (
        (p.name, p.make_model, p.uri, p.location, p.is_default) for p in inv.printers
    ))
    _table("PCI devices", ("slot", "class", "id", "vendor", "device", "driver"), (
        (p.slot, p.class_code, f"{p.vendor_id}:{p.device_id}", p.vendor, p.device, p.driver) for p in inv.pci_devices
    ))
    _table("File systems", ("mount point", "device", "type", "size", "free"), (
        (f.mount_point, f.device, f.fs_type, _size(f.total_bytes), _size(f.free_bytes)) for f in inv.filesystems
    ))
    _table("Local users", ("name", "uid", "full name", "home", "shell"), (
        (u.name, u.uid, u.full_name, u.home, u.shell) for u in inv.local_users
    ))
    _table("Local groups", ("name", "gid", "members"), ((g.name, g.gid, list(g.members)) for g in inv.local_groups))


def _show_diff(agent_id: str, from_fact: int | None, to_fact: int | None, as_json: bool) -> None:
    engine = context.engine()
    history = state.inventory_history(engine, agent_id)
    new = state.inventory(engine, agent_id, to_fact)
    if from_fact is None:
        older = [r for r in history if r.sequence < new.sequence]
        if not older:
            message = f"agent {agent_id} has no inventory before fact {new.fact_id}; nothing to compare"
            if as_json:
                print_json({"agent_id": agent_id, "from": None, "to": _record_json(agent_id, new), "changes": []})
            else:
                typer.echo(message[0].upper() + message[1:] + ".")
            return
        from_fact = older[-1].fact_id
    old = state.inventory(engine, agent_id, from_fact)
    changes = state.diff_inventory(old.snapshot, new.snapshot)  # type: ignore[arg-type]
    if as_json:
        print_json({"agent_id": agent_id, "from": _record_json(agent_id, old), "to": _record_json(agent_id, new),
                    "changes": changes})
        return
    span = f"fact {old.fact_id} ({_when(old)}) → fact {new.fact_id} ({_when(new)})"
    if not changes:
        typer.echo(f"No changes in the inventory of {agent_id}: {span}.")
        return
    print_table(
        f"Inventory changes of {agent_id}: {span}",
        ("section", "item", "field", "old", "new"),
        ((c.section, c.item, c.field, _value(c.old), _value(c.new)) for c in changes),
    )


def _record_json(agent_id: str, record: InventoryRecord) -> dict[str, Any]:
    return {
        "agent_id": agent_id,
        "fact_id": record.fact_id,
        "sequence": record.sequence,
        "observed_at": to_jsonable(record.observed_at),
        "received_at": to_jsonable(record.received_at),
    }


def _table(title: str, columns: tuple[str, ...], rows: Iterable[tuple[Any, ...]], note: str = "") -> None:
    """A section table titled with its row count (and ``note``), or one line when it is empty."""
    rows = list(rows)
    if rows:
        print_table(f"{title} ({len(rows)}){note}", columns, rows)
    else:
        typer.echo(f"{title}: none reported")


def _when(record: InventoryRecord) -> str:
    return f"{record.observed_at:%Y-%m-%d %H:%M} UTC"


def _value(value: Any) -> Any:
    """A diff cell: presence as words, empty values visibly empty."""
    if value is True:
        return "yes"
    if value is False:
        return "no"
    if value == "" or value == []:
        return "(empty)"
    return value


def _join(*parts: str) -> str:
    return " ".join(part for part in parts if part)


def _size(n: int) -> str:
    """A byte count for people: binary units, one decimal."""
    if not n:
        return ""
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")
