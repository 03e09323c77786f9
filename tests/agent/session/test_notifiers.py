"""The notifiers: freedesktop notifications on a real (private) session bus; Windows toasts up to the command line.

Linux: a real dbus-daemon and a real notification server process (``dbus.py``) that records every
``Notify``. Windows: the toast XML, the PowerShell script and its command line are built and checked
here; the ``run`` that would start ``powershell.exe`` records the call instead (the one boundary).
"""

from __future__ import annotations

import base64
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from agent.session._notify_linux import FreedesktopNotifier
from agent.session._notify_windows import POWERSHELL_APP_ID, ToastNotifier, powershell_command, toast_xml
from agent.session.notifiers import NotifierError
from tests.agent.session.dbus import calls, notification_server, private_bus

TITLE = "工作时间请勿运行游戏,本次已记录"
BODY = "QQ游戏 · 14:05 · R11.6"


def test_a_notice_reaches_the_notification_server_of_the_session_bus(tmp_path: Path) -> None:
    with private_bus(tmp_path) as bus, notification_server(bus, tmp_path / "notify.jsonl") as record:
        FreedesktopNotifier(bus).show(TITLE, BODY)
        [call] = calls(record)

    assert (call["app_name"], call["summary"], call["body"]) == ("CounterGuard", TITLE, BODY)
    assert (call["replaces_id"], call["actions"], call["hints"], call["expire_timeout"]) == (0, [], {"urgency": 1}, -1)


def test_a_missing_or_refusing_notification_service_is_a_notifier_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with private_bus(tmp_path) as bus:
        with pytest.raises(NotifierError, match="the notification service refused: "
                                                "org.freedesktop.DBus.Error.ServiceUnknown"):
            FreedesktopNotifier(bus).show(TITLE, BODY)
        with notification_server(bus, tmp_path / "notify.jsonl", refuse=True):
            with pytest.raises(NotifierError, match="AccessDenied: not today"):
                FreedesktopNotifier(bus).show(TITLE, BODY)
    with pytest.raises(NotifierError, match="the session bus did not answer"):
        FreedesktopNotifier(f"unix:path={tmp_path / 'session-bus'}").show(TITLE, BODY)
    monkeypatch.delenv("DBUS_SESSION_BUS_ADDRESS", raising=False)
    with pytest.raises(NotifierError, match="no session bus"):
        FreedesktopNotifier().show(TITLE, BODY)


# ------------------------------------------------------------------ Windows toasts


def decoded_script(command: list[str]) -> str:
    return base64.b64decode(command[command.index("-EncodedCommand") + 1]).decode("utf-16-le")


def test_the_toast_xml_carries_title_and_body_escaped() -> None:
    tricky = "<b>注意</b> & '@\n第二行"

    toast = ET.fromstring(toast_xml(tricky, BODY))

    assert [t.text for t in toast.iter("text")] == ["<b>注意</b> & '@ 第二行", BODY]
    assert toast.find("visual/binding").get("template") == "ToastGeneric"  # type: ignore[union-attr]


def test_the_powershell_command_shows_the_toast_under_the_app_id() -> None:
    command = powershell_command(TITLE, "a\n'@\nb", app_id="Counter'Guard")
    script = decoded_script(command)

    assert command[:8] == ["powershell.exe", "-NoProfile", "-NonInteractive", "-ExecutionPolicy", "Bypass",
                           "-WindowStyle", "Hidden", "-EncodedCommand"]
    lines = script.splitlines()
    here = lines.index("$xml.LoadXml(@'")
    assert lines[here + 2] == "'@)", "the XML is one line inside the here-string, which nothing in it can end"
    assert ET.fromstring(lines[here + 1]).find("visual/binding/text").text == TITLE  # type: ignore[union-attr]
    assert "CreateToastNotifier('Counter''Guard').Show($toast)" in script


def test_the_toast_notifier_runs_powershell_hidden_and_reports_its_error() -> None:
    runs: list[tuple[list[str], dict[str, Any]]] = []

    def run(command: list[str], **options: Any) -> subprocess.CompletedProcess[bytes]:
        runs.append((command, options))
        failed = len(runs) > 1
        return subprocess.CompletedProcess(command, 1 if failed else 0, b"",
                                           b"\r\nNew-Object : Cannot find type [Windows.UI...]\r\n" if failed else b"")

    notifier = ToastNotifier(run=run)
    notifier.show(TITLE, BODY)
    with pytest.raises(NotifierError, match=r"exit 1\): New-Object : Cannot find type"):
        notifier.show(TITLE, BODY)

    command, options = runs[0]
    assert POWERSHELL_APP_ID in decoded_script(command)
    assert options["capture_output"] and options["timeout"] == 30
