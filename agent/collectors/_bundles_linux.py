"""Applications installed as bundles outside dpkg: Flatpak apps and snaps.

Flatpak: ``<flatpak_dir>/app/<app-id>/current`` links to the active ``<arch>/<branch>``, whose ``active`` link
points at the deployed commit. The item is named by the application id (stable across updates and
branches; its desktop file is ``<app-id>.desktop``); the version comes from the AppStream metainfo's newest
``<release>``, else it is the branch. Runtimes are not applications and are left out.

Snap: ``<snap_dir>/<name>/current/meta/snap.yaml``, read line by line (top-level ``key: value`` only, no
YAML library). Base, OS, kernel, gadget and snapd snaps (``core*``, ``bare``, ``snapd``) are plumbing,
not software a user runs, and are left out.

In both, the install date is when the ``current``/``active`` link was last replaced: when the running
revision was installed or updated.
"""

from __future__ import annotations

import re
from pathlib import Path

from agent.collectors._files import list_dir, mtime, read_text, timestamp
from protos.counterguard.v1 import facts_pb2

_RELEASE_VERSION = re.compile(r"<release\b[^>]*?\bversion=[\"']([^\"']+)[\"']")
_PLAIN_NAME = re.compile(r"<name>\s*([^<]+?)\s*</name>")
_SNAP_PLUMBING_TYPES = frozenset({"base", "core", "os", "snapd", "kernel", "gadget"})


def _metainfo(deploy: Path, app_id: str) -> str:
    """The AppStream metainfo (or older appdata) XML the app ships; ``""`` when it has none."""
    share = deploy / "files" / "share"
    for relative in ("metainfo/{}.metainfo.xml", "metainfo/{}.appdata.xml", "appdata/{}.appdata.xml"):
        text = read_text(share / relative.format(app_id))
        if text:
            return text
    return ""


def _flatpak_app(app_dir: Path) -> facts_pb2.SoftwareItem | None:
    """The active deploy of one Flatpak app, or ``None`` when it has no ``current`` link."""
    current = app_dir / "current"
    try:
        arch, branch = Path(current.readlink()).parts[-2:]
    except (OSError, ValueError):
        return None
    active = app_dir / arch / branch / "active"
    metainfo = _metainfo(active, app_dir.name)
    version, display = _RELEASE_VERSION.search(metainfo), _PLAIN_NAME.search(metainfo)
    moment = mtime(active, follow_symlinks=False)
    return facts_pb2.SoftwareItem(
        source=facts_pb2.SOFTWARE_SOURCE_FLATPAK,
        name=app_dir.name,
        version=version.group(1) if version else branch,
        display_name=display.group(1) if display else "",
        install_date=timestamp(moment) if moment is not None else None,
        architecture=arch,
        install_location=str(app_dir),
    )


def flatpak_apps(flatpak_dirs: tuple[Path, ...]) -> list[facts_pb2.SoftwareItem]:
    """Flatpak applications of every installation; an app in two installations is listed once (the first)."""
    items: dict[str, facts_pb2.SoftwareItem] = {}
    for installation in flatpak_dirs:
        for app_dir in list_dir(installation / "app"):
            item = _flatpak_app(app_dir)
            if item is not None and item.name not in items:
                items[item.name] = item
    return list(items.values())


def parse_snap_yaml(text: str) -> dict[str, str]:
    """Top-level scalar ``key: value`` lines of a ``snap.yaml``, quotes removed; nested lines are ignored."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        if not line or line[0] in " \t#-":
            continue
        key, sep, value = line.partition(":")
        value = value.strip()
        if sep and value:
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
                value = value[1:-1]
            values.setdefault(key.strip(), value)
    return values


def _is_plumbing(meta: dict[str, str]) -> bool:
    """Bases, the OS snap, snapd itself, kernels and gadgets."""
    name = meta.get("name", "")
    return meta.get("type", "app") in _SNAP_PLUMBING_TYPES or name.startswith("core") or name in ("snapd", "bare")


def snaps(snap_dir: Path) -> list[facts_pb2.SoftwareItem]:
    """Installed snaps that are applications."""
    items: list[facts_pb2.SoftwareItem] = []
    for folder in list_dir(snap_dir):
        meta = parse_snap_yaml(read_text(folder / "current" / "meta" / "snap.yaml"))
        if not meta.get("name") or _is_plumbing(meta):
            continue
        moment = mtime(folder / "current", follow_symlinks=False)
        items.append(
            facts_pb2.SoftwareItem(
                source=facts_pb2.SOFTWARE_SOURCE_SNAP,
                name=meta["name"],
                version=meta.get("version", ""),
                display_name=meta.get("title", ""),
                install_date=timestamp(moment) if moment is not None else None,
                install_location=str(folder),
            )
        )
    return items
