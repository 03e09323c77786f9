"""The antivirus collector: whether each product the policy requires is installed and running.

For every :class:`AntivirusProbe` of the policy: installed when one of its packages is installed (dpkg on
Linux, with that package's version) or one of its paths exists; running when a process with one of its
names runs (case-insensitive; the process name or its executable's basename, a Windows ``.exe`` optional).
The agent judges nothing: a missing product is reported as ``installed=False``, and the controller decides.
:class:`AntivirusChecker` reports the status when it differs from the last one reported (so at start too).

The package back end for this platform is chosen once, at import: Linux reads dpkg (``_antivirus_linux``);
elsewhere products are recognised by their paths and processes only.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path, PureWindowsPath

import psutil

from agent.collectors import Roots
from protos.counterguard.v1 import agent_pb2, facts_pb2

if sys.platform.startswith("linux"):
    from agent.collectors._antivirus_linux import installed_packages
else:  # pragma: no cover - no package database read on other platforms yet
    def installed_packages(roots: Roots) -> dict[str, str]:
        """No package database on this platform: products are recognised by path and process."""
        return {}

__all__ = ["AntivirusChecker", "installed_packages", "product_status", "running_process_names"]


def _program(name: str) -> str:
    """A process name as compared: case-folded, without a Windows ``.exe``."""
    return name.casefold().removesuffix(".exe")


def running_process_names() -> set[str]:
    """The names of every running process and the basenames of their executables, as compared."""
    names: set[str] = set()
    for process in psutil.process_iter(["name", "exe"]):
        for value in (process.info.get("name"), process.info.get("exe")):
            if value:
                names.add(_program(PureWindowsPath(value).name))
    return names


def product_status(probe: agent_pb2.AntivirusProbe, packages: Mapping[str, str], running: set[str],
                   exists: Callable[[Path], bool] = Path.exists) -> facts_pb2.AntivirusProduct:
    """One product's state from the installed packages (name → version) and the running process names."""
    versions = [packages[p.casefold()] for p in probe.packages if p.casefold() in packages]
    installed = bool(versions) or any(path and exists(Path(path)) for path in probe.paths)
    return facts_pb2.AntivirusProduct(
        name=probe.name,
        installed=installed,
        running=any(name and _program(name) in running for name in probe.process_names),
        version=versions[0] if versions else "",
    )


class AntivirusChecker:
    """Checks the policy's antivirus products and reports their state when it changed."""

    def __init__(self, probes: Iterable[agent_pb2.AntivirusProbe] = (), roots: Roots = Roots(), *,
                 running_names: Callable[[], set[str]] = running_process_names) -> None:
        self._probes = list(probes)
        self._roots = roots
        self._running_names = running_names
        self._last: facts_pb2.AntivirusStatus | None = None

    @property
    def probes(self) -> list[agent_pb2.AntivirusProbe]:
        """The products checked."""
        return list(self._probes)

    def set_probes(self, probes: Iterable[agent_pb2.AntivirusProbe]) -> None:
        """Check these products from now on; the next check reports their state whatever it is."""
        self._probes = list(probes)
        self._last = None

    def status(self) -> facts_pb2.AntivirusStatus:
        """The state of every product now."""
        packages = installed_packages(self._roots) if any(p.packages for p in self._probes) else {}
        running = self._running_names() if any(p.process_names for p in self._probes) else set()
        return facts_pb2.AntivirusStatus(products=[product_status(p, packages, running) for p in self._probes])

    def check(self) -> facts_pb2.AntivirusStatus | None:
        """The state when it differs from the last one reported; ``None`` when unchanged or nothing is required."""
        if not self._probes:
            return None
        status = self.status()
        if status == self._last:
            return None
        self._last = status
        return status
