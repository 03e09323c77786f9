"""Windows back end of the software collector: the programs listed under the registry's Uninstall keys.

"Apps & features" reads three places, and so do we:

- ``HKLM\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\Uninstall``: machine-wide programs of the native
  view (64-bit programs on 64-bit Windows);
- ``HKLM\\SOFTWARE\\WOW6432Node\\Microsoft\\Windows\\CurrentVersion\\Uninstall``: machine-wide 32-bit
  programs on 64-bit Windows (WeChat, QQ, 360 and most Chinese desktop software are 32-bit);
- ``HKU\\<SID>\\Software\\Microsoft\\Windows\\CurrentVersion\\Uninstall`` of every loaded user hive:
  programs installed for one user only (per-user installers need no administrator).

An entry without ``DisplayName`` or with ``SystemComponent=1`` is hidden from the user and skipped, and so
are updates (``ParentKeyName`` set, or ``ReleaseType`` Update/Hotfix/Security Update/Service Pack). A
machine-wide product listed in both views (an installer that writes both, or an old 32-bit install beside
the new 64-bit one with the same name and version) is reported once, from the native view.

An item's ``name`` is its Uninstall subkey name (``WeChat``, ``{GUID}`` for MSI packages), which is what
identifies it on the machine; a 32-bit entry whose subkey name is taken by a different native program is
named ``WOW6432Node\\<key>``, and a per-user entry ``<SID>\\<key>``, so ``(source, name)`` stays unique.

The registry is read through a :class:`RegistryReader`; tests give a fake one loaded from recorded
dumps, :class:`WinRegistry` is the real one (``winreg``, imported only when used, on Windows).
"""

from __future__ import annotations

import datetime as dt
import ntpath
import platform
import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Protocol

from agent.collectors import Roots
from agent.collectors._files import timestamp
from protos.counterguard.v1 import facts_pb2

HKLM = "HKEY_LOCAL_MACHINE"
HKU = "HKEY_USERS"
UNINSTALL = r"SOFTWARE\Microsoft\Windows\CurrentVersion\Uninstall"
UNINSTALL_32 = r"SOFTWARE\WOW6432Node\Microsoft\Windows\CurrentVersion\Uninstall"
USER_UNINSTALL = r"Software\Microsoft\Windows\CurrentVersion\Uninstall"
_UPDATE_RELEASE_TYPES = frozenset({"update", "hotfix", "security update", "service pack"})
_UNINSTALLER = re.compile(r"^(unins\d*|uninst(all)?[^.]*|uninstaller)\.exe$", re.IGNORECASE)
_DATE_FORMATS = ("%Y%m%d", "%Y-%m-%d", "%Y/%m/%d", "%Y.%m.%d", "%m/%d/%Y")
_NATIVE_ARCHITECTURES = {"amd64": "x64", "x86_64": "x64", "arm64": "arm64", "aarch64": "arm64", "x86": "x86"}


class RegistryReader(Protocol):
    """Read access to the registry. A key that does not exist has no subkeys and no values.

    ``hive`` is the predefined key's full name (``HKEY_LOCAL_MACHINE``, ``HKEY_USERS``); ``path`` is
    below it, backslash-separated. Values come as ``winreg`` gives them: ``str`` for REG_SZ and
    REG_EXPAND_SZ (unexpanded), ``int`` for REG_DWORD/REG_QWORD, ``list[str]`` for REG_MULTI_SZ.
    """

    def subkeys(self, hive: str, path: str) -> list[str]: ...

    def values(self, hive: str, path: str) -> dict[str, Any]: ...


class WinRegistry:
    """The real registry, always in its 64-bit view, so a 32-bit Python is not redirected to WOW6432Node."""

    def _open(self, hive: str, path: str) -> Any:
        import winreg  # Windows only

        access = winreg.KEY_READ | winreg.KEY_WOW64_64KEY
        return winreg.OpenKey(getattr(winreg, hive), path, 0, access)

    def subkeys(self, hive: str, path: str) -> list[str]:
        import winreg

        try:
            with self._open(hive, path) as key:
                return [winreg.EnumKey(key, i) for i in range(winreg.QueryInfoKey(key)[0])]
        except OSError:
            return []

    def values(self, hive: str, path: str) -> dict[str, Any]:
        import winreg

        try:
            with self._open(hive, path) as key:
                found = (winreg.EnumValue(key, i) for i in range(winreg.QueryInfoKey(key)[1]))
                return {name: data for name, data, _kind in found}
        except OSError:
            return {}


# ------------------------------------------------------------------------------------------ values


def _text(values: Mapping[str, Any], name: str) -> str:
    """A string value, stripped of whitespace and the NULs some installers leave; ``""`` if absent or not text."""
    value = values.get(name)
    return value.strip().strip("\x00").strip() if isinstance(value, str) else ""


def _flag(values: Mapping[str, Any], name: str) -> bool:
    """A DWORD flag that installers also write as a string (``"1"``)."""
    value = values.get(name)
    if isinstance(value, int):
        return value != 0
    return isinstance(value, str) and value.strip() not in ("", "0")


def install_date(raw: Any) -> dt.datetime | None:
    """``InstallDate`` as midnight UTC of that day; ``None`` when missing or malformed.

    Windows Installer writes ``YYYYMMDD``; other installers write ``2023/5/12``, ``2023-05-12``, a DWORD
    ``20230512`` or rubbish. A date before 1990 or after 2100 counts as rubbish.
    """
    text = str(raw).strip().strip("\x00") if isinstance(raw, (str, int)) and not isinstance(raw, bool) else ""
    for layout in _DATE_FORMATS:
        try:
            day = dt.datetime.strptime(text, layout)
        except ValueError:
            continue
        if 1990 <= day.year <= 2100:
            return day.replace(tzinfo=dt.UTC)
    return None


def executable_of(display_icon: str) -> str:
    """The program a ``DisplayIcon`` points at, as a basename: ``"C:\\...\\WeChat.exe",0`` → ``WeChat.exe``.

    Icons in ``.ico`` or ``.dll`` files and uninstallers (``unins000.exe``, ``uninst.exe``) say nothing
    about the program, so they give ``""``.
    """
    path = display_icon.strip()
    if path.startswith('"'):
        path = path[1:].split('"', 1)[0]
    else:
        path = re.sub(r",\s*-?\d+\s*$", "", path)
    name = ntpath.basename(path.strip())
    if not name.lower().endswith(".exe") or _UNINSTALLER.match(name):
        return ""
    return name


def _is_update(values: Mapping[str, Any]) -> bool:
    return bool(_text(values, "ParentKeyName")) or _text(values, "ReleaseType").lower() in _UPDATE_RELEASE_TYPES


def software_item(name: str, values: Mapping[str, Any], architecture: str) -> facts_pb2.SoftwareItem | None:
    """One Uninstall entry as a ``SoftwareItem``, or ``None`` for hidden entries and updates."""
    display_name = _text(values, "DisplayName")
    if not display_name or _flag(values, "SystemComponent") or _is_update(values):
        return None
    item = facts_pb2.SoftwareItem(
        source=facts_pb2.SOFTWARE_SOURCE_WINDOWS_REGISTRY,
        name=name,
        version=_text(values, "DisplayVersion"),
        display_name=display_name,
        publisher=_text(values, "Publisher"),
        executable=executable_of(_text(values, "DisplayIcon")),
        architecture=architecture,
        install_location=_text(values, "InstallLocation").strip('"'),
    )
    installed = install_date(values.get("InstallDate"))
    if installed is not None:
        item.install_date.CopyFrom(timestamp(installed))
    return item


# ------------------------------------------------------------------------------------------ views


def _entries(reader: RegistryReader, hive: str, path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    for key in sorted(reader.subkeys(hive, path)):
        yield key, reader.values(hive, f"{path}\\{key}")


def _identity(item: facts_pb2.SoftwareItem) -> tuple[str, str]:
    return (item.display_name.casefold(), item.version)


def machine_software(reader: RegistryReader, native: str = "x64") -> list[facts_pb2.SoftwareItem]:
    """The machine-wide programs of both views, each product once (the native view's entry wins)."""
    items = [item for key, values in _entries(reader, HKLM, UNINSTALL)
             if (item := software_item(key, values, native)) is not None]
    names = {item.name.casefold() for item in items}
    identities = {_identity(item) for item in items}
    for key, values in _entries(reader, HKLM, UNINSTALL_32):
        item = software_item(key, values, "x86")
        if item is None or _identity(item) in identities:
            continue  # hidden, an update, or the same product as a native entry
        if item.name.casefold() in names:
            item.name = f"WOW6432Node\\{key}"
        identities.add(_identity(item))
        items.append(item)
    return items


def user_hives(reader: RegistryReader) -> list[str]:
    """The SIDs of the loaded user hives (``HKU\\<SID>``), without ``.DEFAULT`` and the ``_Classes`` halves."""
    return [sid for sid in sorted(reader.subkeys(HKU, "")) if sid.startswith("S-1-") and not sid.endswith("_Classes")]


def user_software(reader: RegistryReader, sids: Iterable[str] | None = None) -> list[facts_pb2.SoftwareItem]:
    """Per-user programs of every loaded user hive, named ``<SID>\\<key>`` (one user's install is not another's)."""
    items: list[facts_pb2.SoftwareItem] = []
    for sid in user_hives(reader) if sids is None else sids:
        for key, values in _entries(reader, HKU, f"{sid}\\{USER_UNINSTALL}"):
            item = software_item(f"{sid}\\{key}", values, "")
            if item is not None:
                items.append(item)
    return items


def installed_software(reader: RegistryReader, native: str = "x64") -> list[facts_pb2.SoftwareItem]:
    """Everything in "Apps & features": machine-wide programs of both views and every loaded user's own."""
    return [*machine_software(reader, native), *user_software(reader)]


def native_architecture(machine: str = "") -> str:
    """``platform.machine()`` (``AMD64``, ``ARM64``, ``x86``) as the architecture of the native view."""
    name = (machine or platform.machine()).lower()
    return _NATIVE_ARCHITECTURES.get(name, name)


def collect_software(roots: Roots, reader: RegistryReader | None = None) -> list[facts_pb2.SoftwareItem]:
    """Everything installed (unsorted). ``roots`` is the Linux back ends' and unused here."""
    del roots
    return installed_software(reader or WinRegistry(), native_architecture())
