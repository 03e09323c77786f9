"""Installed Debian packages, read straight from dpkg's status database (no ``dpkg-query`` subprocess).

A package counts as installed when its files are on disk: dpkg status ``installed`` and the transient
states a package passes through during an install (``unpacked``, ``half-configured``, ``triggers-awaited``,
``triggers-pending``). Without the transient states a rescan in the middle of an ``apt`` run would report
packages as removed and added again. ``config-files``, ``half-installed`` and ``not-installed`` are left
out: only configuration, or nothing, remains. The want flag does not matter (``hold ok installed`` is
installed).

A package of a foreign architecture (``libc6`` for i386 on amd64) is named ``libc6:i386``, the way
``dpkg-query`` names it, so both architectures can be installed side by side.
"""

from __future__ import annotations

from pathlib import Path

from google.protobuf.timestamp_pb2 import Timestamp

from agent.collectors import Roots
from agent.collectors._files import mtime, read_text, timestamp
from protos.counterguard.v1 import facts_pb2

_PRESENT_STATES = frozenset({"installed", "unpacked", "half-configured", "triggers-awaited", "triggers-pending"})
_FIELDS = frozenset({"Package", "Status", "Version", "Section", "Maintainer", "Architecture"})


def _stanza_fields(stanza: str) -> dict[str, str]:
    """The single-line fields of one status stanza that we use; continuation lines are skipped."""
    fields: dict[str, str] = {}
    for line in stanza.split("\n"):
        if not line or line[0] in " \t":
            continue
        key, sep, value = line.partition(":")
        if sep and key in _FIELDS:
            fields[key] = value.strip()
    return fields


def _is_present(status: str) -> bool:
    """True for ``<want> ok <state>`` with a state in which the package's files are on disk."""
    parts = status.split()
    return len(parts) == 3 and parts[1] == "ok" and parts[2] in _PRESENT_STATES


def parse_status(text: str) -> list[dict[str, str]]:
    """The stanzas of installed packages in a dpkg status file, as field dicts."""
    return [
        fields
        for stanza in text.split("\n\n")
        if "Status:" in stanza
        and _is_present((fields := _stanza_fields(stanza)).get("Status", ""))
        and fields.get("Package")
    ]


def _publisher(maintainer: str) -> str:
    """``"Debian Games Team <pkg-games@...>"`` → ``"Debian Games Team"`` (the address when that is all)."""
    name = maintainer.split("<", 1)[0].strip()
    return name or maintainer.strip("<> ")


def _install_date(info_dir: Path, package: str, arch: str) -> Timestamp | None:
    """When dpkg last wrote the package's file list (``<pkg>.list``, or ``<pkg>:<arch>.list`` for Multi-Arch)."""
    moment = mtime(info_dir / f"{package}.list") or mtime(info_dir / f"{package}:{arch}.list")
    return timestamp(moment) if moment is not None else None


def _native_architecture(packages: list[dict[str, str]]) -> str:
    """dpkg's own architecture is the native one."""
    return next((p.get("Architecture", "") for p in packages if p["Package"] == "dpkg"), "")


def dpkg_packages(roots: Roots) -> list[facts_pb2.SoftwareItem]:
    """Every installed dpkg package as a ``SoftwareItem`` (source DPKG)."""
    packages = parse_status(read_text(roots.dpkg_status))
    native = _native_architecture(packages)
    items: list[facts_pb2.SoftwareItem] = []
    for fields in packages:
        package, arch = fields["Package"], fields.get("Architecture", "")
        foreign = bool(native) and arch not in ("", "all", native)
        items.append(
            facts_pb2.SoftwareItem(
                source=facts_pb2.SOFTWARE_SOURCE_DPKG,
                name=f"{package}:{arch}" if foreign else package,
                version=fields.get("Version", ""),
                publisher=_publisher(fields.get("Maintainer", "")),
                install_date=_install_date(roots.dpkg_info, package, arch),
                section=fields.get("Section", ""),
                architecture=arch,
            )
        )
    return items
