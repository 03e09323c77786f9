"""The Windows software back end against a recorded registry (``data/windows/registry_office_pc.json``).

The dump is read by :class:`RecordedRegistry`, a fake :class:`RegistryReader` that answers the way
``winreg`` does: key names compare case-insensitively, a missing key has no subkeys and no values.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from agent.collectors import _software_windows as win
from protos.counterguard.v1 import facts_pb2

DATA = Path(__file__).parent / "data" / "windows"
SID = "S-1-5-21-3623811015-3361044348-30300820-1001"


class RecordedRegistry:
    """A registry dump as ``{"keys": {"HIVE\\path\\to\\key": {values}}}``, the shape of ``reg export``."""

    def __init__(self, keys: dict[str, dict[str, Any]]) -> None:
        self._keys = {path.casefold(): (path, values) for path, values in keys.items()}

    @classmethod
    def load(cls, name: str) -> RecordedRegistry:
        return cls(json.loads((DATA / name).read_text(encoding="utf-8"))["keys"])

    def subkeys(self, hive: str, path: str) -> list[str]:
        prefix = (f"{hive}\\{path}\\" if path else f"{hive}\\").casefold()
        children: dict[str, str] = {}
        for folded, (original, _) in self._keys.items():
            if folded.startswith(prefix):
                child = original[len(prefix):].split("\\", 1)[0]
                children.setdefault(child.casefold(), child)
        return sorted(children.values())

    def values(self, hive: str, path: str) -> dict[str, Any]:
        return dict(self._keys.get(f"{hive}\\{path}".casefold(), ("", {}))[1])


@pytest.fixture(scope="module")
def items() -> dict[str, facts_pb2.SoftwareItem]:
    found = win.installed_software(RecordedRegistry.load("registry_office_pc.json"), native="x64")
    by_name = {item.name: item for item in found}
    assert len(by_name) == len(found), "(source, name) must identify an item"
    return by_name


def _date(item: facts_pb2.SoftwareItem) -> dt.date | None:
    return item.install_date.ToDatetime(dt.UTC).date() if item.HasField("install_date") else None


def test_chinese_programs_from_the_32_bit_view(items: dict[str, facts_pb2.SoftwareItem]) -> None:
    wechat = items["WeChat"]
    assert (wechat.display_name, wechat.version, wechat.publisher) == ("微信", "3.9.8.25", "腾讯科技(深圳)有限公司")
    assert wechat.source == facts_pb2.SOFTWARE_SOURCE_WINDOWS_REGISTRY
    assert (wechat.executable, wechat.architecture) == ("WeChat.exe", "x86")
    assert wechat.install_location == r"C:\Program Files (x86)\Tencent\WeChat"
    assert _date(wechat) is None  # WeChat writes no InstallDate

    qq = items["QQ"]
    assert qq.executable == "QQ.exe"  # from "\"C:\\...\\QQ.exe\",0"
    assert qq.install_location == r"C:\Program Files\Tencent\QQNT"  # quotes removed
    assert _date(qq) == dt.date(2023, 12, 8)  # written as 2023/12/8

    safe = items["360安全卫士"]
    assert (safe.display_name, safe.publisher, safe.executable) == ("360安全卫士", "360安全中心", "360safe.exe")
    assert _date(safe) is None  # "2023-13-45" is not a date

    wps = items["Kingsoft Office"]
    assert wps.display_name == "WPS Office (11.1.0.15319)" and wps.publisher == "Kingsoft Corp."
    assert wps.executable == ""  # its DisplayIcon is an .ico
    assert _date(wps) == dt.date(2023, 4, 21)  # a DWORD 20230421


def test_native_view_programs(items: dict[str, facts_pb2.SoftwareItem]) -> None:
    chrome = items["Google Chrome"]
    assert (chrome.version, chrome.publisher, chrome.executable) == ("120.0.6099.110", "Google LLC", "chrome.exe")
    assert chrome.architecture == "x64" and _date(chrome) == dt.date(2023, 12, 15)
    assert items["{D5B8A8B9-2C3A-4A5E-A6E1-6B0D21E3C7F2}"].display_name.startswith("Microsoft Visual C++ 2015-2022")


def test_a_product_in_both_views_is_reported_once_from_the_native_view(
        items: dict[str, facts_pb2.SoftwareItem]) -> None:
    foxit = [item for item in items.values() if item.display_name == "福昕PDF阅读器"]
    assert [(item.name, item.architecture) for item in foxit] == [("Foxit Reader", "x64")]


def test_a_different_32_bit_program_under_a_taken_key_name_keeps_both(items: dict[str, facts_pb2.SoftwareItem]) -> None:
    assert (items["7-Zip"].version, items["7-Zip"].architecture) == ("23.01", "x64")
    old = items["WOW6432Node\\7-Zip"]
    assert (old.display_name, old.version, old.architecture) == ("7-Zip 19.00", "19.00", "x86")


def test_hidden_entries_and_updates_are_skipped(items: dict[str, facts_pb2.SoftwareItem]) -> None:
    names = {item.display_name for item in items.values()}
    assert "Office 16 Click-to-Run Extensibility Component" not in names  # SystemComponent=1
    assert not any("KB" in name or "Update" in name or "Hotfix" in name for name in names)
    assert "Connection Manager" not in items  # no DisplayName
    certificate = items["{E3A2F4C8-2B77-4E1D-9C2A-0F6C5B1D7A90}"]  # SystemComponent "0" as a string: shown
    assert certificate.display_name == "数字证书驱动 (CA 客户端)" and _date(certificate) is None  # InstallDate "0"


def test_per_user_installs_carry_their_sid(items: dict[str, facts_pb2.SoftwareItem]) -> None:
    game = items[f"{SID}\\QQGame"]
    assert (game.display_name, game.executable, game.architecture) == ("QQ游戏", "QQGame.exe", "")
    assert items[f"{SID}\\WeChat"].version == "3.9.9.35"  # the user's own WeChat beside the machine's
    assert not any(name.startswith((".DEFAULT", "S-1-5-18")) or "_Classes" in name for name in items)


def test_the_whole_list(items: dict[str, facts_pb2.SoftwareItem]) -> None:
    assert sorted(items) == sorted([
        "7-Zip", "Google Chrome", "{D5B8A8B9-2C3A-4A5E-A6E1-6B0D21E3C7F2}", "Foxit Reader",
        "WeChat", "QQ", "360安全卫士", "Kingsoft Office", "WOW6432Node\\7-Zip",
        "{E3A2F4C8-2B77-4E1D-9C2A-0F6C5B1D7A90}", f"{SID}\\QQGame", f"{SID}\\WeChat",
    ])


def test_user_hives_leave_out_defaults_and_classes() -> None:
    registry = RecordedRegistry.load("registry_office_pc.json")
    assert win.user_hives(registry) == ["S-1-5-18", "S-1-5-19", "S-1-5-20", SID]


def test_an_empty_registry_gives_nothing() -> None:
    assert win.installed_software(RecordedRegistry({})) == []


@pytest.mark.parametrize(("raw", "expected"), [
    ("20231215", dt.date(2023, 12, 15)),
    (20230421, dt.date(2023, 4, 21)),
    ("2023/5/12", dt.date(2023, 5, 12)),
    ("2023-05-12", dt.date(2023, 5, 12)),
    ("20231215\x00", dt.date(2023, 12, 15)),
    ("05/12/2023", dt.date(2023, 5, 12)),
    ("", None), ("0", None), ("19700101", None), ("2023-13-45", None), ("yesterday", None), (None, None),
    (True, None), (b"20231215", None),
])
def test_install_date(raw: Any, expected: dt.date | None) -> None:
    parsed = win.install_date(raw)
    assert (parsed.date() if parsed else None) == expected
    assert parsed is None or parsed.tzinfo is dt.UTC


@pytest.mark.parametrize(("icon", "expected"), [
    (r"C:\Program Files\7-Zip\7zFM.exe", "7zFM.exe"),
    (r"C:\Program Files\Google\Chrome\Application\chrome.exe,0", "chrome.exe"),
    (r'"C:\Program Files\Tencent\QQNT\QQ.exe",0', "QQ.exe"),
    (r"%SystemRoot%\System32\shell32.dll,-154", ""),
    (r"C:\Program Files (x86)\360\360Safe\uninst.exe", ""),
    (r"C:\Program Files (x86)\App\unins000.exe,0", ""),
    (r"C:\Program Files\App\app.ico", ""),
    ("", ""),
])
def test_executable_of(icon: str, expected: str) -> None:
    assert win.executable_of(icon) == expected


def test_public_module_picks_the_windows_back_ends_on_win32() -> None:
    """On ``win32`` the public modules import the Windows back ends, and importing needs no Windows module."""
    code = (  # third-party modules pick their own back ends at import: load them as on Linux first
        "import sys, psutil, google.protobuf\n"
        "sys.platform = 'win32'\n"
        "from agent.collectors import inventory, software\n"
        "print(software._backend.__name__, inventory._backend.__name__)\n"
        "print(sorted(m for m in ('winreg', 'win32com', 'wmi') if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            cwd=Path(__file__).resolve().parents[3])
    backends, windows_modules = result.stdout.splitlines()
    assert backends == "agent.collectors._software_windows agent.collectors._inventory_windows"
    assert windows_modules == "[]"
