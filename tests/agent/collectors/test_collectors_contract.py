"""The collector registry and the promises every collector module keeps (the psutil-style contract test)."""

from __future__ import annotations

import ast
import inspect
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import agent.collectors
from agent.collectors import COLLECTORS, Roots
from protos.counterguard.v1 import facts_pb2

PACKAGE_DIR = Path(agent.collectors.__file__).parent
PUBLIC_API: dict[str, set[str]] = {
    "inventory": {"collect_inventory"},
    "software": {"collect_software", "SoftwareTracker"},
    "processes": {"ProcessTracker"},
    "sessions": {"SessionTracker"},
    "power": {"boot_time", "boot_event", "heartbeat", "shutdown_event", "system_is_stopping"},
    "activity": {"ActivityTracker", "default_reader", "state_of"},
    "foreground": {"ForegroundTracker", "classify", "default_reader"},
    "removable": {"RemovableTracker", "MountWatcher"},
    "antivirus": {"AntivirusChecker", "product_status"},
}


def test_every_public_module_is_registered_and_every_entry_exists() -> None:
    public = {m.name for m in pkgutil.iter_modules([str(PACKAGE_DIR)]) if not m.name.startswith("_")}
    assert public == {c.name for c in COLLECTORS}


def test_registered_fact_kinds_are_fields_of_fact_and_cover_all_but_the_agents_own() -> None:
    oneof = {field.name for field in facts_pb2.Fact.DESCRIPTOR.oneofs_by_name["kind"].fields}
    kinds = [kind for collector in COLLECTORS for kind in collector.fact_kinds]
    assert len(kinds) == len(set(kinds))
    assert set(kinds) == oneof - {"outbox_notice", "agent_health"}  # the outbox's and the self-limits' facts


@pytest.mark.parametrize("collector", COLLECTORS, ids=lambda c: c.name)
def test_each_collector_loads_with_its_public_interface(collector: agent.collectors.Collector) -> None:
    module = collector.load()
    assert module.__name__ == collector.module_name
    assert PUBLIC_API[collector.name] <= set(dir(module))


def test_roots_keep_their_field_names_and_system_defaults() -> None:
    roots = Roots()
    assert (roots.sysfs, roots.procfs, roots.etc) == (Path("/sys"), Path("/proc"), Path("/etc"))
    assert roots.utmp == Path("/run/utmp") and roots.run == Path("/run")
    assert roots.dpkg_status == Path("/var/lib/dpkg/status") and roots.snap_dir == Path("/snap")


def test_signatures_others_code_against() -> None:
    from agent.collectors import inventory, power, processes, sessions, software

    assert list(inspect.signature(inventory.collect_inventory).parameters)[0] == "roots"
    assert list(inspect.signature(software.SoftwareTracker).parameters) == ["roots"]
    assert list(inspect.signature(sessions.SessionTracker).parameters) == ["roots"]
    assert list(inspect.signature(processes.ProcessTracker).parameters)[0] == "clock"
    for function in (power.boot_time, power.boot_event, power.heartbeat, power.shutdown_event):
        assert list(inspect.signature(function).parameters) == ["roots"]
    stopping = inspect.signature(power.system_is_stopping).parameters.values()
    assert all(p.default is not inspect.Parameter.empty for p in stopping)  # callable as system_is_stopping()


def test_every_module_has_a_docstring_and_stays_small() -> None:
    for path in sorted(PACKAGE_DIR.glob("*.py")):
        source = path.read_text(encoding="utf-8")
        assert ast.get_docstring(ast.parse(source)), f"{path.name} has no module docstring"
        assert len(source.splitlines()) < 400, f"{path.name} is over 400 lines"


def imported_roots(path: Path) -> set[str]:
    """The top-level names a module imports."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("path", sorted(PACKAGE_DIR.glob("*.py")), ids=lambda p: p.name)
def test_collectors_use_only_stdlib_psutil_and_protobuf(path: Path) -> None:
    imported = imported_roots(path)
    # watchdog: file-system events (removable storage); jeepney: logind over D-Bus (pure Python)
    assert imported <= set(sys.stdlib_module_names) | {"psutil", "google", "protos", "agent", "watchdog", "jeepney"}
    assert not imported & {"subprocess", "controller", "sqlmodel", "sqlalchemy", "yaml"}


def test_loading_every_collector_pulls_in_no_controller_code() -> None:
    names = " ".join(c.module_name for c in COLLECTORS)
    code = (
        f"import importlib, sys\nfor name in {names!r}.split(): importlib.import_module(name)\n"
        "bad = ('controller', 'sqlmodel', 'sqlalchemy', 'yaml')\n"
        "print(' '.join(sorted(m for m in sys.modules if m.split('.')[0] in bad)))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            cwd=PACKAGE_DIR.parent.parent)
    assert result.stdout.strip() == ""
